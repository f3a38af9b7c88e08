"""The packaged app's smoke test (`main.py --self-test`), run in the source tree with a tiny model.

The real thing runs on the built executable (tools/build_app.py); this checks the test itself:
it passes on a working app, fails with the reason (not a hang) on a broken model, and its grid
checks catch what a broken build would produce.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("pytestqt")

EMOJI_LABELS = ["face", "person", "animal & nature", "food", "object", "symbol & flag"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """An untrained n_feat=8 model with the emoji labels: enough to drive every code path fast."""
    import torch

    from core.checkpoint import save_checkpoint
    from core.schedule import ScheduleConfig
    from core.unet import ContextUnet, UNetConfig

    torch.manual_seed(0)
    cfg = UNetConfig(n_feat=8, n_cfeat=len(EMOJI_LABELS), height=16)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, ContextUnet(cfg).state_dict(), unet_config=cfg, schedule_config=ScheduleConfig(),
                           label_names=EMOJI_LABELS, dataset="emoji16", step=0)


def _json_line(out: str) -> dict:
    line = next(ln for ln in out.splitlines() if ln.startswith("SELF_TEST_JSON "))
    return json.loads(line.split(" ", 1)[1])


def test_self_test_passes_on_a_working_app(qapp, capsys, tmp_path, tiny_checkpoint, monkeypatch):
    from desktop.diagnostics.self_test import run_self_test

    # Time from here, as a launcher does: this process (pytest) started long before the app did.
    monkeypatch.setenv("DIFFUSION_DESK_T0", str(time.time()))
    grid = tmp_path / "grid.png"
    home = tmp_path / "home"
    rc = run_self_test(["--checkpoint", str(tiny_checkpoint), "--steps", "4", "--per-label", "2", "--no-train",
                        "--lenient", "--tab-max-steps", "40",
                        "--home", str(home), "--save", str(grid), "--timeout", "60", "--json"])
    out = capsys.readouterr().out
    numbers = _json_line(out)
    if _binding_is_broken():  # the self-test must flag it, and nothing else
        assert rc == 1 and len(numbers["failures"]) == 1 and "PySide6" in numbers["failures"][0], out
    else:
        assert rc == 0 and numbers["passed"] and not numbers["failures"], out
    assert not numbers["dialogs"]
    assert numbers["sample_n"] == 12 and numbers["sample_nfe"] == 4
    assert 0 < numbers["window_shown_s"] <= numbers["engine_ready_s"] < 120
    assert "Sample & compare, one click: 3 of 3 columns" in out
    from PIL import Image

    assert Image.open(grid).size[0] > 2 * 16  # two images per row, upscaled
    assert (home / "settings.ini").is_file()  # the app wrote its settings to the data folder it was given


def test_self_test_fails_with_the_reason_on_a_broken_model(qapp, capsys, tmp_path):
    from desktop.diagnostics.self_test import run_self_test

    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"this is not a model")
    start = time.time()
    rc = run_self_test(["--checkpoint", str(bad), "--no-tab", "--no-train", "--timeout", "60", "--json"])
    out = capsys.readouterr().out
    assert rc == 1, out
    numbers = _json_line(out)
    assert not numbers["passed"]
    assert any("broken.safetensors" in d for d in numbers["dialogs"])  # the app's dialog, recorded and closed
    assert "RESULT: FAIL" in out
    assert time.time() - start < 50  # ended on the dialog, not on the timeout


def _binding_is_broken() -> bool:
    from desktop.app import qt_binding_problem

    return qt_binding_problem() is not None


def test_binding_probe_tells_a_sound_pyside_from_the_broken_one(qapp):
    from desktop.diagnostics.checks import binding_reference_drift

    drift = binding_reference_drift(200)
    if _binding_is_broken():
        assert drift["True"] <= -100  # PySide6 6.12.0 on Python 3.11: about one reference lost per emit
    else:
        assert abs(drift["True"]) < 100


def test_check_grid_catches_what_a_broken_build_produces():
    from desktop.diagnostics.checks import check_grid

    def failed(images, **kw):
        return {c.name for c in check_grid(images, **{"n": len(images), "height": 16, **kw}) if not c.ok}

    rng = np.random.default_rng(0)
    good = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    assert failed(good) == set()
    assert failed(np.full((12, 16, 16, 3), 127, np.uint8)) >= {"not constant", "no blank images", "images differ"}
    assert "finite" in failed(good, finite=False)
    assert "shape" in failed(good[:, :8, :8])
    assert "images differ" in failed(np.repeat(good[:1], 12, axis=0))
    assert "plausible colours" in failed(np.where(good > 127, 255, 0).astype(np.uint8))


def test_process_start_time(monkeypatch):
    from desktop.diagnostics.checks import process_start_time

    monkeypatch.setenv("DIFFUSION_DESK_T0", "1234.5")
    assert process_start_time() == (1234.5, "launcher")
    monkeypatch.delenv("DIFFUSION_DESK_T0")
    t, source = process_start_time()
    assert source in ("os", "import") and time.time() - 24 * 3600 < t <= time.time()


def test_the_grid_is_finite_only_when_every_step_was(tiny_checkpoint):
    """An overflow part-way is caught even where the last step's clipping would hide it from the images."""
    import torch

    from core.checkpoint import load_checkpoint
    from desktop.jobs.sampling import sample_grid

    bundle = load_checkpoint(tiny_checkpoint)
    good = sample_grid(bundle, steps=3, per_label=1, seed=0)
    assert good["finite"] and good["nfe"] == 3 and good["images"].shape[:2] == (6, 16)
    with torch.no_grad():
        next(bundle.net.parameters()).fill_(float("nan"))
    assert sample_grid(bundle, steps=3, per_label=1, seed=0)["finite"] is False
