"""`bench quality`: feature-FID, label accuracy and seconds per sampler entry, on a trained emoji16 model.

    python main.py bench quality [--checkpoint C] [--samplers ddpm:500,ddim:25,...] [--n 1000] [--seeds 3]
                                 [--precision auto] [--guidance 1] [--add | --retime] [--report]

For each entry: --n images conditioned on labels in emoji16's own proportions, from --seeds seeds;
feature-FID against all emoji16 images in the evaluation classifier's features; label accuracy; and
the seconds for 32 images at batch 32. The real-vs-real floor is what a perfect model would score at
this n. `--add` measures more entries the same way and merges them with the earlier ones; `--retime`
re-measures only the seconds (timings suffer when the machine is busy); `--report` also draws the
per-label grids of the page.
"""
from __future__ import annotations

import functools
import statistics
import time
from dataclasses import replace
from pathlib import Path

from .common import ROOT, BenchError, Settings, judge_quality, log, now_stamp, parse_entries, relative_to_root
from .train_speed import emoji


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
            "guidance_interval": tuple(e.get("interval", (0.0, 1.0))), "guide_net": _guide_net(e.get("guide"))}


@functools.lru_cache(maxsize=4)
def _guide_net(path: str | None):
    """The guide model of an ag=FILE entry (autoguidance), loaded once; None for classifier-free guidance."""
    if not path:
        return None
    from core.checkpoint import load_checkpoint

    p = Path(path)
    return load_checkpoint(p if p.is_absolute() or p.is_file() else ROOT / p, "cpu").net


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
    ds = emoji(replace(s, data_limit=None))
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
    out = {"checkpoint": relative_to_root(path), "model": bundle.description, "precision": s.precision_resolved,
           "guidance": s.guidance, "n": s.quality_n, "n_seeds": s.quality_seeds, "n_reference": ds.n,
           "results": results, "floor": {"values": floors, "mean": statistics.fmean(floors), "sd": _sd(floors)},
           "real_accuracy": metrics.label_accuracy(ds.images, ds.labels.argmax(1), clf),
           "classifier": _classifier_info(clf)}
    judge_quality(out, course_ddpm_seconds)
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
    q["retimed"] = now_stamp()


def _classifier_info(clf) -> dict:
    m = clf.meta
    return {"held_out_accuracy": m.get("held_out_accuracy"), "n_held_out": m.get("n_held_out"),
            "per_label": m.get("per_label_held_out_accuracy", {}), "feature_dim": clf.config.feature_dim}


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
