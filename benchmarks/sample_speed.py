"""`bench sample`: seconds for a batch of images from the course network, the course notebooks' DDPM and
DDIM loops against our samplers (core.samplers.generate), in fp32 and (where fast) bf16.

    python main.py bench sample [--rounds 3] [--sample-list ddpm:500,ddim:25,...] [--compile]

The weights are random: speed does not depend on them. Every job gets an untimed warm-up call (the
long DDPM ones excepted), then the jobs alternate in a rotating order over rounds; the median counts.
"""
from __future__ import annotations

import statistics
import time

from .common import Settings, forward_flops, log, parse_entries


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
    # (a plain NCHW net fed channels_last inputs is slower per call, and not what users run).
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
