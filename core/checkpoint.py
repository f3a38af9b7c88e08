"""Checkpoints: safetensors tensors with JSON metadata inside the file; atomic writes; safe loading.

Loading never executes code from a file: safetensors holds only tensors and a string header, and a
course `.pth` goes through `torch.load(weights_only=True)`.

Files of a run folder:
  model.safetensors    EMA weights (what sampling uses) + metadata: configs, labels, data set, step
  resume.safetensors   raw weights, optimizer state and RNG state, for an exact resume
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .catalog import COURSE_LABEL_NAMES, LABEL_NAME_MAX
from .config import MAX_STEPS
from .device import to_fast_layout
from .errors import UserError, one_line
from .memory import check_fits, model_bytes
from .paths import atomic_write_bytes  # noqa: F401 - re-exported: checkpoints are written with it
from .schedule import ScheduleConfig
from .schema import Bool, Either, Float, Int, IntText, List, Null, Obj, Str, check, load_json_text
from .tensors import check_index, expected_state, first_non_finite, header_index, index_of, meta_network
from .unet import (ContextUnet, CourseWeightsError, UNetConfig, build_network,
                   config_from_course_state_dict, load_course_state_dict)

FORMAT = "diffusion-desk/1"
RESUME_FORMAT = "diffusion-desk-resume/1"

# --- what a header may hold (untrusted: core.schema checks it before anything is used) ---------------------
MAX_HEADER_JSON = 1 << 20  # one JSON value of a header: configs and label names take a few KB
MAX_JSON_DEPTH = 16  # our headers nest three levels at most (param groups > a group > its betas)
_JSON_TEXT = Str(max_len=MAX_HEADER_JSON)
LABEL_NAMES = List(Str(max_len=LABEL_NAME_MAX, min_len=1), max_len=4096)  # UNetConfig's n_cfeat limit
MODEL_HEADER = Obj({"format": Str(64), "unet_config": _JSON_TEXT, "schedule_config": _JSON_TEXT,
                    "label_names": _JSON_TEXT, "dataset": Str(1000), "dataset_fingerprint": Str(64),
                    "step": IntText(0, MAX_STEPS), "precision": Str(16), "train_config": _JSON_TEXT,
                    "extra": _JSON_TEXT},
                   optional=("dataset", "dataset_fingerprint", "step", "precision", "train_config", "extra"),
                   extra=_JSON_TEXT)
# The configs' own dataclasses check their fields (one source for those rules); here only their shape.
MODEL_JSON = Obj({"unet_config": Obj(), "schedule_config": Obj(), "label_names": LABEL_NAMES, "train_config": Obj(),
                  "extra": Obj({"elapsed": Float(0, 1e12), "run_id": Str(64), "ema_decay": Float(0, 1)},
                               optional=("elapsed", "run_id", "ema_decay"))})
RESUME_HEADER = Obj({"format": Str(64), "step": IntText(0, MAX_STEPS), "info": _JSON_TEXT,
                     "param_groups": _JSON_TEXT, "opt_scalars": _JSON_TEXT}, extra=_JSON_TEXT)
RESUME_INFO = Obj({"dataset": Str(1000), "dataset_fingerprint": Str(64), "elapsed": Float(0, 1e12),
                   "run_id": Str(64), "train_config": Obj(), "world_size": Int(1, 65536),
                   "rank_rng_states": List(Str(1 << 16), 65536),
                   "loss_scale": Obj({"scale": Float(0, 2.0 ** 64, above=True), "growth_tracker": Int(0, 2 ** 31)})},
                  optional=("dataset", "dataset_fingerprint", "elapsed", "run_id", "train_config", "world_size",
                            "rank_rng_states", "loss_scale"))
_FLAG = Either(Bool(), Null())
# An Adam/AdamW parameter group as torch writes it; other torch versions may add flags, which may be
# JSON scalars only. Betas below 1: Adam divides by 1 - beta**step.
PARAM_GROUP = Obj({"params": List(Int(0, 10**7), 10**7), "lr": Float(0, 10), "initial_lr": Float(0, 10),
                   "betas": List(Float(0, 0.999999), 2, 2), "eps": Float(0, 1, above=True),
                   "weight_decay": Float(0, 1e6), "amsgrad": Bool(), "maximize": Bool(), "foreach": _FLAG,
                   "capturable": Bool(), "differentiable": Bool(), "fused": _FLAG, "decoupled_weight_decay": Bool()},
                  optional=("lr", "initial_lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach",
                            "capturable", "differentiable", "fused", "decoupled_weight_decay"),
                  extra=Either(Bool(), Null(), Float(-1e30, 1e30), Str(100)))
RESUME_JSON = Obj({"info": RESUME_INFO, "param_groups": List(PARAM_GROUP, 64, 1),
                   "opt_scalars": Obj(extra=Either(Float(-1e30, 1e30), Bool(), Null()), max_keys=10**6,
                                      key=Str(80, pattern=r"[0-9]{1,7}\.[A-Za-z_][A-Za-z0-9_]{0,63}",
                                              words="'<parameter index>.<name>', e.g. '0.step'"))})


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used; str() names the file and the problem in one line."""


@dataclass
class ModelBundle:
    """A loaded model, ready to sample: network (eval mode), schedule, label names and metadata."""

    net: torch.nn.Module  # ContextUnet or DeskUnet (net.config says which)
    schedule_config: ScheduleConfig
    label_names: list[str]
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "ours")

    @property
    def description(self) -> str:
        name = self.path.name if self.path else "(unsaved)"
        step = self.meta.get("step")
        data = self.meta.get("dataset", "?")
        cfg = self.net.config
        net = "" if cfg.network == "course" else f"{cfg.network} network, "
        return f"{name} ({net}n_feat {cfg.n_feat}, {data}" + (f", step {step})" if step is not None else ")")


def _contiguous_cpu(state: dict) -> dict:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_checkpoint(path: str | Path, state_dict: dict, *, unet_config: UNetConfig, schedule_config: ScheduleConfig,
                    label_names: list[str], dataset: str = "", fingerprint: str = "", step: int = 0,
                    precision: str = "fp32", train_config: dict | None = None, extra: dict | None = None) -> Path:
    """Atomically write model weights + metadata as one .safetensors file."""
    meta = {
        "format": FORMAT,
        "unet_config": json.dumps(unet_config.to_dict()),
        "schedule_config": json.dumps(schedule_config.to_dict()),
        "label_names": json.dumps(list(label_names)),
        "dataset": dataset,
        "dataset_fingerprint": fingerprint,
        "step": str(int(step)),
        "precision": precision,
        "train_config": json.dumps(train_config or {}),
        "extra": json.dumps(extra or {}),
    }
    atomic_write_bytes(path, st_save(_contiguous_cpu(state_dict), metadata=meta))
    return Path(path)


def resave_checkpoint(bundle: "ModelBundle", path: str | Path, *, schedule_config: ScheduleConfig | None = None,
                      extra: dict | None = None) -> Path:
    """Write a loaded model to a new file with its metadata, another schedule config (a named spacing added)
    and more `extra` entries; the weights are the loaded ones, unchanged."""
    m = bundle.meta
    return save_checkpoint(path, bundle.net.state_dict(), unet_config=bundle.net.config,
                           schedule_config=schedule_config or bundle.schedule_config, label_names=bundle.label_names,
                           dataset=m.get("dataset") or "", fingerprint=m.get("dataset_fingerprint") or "",
                           step=m.get("step") or 0, precision=m.get("precision") or "fp32",
                           train_config=m.get("train_config") or {}, extra={**(m.get("extra") or {}), **(extra or {})})


def read_metadata(path: str | Path) -> dict:
    """Decoded metadata of one of our checkpoints (raises CheckpointError otherwise)."""
    path = Path(path)
    raw = _safetensors_header(path)
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a Diffusion Desk checkpoint (no '{FORMAT}' metadata)")
    check(raw, MODEL_HEADER, str(path), error=CheckpointError)
    parsed = check(_parse_header_json(path, raw, ("unet_config", "schedule_config", "label_names", "train_config",
                                                  "extra")), MODEL_JSON, str(path), error=CheckpointError)
    try:
        UNetConfig.from_dict(parsed["unet_config"])
        ScheduleConfig.from_dict(parsed["schedule_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: checkpoint has an invalid configuration ({e})") from None
    return {**parsed, "dataset": raw.get("dataset", ""), "dataset_fingerprint": raw.get("dataset_fingerprint", ""),
            "step": int(raw.get("step", 0)), "precision": raw.get("precision", ""), "kind": "ours"}


def _parse_header_json(path: Path, raw: dict, keys) -> dict:
    """The JSON values of a header ({} for an optional one left out), each bounded in size and depth."""
    return {k: load_json_text(raw[k], source=f"{path} ({k})", max_bytes=MAX_HEADER_JSON, max_depth=MAX_JSON_DEPTH,
                              error=CheckpointError) if k in raw else {} for k in keys}


def _safetensors_header(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(b"PK") or head.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"{path}: this is a data set (numpy file), not a model; open it as a data set "
                              "(--data in the CLI, File → Open data set in the app)")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable .safetensors file ({one_line(e, limit=160)})") from None


def _header_index(path: Path) -> dict:
    try:
        return header_index(path)
    except Exception as e:  # noqa: BLE001 - a header safetensors cannot parse is the file's fault
        raise CheckpointError(f"{path}: not a readable .safetensors file ({one_line(e, limit=160)})") from None


def check_weights_fit(source, config: UNetConfig, index: dict) -> None:
    """Before a network is built: the file's tensors (`index`) are the ones `config` describes, by name, shape
    and dtype, and loading them fits in memory (the file's bytes, its tensors and the network)."""
    check_index(index, expected_state(meta_network(config)), str(source), error=CheckpointError)
    check_fits(3 * model_bytes(config), "cpu", f"{source}: loading this model (n_feat {config.n_feat}, "
               f"{config.height} px)", "it is too large for this machine")


def read_tensors(path: Path) -> dict:
    """Every tensor of an untrusted .safetensors file; a CheckpointError naming the file if it cannot be parsed."""
    try:
        return st_load(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - any failure to parse an untrusted file is the file's
        raise CheckpointError(f"{path}: could not read tensors ({one_line(e, limit=160)})") from None


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> ModelBundle:
    """Load one of our .safetensors checkpoints or a course .pth state dict, in eval mode on `device`."""
    path = Path(path)
    if path.suffix.lower() in (".pth", ".pt", ".bin"):
        return load_course_weights(path, device)
    meta = read_metadata(path)
    unet_config = UNetConfig.from_dict(meta["unet_config"])
    schedule_config = ScheduleConfig.from_dict(meta["schedule_config"])
    labels = meta["label_names"]
    if labels and len(labels) != unet_config.n_cfeat:
        raise CheckpointError(f"{path}: {len(labels)} label names for a model with {unet_config.n_cfeat} context "
                              "inputs; the file is inconsistent")
    check_weights_fit(path, unet_config, _header_index(path))
    net = build_network(unet_config)
    tensors = read_tensors(path)
    load_matching(net, tensors, str(path))
    bad = first_non_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"{path}: the weights hold NaN or infinite values (first in {bad}); this model "
                              "cannot draw anything, use an earlier checkpoint")
    to_fast_layout(net.to(device)).eval()
    return ModelBundle(net, schedule_config, meta["label_names"], meta, path)


def load_course_weights(path: str | Path, device: torch.device | str = "cpu") -> ModelBundle:
    """A course weight file (context_model_trained.pth / model_trained.pth), in course-compat mode."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns at length before refusing; the message below says it
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle refusals, zip errors, truncation: all "not a weights file"
        text = str(e)
        if "Unsupported global" in text or "GLOBAL" in text:  # the weights-only unpickler met a class or function
            raise CheckpointError(f"{path}: this file contains Python code, not just weights — refusing to "
                                  "load it") from None
        raise CheckpointError(f"{path}: not a PyTorch weights file (expected a course .pth; for our models "
                              f"open a .safetensors file)") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    try:
        cfg = config_from_course_state_dict(sd, source=str(path))
    except (CourseWeightsError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None
    check_weights_fit(path, cfg, index_of(sd))  # a tensor's shape can imply a huge network: check first
    bad = first_non_finite(sd)
    if bad is not None:
        raise CheckpointError(f"{path}: the weights hold NaN or infinite values (first in {bad}); this model "
                              "cannot draw anything")
    net = ContextUnet(cfg)
    try:
        load_course_state_dict(net, sd, source=str(path))
    except (CourseWeightsError, ValueError) as e:
        raise CheckpointError(str(e)) from None
    n = cfg.n_cfeat
    labels = list(COURSE_LABEL_NAMES) if n == len(COURSE_LABEL_NAMES) else [f"label {i + 1}" for i in range(n)]
    meta = {"kind": "course", "dataset": "course sprites", "step": None,
            "unet_config": cfg.to_dict(), "schedule_config": ScheduleConfig().to_dict()}
    # The convolutions' preferred layout, as for our own files (NCHW weights on channels_last inputs are slower)
    return ModelBundle(to_fast_layout(net.to(device)).eval(), ScheduleConfig(), labels, meta, path)


# --- resume state ---------------------------------------------------------------------------------

def save_resume_state(path: str | Path, *, model_state: dict, optimizer_state: dict, rng_state: torch.Tensor,
                      step: int, info: dict, ema_state: dict | None = None, ema2_state: dict | None = None) -> Path:
    """Raw weights, EMA (and a second EMA), optimizer and RNG state without pickle: tensors flat, the rest as JSON.

    With the EMA inside, this one file is the run's commit: resuming never mixes it with an older
    model.safetensors (which is re-derived from it when a crash left the two at different steps)."""
    tensors = {f"model.{k}": v for k, v in model_state.items()}
    tensors.update({f"ema.{k}": v for k, v in (ema_state or {}).items()})
    tensors.update({f"ema2.{k}": v for k, v in (ema2_state or {}).items()})
    opt_scalars = {}
    for idx, st in optimizer_state["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = val
            else:
                opt_scalars[f"{idx}.{key}"] = val
    tensors["rng"] = rng_state
    meta = {"format": RESUME_FORMAT, "step": str(int(step)), "info": json.dumps(info),
            "param_groups": json.dumps(optimizer_state["param_groups"]), "opt_scalars": json.dumps(opt_scalars)}
    atomic_write_bytes(path, st_save(_contiguous_cpu(tensors), metadata=meta))
    return Path(path)


def read_resume_info(path: str | Path) -> dict:
    """The JSON info of a resume file (data set, run id, train config) from its header alone, no tensors."""
    return _resume_header(Path(path))[1]["info"]


def _resume_header(path: Path) -> tuple[dict, dict]:
    """(the header's strings, its JSON values parsed) of a resume file, both checked against their schemas."""
    raw = _safetensors_header(path)
    if raw.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"{path}: not a Diffusion Desk resume file")
    check(raw, RESUME_HEADER, str(path), error=CheckpointError)
    parsed = _parse_header_json(path, raw, ("info", "param_groups", "opt_scalars"))
    return raw, check(parsed, RESUME_JSON, str(path), error=CheckpointError)


def load_resume_state(path: str | Path, expect: dict | None = None, required=None) -> dict:
    """Inverse of save_resume_state: {'model_state', 'ema_state', 'ema2_state', 'optimizer_state', 'rng_state',
    'step', 'info'}.

    With `expect` ({name: (shape, kind)}, see core.tensors.check_index) the tensors are checked from the
    header before any is read; every floating tensor must be finite (a NaN moment would poison the run)."""
    path = Path(path)
    raw, parsed = _resume_header(path)
    if expect is not None:
        check_index(_header_index(path), expect, str(path), error=CheckpointError, required=required)
    tensors = read_tensors(path)
    bad = first_non_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"{path}: tensor {bad} holds NaN or infinite values; the run cannot continue from "
                              "this file (start a new run from its model.safetensors with --init)")
    if "rng" not in tensors:
        raise CheckpointError(f"{path}: tensor rng (the random generator's state) is missing")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    ema_state = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
    ema2_state = {k[len("ema2."):]: v for k, v in tensors.items() if k.startswith("ema2.")}
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, key = (k.split(".", 2) + ["", ""])[:3]
            if not idx.isdigit() or not key:
                raise CheckpointError(f"{path}: unexpected tensor {k[:80]}; the file is damaged or not one of ours")
            state.setdefault(int(idx), {})[key] = v
    for k, v in parsed["opt_scalars"].items():  # keys "<index>.<name>" (RESUME_JSON checks the pattern)
        idx, key = k.split(".", 1)
        state.setdefault(int(idx), {})[key] = v
    optimizer_state = {"state": state, "param_groups": parsed["param_groups"]}
    return {"model_state": model_state, "ema_state": ema_state, "ema2_state": ema2_state, "optimizer_state": optimizer_state,
            "rng_state": tensors["rng"], "step": int(raw["step"]), "info": parsed["info"]}


def describe_mismatch(net: torch.nn.Module, state: dict) -> str:
    """The first missing, unexpected or wrong-shape tensor of `state` against `net`, in words."""
    own = net.state_dict()
    for k, v in own.items():
        if k not in state:
            return f"tensor {k} is missing"
        if tuple(state[k].shape) != tuple(v.shape):
            return f"tensor {k} has shape {tuple(state[k].shape)}, the configuration needs {tuple(v.shape)}"
    extra = [k for k in state if k not in own]
    return f"unexpected tensor {extra[0]}" if extra else "the tensors do not match"


def load_matching(net: torch.nn.Module, state: dict, source: str) -> None:
    """load_state_dict with a one-line CheckpointError naming the first bad tensor."""
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(f"{source}: weights do not match the configuration ({describe_mismatch(net, state)})") from None
