"""Quality figures that run offline: feature-FID and label accuracy from a small shipped classifier.

Inception weights cannot be downloaded here, so the features come from a small CNN trained on the
built-in emoji16 labels (tools/train_classifier.py; weights and metadata in
resources/classifier_emoji16.safetensors):

  feature-FID     Frechet distance between Gaussians fitted to the classifier's penultimate-layer
                  features of real and generated images (Heusel et al. 2017, with our classifier in
                  place of Inception). Lower is better; 0 means identical feature statistics.
  label accuracy  how often a conditional sample is classified as the label it was asked for.
  floor           the feature-FID between two disjoint sets of real images: what a perfect model
                  would score at that sample count (FID is biased upwards for finite samples).

Numbers are only comparable at the same sample count and with the same classifier file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from .errors import UserError

from .paths import atomic_write_bytes
from .paths import resource_path

CLASSIFIER_FILE = "classifier_emoji16.safetensors"
CLASSIFIER_FORMAT = "diffusion-desk-classifier/1"


# --- the classifier ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of the evaluation CNN: three conv stages (16 -> 8 -> 4 px), pooled, one feature layer."""

    n_classes: int = 6
    image_size: int = 16
    widths: tuple[int, int, int] = (32, 64, 128)
    feature_dim: int = 64

    def to_dict(self) -> dict:
        return {"n_classes": self.n_classes, "image_size": self.image_size, "widths": list(self.widths),
                "feature_dim": self.feature_dim}

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        return cls(int(d["n_classes"]), int(d["image_size"]), tuple(int(w) for w in d["widths"]), int(d["feature_dim"]))


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.GELU())


class Classifier(nn.Module):
    """Small CNN: images in [-1, 1] -> `features` (B, feature_dim) -> `logits` (B, n_classes).

    Metadata (label names, image size, held-out accuracy, ...) rides along in `self.meta`.
    """

    def __init__(self, config: ClassifierConfig | None = None, meta: dict | None = None):
        super().__init__()
        self.config = cfg = config or ClassifierConfig()
        w1, w2, w3 = cfg.widths
        self.trunk = nn.Sequential(
            _conv_block(3, w1), _conv_block(w1, w1), nn.MaxPool2d(2),  # (B, w1, H/2, W/2)
            _conv_block(w1, w2), _conv_block(w2, w2), nn.MaxPool2d(2),  # (B, w2, H/4, W/4)
            _conv_block(w2, w3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, w3)
        )
        self.feature = nn.Linear(w3, cfg.feature_dim)  # the penultimate layer FID reads
        self.head = nn.Sequential(nn.GELU(), nn.Dropout(0.2), nn.Linear(cfg.feature_dim, cfg.n_classes))
        self.meta = dict(meta or {})

    @property
    def label_names(self) -> list[str]:
        return list(self.meta.get("label_names", [f"label {i + 1}" for i in range(self.config.n_classes)]))

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def held_out_accuracy(self) -> float | None:
        return self.meta.get("held_out_accuracy")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, feature_dim)."""
        return self.feature(self.trunk(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


class ClassifierError(UserError, ValueError):
    """A classifier file that cannot be used; str() names the file and the problem."""


def save_classifier(path: str | Path, clf: Classifier) -> Path:
    """Weights + config + metadata (JSON strings in the safetensors header), written atomically."""
    header = {"format": CLASSIFIER_FORMAT, "config": json.dumps(clf.config.to_dict()), "meta": json.dumps(clf.meta)}
    state = {k: v.detach().cpu().contiguous() for k, v in clf.state_dict().items()}
    atomic_write_bytes(path, st_save(state, metadata=header))
    return Path(path)


def load_classifier(path: str | Path | None = None) -> Classifier:
    """The evaluation classifier (default: the shipped resources/classifier_emoji16.safetensors), in eval mode."""
    path = Path(path) if path is not None else resource_path(CLASSIFIER_FILE)
    if not path.is_file():
        raise ClassifierError(f"{path}: classifier weights not found (run tools/train_classifier.py)")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        if header.get("format") != CLASSIFIER_FORMAT:
            raise ClassifierError(f"{path}: not an evaluation-classifier file")
        clf = Classifier(ClassifierConfig.from_dict(json.loads(header["config"])), json.loads(header["meta"]))
        clf.load_state_dict(load_file(str(path)))
    except ClassifierError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated file, foreign tensors, bad JSON: all one message
        raise ClassifierError(f"{path}: unreadable classifier file ({str(e).splitlines()[0][:160]})") from None
    return clf.eval()


# --- features, FID, accuracy -------------------------------------------------------------------------

def _as_images(images) -> np.ndarray:
    if hasattr(images, "images") and hasattr(images, "labels"):  # an ImageDataset
        images = images.images
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images (N, H, W, 3) uint8, got {images.dtype} {images.shape}")
    return images


@torch.no_grad()
def _run(classifier: Classifier, images: np.ndarray, fn, batch: int) -> np.ndarray:
    images = _as_images(images)
    size = classifier.image_size
    if images.shape[1:3] != (size, size):
        raise ValueError(f"the classifier reads {size}x{size} images, got {images.shape[1]}x{images.shape[2]}")
    classifier.eval()
    device = next(classifier.parameters()).device
    out = []
    for start in range(0, len(images), batch):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch])).to(device)
        x = chunk.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]
        out.append(fn(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def features(images, classifier: Classifier, batch: int = 512) -> np.ndarray:
    """Penultimate-layer features (N, D) float32 of uint8 images (N, H, W, 3)."""
    return _run(classifier, images, classifier.features, batch)


def probe_features(images, classifier: Classifier, batch: int = 512) -> np.ndarray:
    """(N, widths[-1] + feature_dim) float32: the trunk's pooled output and the feature layer side by side, what a
    linear probe for labels the classifier was not trained on reads (core.judge): the trunk keeps detail the
    six-label feature layer has let go (fruit against the rest of food)."""
    def both(x):
        pooled = classifier.trunk(x)
        return torch.cat([pooled, classifier.feature(pooled)], dim=1)

    return _run(classifier, images, both, batch)


PERCEPTUAL_BLOCKS = (2, 5)  # trunk layers whose maps the perceptual distance compares: full and half resolution


def early_maps(classifier: Classifier, x: torch.Tensor) -> list[torch.Tensor]:
    """The classifier trunk's early feature maps of x (B, 3, H, W) in [-1, 1]: after its first two conv blocks
    (full resolution) and after the next two (half), each unit-normalised over channels at every pixel."""
    out, h = [], x
    for i, layer in enumerate(classifier.trunk):
        h = layer(h)
        if i in PERCEPTUAL_BLOCKS:
            out.append(h / h.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(1e-8))
        if i >= max(PERCEPTUAL_BLOCKS):
            break
    return out


@torch.no_grad()
def perceptual_distance(a: torch.Tensor, b: torch.Tensor, classifier: Classifier) -> torch.Tensor:
    """Per-image distance (B,) between two batches in [-1, 1], LPIPS-style (Zhang et al. 2018) on the classifier's
    early feature maps (not the pooled layer FID reads): squared differences of the unit-normalised maps,
    averaged over pixels and summed over the two layers. Unlike a pixel distance it does not prefer a blurred
    image to a sharp one whose details sit slightly elsewhere."""
    classifier.eval()
    dev = next(classifier.parameters()).device
    fa, fb = early_maps(classifier, a.to(dev).float()), early_maps(classifier, b.to(dev).float())
    return sum((x - y).pow(2).sum(dim=1).mean(dim=(1, 2)) for x, y in zip(fa, fb)).cpu()


def predict_labels(images, classifier: Classifier, batch: int = 512) -> np.ndarray:
    """The classifier's label index (N,) for each image."""
    return _run(classifier, images, classifier.logits, batch).argmax(axis=1)


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) in float64 (unbiased, as the FID reference code)."""
    f = np.asarray(feats, dtype=np.float64)
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 images for a covariance, got {f.shape[0]}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a (numerically) positive semi-definite matrix via eigh."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2) (Dowson & Landau 1982).

    tr(sqrt(S1 S2)) equals the trace of the root of the symmetric PSD matrix S1^1/2 S2 S1^1/2,
    whose eigenvalues eigh finds stably: no scipy, no complex parts to discard.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


def feature_fid(real, fake, classifier: Classifier) -> float:
    """Feature-FID between two image sets (uint8 arrays or data sets) in the classifier's features."""
    return fid_from_features(features(real, classifier), features(fake, classifier))


def label_accuracy(images, target_labels, classifier: Classifier) -> float:
    """Fraction of images the classifier assigns to the label they were generated for."""
    targets = np.asarray(target_labels).reshape(-1)
    images = _as_images(images)
    if len(targets) != len(images):
        raise ValueError(f"{len(images)} images but {len(targets)} target labels")
    return float((predict_labels(images, classifier) == targets).mean())


@dataclass
class QualityReport:
    fid: float
    accuracy: float | None  # None when no target labels were given
    n: int


def evaluate(images, target_labels=None, *, reference, classifier: Classifier | None = None) -> QualityReport:
    """Feature-FID of `images` against `reference` (data set or uint8 array) and, given targets, label accuracy."""
    classifier = classifier or load_classifier()
    images = _as_images(images)
    fid = fid_from_features(features(reference, classifier), features(images, classifier))
    acc = None if target_labels is None else label_accuracy(images, target_labels, classifier)
    return QualityReport(fid, acc, len(images))


def real_vs_real_fid(dataset, classifier: Classifier, seed: int = 0, n: int | None = None) -> float:
    """Feature-FID between two disjoint random parts of a data set: the floor any model could reach.

    Default: two halves. With `n`, n images against all the others (the floor at a sample count n).
    """
    images = _as_images(dataset)
    perm = np.random.default_rng(seed).permutation(len(images))
    k = len(images) // 2 if n is None else int(n)
    if not 2 <= k <= len(images) - 2:
        raise ValueError(f"cannot split {len(images)} images into {k} and the rest")
    return feature_fid(images[perm[:k]], images[perm[k:]], classifier)


def reference_targets(dataset, n: int, seed: int = 0) -> np.ndarray:
    """n label indices in the data set's own label proportions (largest remainder), shuffled by seed.

    Conditioning generated images on these makes their label mix match the reference's, so the
    FID compares like with like. Rows without a label count for none; multi-hot rows by their argmax.
    """
    labels = np.asarray(dataset.labels)
    has = labels.max(axis=1) > 0
    counts = np.bincount(labels[has].argmax(axis=1), minlength=labels.shape[1]).astype(np.float64)
    if counts.sum() == 0:
        raise ValueError("the data set has no labelled images")
    share = counts / counts.sum() * n
    alloc = np.floor(share).astype(int)
    for j in np.argsort(-(share - alloc), kind="stable")[: n - alloc.sum()]:
        alloc[j] += 1
    targets = np.repeat(np.arange(len(alloc)), alloc)
    return np.random.default_rng(seed).permutation(targets)
