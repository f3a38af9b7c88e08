"""How fast does the shipped model learn a new label? "fruit" from the fruit emoji, by fine-tuning.

    python -m benchmarks.teach_new_label [--steps 600] [--every 100] [--n 32] [--out runs/teach_fruit]

The workshop flow, without the clicks: emoji16 with a new label "fruit" given to the fruit emoji
(moved out of "food"), then `--preset finetune --init default` (labels matched by name; label-balanced
batches; "fruit" starts as the known label the model denoises its images best under). At step 0 and
every --every steps, --n images of "fruit" are drawn from fixed noise with DDPM-500, with
DPM-Solver++(3M) in 10 Karras steps, and with the same at guidance 3, and judged:
  * by eye: docs/teach_fruit.png, one row per sampler and checkpoint;
  * called fruit: the share of samples whose nearest label centroid, in the evaluation classifier's
    features, is fruit's, among the seven labels' centroids of the real images (a judge that knows
    "fruit"; the classifier itself knows the six built-in labels only);
  * nearest is fruit: the share whose nearest real image in those features is a fruit emoji;
  * called food: the share the six-label classifier calls "food".
Each is read against the same measure on the real images (leave-one-out for the fruit emoji): fruit
and food emoji sit close together in these features, so even real fruit scores far below 100%.
Minutes are the run's training time (elapsed, from the trainer), and the idle-machine equivalent
from the recipe study's calibration when runs/study/calibration.json exists.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from .common import CALIBRATION, ROOT, load_json

PROG = "python -m benchmarks.teach_new_label"
FRUIT = ("grapes", "melon", "watermelon", "tangerine", "lemon", "banana", "pineapple", "mango", "apple", "green_apple",
         "pear", "peach", "cherries", "strawberry", "blueberries", "kiwifruit", "coconut")
SAMPLERS = (("DDPM-500", dict(sampler="ddpm")),
            ("DPM-Solver++(3M)-10 Karras", dict(sampler="dpmpp3m", steps=10, spacing="karras")),
            ("DPM-Solver++(3M)-10 Karras, guidance 3", dict(sampler="dpmpp3m", steps=10, spacing="karras", guidance=3.0)))


def fruit_set():
    """emoji16 with a 7th label "fruit" on the fruit emoji (taken off "food"): the app's edit, as data."""
    from core.data import ImageDataset, load_builtin

    ds = load_builtin("emoji16")
    names = np.load(ROOT / "resources" / "emoji16.npz")["names"].astype(str)
    is_fruit = np.isin(names, FRUIT)
    labels = np.concatenate([ds.labels, is_fruit[:, None].astype(np.float32)], axis=1)
    labels[is_fruit, ds.label_names.index("food")] = 0
    return ImageDataset(ds.images, labels, [*ds.label_names, "fruit"], "emoji16-fruit"), is_fruit


class Judge:
    """The three measures of the module's docstring, over the real images' features (N, F)."""

    def __init__(self, ds, is_fruit: np.ndarray, clf):
        from core.metrics import features

        self.clf, self.is_fruit = clf, is_fruit
        self.real = features(ds.images, clf)  # (N, F)
        self.label = ds.labels.argmax(1)  # one label per image in this set
        self.fruit = ds.label_names.index("fruit")
        self.centroids = np.stack([self.real[self.label == k].mean(0) for k in range(ds.n_labels)])  # (L, F)

    def __call__(self, images: np.ndarray) -> dict:
        from core.metrics import features

        return self._measures(features(images, self.clf), images)

    def _measures(self, f: np.ndarray, images: np.ndarray, leave_out: np.ndarray | None = None) -> dict:
        from core.metrics import predict_labels

        d = ((f[:, None, :] - self.real[None]) ** 2).sum(-1)  # (n, N) squared distances
        if leave_out is not None:
            d[np.arange(len(f)), leave_out] = np.inf
        called = np.empty(len(f), bool)
        for i, x in enumerate(f):
            cents = self.centroids.copy()
            if leave_out is not None:  # the image's own label centroid without it
                j = leave_out[i]
                own = self.label == self.label[j]
                own[j] = False
                cents[self.label[j]] = self.real[own].mean(0)
            called[i] = ((x - cents) ** 2).sum(-1).argmin() == self.fruit
        food = self.clf.label_names.index("food")
        return {"called_fruit": float(called.mean()), "nearest_is_fruit": float(self.is_fruit[d.argmin(1)].mean()),
                "called_food": float((predict_labels(images, self.clf) == food).mean())}

    def reference(self, ds) -> dict:
        """The measures on the real images, each left out of its own comparison: the fruit emoji, and the
        other food emoji (how often real food passes for fruit)."""
        fi = np.flatnonzero(self.is_fruit)
        food = np.flatnonzero(self.label == ds.label_names.index("food"))
        real_fruit = self._measures(self.real[fi], ds.images[fi], leave_out=fi)
        other_food = self._measures(self.real[food], ds.images[food], leave_out=food)
        return {"real fruit emoji": real_fruit, "real other food emoji": other_food}


def main() -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--init", help="the model to start from (default: the shipped model)")
    ap.add_argument("--label-first-steps", type=int, default=None,
                    help="the fine-tune's label-first steps (default: the finetune preset's)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "teach_fruit"))
    ap.add_argument("--docs", default=str(ROOT / "docs"))
    a = ap.parse_args()

    from PIL import Image

    from core.threads import configure_threads
    from core.metrics import load_classifier
    from core.paths import default_checkpoint
    from core.samplers import generate
    from core.training import TRAIN_PRESETS, Trainer

    configure_threads()
    ds, is_fruit = fruit_set()
    judge = Judge(ds, is_fruit, load_classifier())
    reference = judge.reference(ds)
    print(json.dumps({"reference": reference}), flush=True)
    cfg = replace(TRAIN_PRESETS["finetune"], steps=a.steps, init=str(a.init or default_checkpoint()), checkpoint_every=10**9)
    if a.label_first_steps is not None:
        cfg = replace(cfg, label_first_steps=a.label_first_steps)
    tr = Trainer(ds, cfg, a.out, device="cpu")
    print("; ".join(tr.notes))
    ctx = np.zeros((a.n, ds.n_labels), np.float32)
    ctx[:, ds.label_names.index("fruit")] = 1
    rows, report = [], []

    def checkpoint(step: int, elapsed: float) -> None:
        entry = {"step": step, "train_minutes": elapsed / 60}
        for name, opts in SAMPLERS:
            res = generate(tr.ema, tr.schedule, n=a.n, context=ctx, seed=1234, **opts)
            rows.append(res.images)
            entry[name] = judge(res.images)
        report.append(entry)
        print(json.dumps(entry), flush=True)

    checkpoint(0, 0.0)
    for m in tr.run():
        if m.step % a.every == 0:
            checkpoint(m.step, m.elapsed)
    tr.close()
    cal = ROOT / "runs" / "study" / "calibration.json"
    per_step = load_json(cal, CALIBRATION).get("v_zsnr")
    if per_step:  # the finetune recipe costs what the study's n_feat 32 recipes cost per step
        for e in report:
            e["idle_minutes"] = e["step"] * per_step / 60
    show = min(a.n, 12)
    grid = np.concatenate([np.concatenate(list(r[:show]), axis=1) for r in rows], axis=0)  # (rows*16, show*16, 3)
    img = Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST)
    docs = Path(a.docs)
    img.save(docs / "teach_fruit.png")
    command = " ".join([PROG, *sys.argv[1:]])
    (docs / "teach_fruit.json").write_text(json.dumps({"command": command, "fruit_images": int(is_fruit.sum()),
                                                       "chance": float(is_fruit.mean()), "rows": [s for s, _ in SAMPLERS],
                                                       "reference": reference,
                                                       "checkpoints": report}, indent=1))
    print(f"wrote {docs / 'teach_fruit.png'} and {docs / 'teach_fruit.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
