"""What the untrusted-file tests share (tests/core/test_untrusted_*.py): the type swaps, the one-line check,
small files of ours to spoil."""
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from toy_data import blob_squares

DEPTH_BOMB = "[" * 100_000
# Values of every other JSON type, per kind of field: each must be refused where a field of that kind is read.
SWAPS = {
    "int": ["3", 2.5, True, None, [1], {"a": 1}, 10**30, -(10**30), float("nan")],
    "float": ["0.1", True, None, [1], {"a": 1}, float("nan"), float("inf"), -1e300],
    "number": ["0.1", True, [1], {"a": 1}, float("nan")],  # unbounded numbers (benchmark results)
    "str": [5, True, None, [1], {"a": 1}],
    "bool": [1, 0, "true", None, [1]],
    "flag": [1, "true", [1], {"a": 1}],  # true, false or null
    "obj": [[1], "x", 5, None, True],
    "list": ["x", 5, None, {"a": 1}, True],
}


def swaps(fields: dict) -> list:
    """(field, value) parameters: every swap of each field's kind."""
    return [pytest.param(name, v, id=f"{name}={v!r:.12}") for name, kind in fields.items() for v in SWAPS[kind]]


def assert_names(exc_info, *names):
    """The error is one line and names one of `names` (the file, flag or variable)."""
    text = str(exc_info.value)
    assert "\n" not in text and any(n in text for n in names), text


def model_checkpoint(folder: Path) -> dict:
    """A tiny model file of ours: {'meta': its header, 'path': it}."""
    from core.checkpoint import save_checkpoint
    from core.schedule import ScheduleConfig
    from core.unet import ContextUnet, UNetConfig

    torch.manual_seed(0)
    net = ContextUnet(UNetConfig(n_feat=8, n_cfeat=2, height=8))
    save_checkpoint(folder / "m.safetensors", net.state_dict(), unet_config=net.config, schedule_config=ScheduleConfig(),
                    label_names=["cat", "dog"], step=4, train_config={"lr": 0.001},
                    extra={"elapsed": 1.0, "run_id": "abc"})
    with safe_open(str(folder / "m.safetensors"), "pt") as f:
        return {"meta": dict(f.metadata()), "path": folder / "m.safetensors"}


def tiny_run(folder: Path, steps: int = 2):
    """(a run folder of `steps` training steps, the data set it was trained on)."""
    from core.training import TRAIN_PRESETS, Trainer

    ds = blob_squares(16)
    cfg = replace(TRAIN_PRESETS["tiny"], steps=max(steps, 1), batch_size=4, checkpoint_every=2, precision="fp32")
    tr = Trainer(ds, cfg, folder, device="cpu")
    for _ in (tr.run() if steps else ()):
        pass
    if not steps:
        tr.save()
    tr.close()
    return folder, ds


def header_file(folder: Path, header: dict, name="bad.safetensors", tensors=None) -> Path:
    """A safetensors file with this header (and one small tensor, unless `tensors`)."""
    path = folder / name
    save_file(tensors or {"w": torch.zeros(1)}, str(path), metadata=header)
    return path


def meta_with(model_header: dict, key: str, **changes) -> dict:
    """The model header with fields of its JSON value `key` changed."""
    return {**model_header["meta"], key: json.dumps({**json.loads(model_header["meta"][key]), **changes})}


def patch(path: Path, meta=None, drop=(), tensors=None, drop_tensors=()):
    """Rewrite a safetensors file in place with header entries or tensors replaced or removed."""
    with safe_open(str(path), "pt") as f:
        header = {k: v for k, v in f.metadata().items() if k not in drop}
    ts = {k: v for k, v in load_file(str(path)).items() if k not in drop_tensors}
    save_file({**ts, **(tensors or {})}, str(path), metadata={**header, **(meta or {})})


def copy_run(run, folder: Path) -> Path:
    shutil.copytree(run[0], folder / "run")
    return folder / "run"
