"""The data-set type: images (N, H, W, 3) uint8, a label matrix (N, L) float32 and L label names, validated on
construction; resizing for pixel art; which images a mirror leaves meaning the same."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..catalog import COURSE_LABEL_NAMES, LABEL_NAME_MAX
from ..errors import DataError


def course_label_names() -> list[str]:
    """Label names of the course sprite set (sprite_labels_nc_*.npy columns)."""
    return list(COURSE_LABEL_NAMES)


# --------------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------------

@dataclass(eq=False, repr=False)
class ImageDataset:
    """Images with a (multi-)label matrix; validated on construction."""

    images: np.ndarray          # (N, H, W, 3) uint8
    labels: np.ndarray          # (N, L) float32, rows may be all-zero (unlabelled) or multi-hot
    label_names: list[str]
    name: str                   # e.g. "emoji16", folder name
    source: str = ""            # "builtin:emoji16" or a path
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) not used
    # (N,) bool: may this image be mirrored in training? None = every image may (a folder of the user's)
    mirror_ok: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.label_names = [str(n) for n in self.label_names]
        where = self.source or self.name
        _check_images(self.images, where)
        _check_labels(self.labels, len(self.images), where)
        _check_label_names(self.label_names, self.labels.shape[1], where)
        if self.mirror_ok is not None:
            m = self.mirror_ok
            if not (isinstance(m, np.ndarray) and m.dtype == np.bool_ and m.shape == (len(self.images),)):
                raise DataError(f"{where}: expected mirror_ok of shape ({len(self.images)},) bool, got {_describe(m)}")

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, n={self.n}, size={self.size}, "
                f"labels={self.label_names!r}, source={self.source!r})")

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    @property
    def n_labels(self) -> int:
        return int(self.labels.shape[1])

    def fingerprint(self) -> str:
        """Short sha256 (16 hex chars) of images, labels and label names; stable across runs."""
        h = hashlib.sha256()
        h.update(repr(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype="<f4").tobytes())
        h.update("\0".join(self.label_names).encode("utf-8"))
        return h.hexdigest()[:16]

    def to_tensor(self) -> torch.Tensor:
        """(N, 3, H, W) float32 in [-1, 1], as the course's Normalize((0.5,), (0.5,)) gives."""
        x = torch.from_numpy(np.ascontiguousarray(self.images)).permute(0, 3, 1, 2)
        return (x.float() / 127.5 - 1.0).contiguous()

    def label_counts(self) -> np.ndarray:
        """(L,) int64: how many images carry each label (any weight above zero)."""
        return (self.labels > 0).sum(axis=0).astype(np.int64)

    def subset(self, idx) -> ImageDataset:
        """The rows selected by `idx` (indices or a boolean mask), as a new data set."""
        idx = np.atleast_1d(np.asarray(idx))  # a single index still gives a 4-D image array
        mirror_ok = None if self.mirror_ok is None else self.mirror_ok[idx]
        return self._replace(images=self.images[idx], labels=self.labels[idx], mirror_ok=mirror_ok)

    def with_labels(self, labels, label_names: Sequence[str]) -> ImageDataset:
        """Same images, new label matrix and names (the label editor's rename/add/delete/assign)."""
        labels = np.asarray(labels, dtype=np.float32)
        if len(label_names) == 0 and labels.size == 0:
            labels = labels.reshape(self.n, 0)  # "no labels" may arrive as an empty list
        return self._replace(labels=labels, label_names=list(label_names))

    def resized(self, size: int) -> ImageDataset:
        """Every image at size x size, with the pixel-art-friendly filter of `resize_images`."""
        if size == self.size:
            return self
        return self._replace(images=resize_images(self.images, size))

    def _replace(self, **changes) -> ImageDataset:
        fields = dict(images=self.images, labels=self.labels, label_names=self.label_names,
                      name=self.name, source=self.source, skipped=list(self.skipped), mirror_ok=self.mirror_ok)
        fields.update(changes)
        return ImageDataset(**fields)


def _check_images(images, where: str) -> None:
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[-1] == 3):
        raise DataError(f"{where}: expected images of shape (N, H, W, 3) uint8, "
                        f"got {_describe(images)}")
    if images.shape[1] != images.shape[2] or images.shape[1] == 0:
        raise DataError(f"{where}: images must be square and not empty, got "
                        f"{images.shape[1]}x{images.shape[2]} pixels")


def _check_labels(labels, n: int, where: str) -> None:
    if not (isinstance(labels, np.ndarray) and labels.dtype == np.float32 and labels.ndim == 2):
        raise DataError(f"{where}: expected labels of shape (N, L) float32, "
                        f"got {_describe(labels)}")
    if labels.shape[0] != n:
        raise DataError(f"{where}: {n} images but {labels.shape[0]} label rows")
    if not np.isfinite(labels).all():
        raise DataError(f"{where}: labels contain NaN or infinite values")


def _check_label_names(names: list[str], n_labels: int, where: str) -> None:
    if len(names) != n_labels:
        raise DataError(f"{where}: {n_labels} label columns but {len(names)} label names")
    if any(not n.strip() for n in names):
        raise DataError(f"{where}: label names must not be empty")
    long = next((n for n in names if len(n) > LABEL_NAME_MAX), None)
    if long is not None:
        raise DataError(f"{where}: the label name {long[:40]!r}... has {len(long):,} characters, more than the "
                        f"{LABEL_NAME_MAX} a label may have; rename it")
    for n in names:  # a folder name that is not UTF-8 arrives with surrogates: no checkpoint could store it
        try:
            n.encode("utf-8")
        except UnicodeEncodeError:
            shown = n.encode("utf-8", "backslashreplace").decode("ascii", "replace")
            raise DataError(f"{where}: the label name {shown!r} is not valid text (a folder name that is not UTF-8); "
                            "rename that folder") from None
    lowered = [n.strip().lower() for n in names]
    if len(set(lowered)) != len(lowered):
        dupes = sorted({n for n in lowered if lowered.count(n) > 1})
        raise DataError(f"{where}: label names must be unique, repeated: {', '.join(dupes)}")


def _describe(array) -> str:
    """'(10, 16, 16) float64' for arrays, the type name for anything else."""
    if isinstance(array, np.ndarray):
        return f"{tuple(array.shape)} {array.dtype}"
    return type(array).__name__


# --------------------------------------------------------------------------------------------
# Resizing: pixel art first
# --------------------------------------------------------------------------------------------

def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) -> (N, size, size, 3): center-crop to square, then NEAREST or BOX.

    NEAREST when upscaling or downscaling by a whole factor keeps pixel art's hard edges and
    palette (a 64 px export of 16 px art comes back exact); other downscales use BOX (area
    averaging), which does not alias the way NEAREST does at odd ratios.
    """
    images = _center_crop(images)
    side = images.shape[1]
    if side == size:
        return images.copy()
    if size % side == 0:  # whole-factor upscale: repeat pixels
        k = size // side
        return images.repeat(k, axis=1).repeat(k, axis=2)
    if side % size == 0:  # whole-factor downscale: the pixel at each block's centre, as PIL does
        k = side // size
        return np.ascontiguousarray(images[:, k // 2::k, k // 2::k])
    resample = Image.Resampling.NEAREST if size > side else Image.Resampling.BOX
    out = [np.asarray(Image.fromarray(im).resize((size, size), resample)) for im in images]
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def _center_crop(images: np.ndarray) -> np.ndarray:
    h, w = images.shape[1:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return images[:, top:top + side, left:left + side]


def _to_rgb(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8; anything with transparency is composited on white."""
    if img.mode.startswith("I;16"):  # 16-bit greyscale PNG: keep the high byte, not a clip
        img = Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return _on_white(np.asarray(img.convert("RGBA")))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """(..., 4) uint8 RGBA -> (..., 3) uint8 RGB, alpha-composited over a white background."""
    rgba = rgba.astype(np.float32)
    alpha = rgba[..., 3:] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


# What a mirror changes the meaning of, by the emoji short names the built-in sets carry per image:
# a direction (point_left, arrow_right, walking facing right), a clock's time, or writing.
_MIRROR_UNSAFE_NAME = re.compile(
    r"(^|_)(left|right|leftwards|rightwards|point|arrow|arrows|clockwise|counterclockwise|clock\d+|100|1234"
    r"|abc|abcd|capital|symbols|newspaper|memo|calendar|date|ticket|tickets|name_badge|ledger|notebook"
    r"|book|books|keyboard|label|receipt|mag|pencil2|writing)(_|$)")
# Labels whose whole row a mirror spoils: flags, signs, letters and arrows.
_MIRROR_UNSAFE_LABEL = re.compile(r"flag|symbol|sign|letter|text", re.IGNORECASE)


def mirror_safe(names: Sequence[str], labels: np.ndarray, label_names: Sequence[str]) -> np.ndarray:
    """(N,) bool: True where a left-right mirror keeps the image's meaning, judged from its own name
    (see _MIRROR_UNSAFE_NAME) and its labels (any label matching _MIRROR_UNSAFE_LABEL rules it out)."""
    unsafe_cols = np.array([bool(_MIRROR_UNSAFE_LABEL.search(n)) for n in label_names], dtype=bool)
    by_label = (labels[:, unsafe_cols] > 0).any(axis=1) if unsafe_cols.any() else np.zeros(len(names), bool)
    by_name = np.array([bool(_MIRROR_UNSAFE_NAME.search(str(n).lower())) for n in names], dtype=bool)
    return ~(by_label | by_name)
