"""`bench busy`: training throughput when another program keeps one core busy, as the CLI trains.

    python main.py bench busy [--steps-per-round 10] [--rounds 5]

Our trainer (the Quick preset's network, n_feat 32, batch 100, fp32) is stepped the way `main.py train`
steps it -- with the core thread tuner (all cores vs one thread, re-timed every few hundred steps) --
first on the idle machine, then beside a second process that spins one torch thread on matrix
products (started and stopped by this benchmark), and, for comparison, beside it with the threads
fixed at one per core (no tuner: the old behaviour). Reported: images/s of each and the busy/idle
ratios. The target: the tuned run keeps >= 40% of its idle figure.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

from .common import Settings, log

SPIN = ("import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\n"
        "while True:\n    a = (a @ a).tanh()\n")


def start_spinner() -> subprocess.Popen:
    """A second process that keeps one core busy (one torch thread multiplying matrices); kill() it."""
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    time.sleep(2.0)  # let it start spinning
    return spinner


def bench_busy(s: Settings) -> dict:
    idle = _throughput(s, tuned=True)
    log(f"busy: idle {idle:.0f} img/s; starting the spinning process")
    spinner = start_spinner()
    try:
        tuned = _throughput(s, tuned=True)
        # Without the tuner a step beside the spinner is many times slower: a short window is enough.
        fixed = _throughput(replace(s, rounds=1, steps_per_round=3, warmup_steps=1), tuned=False)
    finally:
        spinner.kill()
        spinner.wait()
    return {"n_feat": 32, "batch": s.batch_size, "idle_img_s": idle, "busy_tuned_img_s": tuned,
            "busy_fixed_img_s": fixed, "tuned_ratio": tuned / idle, "fixed_ratio": fixed / idle,
            "target_met": tuned / idle >= 0.4}


def _throughput(s: Settings, *, tuned: bool) -> float:
    """Median images/s over `rounds` windows of steps, after the tuner's first trial has settled."""
    import torch

    from core.data import load_builtin
    from core.threads import configure_threads, tuned_threads
    from core.training import TrainConfig, Trainer

    n = configure_threads()
    ds = load_builtin("emoji16")
    if s.data_limit:
        ds = ds.subset(range(s.data_limit))
    cfg = TrainConfig(n_feat=32 if not s.data_limit else s.n_feat, steps=10**9, batch_size=s.batch_size,
                      precision="fp32", checkpoint_every=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(ds, cfg, tmp, device="cpu")
        # one trial at the start, as a run's first
        threads = tuned_threads(tr.device, every=10**6) if tuned else None
        it = tr.run()
        settle = (threads.tuner.warmup + 2 * threads.tuner.sample) if threads else s.warmup_steps
        for _ in range(settle):
            next(it)
            if threads:
                threads.tick()
        rates = []
        for _ in range(s.rounds):
            t0 = time.perf_counter()
            for _ in range(s.steps_per_round):
                next(it)
                if threads:
                    threads.tick()
            rates.append(s.steps_per_round * s.batch_size / (time.perf_counter() - t0))
        tr.close()
    torch.set_num_threads(n)
    return statistics.median(rates)
