"""A judge that knows the user's labels: a linear probe on the evaluation classifier's features (its trunk's
pooled output and its feature layer), fitted in seconds on a data set's own real images.

The evaluation classifier (core.metrics) knows the six built-in labels only. A label the user has just made
("fruit", carved out of "food") needs a judge that knows it: multinomial logistic regression on the
classifier's features (standardised), with each label weighted by the inverse of its image count so
a 34-image label is not drowned by a 1,100-image one. Its *ceiling* is how often it calls real images of a
label by that label when they were left out of its fitting (k-fold cross-validation): a sample of the label
can hardly be recognised more often than the label's own real images are.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .metrics import Classifier, probe_features

FOLDS = 4  # cross-validation folds for the ceiling
L2 = 1e-3  # weight decay of the probe (per feature, after standardising)


@dataclass
class LabelJudge:
    """`called(images, label)`: the share of images the probe calls `label`; `ceiling[label]`: the same share
    for the label's real images, each judged by a probe fitted without it."""

    label_names: list[str]
    classifier: Classifier
    mean: np.ndarray  # (F,) feature standardisation
    scale: np.ndarray  # (F,)
    weight: np.ndarray  # (F, L)
    bias: np.ndarray  # (L,)
    ceiling: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # real images per label (those the ceiling reads)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """(n, L) logits of uint8 images (n, H, W, 3)."""
        f = probe_features(_fit_size(images, self.classifier.image_size), self.classifier)
        return ((f - self.mean) / self.scale) @ self.weight + self.bias

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(n,) label index per image."""
        return self.scores(images).argmax(1)

    def called(self, images: np.ndarray, label: str | int) -> float:
        """Share of `images` called `label` (a name or an index)."""
        k = self.label_names.index(label) if isinstance(label, str) else int(label)
        return float((self.predict(images) == k).mean()) if len(images) else float("nan")


def single_labels(labels: np.ndarray) -> np.ndarray:
    """(N,) one label index per image (its strongest; -1 for an unlabelled image) from (N, L) weights."""
    labels = np.asarray(labels, np.float32)
    out = labels.argmax(1)
    out[labels.max(1) <= 0] = -1
    return out


def fit_judge(images: np.ndarray, labels: np.ndarray, label_names: list[str], classifier: Classifier, *,
              seed: int = 0, folds: int = FOLDS) -> LabelJudge:
    """The probe over a data set's images (N, H, W, 3) uint8 and labels (N, L), with its cross-validated
    ceiling per label. Unlabelled images are left out; a label with fewer than two images has no ceiling."""
    y = single_labels(labels)
    keep = y >= 0
    f = probe_features(_fit_size(np.asarray(images)[keep], classifier.image_size), classifier).astype(np.float64)
    y = y[keep]
    n_labels = len(label_names)
    mean, scale = f.mean(0), f.std(0) + 1e-6
    z = (f - mean) / scale
    fold = _folds(y, folds, seed)
    called_right = np.zeros(len(y), bool)
    for k in range(folds):
        test = fold == k
        if test.any() and (~test).any():
            w, b = _fit_probe(z[~test], y[~test], n_labels)
            called_right[test] = (z[test] @ w + b).argmax(1) == y[test]
    w, b = _fit_probe(z, y, n_labels)
    counts = {name: int((y == k).sum()) for k, name in enumerate(label_names)}
    ceiling = {name: float(called_right[y == k].mean()) for k, name in enumerate(label_names) if counts[name] >= 2}
    return LabelJudge(list(label_names), classifier, mean.astype(np.float32), scale.astype(np.float32),
                      w.astype(np.float32), b.astype(np.float32), ceiling, counts)


def _folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold index per image, stratified: each label's images dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(y), np.int64)
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        out[idx] = np.arange(len(idx)) % folds
    return out


def _fit_probe(z: np.ndarray, y: np.ndarray, n_labels: int, *, l2: float = L2, iters: int = 100):
    """Class-balanced softmax regression by L-BFGS (the problem is convex and small: full batch)."""
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    count = torch.bincount(yt, minlength=n_labels).double()
    class_w = torch.where(count > 0, count.sum() / (n_labels * count.clamp(min=1)), torch.zeros_like(count))
    w = torch.zeros(z.shape[1], n_labels, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_labels, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(zt @ w + b, yt, weight=class_w) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


def _fit_size(images: np.ndarray, size: int) -> np.ndarray:
    """Images at the classifier's size (a 32 px model's samples are judged at 16 px, as area averages)."""
    images = np.asarray(images, np.uint8)
    if images.shape[1] == size:
        return images
    from .data import resize_images

    return resize_images(images, size)


# --- judging a model's samples of a label -------------------------------------------------------------------

JUDGE_SAMPLER = {"sampler": "dpmpp3m", "steps": 10, "spacing": "karras"}  # Sample & compare's fast default column
JUDGE_N, JUDGE_SEED = 32, 4321  # samples per label and their noise: fixed, so the curve moves with the model only


def called_share(judge: LabelJudge, net, schedule, labels: list[str], *, n: int = JUDGE_N, seed: int = JUDGE_SEED,
                 guidance: float = 1.0, precision: str = "fp32", sampler: dict | None = None,
                 negative: dict[str, str] | None = None) -> dict[str, float]:
    """{label: share of the model's samples of that label the judge calls it}: `n` images per label with
    JUDGE_SAMPLER (or `sampler`) from fixed noise, one-hot context on the label's column of judge.label_names.
    `negative` {label: other label} guides a label against another one instead of against "no label"."""
    from .samplers import generate

    out = {}
    for name in labels:
        k = judge.label_names.index(name)
        ctx = np.zeros((n, len(judge.label_names)), np.float32)
        ctx[:, k] = 1
        neg = None
        if negative and negative.get(name):
            neg = np.zeros_like(ctx)
            neg[:, judge.label_names.index(negative[name])] = 1
        res = generate(net, schedule, n=n, context=ctx, seed=seed, guidance=guidance, precision=precision,
                       negative_context=neg, **(sampler or JUDGE_SAMPLER))
        out[name] = judge.called(res.images, k)
    return out
