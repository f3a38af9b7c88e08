"""`bench train`: training images/s of the course network, the course's code path against our Trainer
in fp32 and (where the CPU has fast bf16) bf16, and the held-out loss after equal steps in each precision.

    python main.py bench train [--rounds 5] [--steps-per-round 10] [--loss-steps 200]

The contestants alternate, in a rotating order, over rounds of timed steps after a warm-up, so a drift
in machine load hits them alike. The loss check trains our Trainer from seeds 0 and 1 in each precision:
the bf16-vs-fp32 gap is read against the seed-to-seed spread.
"""
from __future__ import annotations

import statistics
import tempfile
import time

from .common import Settings, forward_flops, log


def emoji(s: Settings):
    """emoji16, cut to s.data_limit images for the smoke-test settings."""
    from core.data import load_builtin

    ds = load_builtin("emoji16")
    return ds.subset(range(s.data_limit)) if s.data_limit else ds


class _CourseTraining:
    name = "course"

    def __init__(self, ds, s: Settings, seed: int = 0):
        from .course_baseline import CourseDiffusion

        self.cd = CourseDiffusion(n_feat=s.n_feat, n_cfeat=ds.n_labels, height=ds.size, seed=seed)
        self.steps = self.cd.train_steps(self.cd.make_dataloader(ds.images, ds.labels, s.batch_size))

    def step(self) -> float:
        return next(self.steps).item()


class _OurTraining:
    def __init__(self, ds, s: Settings, precision: str, folder: str, *, seed: int = 0, steps: int = 10**9):
        import torch
        from core.training import TrainConfig, Trainer

        self.name = f"ours {precision}"
        torch.manual_seed(seed)  # the Trainer's initial weights come from torch's global generator
        cfg = TrainConfig(n_feat=s.n_feat, steps=steps, batch_size=s.batch_size, precision=precision, seed=seed,
                          checkpoint_every=10**9)
        self.trainer = Trainer(ds, cfg, folder, device="cpu")
        self.steps = self.trainer.run()

    def step(self) -> float:
        return next(self.steps).loss


def _timed(runner, k: int, batch: int) -> float:
    """Images per second over k steps of a contestant."""
    t0 = time.perf_counter()
    for _ in range(k):
        runner.step()
    return k * batch / (time.perf_counter() - t0)


def bench_train(s: Settings, peak: dict | None = None) -> dict:
    from core.device import cpu_has_fast_bf16
    from core.unet import ContextUnet, UNetConfig, count_parameters

    ds = emoji(s)
    precisions = ["fp32"] + (["bf16"] if cpu_has_fast_bf16() else [])
    net = ContextUnet(UNetConfig(n_feat=s.n_feat, n_cfeat=ds.n_labels, height=ds.size))
    flops_img = forward_flops(net, 8, ds.n_labels, ds.size, backward=True) / 8
    with tempfile.TemporaryDirectory() as tmp:
        runners = [_CourseTraining(ds, s)] + [_OurTraining(ds, s, p, f"{tmp}/{p}") for p in precisions]
        for r in runners:
            for _ in range(s.warmup_steps):
                r.step()
        ips = {r.name: [] for r in runners}
        for rnd in range(s.rounds):
            for r in runners[rnd % len(runners):] + runners[:rnd % len(runners)]:  # rotate the order
                ips[r.name].append(_timed(r, s.steps_per_round, s.batch_size))
            log(f"train: round {rnd + 1}/{s.rounds}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in ips.items()) + " img/s")
        del runners
    throughput = {}
    for name, v in ips.items():
        med = statistics.median(v)
        prec = "bf16" if "bf16" in name else "fp32"
        pk = (peak or {}).get(prec, {}).get("gflops")
        throughput[name] = {"name": name, "median_ips": med, "min_ips": min(v), "max_ips": max(v), "rounds": v,
                            "peak_fraction": med * flops_img / 1e9 / pk if pk else None}
    for r in throughput.values():
        r["ratio_vs_course"] = r["median_ips"] / throughput["course"]["median_ips"]
    return {"n_feat": s.n_feat, "n_params": count_parameters(net), "batch_size": s.batch_size, "rounds": s.rounds,
            "steps_per_round": s.steps_per_round, "gflop_per_image": flops_img / 1e9, "throughput": throughput,
            "loss_check": loss_check(ds, s, precisions), "dataset": f"{ds.name} ({ds.n} images)"}


# --- the held-out loss (also `bench ddp`'s) -------------------------------------------------------------

def eval_set(ds, n: int, T: int, seed: int = 1234):
    """A fixed set of (x_t, t/T, c, noise) to measure the noise-prediction loss of final weights."""
    import torch
    from core.schedule import Schedule

    g = torch.Generator().manual_seed(seed)
    x0 = ds.to_tensor()
    idx = torch.randint(0, len(x0), (n,), generator=g)
    t = torch.randint(1, T + 1, (n,), generator=g)
    noise = torch.randn(x0[idx].shape, generator=g)
    ab = Schedule().ab_t.float()[t].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0[idx] + (1 - ab).sqrt() * noise
    c = torch.as_tensor(ds.labels[idx.numpy()])
    return x_t, t.float() / T, c, noise


def eval_loss(net, eval_set, batch: int = 250) -> float:
    """The mean squared noise-prediction error of `net` on an eval_set()."""
    import torch

    x_t, tf, c, noise = eval_set
    net.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x_t), batch):
            sl = slice(i, i + batch)
            total += float((net(x_t[sl], tf[sl], c[sl]) - noise[sl]).pow(2).sum())
    return total / noise.numel()


def loss_check(ds, s: Settings, precisions: list[str]) -> dict:
    """Our trainer for loss_steps steps from seeds 0 and 1 in each precision; final held-out loss."""
    held_out = eval_set(ds, s.loss_eval_n, 500)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (0, 1):
            for p in precisions:
                run = _OurTraining(ds, s, p, f"{tmp}/{p}{seed}", seed=seed, steps=s.loss_steps)
                t0 = time.perf_counter()
                losses = [m.loss for m in run.steps]
                runs.append({"precision": p, "seed": seed, "eval_loss": eval_loss(run.trainer.net, held_out),
                             "train_loss_last50": statistics.fmean(losses[-50:]), "seconds": time.perf_counter() - t0})
                log(f"train: loss check {p} seed {seed}: held-out loss {runs[-1]['eval_loss']:.5f}")
    by = {(r["precision"], r["seed"]): r["eval_loss"] for r in runs}
    seed_gap = statistics.fmean(abs(by[(p, 0)] - by[(p, 1)]) for p in precisions)
    prec_gap = (statistics.fmean(by[("bf16", k)] - by[("fp32", k)] for k in (0, 1)) if "bf16" in precisions else 0.0)
    return {"steps": s.loss_steps, "eval_n": s.loss_eval_n, "runs": runs, "seed_gap": seed_gap,
            "precision_gap": prec_gap, "within_noise": abs(prec_gap) <= max(seed_gap, 1e-12)}
