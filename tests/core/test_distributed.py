"""Training with several processes (torchrun's interface, gloo on the CPU): two ranks, tiny model, few steps."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core import distributed
from core.errors import UserError
from core.training import LOG_FILE, MODEL_FILE, RESUME_FILE, TRAIN_PRESETS, Trainer, read_loss_log

ROOT = Path(__file__).resolve().parents[2]
RANK_SCRIPT = Path(__file__).resolve().parents[1] / "ddp_rank.py"  # the shared helper in tests/


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, world: int, port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port), OMP_NUM_THREADS="1", DIFFUSION_DESK_DIST_TIMEOUT="60")
    return env


def _run_ranks(args_of_rank, world: int = 2) -> None:
    """Start ranks 0..world-1 as torchrun would (its variables, one port) and wait for all to succeed."""
    port = _free_port()
    procs = [subprocess.Popen(args_of_rank(r), cwd=ROOT, env=_rank_env(r, world, port), stderr=subprocess.PIPE,
                              text=True) for r in range(world)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]


def _train(tmp_path, out, steps, stop_at, tag, *flags):
    results = [tmp_path / f"{tag}-{r}.json" for r in range(2)]
    _run_ranks(lambda r: [sys.executable, str(RANK_SCRIPT), "train", str(out), str(steps), str(stop_at),
                          str(results[r]), *flags])
    return [json.loads(r.read_text()) for r in results]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """An uninterrupted two-rank run of 8 steps: (folder, rank results)."""
    tmp = tmp_path_factory.mktemp("ddp")
    return tmp / "whole", _train(tmp, tmp / "whole", 8, 0, "w")


@pytest.mark.slow
def test_two_ranks_train_one_model_and_log_the_mean_of_their_losses(whole_run):
    out, (r0, r1) = whole_run
    assert r0["weights"] == r1["weights"]  # DDP keeps the replicas identical
    assert r0["logged"] == r1["logged"] and len(r0["logged"]) == 8
    assert r0["own"] != r1["own"]  # each rank trained on its own slice with its own noise
    np.testing.assert_allclose(r0["logged"], (np.array(r0["own"]) + np.array(r1["own"])) / 2, rtol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == sorted([LOG_FILE, MODEL_FILE, RESUME_FILE])
    log = read_loss_log(out / LOG_FILE)
    assert log["step"].tolist() == list(range(1, 9))  # one writer: each step once
    np.testing.assert_allclose(log["loss"], r0["logged"], atol=1e-6)


@pytest.mark.slow
def test_a_two_rank_run_stopped_and_resumed_with_two_ranks_follows_the_same_curve(tmp_path, whole_run):
    whole_dir, (whole, _) = whole_run
    first = _train(tmp_path, tmp_path / "split", 8, 4, "s1")[0]
    assert first["step"] == 4  # the stop request ended both ranks at the same step
    second = _train(tmp_path, tmp_path / "split", 8, 0, "s2", "resume")
    assert second[0]["weights"] == second[1]["weights"]
    assert not any("differ" in n for n in second[0]["notes"])
    np.testing.assert_allclose(first["logged"] + second[0]["logged"], whole["logged"], rtol=1e-6)
    np.testing.assert_allclose(read_loss_log(tmp_path / "split" / LOG_FILE)["loss"],
                               read_loss_log(whole_dir / LOG_FILE)["loss"], atol=2e-6)
    # One process continues the two-process run: weights, EMA and optimizer carry over, and it says the
    # random draws differ from an uninterrupted run.
    sys.path.insert(0, str(RANK_SCRIPT.parent))
    from ddp_rank import small_set

    tr = Trainer.from_run(small_set(), tmp_path / "split", device="cpu", steps=10)
    assert tr.step == 8 and any("saved with 2 training process(es) and continues with 1" in n for n in tr.notes)
    assert [m.step for m in tr.run()] == [9, 10]
    tr.close()


@pytest.mark.slow
def test_global_batchnorm_over_two_ranks_equals_batchnorm_of_the_whole_batch(tmp_path):
    results = [tmp_path / f"bn-{r}.json" for r in range(2)]
    _run_ranks(lambda r: [sys.executable, str(RANK_SCRIPT), "batchnorm", str(results[r])])
    got = [json.loads(r.read_text()) for r in results]
    x = (torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 + 1).requires_grad_(True)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 0.3]))
    y = bn(x)
    weight = torch.arange(y[:4].numel(), dtype=torch.float32).view_as(y[:4]).sin()
    (y * torch.cat([weight, weight])).sum().backward()  # each rank weighted its half the same way
    np.testing.assert_allclose(np.concatenate([got[0]["y"], got[1]["y"]]), y.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(np.concatenate([got[0]["grad"], got[1]["grad"]]), x.grad.numpy(), atol=1e-5)
    for g in got:
        np.testing.assert_allclose(g["running_mean"], bn.running_mean.numpy(), atol=1e-6)
        np.testing.assert_allclose(g["running_var"], bn.running_var.numpy(), atol=1e-5)


@pytest.mark.slow
def test_torchrun_starts_one_run_that_reports_once(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "main.py", "train", "--preset", "tiny", "--steps", "4", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("training on") == 1 and "2 processes of 8" in r.stdout
    assert r.stdout.count("done: 4 steps") == 1
    assert read_loss_log(out / LOG_FILE)["step"].tolist() == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_rank_that_dies_stops_the_other_with_a_clear_error(tmp_path):
    port = _free_port()
    args = [sys.executable, "main.py", "train", "--preset", "tiny", "--steps", "100000", "--out", str(tmp_path / "run")]
    envs = [_rank_env(r, 2, port) for r in range(2)]
    for e in envs:
        e["DIFFUSION_DESK_DIST_TIMEOUT"] = "30"  # a hang would end here at the latest
    rank0 = subprocess.Popen(args, cwd=ROOT, env=envs[0], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rank1 = subprocess.Popen(args, cwd=ROOT, env=envs[1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert rank0.stdout.readline().startswith("training on")
        assert rank0.stdout.readline().startswith("step 1/")
        rank1.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        _, err = rank0.communicate(timeout=60)
        assert time.monotonic() - t0 < 45
    finally:
        for p in (rank0, rank1):
            if p.poll() is None:
                p.kill()
    assert rank0.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "lost contact with the other training processes" in lines[0] and "Traceback" not in err


def test_from_env_reads_torchruns_variables_and_says_what_is_wrong():
    assert distributed.from_env({}) is None
    assert distributed.from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None  # one process: as without torchrun
    ctx = distributed.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.is_main) == (3, 1, 4, False)
    with pytest.raises(UserError, match="RANK=4, WORLD_SIZE=4"):
        distributed.from_env({"WORLD_SIZE": "4", "RANK": "4"})
    with pytest.raises(UserError, match="WORLD_SIZE='two'"):
        distributed.from_env({"WORLD_SIZE": "two", "RANK": "0"})


def test_a_batch_that_does_not_divide_among_the_processes_is_refused_before_any_work(tmp_path, monkeypatch):
    sys.path.insert(0, str(RANK_SCRIPT.parent))
    from ddp_rank import small_set

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="batch size 16 does not divide among the 3 training processes"):
        Trainer(small_set(), TRAIN_PRESETS["tiny"], tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()
