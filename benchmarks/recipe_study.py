"""The recipe study: train each recipe for the same wall-clock budget on emoji16, then measure it.

    python -m benchmarks.recipe_study --minutes 20                # train every recipe not yet trained
    python -m benchmarks.recipe_study --minutes 20 --only v_zsnr  # one recipe
    python -m benchmarks.recipe_study --report                    # measure the trained ones: runs/study/table.md

(from the repository root).

Equal budgets: `--calibrate` times 30 steps of every recipe (after 5 warm-up steps) on an idle
machine and stores the seconds per step in runs/study/calibration.json; each run's step count is
then budget / (seconds per step), so the run (with its linear learning-rate decay) ends at the
budget on an idle machine. Budgets are therefore idle-machine CPU time converted to steps once:
the runs themselves may share the machine (they are slower then, but their results are the same,
step for step). Without a calibration file each run times itself first (then nothing else may run).
Every recipe starts from seed 0 unless --seed says otherwise. Measurement is `python main.py bench quality`
on each run (the same evaluation classifier as docs/benchmarks.md), with the sampler list below; results
land in runs/study/<recipe>/quality.json and a DDPM and a fast-sampler grid per recipe in docs/recipes/.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from .common import CALIBRATION, ROOT, BenchError, font, load_json

RECIPES = {  # name: (TrainConfig overrides, what it is)
    "course": ({}, "the course's: eps target, linear schedule, plain MSE, n_feat 32"),
    "min_snr": ({"loss_weighting": "min_snr"}, "+ min-SNR-5 weighting"),
    "v_zsnr": ({"prediction": "v", "schedule": "linear_zsnr", "loss_weighting": "min_snr"},
               "v target on the zero-terminal-SNR linear schedule, min-SNR-5 (the shipped model's recipe)"),
    "cosine": ({"schedule": "cosine"}, "eps target, cosine schedule, plain MSE"),
    "course64": ({"n_feat": 64}, "the course's recipe at the course's width n_feat 64"),
    "desk": ({"prediction": "v", "schedule": "linear_zsnr", "loss_weighting": "min_snr", "network": "desk"},
             "the shipped recipe (v, zero-terminal SNR, min-SNR-5) on the desk network, n_feat 32"),
    # One change each against "desk", for the training-details study (same seed, same idle-CPU budget):
    "desk_warmup": ({"prediction": "v", "schedule": "linear_zsnr", "loss_weighting": "min_snr", "network": "desk",
                     "warmup_steps": 200}, "desk + a 200-step linear learning-rate warm-up"),
    "desk_b256": ({"prediction": "v", "schedule": "linear_zsnr", "loss_weighting": "min_snr", "network": "desk",
                   "batch_size": 256}, "desk at batch 256 (fewer, larger steps in the same CPU time)"),
    # Trains exactly as "desk" (a second EMA does not touch the training): its model.safetensors should equal
    # desk's, and model.ema2.safetensors is the same run averaged with decay 0.995.
    "desk_ema2": ({"prediction": "v", "schedule": "linear_zsnr", "loss_weighting": "min_snr", "network": "desk",
                   "second_ema_decay": 0.995}, "desk, also keeping an EMA of decay 0.995 (model.ema2.safetensors)"),
    "desk_noflip": ({"prediction": "v", "schedule": "linear_zsnr", "loss_weighting": "min_snr", "network": "desk",
                     "hflip": False}, "desk without mirrored images"),
    "desk_shift": ({"prediction": "v", "schedule": "linear_zsnr", "loss_weighting": "min_snr", "network": "desk",
                    "pixel_shift": True}, "desk with every image moved by up to 1 px"),
}
SAMPLERS = ("ddpm:500,ddim:25,dpmpp2m:10,dpmpp2m:20,dpmpp3m:10+sp=karras,dpmpp3m:20+sp=karras,"
            "dpmpp3m:10+sp=logsnr,heun:10+sp=karras")


def _config(name: str, steps: int, seed: int = 0):
    from core.training import TRAIN_PRESETS, TrainConfig

    base = replace(TRAIN_PRESETS["course"], n_feat=32, checkpoint_every=500, seed=seed)  # eps, linear, uniform
    return TrainConfig.from_dict({**base.to_dict(), **RECIPES[name][0], "steps": steps})


def _seconds_per_step(ds, name: str) -> float:
    """Time 30 steps of this recipe after 5 warm-up steps."""
    from core.training import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(ds, _config(name, 10**6), tmp)
        it = tr.run()
        for _ in range(5):
            next(it)
        t0 = time.perf_counter()
        for _ in range(30):
            next(it)
        per_step = (time.perf_counter() - t0) / 30
        tr.close()
    return per_step


def _steps_for_budget(ds, name: str, minutes: float) -> int:
    return max(100, int(minutes * 60 / _seconds_per_step(ds, name)))


def calibrate(out: Path, only: list[str] | None = None) -> None:
    from core.data import load_builtin
    from core.threads import configure_threads

    configure_threads()
    ds = load_builtin("emoji16")
    names = only or list(RECIPES)
    timed = {name: _seconds_per_step(ds, name) for name in names}
    # Recipes of one network, width and batch cost the same per step (target, weighting, schedule and warm-up
    # are a few elementwise ops); their timings differ only by noise, so each shape gets its recipes' mean and
    # recipes of one shape get exactly the same number of steps.
    shape = {name: (_config(name, 1).network, _config(name, 1).n_feat, _config(name, 1).batch_size) for name in names}
    per_step = {name: sum(timed[m] for m in names if shape[m] == shape[name])
                / sum(1 for m in names if shape[m] == shape[name]) for name in names}
    out.mkdir(parents=True, exist_ok=True)
    cal = out / "calibration.json"
    per_step = {**load_json(cal, CALIBRATION), **per_step}
    cal.write_text(json.dumps(per_step, indent=1))
    for name, s in per_step.items():
        print(f"{name}: {s * 1000:.0f} ms/step ({100 / s:.0f} img/s)")


def train(name: str, minutes: float, out: Path, seed: int = 0) -> None:
    from core.data import load_builtin
    from core.threads import configure_threads
    from core.training import Trainer

    configure_threads()
    run = out / name
    done = run / "trained.txt"
    if done.is_file():
        print(f"{name}: already trained ({run})")
        return
    ds = load_builtin("emoji16")
    cal = out / "calibration.json"
    per_step = load_json(cal, CALIBRATION).get(name)
    steps = max(100, int(minutes * 60 / per_step)) if per_step else _steps_for_budget(ds, name, minutes)
    print(f"{name}: {RECIPES[name][1]}; {steps} steps for {minutes:g} min", flush=True)
    if (run / "resume.safetensors").is_file():  # an interrupted run continues exactly where it stopped
        tr = Trainer.from_run(ds, run)
    else:
        tr = Trainer(ds, _config(name, steps, seed), run)
    for m in tr.run():
        if m.step % 250 == 0:
            print(f"{name}: step {m.step}/{m.total_steps} loss {m.loss:.4f} {m.images_per_s:.0f} img/s", flush=True)
    tr.save()
    tr.close()
    done.write_text(f"{steps} steps, budget {minutes:g} min, seed {seed}\n")


def measure(name: str, out: Path, n: int, seeds: int) -> dict:
    run = out / name
    q = run / "quality.json"
    if not q.is_file():
        subprocess.run([sys.executable, "main.py", "bench", "quality", "--checkpoint", str(run / "model.safetensors"),
                        "--n", str(n), "--seeds", str(seeds), "--samplers", SAMPLERS, "--json", str(q)],
                       cwd=ROOT, check=True)
    quality = load_json(q).get("quality")
    if not quality:
        raise BenchError(f"{q}: holds no quality results; remove it to measure again")
    return quality


def report(out: Path, n: int, seeds: int) -> Path:
    """Measure every trained recipe in out and write the table to out/table.md (docs/recipes.md is written by
    hand around the figures: a generated table there would replace its analysis). Returns the table's path."""
    rows = []
    for name in RECIPES:
        if (out / name / "trained.txt").is_file():
            rows.append((name, measure(name, out, n, seeds)))
    lines = ["| recipe | model | " + " | ".join(r["entry"] for r in rows[0][1]["results"]) + " |",
             "|---|---|" + "---|" * len(rows[0][1]["results"])] if rows else []
    for name, q in rows:
        cells = [f"{r['fid_mean']:.2f} / {r['accuracy_mean']:.2f}" for r in q["results"]]
        lines.append(f"| {name} | {q['model']} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    path = out / "table.md"
    path.write_text(table + "\n")
    print(table)
    return path


def pictures(out: Path, docs: Path, prefix: str = "") -> list[Path]:
    """Per recipe: DDPM-500 next to DPM-Solver++(3M)-10 Karras from the same noise, 8 per label
    (docs/recipes/<recipe>.png); and every recipe's smoothed loss curve against idle-machine minutes
    (docs/recipes/loss_curves.png; the losses of different objectives are on different scales, so each
    recipe has its own panel and axis). `prefix` starts every file name (e.g. network25_), so one study's
    pictures do not replace another's."""
    import numpy as np
    from PIL import Image, ImageDraw

    from core.checkpoint import load_checkpoint
    from core.samplers import generate
    from core.schedule import Schedule
    from core.training import read_loss_log

    from .pictures import grid_image

    (docs / "recipes").mkdir(parents=True, exist_ok=True)
    cal = load_json(out / "calibration.json", CALIBRATION)
    written, curves = [], []
    for name in RECIPES:
        run = out / name
        if not (run / "trained.txt").is_file():
            continue
        b = load_checkpoint(run / "model.safetensors", "cpu")
        L, k = len(b.label_names), 8
        ctx = np.repeat(np.eye(L, dtype=np.float32), k, axis=0)
        panels = []
        for title, opts in (("DDPM-500", dict(sampler="ddpm")),
                            ("DPM-Solver++(3M)-10 Karras", dict(sampler="dpmpp3m", steps=10, spacing="karras"))):
            res = generate(b.net, Schedule(b.schedule_config), n=len(ctx), context=ctx, seed=7, **opts)
            panels.append((title, res.images.reshape(L, k, *res.images.shape[1:])))
        path = docs / "recipes" / f"{prefix}{name}.png"
        grid_image(panels, b.label_names, title=f"{name}: {RECIPES[name][1]}").save(path)
        written.append(path)
        log = read_loss_log(run / "loss.csv")
        minutes = log["step"] * cal.get(name, 0.0) / 60 if cal else log["step"]
        curves.append((name, minutes, log["loss"]))
    if curves:
        W, H, pad = 360, 220, 40
        img = Image.new("RGB", (W * len(curves), H + 30), "white")
        d, f = ImageDraw.Draw(img), font(13)
        for i, (name, x, y) in enumerate(curves):
            smooth = np.convolve(y, np.ones(50) / 50, mode="valid") if len(y) > 50 else y
            xs = x[len(x) - len(smooth):]
            lo, hi = float(np.percentile(smooth, 1)), float(np.percentile(smooth, 99))
            x0, x1 = i * W + pad, (i + 1) * W - 10
            pts = [(x0 + (x1 - x0) * float(a) / max(float(xs[-1]), 1e-9), 20 + (H - 20) * (1 - (float(v) - lo) /
                    max(hi - lo, 1e-9))) for a, v in zip(xs, smooth)]
            d.rectangle([x0, 20, x1, H], outline=(180, 180, 180))
            d.line(pts, fill=(30, 90, 200), width=2)
            d.text((x0, 4), f"{name}: loss {smooth[-1]:.4f} at the end", fill=(0, 0, 0), font=f)
            d.text((x0, H + 6), f"0 - {float(xs[-1]):.1f} {'min (idle)' if cal else 'steps'};  y {lo:.3f}-{hi:.3f}",
                   fill=(90, 90, 90), font=f)
        path = docs / "recipes" / f"{prefix}loss_curves.png"
        img.save(path)
        written.append(path)
    return written


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.recipe_study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget per recipe (default 20)")
    ap.add_argument("--only", choices=list(RECIPES), action="append", help="train only these recipes")
    ap.add_argument("--out", default=str(ROOT / "runs" / "study"))
    ap.add_argument("--calibrate", action="store_true", help="time every recipe on an idle machine first")
    ap.add_argument("--report", action="store_true", help="measure the trained recipes; the table goes to <out>/table.md")
    ap.add_argument("--pictures", action="store_true", help="a grid per recipe and the loss curves, into docs/recipes/")
    ap.add_argument("--prefix", default="", help="--pictures: start every file name with this (e.g. network25_)")
    ap.add_argument("--n", type=int, default=1000, help="images per quality figure (default 1000)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0,
                    help="training seed (default 0); give each seed its own --out, with the calibration copied in")
    args = ap.parse_args()
    out = Path(args.out)
    if args.calibrate:
        calibrate(out, args.only)
        return 0
    if args.report:
        print(f"wrote {report(out, args.n, args.seeds)}")
        return 0
    if args.pictures:
        for p in pictures(out, ROOT / "docs", args.prefix):
            print(f"wrote {p}")
        return 0
    for name in args.only or RECIPES:
        train(name, args.minutes, out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
