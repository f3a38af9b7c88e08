"""How well does the shipped model learn a new label? Any label carved out of the built-in set by emoji name.

    python -m benchmarks.teach_new_label                                    # "fruit", 1 seed, the preset's steps
    python -m benchmarks.teach_new_label --label moon --match moon --seeds 3
    python -m benchmarks.teach_new_label --label-first-steps 100 --tag label_first
    python -m benchmarks.teach_new_label --noise-bias 1 --augment --tag bias_aug

The workshop flow, without the clicks: emoji16 with a new label NAME on every emoji whose name is one of the
--match words or ends in "_WORD" (taken off whatever label it had), then `--preset finetune --init default`
(labels matched by name; label-balanced batches; the new label starts as the known label the model denoises
its images best under). Judged, at step 0 and every --every steps, from fixed noise:
  * called NAME: the share of --n samples of the new label that the judge calls NAME: core.judge, the same
    linear probe on the evaluation classifier's features that the app's Train tab fits when Teach starts,
    fitted on this edited set; its ceiling is how often it calls the real NAME images so (cross-validated);
  * with the app's fast default sampler (core.judge.JUDGE_SAMPLER) unguided, at guidance --guidance, and at that
    guidance against the known label the new one started as ("fruit, not food": the composer's "Not <label>"),
    and, at the last step only, with DDPM-500 unguided (500 calls per image);
  * the old labels: the evaluation classifier's label accuracy on --old-n samples of each old label (fast sampler,
    unguided), before and after: what the fine-tune cost them;
  * copies: each sample's distance to its nearest training image of NAME (pixels, RMS), against the real NAME
    images' distance to their nearest other NAME image: samples much closer than that are copies.
Several seeds (--seeds) give each figure as mean and spread. The JSON and a grid (one row per checkpoint) go to
--docs as teach_<label>[_<tag>].json / .png. Minutes are training time (the trainer's), on this machine.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from .common import ROOT, log, machine_info

PROG = "python -m benchmarks.teach_new_label"
FRUIT = ("grapes", "melon", "watermelon", "tangerine", "lemon", "banana", "pineapple", "mango", "apple", "green_apple",
         "pear", "peach", "cherries", "strawberry", "blueberries", "kiwifruit", "coconut")


def matches(names: np.ndarray, words: list[str]) -> np.ndarray:
    """(N,) bool: the emoji whose name is one of `words` or ends in "_<word>" ("moon" takes full_moon, not
    moon_cake)."""
    names = np.asarray(names).astype(str)
    return np.array([any(n == w or n.endswith("_" + w) for w in words) for n in names])


def load_builtin_labels() -> np.ndarray:
    """(N, L) the built-in emoji16 labels before any edit."""
    from core.data import load_builtin

    return np.asarray(load_builtin("emoji16").labels)


def carve(label: str, words: list[str]):
    """emoji16 with a new label `label` on the matched emoji, taken off their old labels: the app's edit as data.
    Returns (dataset, is_new (N,) bool)."""
    from core.data import ImageDataset, load_builtin

    ds = load_builtin("emoji16")
    if label.strip().lower() in (n.lower() for n in ds.label_names):
        raise SystemExit(f"{PROG}: --label {label!r} is already one of the set's labels; choose a new name")
    is_new = matches(np.load(ROOT / "resources" / "emoji16.npz")["names"], words)
    if is_new.sum() < 4:
        raise SystemExit(f"{PROG}: --match {','.join(words)} finds {int(is_new.sum())} emoji; at least 4 are needed")
    labels = np.concatenate([ds.labels, is_new[:, None].astype(np.float32)], axis=1)
    labels[is_new, :-1] = 0
    return ImageDataset(ds.images, labels, [*ds.label_names, label], f"emoji16-{label}"), is_new


def fruit_set():
    """emoji16 with "fruit" on the fruit emoji (the walkthrough's edit)."""
    return carve("fruit", list(FRUIT))


def copy_distance(samples: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(n,) RMS pixel distance (0..255) of each sample to its nearest image of `train`."""
    a = samples.reshape(len(samples), -1).astype(np.float32)
    b = train.reshape(len(train), -1).astype(np.float32)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(d2.min(1), 0) / a.shape[1])


def real_copy_distance(real: np.ndarray) -> np.ndarray:
    """The real images' distance to their nearest *other* image of the same set (how close is close)."""
    a = real.reshape(len(real), -1).astype(np.float32)
    d2 = (a * a).sum(1)[:, None] + (a * a).sum(1)[None] - 2 * a @ a.T
    np.fill_diagonal(d2, np.inf)
    d2[d2 < 1e-6] = np.inf  # the set holds two styles of some emoji; an exact twin is not a neighbour
    return np.sqrt(np.maximum(d2.min(1), 0) / a.shape[1])


def one_run(a, ds, is_new, judge, clf, seed: int, init: str) -> dict:
    """One fine-tune (seed `seed`) with its measurements at every checkpoint."""
    from core.judge import JUDGE_SAMPLER, called_share
    from core.metrics import label_accuracy
    from core.samplers import generate
    from core.training import TRAIN_PRESETS, Trainer

    options = {k: v for k, v in (("label_first_steps", a.label_first_steps), ("new_label_noise_bias", a.noise_bias),
                                 ("new_label_augment", a.augment), ("new_label_share", a.share), ("lr", a.lr),
                                 ("keep_old_labels", a.keep))
               if v is not None}
    cfg = replace(TRAIN_PRESETS["finetune"], init=init, checkpoint_every=10**9, seed=seed, **options)
    cfg = replace(cfg, steps=a.steps or cfg.steps)
    tr = Trainer(ds, cfg, Path(a.out) / f"seed{seed}", device="cpu")
    log("; ".join(tr.notes))
    label, old = ds.label_names[-1], list(ds.label_names[:-1])
    train_new = ds.images[is_new]
    starts = [part[len(label) + 11:] for note in tr.notes for part in note.split("; ")
              if part.startswith(f"{label} starts as ")]
    start = starts[0] if starts and starts[0] in old else None  # the known label the new one started as

    def old_accuracy() -> dict:
        out = {}
        for k, name in enumerate(old):
            if name not in clf.label_names:
                continue
            ctx = np.zeros((a.old_n, ds.n_labels), np.float32)
            ctx[:, k] = 1
            res = generate(tr.ema, tr.schedule, n=a.old_n, context=ctx, seed=99, precision=tr.precision,
                           **JUDGE_SAMPLER)
            out[name] = label_accuracy(res.images, np.full(a.old_n, clf.label_names.index(name)), clf)
        return out

    checkpoints, grid = [], []

    def measure(step: int, elapsed: float, last: bool) -> None:
        e = {"step": step, "train_minutes": elapsed / 60,
             "fast": called_share(judge, tr.ema, tr.schedule, [label], n=a.n, precision=tr.precision)[label],
             "fast_guided": called_share(judge, tr.ema, tr.schedule, [label], n=a.n, guidance=a.guidance,
                                         precision=tr.precision)[label]}
        if start:  # guided against the label it started as ("fruit, not food"): the composer's "Not <label>"
            e["fast_contrast"] = called_share(judge, tr.ema, tr.schedule, [label], n=a.n, guidance=a.guidance,
                                              precision=tr.precision, negative={label: start})[label]
        ctx = np.zeros((a.n, ds.n_labels), np.float32)
        ctx[:, -1] = 1
        imgs = generate(tr.ema, tr.schedule, n=a.n, context=ctx, seed=4321, precision=tr.precision,
                        **JUDGE_SAMPLER).images
        grid.append(imgs[:12])
        e["copy_rms"] = float(np.median(copy_distance(imgs, train_new)))
        if last or step == 0:
            e["old_accuracy"] = old_accuracy()
        if last and a.also_guidance:  # the same samples' share at other guidance scales (which to set in the app)
            e["guided_at"] = {f"{g:g}": called_share(judge, tr.ema, tr.schedule, [label], n=a.n, guidance=g,
                                                     precision=tr.precision)[label] for g in a.also_guidance}
        if last and a.ddpm:
            res = generate(tr.ema, tr.schedule, sampler="ddpm", n=a.n, context=ctx, seed=4321, precision=tr.precision)
            e["ddpm500"] = judge.called(res.images, label)
        checkpoints.append(e)
        log(json.dumps(e))

    measure(0, 0.0, False)
    for m in tr.run():
        if m.step % a.every == 0 or m.step == m.total_steps:
            measure(m.step, m.elapsed, m.step == m.total_steps)
    tr.close()
    return {"seed": seed, "checkpoints": checkpoints, "grid": np.stack(grid)}


def summary(runs: list[dict], untouched: list[str] | None = None) -> dict:
    """Mean and spread (standard deviation over seeds) of the last checkpoint's figures."""
    last = [r["checkpoints"][-1] for r in runs]
    first = [r["checkpoints"][0] for r in runs]

    def ms(vals):
        v = np.asarray(vals, np.float64)
        return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}

    scales = sorted({g for c in last for g in c.get("guided_at", {})}, key=float)
    if scales and all("guided_at" in c for c in last):
        out_g = {g: ms([c["guided_at"][g] for c in last]) for g in scales}
    else:
        out_g = None
    out = {k: ms([c[k] for c in last]) for k in ("fast", "fast_guided", "fast_contrast", "ddpm500", "copy_rms",
                                                 "train_minutes")
           if all(k in c for c in last)}
    drops = [np.mean([f["old_accuracy"][n] - c["old_accuracy"][n] for n in f["old_accuracy"]])
             for f, c in zip(first, last)]
    if out_g:
        out["guided_at"] = out_g
    out["old_accuracy_before"] = ms([np.mean(list(f["old_accuracy"].values())) for f in first])
    out["old_accuracy_drop"] = ms(drops)
    if untouched:  # the labels the new one took no images from: their meaning did not change
        out["untouched_accuracy_drop"] = ms([np.mean([f["old_accuracy"][n] - c["old_accuracy"][n] for n in untouched
                                                      if n in f["old_accuracy"]]) for f, c in zip(first, last)])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="fruit", help="the new label's name (default fruit)")
    ap.add_argument("--match", default=",".join(FRUIT), help="emoji names (or name endings) that get the label")
    ap.add_argument("--steps", type=int, default=None, help="fine-tune steps (default: the finetune preset's)")
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--n", type=int, default=64, help="samples per label and measurement")
    ap.add_argument("--old-n", type=int, default=64,
                    help="samples per old label for their accuracy before and after (the same noise both times)")
    ap.add_argument("--seeds", type=int, default=1, help="fine-tunes with seeds 0..N-1")
    ap.add_argument("--guidance", type=float, default=3.0, help="the guided row's scale")
    ap.add_argument("--also-guidance", type=lambda v: [float(x) for x in v.split(",") if x.strip()], default=[],
                    help="other guidance scales measured at the last step, e.g. 2,4,5")
    ap.add_argument("--no-ddpm", dest="ddpm", action="store_false", help="skip the DDPM-500 figure (slow)")
    ap.add_argument("--init", help="the model to start from (default: the shipped model)")
    ap.add_argument("--label-first-steps", type=int, default=None,
                    help="the fine-tune's label-first steps (default: the finetune preset's)")
    ap.add_argument("--noise-bias", type=float, default=None,
                    help="the new label's noise-level bias (default: the finetune preset's)")
    ap.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                    help="shift and colour-jitter the new label's images (default: the finetune preset's)")
    ap.add_argument("--share", type=float, default=None,
                    help="the share of each batch drawn from the new label's images (default: the finetune preset's)")
    ap.add_argument("--keep", action=argparse.BooleanOptionalAction, default=None,
                    help="train the old labels' images towards the starting model (default: the finetune preset's)")
    ap.add_argument("--lr", type=float, default=None, help="the fine-tune's peak learning rate (default: the preset's)")
    ap.add_argument("--tag", default="", help="added to the output names, e.g. label_first")
    ap.add_argument("--out", default=str(ROOT / "runs" / "teach"))
    ap.add_argument("--docs", default=str(ROOT / "docs"))
    a = ap.parse_args()
    for flag, v, lo in (("--steps", a.steps or 1, 1), ("--every", a.every, 1), ("--n", a.n, 1), ("--seeds", a.seeds, 1),
                         ("--old-n", a.old_n, 1)):
        if v < lo:
            ap.error(f"{flag} must be at least {lo}, got {v}")
    words = [w.strip() for w in a.match.split(",") if w.strip()]

    from PIL import Image

    from core.judge import JUDGE_SAMPLER, fit_judge
    from core.metrics import load_classifier
    from core.paths import default_checkpoint
    from core.threads import configure_threads
    from core.training import TRAIN_PRESETS

    configure_threads()
    ds, is_new = carve(a.label, words)
    clf = load_classifier()
    judge = fit_judge(ds.images, ds.labels, list(ds.label_names), clf)
    near = real_copy_distance(ds.images[is_new])
    reference = {"ceiling": judge.ceiling.get(a.label), "images": int(is_new.sum()),
                 "real_nearest_rms": float(np.median(near[np.isfinite(near)]))}
    log(json.dumps({"reference": reference}))
    init = str(a.init or default_checkpoint())
    runs = [one_run(a, ds, is_new, judge, clf, seed, init) for seed in range(a.seeds)]
    # Labels whose images lost the new label's ones (food, for fruit) change meaning: their accuracy before and after
    # is not comparable. The others' is what the fine-tune cost.
    took_from = {n for j, n in enumerate(ds.label_names[:-1]) if (load_builtin_labels()[is_new, j] > 0).any()}
    untouched = [n for n in ds.label_names[:-1] if n not in took_from]
    name = f"teach_{a.label.replace(' ', '_')}" + (f"_{a.tag}" if a.tag else "")
    rows = np.concatenate([np.concatenate(list(g), axis=1) for g in runs[0]["grid"]], axis=0)
    img = Image.fromarray(rows).resize((rows.shape[1] * 3, rows.shape[0] * 3), Image.NEAREST)
    docs = Path(a.docs)
    img.save(docs / f"{name}.png")
    result = {"command": " ".join([PROG, *sys.argv[1:]]), "machine": machine_info(), "label": a.label,
              "steps": a.steps or TRAIN_PRESETS["finetune"].steps,
              "match": words, "judge_sampler": JUDGE_SAMPLER, "guidance": a.guidance, "n": a.n,
              "reference": reference, "summary": summary(runs, untouched), "took_from": sorted(took_from),
              "runs": [{k: v for k, v in r.items() if k != "grid"} for r in runs]}
    (docs / f"{name}.json").write_text(json.dumps(result, indent=1))
    s = result["summary"]
    print(f"{a.label}: {reference['images']} images, judge ceiling {100 * (reference['ceiling'] or 0):.0f}%")
    for k in ("fast", "fast_guided", "fast_contrast", "ddpm500"):
        if k in s:
            print(f"  called {a.label} ({k}): {100 * s[k]['mean']:.0f}% ± {100 * s[k]['sd']:.0f}")
    for g, v in s.get("guided_at", {}).items():
        print(f"  called {a.label} (guidance {g}): {100 * v['mean']:.0f}% ± {100 * v['sd']:.0f}")
    print(f"  old labels' accuracy {s['old_accuracy_before']['mean']:.3f}, drop {s['old_accuracy_drop']['mean']:+.3f}"
          f" ± {s['old_accuracy_drop']['sd']:.3f} (labels it took no images from: "
          f"{s['untouched_accuracy_drop']['mean']:+.3f} ± {s['untouched_accuracy_drop']['sd']:.3f}); copy distance {s['copy_rms']['mean']:.1f} (real "
          f"{reference['real_nearest_rms']:.1f}); {s['train_minutes']['mean']:.1f} min of training")
    print(f"wrote {docs / (name + '.png')} and {docs / (name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
