"""The Train tab's "Use all N GPUs": a torchrun child run followed through its run folder. GPUs are not needed
to test the path: the child runs 2 gloo processes on the CPU (the option is simply shown by hand)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import preset_dicts

pytest.importorskip("pytestqt")
pytestmark = pytest.mark.slow  # every test here starts a torchrun child run of 2 processes


def _small_npz(tmp_path, emoji_small):
    from core.data import save_npz

    return str(save_npz(emoji_small, tmp_path / "small.npz"))


def test_the_option_is_hidden_without_several_gpus_and_a_run_under_torchrun_looks_like_one_in_the_app(
        qtbot, user_home, dialogs, emoji_small, tiny_config):
    from desktop.panels.train_panel import TrainPanel
    from desktop.state import AppState

    state = AppState()
    p = TrainPanel(state)
    qtbot.addWidget(p)
    p.set_presets(preset_dicts())
    state.set_dataset(emoji_small)
    p.apply_config(tiny_config)
    models = []
    state.model_changed.connect(models.append)
    assert not p.multi_gpu.isVisibleTo(p) and not p.multi_gpu.wanted()  # this machine has no CUDA device
    p.multi_gpu.set_device_count(2)
    assert p.multi_gpu.isVisibleTo(p) and p.multi_gpu.text() == "Use all 2 GPUs"
    p.multi_gpu.setChecked(True)
    assert p.start()
    qtbot.waitUntil(lambda: p.run_state == "idle", timeout=120000)
    assert not dialogs, (dialogs, p.status.text())
    qtbot.waitUntil(lambda: len(models) == 1, timeout=30000)  # the final model, loaded in the background
    assert p.loss_plot.n_points == tiny_config["steps"]  # every logged step reached the plot, once
    assert models[0].meta["step"] == tiny_config["steps"]
    run = p._last_run_dir
    saved = json.loads((Path(run) / "train_config.json").read_text())
    assert saved["n_feat"] == tiny_config["n_feat"] and saved["steps"] == tiny_config["steps"]
    assert "Finished" in p.status.text()


def test_stop_reaches_every_child_process_and_a_checkpoint_is_saved(qtbot, tmp_path, emoji_small):
    from desktop.jobs import torchrun

    out = tmp_path / "run"
    cfg = {"n_feat": 8, "steps": 10**6, "batch_size": 16, "checkpoint_every": 10**9, "precision": "fp32"}
    cmd = torchrun.torchrun_command(2, out, _small_npz(tmp_path, emoji_small), config=cfg)
    run = torchrun.TorchrunRun(cmd, out, cfg["steps"], poll_ms=100)
    rows, ended, failed = [], [], []
    run.progress.connect(lambda item: rows.extend(item) if isinstance(item, list) else None)
    run.result.connect(ended.append)
    run.failed.connect(failed.append)
    run.start()
    qtbot.waitUntil(lambda: len(rows) >= 3, timeout=90000)
    run.request_stop()
    qtbot.waitUntil(lambda: bool(ended or failed), timeout=60000)
    assert not failed, failed
    assert ended[0].how == "stopped" and (out / "resume.safetensors").is_file()
    steps = [m.step for m in rows]
    assert steps == list(range(1, len(steps) + 1))  # read incrementally, each row once


def test_a_child_run_that_fails_reports_its_own_error_line(qtbot, tmp_path, emoji_small):
    from desktop.jobs import torchrun

    out = tmp_path / "run"
    cmd = torchrun.torchrun_command(2, out, _small_npz(tmp_path, emoji_small), config={"steps": -1})
    run = torchrun.TorchrunRun(cmd, out, 1)
    failed = []
    run.failed.connect(failed.append)
    run.start()
    qtbot.waitUntil(lambda: bool(failed), timeout=60000)
    assert "steps must be from 1" in str(failed[0]) and "Traceback" not in str(failed[0])


def test_a_resume_the_user_allowed_past_a_divergence_passes_force_to_the_child(tmp_path):
    from desktop.jobs import torchrun

    cmd = torchrun.torchrun_command(2, tmp_path, "data.npz", total_steps=40, force=True)
    assert cmd[-4:] == ["--resume", "--steps", "40", "--force"]
    assert "--force" not in torchrun.torchrun_command(2, tmp_path, "data.npz")
