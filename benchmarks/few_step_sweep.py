"""Quality against model calls: each sampler (and spacing) at 2-20 calls, feature-FID and label accuracy, as
curves beside DDPM-500's level.

    python -m benchmarks.few_step_sweep --checkpoint checkpoints/default.safetensors \
        --bases "ipndm+sp=karras,dpmpp3m+sp=karras,heun+sp=karras,ddim" --calls 2,3,4,5,6,8,10,15,20 \
        --n 1000 --seeds 3 --json docs/bench_sweep.json --png docs/quality_vs_calls.png

A base is an entry of `bench quality` without its step count (modifiers as there: sp=, g=, ag=...). The
steps for a number of calls follow core.catalog.model_calls (Heun makes two calls a step); a count a sampler
cannot make exactly is skipped. `sp=tuned` stands for the model's own tuned-<calls> spacing (from
`main.py tune-steps`) where it has one. `--student FILE` (repeatable) adds a distilled student's single point
(DDIM over its distilled-<calls> spacing), measured the same way.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from PIL import Image, ImageDraw

from .common import BenchError, Settings, font, log, save_json
from .quality import bench_quality

COLORS = [(40, 110, 200), (200, 60, 50), (30, 150, 80), (150, 80, 190), (220, 140, 0), (90, 90, 90), (0, 160, 160),
          (200, 0, 120)]


def sweep_entries(bases: list[str], calls: list[int], *, zero_terminal: bool, guided: bool = False,
                  named: tuple[str, ...] = ()) -> list[str]:
    """'heun+sp=karras' at calls [2, 5] -> ['heun:2+sp=karras', ...]: the step count whose model calls equal
    the target (for each base and target where one exists). 'sp=tuned' becomes the model's tuned-<steps>
    spacing, where `named` (the model's own spacings) has it."""
    from core.catalog import model_calls

    out = []
    for base in bases:
        name, *mods = base.split("+")
        for c in calls:
            steps = next((k for k in range(1, c + 1) if model_calls(name, k, zero_terminal=zero_terminal,
                                                                     guided=guided) == c), None)
            if steps is None:
                continue
            if "sp=tuned" in mods:
                tuned = f"tuned-{steps}" if name == "dpmpp3m" else f"tuned-{name}-{steps}"
                if tuned not in named:
                    continue
                mods_here = [f"sp={tuned}" if m == "sp=tuned" else m for m in mods]
            else:
                mods_here = mods
            out.append("+".join([f"{name}:{steps}", *mods_here]))
    return out


def _base_of(entry: str) -> str:
    """The base an entry was made from: its name without the step count, sp=tuned-N read as sp=tuned."""
    head, *mods = entry.split("+")
    mods = ["sp=tuned" if m.startswith("sp=tuned") else m for m in mods]
    return "+".join([head.split(":")[0], *mods])


def plot_sweep(quality: dict, bases: list[str], path: Path, *, reference: dict | None) -> Path:
    """Feature-FID against model calls, both on log scales (few-call FIDs are 100x the many-call ones), one
    line per base; the reference's level and +15% dashed."""
    W, H, L, R, T, B = 900, 540, 80, 200, 50, 60
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    f, fs = font(16), font(13)
    res = quality["results"]
    fids = [r["fid_mean"] for r in res if r["fid_mean"] > 0] + ([reference["fid_mean"]] if reference else [])
    y_lo, y_hi = min(fids) / 1.5, max(fids) * 1.5
    x_lo, x_hi = 1.6, 25
    px = lambda x: L + (math.log(x) - math.log(x_lo)) / (math.log(x_hi) - math.log(x_lo)) * (W - L - R)
    py = lambda y: H - B - (math.log(min(max(y, y_lo), y_hi)) - math.log(y_lo)) / (math.log(y_hi) - math.log(y_lo)) \
        * (H - T - B)
    d.rectangle([L, T, W - R, H - B], outline=(0, 0, 0))
    for x in (2, 3, 4, 5, 6, 8, 10, 15, 20):
        d.line([px(x), T, px(x), H - B], fill=(230, 230, 230))
        d.text((px(x), H - B + 6), str(x), fill=(0, 0, 0), font=fs, anchor="mt")
    for e in range(math.floor(math.log10(y_lo)), math.ceil(math.log10(y_hi)) + 1):
        for m in (1, 2, 5):
            y = m * 10.0 ** e
            if y_lo <= y <= y_hi:
                d.line([L, py(y), W - R, py(y)], fill=(230, 230, 230))
                d.text((L - 6, py(y)), f"{y:g}", fill=(0, 0, 0), font=fs, anchor="rm")
    if reference:
        for level, text in ((reference["fid_mean"], f"{reference['entry']}"), (1.15 * reference["fid_mean"], "+15%")):
            for x in range(L, W - R, 10):
                d.line([x, py(level), x + 5, py(level)], fill=(120, 120, 120), width=1)
            d.text((W - R + 6, py(level)), text, fill=(90, 90, 90), font=fs, anchor="lm")
    for k, base in enumerate(bases):
        color = COLORS[k % len(COLORS)]
        pts = sorted((r["nfe"], r["fid_mean"]) for r in res if _base_of(r["entry"]) == base)
        if not pts:
            continue
        if len(pts) > 1:
            d.line([(px(x), py(y)) for x, y in pts], fill=color, width=2)
        for x, y in pts:
            d.ellipse([px(x) - 4, py(y) - 4, px(x) + 4, py(y) + 4], fill=color)
        d.text((W - R + 6, T + 10 + 18 * k), base, fill=color, font=fs, anchor="lm")
    for j, r in enumerate(r for r in res if r.get("student")):  # distilled students: a diamond each
        color = COLORS[(len(bases) + j) % len(COLORS)]
        x, y = px(r["nfe"]), py(r["fid_mean"])
        d.polygon([(x, y - 7), (x + 7, y), (x, y + 7), (x - 7, y)], fill=color)
        d.text((W - R + 6, T + 10 + 18 * (len(bases) + j)), f"distilled student, {r['nfe']} calls", fill=color,
               font=fs, anchor="lm")
    d.text((W / 2, 14), f"Quality against model calls: feature-FID (lower is better), {quality['n']} images, "
           f"{quality['n_seeds']} seed(s)", fill=(0, 0, 0), font=f, anchor="mt")
    d.text((L + (W - L - R) / 2, H - 24), "model calls per image (log scale)", fill=(0, 0, 0), font=f, anchor="mt")
    d.text((8, T - 20), "feature-FID (log scale)", fill=(0, 0, 0), font=fs, anchor="lt")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="the model (default: the shipped default model)")
    p.add_argument("--bases", default="ipndm+sp=karras,dpmpp3m+sp=karras,heun+sp=karras,ddim")
    p.add_argument("--calls", default="2,3,4,5,6,8,10,15,20")
    p.add_argument("--reference", default="ddpm:500", help="the many-step level the curves are read against")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--json", required=True, help="results file (written; an existing one is replaced)")
    p.add_argument("--png", help="the curves")
    p.add_argument("--student", action="append", default=[], metavar="FILE",
                   help="a distilled student of the model: its own point (repeatable)")
    p.add_argument("--replot", action="store_true", help="only draw --png again from the results in --json")
    p.add_argument("--students-only", action="store_true",
                   help="measure only the --student points (with the n and seeds of the results in --json), put "
                        "them in place of the students there, and draw --png again")
    args = p.parse_args(argv)
    if args.students_only:
        return _replace_students(args)
    if args.replot:
        from .common import load_json

        q = load_json(args.json)["quality"]
        ref = next((r for r in q["results"] if r["entry"] == q["sweep"]["reference"]), None)
        print(plot_sweep(q, q["sweep"]["bases"], Path(args.png), reference=ref))
        return 0
    try:
        calls = [int(c) for c in args.calls.split(",") if c.strip()]
    except ValueError:
        raise SystemExit(f"--calls {args.calls}: a comma-separated list of whole numbers") from None
    from core.checkpoint import read_metadata
    from core.paths import default_checkpoint
    from core.schedule import ScheduleConfig

    ckpt = args.checkpoint or str(default_checkpoint())
    sched = ScheduleConfig.from_dict(read_metadata(ckpt)["schedule_config"])
    zero_terminal = sched.kind == "linear_zsnr"
    bases = [b.strip() for b in args.bases.split(",") if b.strip()]
    entries = sweep_entries(bases, calls, zero_terminal=zero_terminal, named=tuple(n for n, _ in sched.spacings))
    entries += [args.reference] if args.reference else []
    log(f"sweep: {len(entries)} entries on {ckpt}")
    s = Settings(checkpoint=ckpt, quality_list=",".join(entries), quality_n=args.n, quality_seeds=args.seeds)
    try:
        q = bench_quality(s)
    except BenchError as e:
        raise SystemExit(f"error: {e}") from None
    for student in args.student:
        q["results"] += _student_points(student, args)
    q["sweep"] = {"bases": bases, "calls": calls, "reference": args.reference, "students": args.student}
    save_json({"quality": q}, args.json)
    if args.png:
        ref = next((r for r in q["results"] if r["entry"] == args.reference), None)
        plot_sweep(q, bases, Path(args.png), reference=ref)
    for r in q["results"]:
        print(f"{r['entry']:28s} {r['nfe']:4d} calls  FID {r['fid_mean']:.3f}  accuracy {r['accuracy_mean']:.3f}")
    return 0


def _replace_students(args) -> int:
    """A new student needs its own point, not the whole sweep again: the same n and seeds as the file's."""
    from .common import load_json

    q = load_json(args.json)["quality"]
    args.n, args.seeds = q["n"], q["n_seeds"]
    q["results"] = [r for r in q["results"] if not r.get("student")]
    for student in args.student:
        q["results"] += _student_points(student, args)
    q["sweep"]["students"] = args.student
    save_json({"quality": q}, args.json)
    if args.png:
        ref = next((r for r in q["results"] if r["entry"] == q["sweep"]["reference"]), None)
        print(plot_sweep(q, q["sweep"]["bases"], Path(args.png), reference=ref))
    return 0


def _student_points(path: str, args) -> list[dict]:
    """The student's own sampler (DDIM over its distilled-<calls> spacing), measured as the sweep's entries."""
    from core.checkpoint import read_metadata

    meta = read_metadata(path)
    info = (meta.get("extra") or {}).get("distilled") or {}
    if not isinstance(info.get("calls"), int):
        raise SystemExit(f"error: --student {path}: not a distilled student (no 'distilled' in its metadata)")
    k = info["calls"]
    q = bench_quality(Settings(checkpoint=path, quality_list=f"ddim:{k}+sp=distilled-{k}", quality_n=args.n,
                               quality_seeds=args.seeds))
    return [{**r, "student": path, "distilled_guidance": info.get("guidance")} for r in q["results"]]


if __name__ == "__main__":
    raise SystemExit(main())
