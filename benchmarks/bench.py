"""`python main.py bench {train,sample,quality,peak,all,report}`: our code against the course's, side by side.

    bench peak                       matmul GFLOP/s, fp32 and bf16: the ceiling
    bench train   [--rounds 5]       images/s of the course network at batch 100: course vs ours fp32 / bf16,
                                     plus the loss after equal steps in fp32 and bf16
    bench sample  [--rounds 3]       32 images: course DDPM-500 / DDIM-25 loops vs our samplers
    bench quality [--checkpoint C] [--samplers ddpm:500,ddim:25,...] [--n 1000] [--seeds 3]
                                     feature-FID and label accuracy per sampler, seconds, a plot
    bench all --report               everything, then docs/bench_results.json, PNGs and docs/benchmarks.md
    bench report                     rebuild docs/benchmarks.md from docs/bench_results.json

Every sub-benchmark prints its table; --json merges its section into a JSON file. Torch loads lazily.
A sampler entry is name:steps with optional modifiers, e.g. `ddim:25+eta=1`, `dpmpp2m:10+clip`, `ddim:25+g=2`.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import report

ROOT = Path(__file__).resolve().parent.parent
WHATS = ("train", "sample", "quality", "peak", "ddp", "busy", "all", "report")
# The list, then what the investigation found (stochastic DDIM; guidance 2, with DDPM-500 at the same
# guidance for a like-for-like comparison).
QUALITY_LIST = ("ddpm:500,ddim:50,ddim:25,ddim:10,dpmpp2m:20,dpmpp2m:10,"
                "ddim:50+eta=1,ddim:20+eta=1,dpmpp2m:10+g=2,ddim:10+g=2+eta=1,ddpm:500+g=2")
SAMPLE_LIST = "ddpm:500,ddim:25,ddim:10,dpmpp2m:20,dpmpp2m:10"
REGENERATE = "python main.py bench all --report"


class BenchError(Exception):
    """A problem to report in one line (bad checkpoint, bad sampler list, missing classifier...)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the bench options on the `bench` sub-parser (called by cli.py)."""
    parser.add_argument("what", choices=WHATS, help="which benchmark: " + ", ".join(WHATS))
    parser.add_argument("--json", metavar="OUT.json", help="merge the results into this JSON file")
    parser.add_argument("--report", action="store_true",
                        help="write docs/bench_results.json, the PNGs and docs/benchmarks.md")
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="folder for --report output (default docs/)")
    parser.add_argument("--rounds", type=int, default=None, help="alternated timing rounds (train 5, sample 3)")
    parser.add_argument("--steps-per-round", type=int, default=10, help="training steps timed per round")
    parser.add_argument("--loss-steps", type=int, default=200, help="steps of the fp32-vs-bf16 loss check")
    parser.add_argument("--checkpoint", help="model for `quality` (default: the shipped default model)")
    parser.add_argument("--samplers", default=QUALITY_LIST, help=f"quality entries (default {QUALITY_LIST})")
    parser.add_argument("--sample-list", default=SAMPLE_LIST, help=f"our entries in `sample` (default {SAMPLE_LIST})")
    parser.add_argument("--n", type=int, default=1000, help="generated images per quality figure (default 1000)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per quality figure, for the spread (default 3)")
    parser.add_argument("--precision", default="auto", help="quality: auto, fp32 or bf16 (default auto)")
    parser.add_argument("--guidance", type=float, default=1.0, help="quality: classifier-free guidance (default 1)")
    parser.add_argument("--retime", action="store_true",
                        help="quality: re-measure only the seconds of the entries already in --json (keeps the FIDs)")
    parser.add_argument("--add", action="store_true",
                        help="quality: add the --samplers entries to the results already in --json (same model, n, seeds)")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke test, not a measurement")
    parser.add_argument("--compile", action="store_true",
                        help="sample: also time each of our entries through torch.compile (fp32; compiled in an "
                             "untimed warm-up; eager where no compiler is installed)")


@dataclass(frozen=True)
class Settings:
    n_feat: int = 64  # the course network
    batch_size: int = 100
    rounds: int = 5
    sample_rounds: int = 3
    ddpm_rounds: int = 1
    steps_per_round: int = 10
    warmup_steps: int = 3
    loss_steps: int = 200
    loss_eval_n: int = 1000
    data_limit: int | None = None
    sample_n: int = 32
    sample_list: str = SAMPLE_LIST
    course_ddim_n: int = 25
    course_ddpm: bool = True
    peak_size: int = 2048
    quality_list: str = QUALITY_LIST
    quality_n: int = 1000
    quality_seeds: int = 3
    quality_batch: int = 500
    precision: str = "auto"
    precision_resolved: str = "fp32"  # what "auto" became on this machine (set by the quality bench)
    guidance: float = 1.0
    checkpoint: str | None = None
    grid_per_label: int = 8
    compile: bool = False  # sample: also time our entries through torch.compile


QUICK = dict(n_feat=8, batch_size=8, rounds=2, sample_rounds=1, steps_per_round=2, warmup_steps=1, loss_steps=3,
             loss_eval_n=16, data_limit=120, sample_n=4, sample_list="ddim:4,dpmpp2m:3", course_ddim_n=5,
             course_ddpm=False, peak_size=128, quality_list="ddim:4,dpmpp2m:3", quality_n=40, quality_seeds=2,
             quality_batch=40, grid_per_label=2)


def settings_from_args(args) -> Settings:
    s = Settings(steps_per_round=args.steps_per_round, loss_steps=args.loss_steps, quality_list=args.samplers,
                 sample_list=args.sample_list, quality_n=args.n, quality_seeds=args.seeds,
                 precision=args.precision, guidance=args.guidance, checkpoint=args.checkpoint,
                 compile=getattr(args, "compile", False))
    if args.rounds:
        s = replace(s, rounds=args.rounds, sample_rounds=args.rounds)
    if args.quick:
        keep = {k: getattr(s, k) for k in ("checkpoint", "precision", "guidance")}
        if args.samplers != QUALITY_LIST:  # an explicit list wins over the quick default
            keep["quality_list"] = args.samplers
        s = replace(s, **{**QUICK, **keep})
    return s


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- machine and peak ------------------------------------------------------------------------------------

def machine_info() -> dict:
    import torch
    from core.device import cpu_has_fast_bf16

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "bf16": cpu_has_fast_bf16(), "python": platform.python_version(), "platform": platform.platform(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def bench_peak(s: Settings) -> dict:
    """Best GFLOP/s of square matmuls (a few sizes, best of several runs), fp32 and bf16 (where native)."""
    import torch
    from core.device import cpu_has_fast_bf16

    sizes = [s.peak_size // 2, s.peak_size, s.peak_size * 3 // 2]
    out = {"size": "/".join(map(str, sizes))}
    dtypes = [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] if cpu_has_fast_bf16() else [])
    for name, dt in dtypes:
        best = {"gflops": 0.0}
        for n in sizes:
            a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
            torch.mm(a, b)  # warm-up: library dispatch, page faults
            for _ in range(6 if n >= 1024 else 20):
                t0 = time.perf_counter()
                torch.mm(a, b)
                g = 2 * n**3 / (time.perf_counter() - t0) / 1e9
                if g > best["gflops"]:
                    best = {"gflops": g, "size": n}
        out[name] = best
        log(f"peak: {name} {best['gflops']:.0f} GFLOP/s (n={best['size']})")
    return out


MACHINE_KEYS = ("cpu", "cores", "bf16")  # what makes two runs "the same machine" for this page


def machine_stamp(m: dict | None = None) -> dict:
    """Which machine, and when, a section was measured on (kept in the section: sections are re-run alone)."""
    m = m or machine_info()
    return {k: m[k] for k in (*MACHINE_KEYS, "date")}


def peak_here(results: dict) -> dict | None:
    """The stored matmul peak if it was measured on this machine (same CPU, cores and bf16 support), else
    None: a percentage of another machine's peak means nothing (sections are re-run one at a time)."""
    peak = results.get("peak")
    if not peak:
        return None
    here, there = results.get("machine") or machine_info(), peak.get("machine", {})
    same = all(here.get(k) == there.get(k) for k in MACHINE_KEYS)
    if not same:
        log("peak: the stored matmul peak is from another machine; run `bench peak` here for % of peak")
    return peak if same else None


def forward_flops(net, batch: int, n_cfeat: int, height: int, *, backward: bool = False) -> float:
    """FLOPs of one forward (and backward) pass of a ContextUnet-like net at `batch`, by torch's counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch, 3, height, height)
    t = torch.rand(batch)
    c = torch.zeros(batch, n_cfeat)
    with FlopCounterMode(display=False) as counter:
        if backward:
            net(x, t, c).pow(2).mean().backward()
        else:
            with torch.no_grad():
                net(x, t, c)
    net.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


# --- train ---------------------------------------------------------------------------------------------

def _emoji(s: Settings):
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
        from core.train import TrainConfig, Trainer

        self.name = f"ours {precision}"
        torch.manual_seed(seed)  # the Trainer's initial weights come from torch's global generator
        cfg = TrainConfig(n_feat=s.n_feat, steps=steps, batch_size=s.batch_size, precision=precision, seed=seed,
                          checkpoint_every=10**9)
        self.trainer = Trainer(ds, cfg, folder, device="cpu")
        self.steps = self.trainer.run()

    def step(self) -> float:
        return next(self.steps).loss


def _timed(runner, k: int, batch: int) -> float:
    t0 = time.perf_counter()
    for _ in range(k):
        runner.step()
    return k * batch / (time.perf_counter() - t0)


def bench_train(s: Settings, peak: dict | None = None) -> dict:
    from core.device import cpu_has_fast_bf16
    from core.unet import ContextUnet, UNetConfig, count_parameters

    ds = _emoji(s)
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


def _eval_set(ds, n: int, T: int, seed: int = 1234):
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


def _eval_loss(net, eval_set, batch: int = 250) -> float:
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
    eval_set = _eval_set(ds, s.loss_eval_n, 500)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (0, 1):
            for p in precisions:
                run = _OurTraining(ds, s, p, f"{tmp}/{p}{seed}", seed=seed, steps=s.loss_steps)
                t0 = time.perf_counter()
                losses = [m.loss for m in run.steps]
                runs.append({"precision": p, "seed": seed, "eval_loss": _eval_loss(run.trainer.net, eval_set),
                             "train_loss_last50": statistics.fmean(losses[-50:]), "seconds": time.perf_counter() - t0})
                log(f"train: loss check {p} seed {seed}: held-out loss {runs[-1]['eval_loss']:.5f}")
    by = {(r["precision"], r["seed"]): r["eval_loss"] for r in runs}
    seed_gap = statistics.fmean(abs(by[(p, 0)] - by[(p, 1)]) for p in precisions)
    prec_gap = (statistics.fmean(by[("bf16", k)] - by[("fp32", k)] for k in (0, 1)) if "bf16" in precisions else 0.0)
    return {"steps": s.loss_steps, "eval_n": s.loss_eval_n, "runs": runs, "seed_gap": seed_gap,
            "precision_gap": prec_gap, "within_noise": abs(prec_gap) <= max(seed_gap, 1e-12)}


# --- sample --------------------------------------------------------------------------------------------

def parse_entries(text: str) -> list[dict]:
    """'ddim:25+eta=1,dpmpp2m:10+clip+sp=karras' -> [{'entry', 'sampler', 'steps', 'eta', 'clip_x0', 'guidance',
    'spacing', 'rescale', 'interval'}]. Modifiers: clip, eta=X, g=X (guidance), sp=trailing|logsnr|karras,
    r=X (CFG rescale phi), gi=LO-HI (guidance interval in t/T)."""
    from core.catalog import SPACINGS
    from core.samplers import SAMPLERS

    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        head, *mods = item.split("+")
        name, _, steps = head.partition(":")
        if name not in SAMPLERS:
            raise BenchError(f"{item}: unknown sampler {name!r} (choose {', '.join(SAMPLERS)})")
        try:
            e = {"entry": item, "sampler": name, "steps": int(steps) if steps else SAMPLERS[name].default_steps,
                 "eta": 0.0, "clip_x0": False, "guidance": None, "spacing": "trailing", "rescale": 0.0,
                 "interval": [0.0, 1.0]}
            for m in mods:
                key, _, val = m.partition("=")
                if key == "clip":
                    e["clip_x0"] = True
                elif key in ("eta", "g", "r"):
                    e[{"eta": "eta", "g": "guidance", "r": "rescale"}[key]] = float(val)
                elif key == "sp" and val in SPACINGS:
                    e["spacing"] = val
                elif key == "gi":
                    e["interval"] = [float(v) for v in val.split("-")]
                else:
                    raise ValueError(f"unknown modifier {m!r} (use clip, eta=X, g=X, sp={'|'.join(SPACINGS)}, "
                                     "r=X or gi=LO-HI)")
        except ValueError as err:
            raise BenchError(f"{item}: {err}") from None
        if not 1 <= e["steps"] <= 500:
            raise BenchError(f"{item}: steps must be between 1 and 500")
        out.append(e)
    if not out:
        raise BenchError("the sampler list is empty")
    return out


def _one_hot_rows(n: int, n_labels: int):
    import torch

    return torch.eye(n_labels)[torch.arange(n) % n_labels]


def bench_sample(s: Settings, peak: dict | None = None) -> dict:
    import torch
    from core.device import cpu_has_fast_bf16, to_fast_layout
    from core.samplers import SAMPLERS, generate
    from core.schedule import Schedule
    from core.unet import ContextUnet, UNetConfig

    from .course_baseline import CourseDiffusion

    n_labels, n = 6, s.sample_n
    course = CourseDiffusion(n_feat=s.n_feat, n_cfeat=n_labels, height=16, seed=0)
    course.nn_model.eval()
    torch.manual_seed(0)
    # In the convolutions' preferred layout, as load_checkpoint and the Trainer hand the app its networks
    # (a plain NCHW net with channels_last inputs measured ~11% slower per call: not what users run).
    ours = to_fast_layout(ContextUnet(UNetConfig(n_feat=s.n_feat, n_cfeat=n_labels, height=16))).eval()
    schedule = Schedule()
    ctx = _one_hot_rows(n, n_labels)
    flops_img = forward_flops(ours, 8, n_labels, 16) / 8
    precisions = ["fp32"] + (["bf16"] if cpu_has_fast_bf16() else [])

    def course_ddpm():
        course.sample_ddpm_context(n, ctx)
        return 500

    def course_ddim():
        course.sample_ddim_context(n, ctx, n=s.course_ddim_n)
        return course.ddim_calls(s.course_ddim_n)

    def ours_fn(e, p, compile=False, steps=None):
        return lambda: generate(ours, schedule, sampler=e["sampler"], steps=steps or e["steps"], n=n,
                                context=ctx.numpy(), seed=0, precision=p, eta=e["eta"], clip_x0=e["clip_x0"],
                                compile=compile).nfe

    jobs = ([("course", "DDPM-500", "fp32", course_ddpm, True)] if s.course_ddpm else [])
    jobs.append(("course", f"DDIM-{s.course_ddim_n}", "fp32", course_ddim, False))
    for p in precisions:
        for e in parse_entries(s.sample_list):
            label = f"{SAMPLERS[e['sampler']].label}-{e['steps']}" + "".join("+" + m for m in e["entry"].split("+")[1:])
            jobs.append(("ours", label, p, ours_fn(e, p), e["steps"] >= 100))
            if s.compile and p == "fp32":
                ours_fn(e, p, compile=True, steps=2)()  # compiles for this batch size, untimed
                jobs.append(("ours", label, "fp32 compiled", ours_fn(e, p, compile=True), e["steps"] >= 100))
    times: dict[int, list[float]] = {i: [] for i in range(len(jobs))}
    calls: dict[int, int] = {}
    for j, job in enumerate(jobs):  # one untimed warm-up call each (a few steps are enough)
        if not job[4]:
            job[3]()
    for rnd in range(s.sample_rounds):
        order = list(range(len(jobs)))
        order = order[rnd % len(order):] + order[:rnd % len(order)]
        for j in order:
            who, label, p, fn, long = jobs[j]
            if long and rnd >= s.ddpm_rounds:
                continue
            t0 = time.perf_counter()
            calls[j] = fn()
            times[j].append(time.perf_counter() - t0)
            log(f"sample: round {rnd + 1}: {who} {label} {p}: {times[j][-1]:.2f} s")
    results = []
    for j, (who, label, p, _, _) in enumerate(jobs):
        sec = statistics.median(times[j])
        ms = 1000 * sec / calls[j]
        pk = (peak or {}).get(p.split()[0], {}).get("gflops")
        results.append({"who": who, "sampler_label": label, "precision": p, "calls": calls[j], "seconds": sec,
                        "all_seconds": times[j], "ms_per_call": ms,
                        "peak_fraction": flops_img * n / (ms / 1000) / 1e9 / pk if pk else None})
    course_ddpm_row = results[0] if s.course_ddpm else None
    course_call_ms = (course_ddpm_row or results[0])["ms_per_call"]
    for r in results:
        r["per_call_speedup"] = course_call_ms / r["ms_per_call"]
        if course_ddpm_row:
            r["speedup_vs_course_ddpm"] = course_ddpm_row["seconds"] / r["seconds"]
    best = max((r for r in results if r["who"] == "ours"), key=lambda r: r["per_call_speedup"])
    return {"n": n, "n_feat": s.n_feat, "rounds": s.sample_rounds, "ddpm_rounds": s.ddpm_rounds,
            "gflop_per_image_call": flops_img / 1e9, "results": results,
            "course_ddpm_seconds": course_ddpm_row["seconds"] if course_ddpm_row else None,
            "best_per_call_speedup": {"value": best["per_call_speedup"],
                                      "what": f"{best['sampler_label']} {best['precision']}"}}


# --- quality ---------------------------------------------------------------------------------------------

def _checkpoint_path(s: Settings) -> Path:
    from core.paths import default_checkpoint

    if s.checkpoint:
        return Path(s.checkpoint)
    path = default_checkpoint()
    if path is None:
        raise BenchError("no default model (checkpoints/default.safetensors) in this build; pass --checkpoint")
    return path


def _generate_set(bundle, e: dict, targets, seed: int, s: Settings):
    """len(targets) images conditioned on one-hot targets, in batches; deterministic from seed."""
    import numpy as np
    from core.samplers import generate
    from core.schedule import Schedule

    schedule, L = Schedule(bundle.schedule_config), len(bundle.label_names)
    eye = np.eye(L, dtype=np.float32)
    out, seconds = [], 0.0
    for k, start in enumerate(range(0, len(targets), s.quality_batch)):
        ctx = eye[targets[start:start + s.quality_batch]]
        res = generate(bundle.net, schedule, sampler=e["sampler"], steps=e["steps"], n=len(ctx), context=ctx,
                       seed=seed * 1000 + k, precision=s.precision_resolved, eta=e["eta"], clip_x0=e["clip_x0"],
                       guidance=e["guidance"] if e["guidance"] is not None else s.guidance, **_solver_options(e))
        out.append(res.images)
        seconds += res.seconds
    return np.concatenate(out), res.nfe, seconds


def _solver_options(e: dict) -> dict:
    """Spacing and guidance options of an entry (older result files lack them: today's defaults)."""
    return {"spacing": e.get("spacing", "trailing"), "guidance_rescale": e.get("rescale", 0.0),
            "guidance_interval": tuple(e.get("interval", (0.0, 1.0)))}


def _time_32(bundle, e: dict, s: Settings, repeats: int) -> float:
    import numpy as np
    from core.samplers import generate
    from core.schedule import Schedule

    L = len(bundle.label_names)
    ctx = np.eye(L, dtype=np.float32)[np.arange(32) % L]
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        generate(bundle.net, Schedule(bundle.schedule_config), sampler=e["sampler"], steps=e["steps"], n=32,
                 context=ctx, seed=r, precision=s.precision_resolved, eta=e["eta"], clip_x0=e["clip_x0"],
                 guidance=e["guidance"] if e["guidance"] is not None else s.guidance, **_solver_options(e))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _sd(v: list[float]) -> float | None:
    return statistics.stdev(v) if len(v) > 1 else None


def bench_quality(s: Settings, course_ddpm_seconds: float | None = None) -> dict:
    """Feature-FID, label accuracy and seconds for each entry of s.quality_list, plus the real-vs-real floor."""
    import torch
    from core import metrics
    from core.checkpoint import load_checkpoint
    from core.device import resolve_precision

    path = _checkpoint_path(s)
    bundle = load_checkpoint(path, "cpu")
    s = replace(s, precision_resolved=resolve_precision(s.precision, torch.device("cpu")))
    clf = metrics.load_classifier()
    ds = _emoji(replace(s, data_limit=None))
    if bundle.label_names != clf.label_names or bundle.net.config.height != ds.size:
        raise BenchError(f"{path}: the quality bench needs a model trained on emoji16 (labels {clf.label_names}); "
                         f"this one has {bundle.label_names} at {bundle.net.config.height} px")
    entries = parse_entries(s.quality_list)
    ref_stats = metrics.feature_stats(metrics.features(ds, clf))
    floors = [metrics.real_vs_real_fid(ds, clf, seed, n=s.quality_n) for seed in range(s.quality_seeds)]
    log(f"quality: real-vs-real floor at n={s.quality_n}: {statistics.fmean(floors):.3f}")
    results = []
    for e in entries:
        fids, accs, gen_seconds = [], [], 0.0
        for seed in range(s.quality_seeds):
            targets = metrics.reference_targets(ds, s.quality_n, seed)
            images, nfe, sec = _generate_set(bundle, e, targets, seed, s)
            fids.append(metrics.frechet_distance(*metrics.feature_stats(metrics.features(images, clf)), *ref_stats))
            accs.append(metrics.label_accuracy(images, targets, clf))
            gen_seconds += sec
            log(f"quality: {e['entry']} seed {seed}: FID {fids[-1]:.3f}, accuracy {accs[-1]:.3f} ({sec:.0f} s)")
        sec32 = _time_32(bundle, e, s, 1 if e["steps"] >= 100 else 3)
        results.append({**e, "nfe": nfe, "fid": fids, "fid_mean": statistics.fmean(fids), "fid_sd": _sd(fids),
                        "accuracy": accs, "accuracy_mean": statistics.fmean(accs), "accuracy_sd": _sd(accs),
                        "seconds_32": sec32, "generation_seconds": gen_seconds})
    out = {"checkpoint": _rel(path), "model": bundle.description, "precision": s.precision_resolved,
           "guidance": s.guidance, "n": s.quality_n, "n_seeds": s.quality_seeds, "n_reference": ds.n,
           "results": results, "floor": {"values": floors, "mean": statistics.fmean(floors), "sd": _sd(floors)},
           "real_accuracy": metrics.label_accuracy(ds.images, ds.labels.argmax(1), clf),
           "classifier": _classifier_info(clf)}
    _judge(out, course_ddpm_seconds)
    return out


def retime_quality(q: dict, s: Settings) -> None:
    """Re-measure seconds for 32 images of every quality entry (timings suffer when the machine is busy)."""
    import torch
    from core.device import resolve_precision

    bundle = _load_model(q)
    s = replace(s, precision_resolved=resolve_precision(q["precision"], torch.device("cpu")), guidance=q["guidance"])
    for r in q["results"]:
        r["seconds_32"] = _time_32(bundle, r, s, 1 if r["steps"] >= 100 else 3)
        log(f"quality: retimed {r['entry']}: {r['seconds_32']:.2f} s for 32 images")
    q["retimed"] = time.strftime("%Y-%m-%d %H:%M %Z")


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _classifier_info(clf) -> dict:
    m = clf.meta
    return {"held_out_accuracy": m.get("held_out_accuracy"), "n_held_out": m.get("n_held_out"),
            "per_label": m.get("per_label_held_out_accuracy", {}), "feature_dim": clf.config.feature_dim}


def _guidance(r: dict, q: dict) -> float:
    return r["guidance"] if r.get("guidance") is not None else q["guidance"]


def _ddpm500(q: dict, guidance: float) -> dict | None:
    return next((r for r in q["results"] if r["sampler"] == "ddpm" and r["steps"] == 500 and not r["clip_x0"]
                 and _guidance(r, q) == guidance), None)


def _judge(q: dict, course_ddpm_seconds: float | None) -> None:
    """The quality-matched speed target: the best entry at <= 20 calls against DDPM-500's feature-FID.

    The reference is DDPM-500 as the course samples (the run's guidance, default 1). A guided entry
    is also compared with DDPM-500 at its own guidance, when that was measured: like for like.
    """
    ddpm = _ddpm500(q, q["guidance"])
    for r in q["results"]:
        r["fid_vs_ddpm"] = r["fid_mean"] / ddpm["fid_mean"] - 1 if ddpm else None
    fast = [r for r in q["results"] if r["nfe"] <= 20]
    if not (ddpm and fast):
        return
    best = min(fast, key=lambda r: r["fid_mean"])
    frac = best["seconds_32"] / course_ddpm_seconds if course_ddpm_seconds else None
    summary = (f"best at <= 20 calls is {best['entry']} with feature-FID {best['fid_mean']:.3g} vs DDPM-500's "
               f"{ddpm['fid_mean']:.3g} ({100 * best['fid_vs_ddpm']:+.0f}%), {best['seconds_32']:.2f} s for 32 images")
    if frac:
        summary += f" = 1/{1 / frac:.0f} of the course's DDPM-500 ({course_ddpm_seconds:.1f} s, course network)"
    target = {"entry": best["entry"], "fid_met": best["fid_vs_ddpm"] <= 0.10, "time_fraction": frac}
    g = _guidance(best, q)
    same = _ddpm500(q, g) if g != q["guidance"] else None
    if same:
        gap = best["fid_mean"] / same["fid_mean"] - 1
        summary += (f"; like for like, against DDPM-500 with the same guidance {g:g} ({same['fid_mean']:.3g}) "
                    f"it is {100 * gap:+.0f}%")
        target["same_guidance"] = {"entry": same["entry"], "gap": gap, "met": gap <= 0.10}
    plain = [r for r in fast if _guidance(r, q) == q["guidance"]]
    if plain and best not in plain:
        b2 = min(plain, key=lambda r: r["fid_mean"])
        summary += f"; without guidance the best at <= 20 calls is {b2['entry']} at {100 * b2['fid_vs_ddpm']:+.0f}%"
        target["unguided"] = {"entry": b2["entry"], "gap": b2["fid_vs_ddpm"], "met": b2["fid_vs_ddpm"] <= 0.10}
    q["target"] = {**target, "summary": summary}


def _load_model(q: dict):
    from core.checkpoint import load_checkpoint

    path = Path(q["checkpoint"])
    return load_checkpoint(path if path.is_absolute() else ROOT / path, "cpu")


def quality_grids(q: dict, s: Settings) -> dict:
    """Per-label samples from DDPM-500, the best unguided and the best entry at <= 20 calls, same noise."""
    import numpy as np
    import torch
    from core.device import resolve_precision

    bundle = _load_model(q)
    s = replace(s, precision_resolved=resolve_precision(q["precision"], torch.device("cpu")), guidance=q["guidance"])
    entries = parse_entries(",".join(r["entry"] for r in q["results"]))
    L, k = len(bundle.label_names), s.grid_per_label
    targets = np.repeat(np.arange(L), k)
    names = [e["entry"] for e in entries if e["sampler"] == "ddpm"][:1]
    t = q.get("target") or {}
    names += [n for n in ((t.get("unguided") or {}).get("entry"), t.get("entry")) if n and n not in names]
    chosen = [next(e for e in entries if e["entry"] == n) for n in names] or entries[:1]
    panels = []
    for e in chosen:
        images, nfe, _ = _generate_set(bundle, e, targets, 7, replace(s, quality_batch=len(targets)))
        panels.append((f"{e['entry']} ({nfe} calls)", images.reshape(L, k, *images.shape[1:])))
    return {"panels": panels, "label_names": bundle.label_names}


def merge_quality(old: dict | None, new: dict) -> dict:
    """`--add`: new entries join earlier ones measured the same way (model, n, seeds, precision, guidance)."""
    if not old:
        return new
    keys = ("checkpoint", "n", "n_seeds", "precision", "guidance")
    differ = [k for k in keys if old.get(k) != new.get(k)]
    if differ:
        raise BenchError(f"--add: the earlier quality results differ in {', '.join(differ)}; rerun without --add")
    names = {r["entry"] for r in new["results"]}
    return {**new, "results": [r for r in old["results"] if r["entry"] not in names] + new["results"]}


# --- driver ---------------------------------------------------------------------------------------------

def _command_line(args) -> str:
    return "python main.py bench " + " ".join(sys.argv[sys.argv.index("bench") + 1:] if "bench" in sys.argv else
                                              sys.argv[1:])


def run(args) -> int:
    """Run the chosen benchmark(s); print tables; write JSON / docs as asked. Returns the exit code."""
    try:
        return _run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # CheckpointError, ClassifierError, DataError are ValueErrors
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2


def _run(args) -> int:
    docs = Path(args.docs)
    wants_docs = args.report or args.what == "report"
    json_path = Path(args.json) if args.json else (docs / "bench_results.json" if wants_docs else None)
    results = report.load_json(json_path) if json_path else {}
    if args.what == "report":
        if not results:
            raise BenchError(f"{json_path}: no results to report; run `bench all --report` first")
        print(f"wrote {report.write_markdown(results, docs)}")
        return 0
    import torch
    from core.device import configure_threads

    configure_threads()
    torch.manual_seed(0)
    s = settings_from_args(args)
    cmd = _command_line(args)
    whats = ["peak", "train", "sample", "quality"] if args.what == "all" else [args.what]
    results["machine"] = machine_info()
    results.setdefault("commands", {})
    results["regenerate"] = REGENERATE
    results.setdefault("settings", {}).update({w: {**asdict(s), "quick": bool(args.quick)} for w in whats})
    pictures = None
    for what in whats:
        load_before = os.getloadavg()[0]
        if what == "peak":
            results["peak"] = bench_peak(s)
        elif what == "train":
            results["train"] = bench_train(s, peak_here(results))
        elif what == "sample":
            results["sample"] = bench_sample(s, peak_here(results))
        elif what == "ddp":
            from .ddp import bench_ddp
            results["ddp"] = bench_ddp(s)
        elif what == "busy":
            from .busy import bench_busy
            results["busy"] = bench_busy(s)
        elif args.retime:
            if not results.get("quality"):
                raise BenchError("--retime needs earlier quality results in --json")
            retime_quality(results["quality"], s)
        else:
            q = bench_quality(s, (results.get("sample") or {}).get("course_ddpm_seconds"))
            results["quality"] = merge_quality(results.get("quality"), q) if args.add else q
            _judge(results["quality"], (results.get("sample") or {}).get("course_ddpm_seconds"))
        results["commands"][what] = cmd
        results[what]["machine"] = machine_stamp(results["machine"])  # sections are re-run one at a time
        # Other work on the machine skews timings: keep the 1-minute load average around each section.
        results[what]["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        print(f"\n== {what} ==\n{report.print_section(what, results[what])}", flush=True)
        if json_path:
            report.save_json(results, json_path)  # after every section: a crash keeps what was measured
    if results.get("quality"):  # the time target compares with the course DDPM-500 of the latest sample run
        _judge(results["quality"], (results.get("sample") or {}).get("course_ddpm_seconds"))
        if json_path:
            report.save_json(results, json_path)
    if args.report:
        if "quality" in whats:
            pictures = quality_grids(results["quality"], s)
        _write_docs(results, pictures, docs, json_path)
    return 0


def _write_docs(results: dict, pictures: dict | None, docs: Path, json_path: Path) -> None:
    q = results.get("quality")
    if q:
        png = report.plot_quality(q, docs / "quality_vs_time.png",
                                  course_ddpm_seconds=(results.get("sample") or {}).get("course_ddpm_seconds"))
        print(f"wrote {png}")
    if q and pictures:
        img = report.grid_image(pictures["panels"], pictures["label_names"], title=f"Default model: {q['model']}")
        img.save(docs / "default_model_grid.png")
        q["grid"] = {"file": "default_model_grid.png",
                     "caption": f"{len(pictures['panels'][0][1][0])} samples per label (rows), the same starting "
                                "noise in each panel; " + ", ".join(p[0] for p in pictures["panels"]) + "."}
        report.save_json(results, json_path)
        print(f"wrote {docs / 'default_model_grid.png'}")
    print(f"wrote {report.write_markdown(results, docs)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # also: python -m benchmarks.bench ...
    sys.exit(main())
