"""`bench ddp`: one training process vs two under torchrun on this machine, and the BatchNorm choice.

    python main.py bench ddp [--rounds 5] [--steps-per-round 10] [--loss-steps 200]   (0: timing only)

Speed: the course network at batch 100 (the global batch), trained by 1 process with every core and
by 2 processes (torchrun gives each one thread), in alternated rounds of timed steps; the two-process
run also times steps under DDP's `no_sync()` (no gradient all-reduce), so the communication share of a
step is 1 - (step without the all-reduce) / (step with it). BatchNorm: the loss on a fixed held-out
set after --loss-steps steps (n_feat 32, the course's eps objective) of one process (seeds 0 and 1:
the seed-to-seed spread), and of two processes with per-rank and with global BatchNorm statistics.

Each measurement runs in its own `torchrun --standalone` launch of this module's worker.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import ROOT, RUN_RESULT, Settings, load_json, log

LOSS_N_FEAT = 32


def bench_ddp(s: Settings) -> dict:
    """s: the bench settings (n_feat, batch_size, rounds, steps_per_round, warmup_steps, loss_steps)."""
    timing = {}
    for world in (1, 2):
        log(f"ddp: timing {world} process(es)")
        timing[world] = _launch(world, "time", n_feat=s.n_feat, batch=s.batch_size, rounds=s.rounds,
                                steps=s.steps_per_round, warmup=s.warmup_steps)
    losses = []
    runs = ((1, "per_rank", 0), (1, "per_rank", 1), (2, "per_rank", 0), (2, "global", 0)) if s.loss_steps else ()
    for world, bn, seed in runs:  # --loss-steps 0: the timing alone
        log(f"ddp: loss after {s.loss_steps} steps, {world} process(es), batchnorm {bn}, seed {seed}")
        r = _launch(world, "loss", n_feat=LOSS_N_FEAT if not s.data_limit else s.n_feat, batch=s.batch_size,
                    steps=s.loss_steps, batchnorm=bn, seed=seed, eval_n=s.loss_eval_n)
        losses.append({"processes": world, "batchnorm": bn, "seed": seed, **r})
    one, two = timing[1], timing[2]
    return {"n_feat": s.n_feat, "batch": s.batch_size, "rounds": s.rounds, "steps_per_round": s.steps_per_round,
            "one_process_img_s": one["img_s"], "two_process_img_s": two["img_s"],
            "two_process_no_sync_img_s": two["no_sync_img_s"], "speedup": two["img_s"] / one["img_s"],
            "communication_share": 1 - two["img_s"] / two["no_sync_img_s"],
            "loss_steps": s.loss_steps, "loss_n_feat": LOSS_N_FEAT if not s.data_limit else s.n_feat, "losses": losses,
            "seed_gap": abs(losses[0]["eval_loss"] - losses[1]["eval_loss"]) if losses else None}


def _launch(world: int, mode: str, **opts) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
                "-m", "benchmarks.ddp", mode, "--out-json", str(result), "--folder", f"{tmp}/run"]
        args += [f"--{k.replace('_', '-')}={v}" for k, v in opts.items()]
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torchrun picks per process
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"torchrun {mode} with {world} process(es) failed: {done.stderr.strip()[-800:]}")
        return load_json(result, RUN_RESULT)


# --- the worker: one torchrun process ----------------------------------------------------------------

def _trainer(a, steps: int):
    from core.data import load_builtin
    from core.threads import configure_threads
    from core.training import TrainConfig, Trainer

    configure_threads()
    ds = load_builtin("emoji16")
    cfg = TrainConfig(n_feat=a.n_feat, steps=steps, batch_size=a.batch, precision="fp32", seed=a.seed,
                      batchnorm=a.batchnorm, checkpoint_every=10**9)
    return ds, Trainer(ds, cfg, a.folder, device="cpu")


def _time_steps(tr, k: int, *, sync: bool) -> float:
    """Seconds for k optimizer steps (with or without the gradient all-reduce), the same on every rank."""
    from contextlib import nullcontext

    import torch.distributed as dist

    ctx = nullcontext() if sync or tr.dist is None else tr.model.no_sync()
    if tr.dist:
        dist.barrier()
    t0 = time.perf_counter()
    with ctx:
        for _ in range(k):
            tr._train_step()
            tr.step += 1
    if tr.dist:
        dist.barrier()
    return time.perf_counter() - t0


def worker_time(a) -> dict:
    _, tr = _trainer(a, 10**9)
    _time_steps(tr, a.warmup, sync=True)
    sync, no_sync = [], []
    for _ in range(a.rounds):  # alternated, so a drift in machine load hits both alike
        sync.append(a.steps * a.batch / _time_steps(tr, a.steps, sync=True))
        if tr.dist:
            no_sync.append(a.steps * a.batch / _time_steps(tr, a.steps, sync=False))
    out = {"img_s": statistics.median(sync), "no_sync_img_s": statistics.median(no_sync) if no_sync else None,
           "threads": _threads()}
    tr.close()
    return out


def worker_loss(a) -> dict:
    from .train_speed import eval_loss, eval_set

    ds, tr = _trainer(a, a.steps)
    t0 = time.perf_counter()
    losses = [m.loss for m in tr.run()]
    out = {"train_loss_last50": statistics.fmean(losses[-50:]), "seconds": time.perf_counter() - t0}
    if tr.is_main:
        out["eval_loss"] = eval_loss(tr.net, eval_set(ds, a.eval_n, 500))
    tr.close()
    return out


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="one process of `bench ddp` (started by torchrun)")
    ap.add_argument("mode", choices=("time", "loss"))
    ap.add_argument("--out-json", required=True)
    ap.add_argument("--folder", required=True)
    for name, default in (("n-feat", 64), ("batch", 100), ("rounds", 5), ("steps", 10), ("warmup", 3), ("seed", 0),
                          ("eval-n", 1000)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--batchnorm", default="per_rank")
    a = ap.parse_args(argv)
    out = worker_time(a) if a.mode == "time" else worker_loss(a)
    if os.environ.get("RANK", "0") == "0":
        Path(a.out_json).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
