"""A distilled student's 32 images against the course notebooks' DDPM-500 loop, in the same run.

    python -m benchmarks.student_speed --student runs/distill4/model.safetensors [--rounds 3]

The course side is the notebooks' own loop (benchmarks.course_baseline) on the course network (n_feat 64, the
lessons' width, random weights: speed does not depend on them), fp32, as `bench sample` times it. The student
side is the app's sampler for a student: DDIM over its distilled-<calls> spacing, at the precision `auto` picks
here. Each side gets an untimed warm-up call (the course's DDPM-500 excepted, as in `bench sample`), then the
two alternate over rounds; the medians and their ratio are printed (and written with --json).
"""
from __future__ import annotations

import argparse
import statistics
import time

from .common import log, machine_info, save_json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", required=True, help="a distilled student (main.py distill's model.safetensors)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    import torch
    from core.checkpoint import load_checkpoint
    from core.device import resolve_precision
    from core.samplers import generate
    from core.schedule import Schedule
    from core.threads import configure_threads

    from .course_baseline import CourseDiffusion

    configure_threads()
    b = load_checkpoint(args.student)
    info = (b.meta.get("extra") or {}).get("distilled")
    if not isinstance(info, dict):
        raise SystemExit(f"error: --student {args.student}: not a distilled student")
    k = int(info["calls"])
    schedule, precision = Schedule(b.schedule_config), resolve_precision("auto", torch.device("cpu"))
    n_labels = b.net.config.n_cfeat
    ctx = torch.eye(n_labels)[torch.arange(args.n) % n_labels]
    course = CourseDiffusion(n_feat=64, n_cfeat=n_labels, height=16, seed=0)
    course.nn_model.eval()

    def student():
        return generate(b.net, schedule, sampler="ddim", steps=k, spacing=f"distilled-{k}", n=args.n,
                        context=ctx.numpy(), seed=0, precision=precision).nfe

    def course_ddpm():
        with torch.no_grad():
            course.sample_ddpm_context(args.n, ctx)

    student()  # warm-up
    times: dict[str, list[float]] = {"course DDPM-500": [], f"student, {k} calls": []}
    for r in range(args.rounds):
        for name, fn in (("course DDPM-500", course_ddpm), (f"student, {k} calls", student))[::1 if r % 2 else -1]:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            log(f"round {r + 1}: {name} {times[name][-1]:.3f} s")
    med = {name: statistics.median(v) for name, v in times.items()}
    ratio = med["course DDPM-500"] / med[f"student, {k} calls"]
    print(f"{args.n} images: course DDPM-500 {med['course DDPM-500']:.2f} s, student ({k} calls, {precision}) "
          f"{med[f'student, {k} calls']:.4f} s: {ratio:.0f}x faster (medians of {args.rounds} alternated rounds)")
    if args.json:
        save_json({"student_speed": {"student": args.student, "calls": k, "precision": precision, "n": args.n,
                                     "seconds": med, "ratio": ratio, "rounds": args.rounds,
                                     "machine": machine_info()}}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
