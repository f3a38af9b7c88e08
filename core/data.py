"""Image data sets for training: built-in emoji, the course .npy pair, image folders, sprite sheets.

A data set is images (N, H, W, 3) uint8 plus a label matrix (N, L) float32 and L label names.
Rows of the label matrix may be one-hot, multi-hot or all zero (unlabelled); L may be 0.

Every loader turns bad input into a `DataError` whose message is one line naming the file and
the problem, so the CLI can print it and the app can show it in a dialog. Nothing here imports
Qt; untrusted files are read with `allow_pickle=False` so loading never runs code.
"""
from __future__ import annotations

import hashlib
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from core.catalog import BUILTIN_DATASETS, COURSE_LABEL_NAMES
from core.errors import UserError
from core.paths import atomic_write_bytes, resource_path

IMAGE_FORMATS = {"PNG", "JPEG", "GIF", "BMP", "WEBP"}  # PIL format names we accept
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"}


class DataError(UserError):
    """Bad user input; str() is one human-readable line naming the file and the problem."""


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

    def __post_init__(self) -> None:
        self.label_names = [str(n) for n in self.label_names]
        where = self.source or self.name
        _check_images(self.images, where)
        _check_labels(self.labels, len(self.images), where)
        _check_label_names(self.label_names, self.labels.shape[1], where)

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
        return self._replace(images=self.images[idx], labels=self.labels[idx])

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
                      name=self.name, source=self.source, skipped=list(self.skipped))
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
# Label edits (the app's label editor): pure numpy on a label matrix (N, L) and its names
# --------------------------------------------------------------------------------------------

def free_label_name(names: Sequence[str], base: str = "new label") -> str:
    """'new label', else 'new label 2', 'new label 3', ...: the first not taken (ignoring case)."""
    taken = {n.lower() for n in names}
    return next(c for c in (base if k == 1 else f"{base} {k}" for k in range(1, 10_000)) if c not in taken)


def add_label(labels: np.ndarray, names: Sequence[str], name: str | None = None) -> tuple[np.ndarray, list[str]]:
    """A new, empty label at the end (named `name`, or the first free 'new label ...')."""
    grown = np.concatenate([labels, np.zeros((len(labels), 1), np.float32)], axis=1)
    return grown, [*names, name or free_label_name(names)]


def rename_label(names: Sequence[str], index: int, name: str) -> list[str]:
    out = list(names)
    out[index] = name
    return out


def delete_label(labels: np.ndarray, names: Sequence[str], index: int) -> tuple[np.ndarray, list[str]]:
    """Label `index` gone; its images stay, without it."""
    return np.delete(labels, index, axis=1), [n for i, n in enumerate(names) if i != index]


def move_label(labels: np.ndarray, names: Sequence[str], index: int, to: int) -> tuple[np.ndarray, list[str]]:
    """Labels `index` and `to` swap places (columns and names)."""
    order = list(range(len(names)))
    order[index], order[to] = order[to], order[index]
    return labels[:, order], [names[k] for k in order]


def assign_label(labels: np.ndarray, rows: np.ndarray, label: int, on: bool) -> tuple[np.ndarray, int]:
    """A copy of `labels` where images `rows` carry label `label` (on) or not; and how many changed."""
    out = labels.copy()
    before = out[rows, label].copy()
    out[rows, label] = 1.0 if on else 0.0
    return out, int((before != out[rows, label]).sum())


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


# --------------------------------------------------------------------------------------------
# Our own format and the built-in sets
# --------------------------------------------------------------------------------------------

def load_builtin(name: str) -> ImageDataset:
    """One of BUILTIN_DATASETS, shipped under resources/."""
    key = name.strip().lower()
    if key not in BUILTIN_DATASETS:
        raise DataError(f"{name}: no such built-in data set "
                        f"(built-in: {', '.join(BUILTIN_DATASETS)})")
    path = resource_path(BUILTIN_DATASETS[key])
    if not path.is_file():
        raise DataError(f"{path}: built-in data set {key} is missing; reinstall the app")
    ds = load_npz(path)
    return ds._replace(name=key, source=f"builtin:{key}")


def load_npz(path) -> ImageDataset:
    """A data set saved by `save_npz` (arrays images, labels, label_names; name optional)."""
    path = Path(path)
    arrays = _read_npz(path)
    missing = [k for k in ("images", "labels", "label_names") if k not in arrays]
    if missing:
        raise DataError(f"{path}: not a data set file, missing array(s) {', '.join(missing)}")
    names = arrays["label_names"]
    if names.dtype.kind != "U" or names.ndim != 1:
        raise DataError(f"{path}: label_names must be a 1-D text array, got {_describe(names)}")
    name = str(arrays["name"]) if "name" in arrays else path.stem
    return ImageDataset(arrays["images"], arrays["labels"], names.tolist(), name, str(path))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz, refusing pickled objects; errors become DataError."""
    _check_numpy_header(path, ".npz")
    try:
        npz = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{path}: {_pickle_hint(e, '.npz')}") from e
    except Exception as e:  # truncated file, not a zip, ...: still the user's file at fault
        raise DataError(f"{path}: not a readable .npz file ({_one_line(e)})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: expected an .npz archive, found a single .npy array")
    with npz:
        try:
            return {key: npz[key] for key in npz.files}
        except ValueError as e:  # object arrays only fail here, when read
            raise DataError(f"{path}: {_pickle_hint(e, '.npz')}") from e
        except Exception as e:
            raise DataError(f"{path}: not a readable .npz file ({_one_line(e)})") from e


def save_npz(ds: ImageDataset, path) -> Path:
    """Write `ds` atomically (core.paths.atomic_write_bytes: temp file, fsync, rename; mode 0644)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, images=ds.images, labels=ds.labels,
                        label_names=np.array(ds.label_names, dtype=np.str_).reshape(-1),
                        name=np.array(ds.name, dtype=np.str_))
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


# --------------------------------------------------------------------------------------------
# The course's .npy pair
# --------------------------------------------------------------------------------------------

def load_course_npy(images_path, labels_path=None) -> ImageDataset:
    """The course files sprites_*.npy (N, 16, 16, 3) uint8 + sprite_labels_nc_*.npy (N, 5).

    Without `labels_path` the labels file is looked for beside the images; if none is found
    the set is unlabelled (L = 0).
    """
    images_path = Path(images_path)
    images = _as_uint8_images(_read_npy(images_path), images_path)
    if labels_path is None:
        labels_path = find_labels_beside(images_path)
    if labels_path is None:
        labels, names = np.zeros((len(images), 0), np.float32), []
    else:
        labels = _as_label_matrix(_read_npy(Path(labels_path)), len(images), Path(labels_path))
        names = course_label_names() if labels.shape[1] == 5 else _generic_names(labels.shape[1])
    return ImageDataset(images, labels, names, images_path.stem, str(images_path))


def find_labels_beside(images_path: Path) -> Path | None:
    """sprites_X.npy -> sprite_labels_nc_X.npy; else the only *labels*.npy in the same folder."""
    images_path = Path(images_path)
    if images_path.name.startswith("sprites_"):
        course = images_path.with_name("sprite_labels_nc_" + images_path.name[len("sprites_"):])
        if course.is_file():
            return course
    candidates = sorted(p for p in images_path.parent.glob("*labels*.npy")
                        if p.is_file() and p != images_path)
    if len(candidates) > 1:
        listed = ", ".join(p.name for p in candidates)
        raise DataError(f"{images_path}: several label files beside it ({listed}); "
                        "choose one explicitly")
    return candidates[0] if candidates else None


def _read_npy(path: Path) -> np.ndarray:
    """One array from a .npy file without unpickling anything."""
    _check_numpy_header(path, ".npy")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{path}: {_pickle_hint(e, '.npy')}") from e
    except Exception as e:  # truncated or not a numpy file at all
        raise DataError(f"{path}: not a readable .npy file ({_one_line(e)})") from e
    if not isinstance(array, np.ndarray):
        array.close()
        raise DataError(f"{path}: expected a single .npy array, found an .npz archive")
    return array


def _as_uint8_images(array: np.ndarray, path: Path) -> np.ndarray:
    """Accept uint8, or any integer array whose values all lie in 0..255."""
    shape_ok = array.ndim == 4 and array.shape[-1] == 3 and array.shape[1] == array.shape[2]
    ints_ok = array.dtype == np.uint8 or (
        array.dtype.kind in "iu" and (array.size == 0 or (array.min() >= 0 and array.max() <= 255)))
    if not (shape_ok and ints_ok):
        raise DataError(f"{path}: expected images of shape (N, H, W, 3) uint8, "
                        f"got {_describe(array)}")
    if len(array) == 0:
        raise DataError(f"{path}: contains no images")
    return array.astype(np.uint8, copy=False)


def _as_label_matrix(array: np.ndarray, n: int, path: Path) -> np.ndarray:
    """(N, L) numbers as float32; (N,) integer class ids become one-hot rows."""
    if array.ndim == 1 and array.dtype.kind in "iu" and array.size and array.min() >= 0:
        array = np.eye(int(array.max()) + 1, dtype=np.float32)[array]
    if array.ndim != 2 or array.dtype.kind not in "fiub":
        raise DataError(f"{path}: expected labels of shape (N, L) numbers, got {_describe(array)}")
    if len(array) != n:
        raise DataError(f"{path}: {len(array)} label rows but {n} images")
    labels = array.astype(np.float32)
    if not np.isfinite(labels).all():
        raise DataError(f"{path}: labels contain NaN or infinite values")
    return labels


def _generic_names(n_labels: int) -> list[str]:
    return [f"label {i + 1}" for i in range(n_labels)]


def _check_numpy_header(path: Path, kind: str) -> None:
    """Tell a plain pickle or a foreign file apart before numpy calls everything 'pickled'."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith((b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06")):
        return
    if head.startswith(b"\x80"):  # pickle protocol 2+ opcode
        raise DataError(f"{path}: contains Python objects (pickled data), "
                        "which are not loaded for safety")
    raise DataError(f"{path}: not a readable {kind} file (unknown format)")


def _pickle_hint(error: ValueError, kind: str) -> str:
    """Numpy says 'Object arrays cannot be loaded when allow_pickle=False': say why in words."""
    if "pickle" in str(error).lower():
        return "contains Python objects (pickled data), which are not loaded for safety"
    return f"not a readable {kind} file ({_one_line(error)})"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]


# --------------------------------------------------------------------------------------------
# Image folders and sprite sheets
# --------------------------------------------------------------------------------------------

def load_image_folder(path, *, size: int = 16) -> ImageDataset:
    """Images in a folder; each immediate sub-folder is a label (files in the root: unlabelled).

    Files deeper inside a label folder count for that label. Hidden files are ignored; other
    files that are not readable PNG/JPEG/GIF/BMP/WebP images are listed in `.skipped`.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    label_dirs = sorted((d for d in root.iterdir() if d.is_dir() and not _hidden(d)),
                        key=lambda d: d.name.lower())
    groups = [(None, _files_in(root, recursive=False))]
    groups += [(d.name, _files_in(d, recursive=True)) for d in label_dirs]
    images, columns, names, skipped = [], [], [], []
    for label, files in groups:
        loaded = _read_images(files, root, size, skipped)
        if label is None:
            column = -1  # root files: unlabelled
        elif loaded:
            names.append(label)
            column = len(names) - 1
        else:
            skipped.append((f"{label}/", "folder has no usable images; label left out"))
            continue
        images += loaded
        columns += [column] * len(loaded)
    if not images:
        raise DataError(f"{root}: no usable images (PNG, JPEG, GIF, BMP or WebP) found"
                        + (f"; {len(skipped)} file(s) skipped" if skipped else ""))
    columns = np.array(columns)
    labels = np.zeros((len(images), len(names)), np.float32)
    labels[np.flatnonzero(columns >= 0), columns[columns >= 0]] = 1.0
    return ImageDataset(np.stack(images), labels, names, root.resolve().name, str(root), skipped)


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")  # .DS_Store, .git, editor swap files: never user images


def _files_in(folder: Path, *, recursive: bool) -> list[Path]:
    """Regular files under `folder`, sorted, leaving out anything hidden on the way down."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = [p for p in found if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files, key=lambda p: p.as_posix().lower())


def _read_images(files: list[Path], root: Path, size: int, skipped: list) -> list[np.ndarray]:
    """Each readable image as (size, size, 3) uint8; the others appended to `skipped`."""
    out = []
    for file in files:
        try:
            rgb = _read_image_file(file)
        except DataError as e:
            skipped.append((file.relative_to(root).as_posix(), str(e)))
            continue
        out.append(resize_images(rgb[None], size)[0])
    return out


def _read_image_file(file: Path) -> np.ndarray:
    """(H, W, 3) uint8 of one image file (first frame of an animation), or DataError(reason)."""
    try:
        with Image.open(file) as img:
            if img.format not in IMAGE_FORMATS:
                raise DataError(f"unsupported image format {img.format}")
            img.load()
            img = ImageOps.exif_transpose(img)  # phone photos store rotation in EXIF
            return _to_rgb(img)
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise DataError("image too large") from None
    except Exception as e:  # PIL raises many types for truncated / non-image files
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError("not an image file") from None
        raise DataError(f"cannot read image ({_one_line(e)})") from None


def load_sprite_sheet(path, *, cell, size=None, margin: int = 0, spacing: int = 0,
                      label_names=None, skip_blank: bool = True) -> ImageDataset:
    """Cut an image on a grid of `cell` (int or (w, h)) pixels, row by row.

    `margin` is the border around the grid, `spacing` the gap between cells. With
    `label_names`, each grid row is one label (a common sheet layout: one thing per row), so
    there must be one name per row. Fully transparent or single-colour cells are dropped.
    """
    path = Path(path)
    cw, ch = (cell, cell) if isinstance(cell, int) else (int(cell[0]), int(cell[1]))
    rgba = np.asarray(_open_sheet(path))
    cols, rows = _grid_shape(rgba.shape[1], rgba.shape[0], cw, ch, margin, spacing, path)
    if label_names is not None and len(label_names) != rows:
        raise DataError(f"{path}: {len(label_names)} label names for {rows} rows of cells; "
                        "give one name per row")
    cells, row_of = [], []
    for r in range(rows):
        for c in range(cols):
            y, x = margin + r * (ch + spacing), margin + c * (cw + spacing)
            piece = rgba[y:y + ch, x:x + cw]
            if not (skip_blank and _is_blank(piece)):
                cells.append(_on_white(piece))
                row_of.append(r)
    if not cells:
        raise DataError(f"{path}: every {cw}x{ch} cell is blank; check the cell size and margin")
    images = resize_images(np.stack(cells), size or min(cw, ch))
    if label_names is None:
        labels, names = np.zeros((len(cells), 0), np.float32), []
    else:
        labels, names = np.eye(rows, dtype=np.float32)[row_of], list(label_names)
    return ImageDataset(images, labels, names, path.stem, str(path))


def _open_sheet(path: Path) -> Image.Image:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGBA")
    except Exception as e:
        raise DataError(f"{path}: cannot read image ({_one_line(e)})") from e


def _grid_shape(width, height, cw, ch, margin, spacing, path) -> tuple[int, int]:
    """(columns, rows) of whole cells that fit; DataError when none does."""
    if cw <= 0 or ch <= 0 or margin < 0 or spacing < 0:
        raise DataError(f"{path}: cell size must be positive and margin/spacing not negative")
    cols = (width - 2 * margin + spacing) // (cw + spacing)
    rows = (height - 2 * margin + spacing) // (ch + spacing)
    if cols <= 0 or rows <= 0:
        raise DataError(f"{path}: a {cw}x{ch} cell does not fit in the {width}x{height} image")
    return cols, rows


def _is_blank(rgba: np.ndarray) -> bool:
    """Fully transparent, or one flat colour (sheet background between sprites)."""
    if not rgba[..., 3].any():
        return True
    flat = rgba.reshape(-1, 4)
    return bool((flat == flat[0]).all())


# --------------------------------------------------------------------------------------------
# One entry point for the CLI and the app
# --------------------------------------------------------------------------------------------

def load_dataset(spec: str, *, size: int = 16, labels=None, cell=None, margin: int = 0,
                 spacing: int = 0) -> ImageDataset:
    """Load from a built-in name, a folder, a .npy (course pair), an .npz or a sprite sheet.

    `size` applies where images must be resized (folders, sprite sheets); built-in and saved
    sets keep their stored size (use `.resized`). `labels` is the labels .npy for a .npy
    images file; `cell` (with `margin`, `spacing`) the grid that makes an image a sprite sheet.
    """
    spec = str(spec).strip()
    builtin = spec.lower().removeprefix("builtin:")
    if builtin in BUILTIN_DATASETS:  # a bare built-in name wins; "./emoji16" means a folder
        return _only_npy_labels(load_builtin(builtin), labels, spec)
    path = Path(spec).expanduser()
    if not path.exists():
        bare_name = not re.search(r"[\\/]", spec)
        hint = f" (built-in: {', '.join(BUILTIN_DATASETS)})" if bare_name else ""
        raise DataError(f"{spec}: no such file or folder{hint}")
    if path.is_dir():
        return _only_npy_labels(load_image_folder(path, size=size), labels, spec)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return load_course_npy(path, labels)
    if suffix == ".npz":
        return _only_npy_labels(load_npz(path), labels, spec)
    if suffix in IMAGE_SUFFIXES:
        if cell is None:
            raise DataError(f"{spec}: a single image; to cut it as a sprite sheet give the cell "
                            "size (e.g. --cell 16), or choose the folder that holds it")
        sheet = load_sprite_sheet(path, cell=cell, size=size, margin=margin, spacing=spacing)
        return _only_npy_labels(sheet, labels, spec)
    raise DataError(f"{spec}: unsupported file type '{path.suffix}'; use a folder of images, "
                    "a .npy, an .npz or a sprite sheet image")


def _only_npy_labels(ds: ImageDataset, labels, spec: str) -> ImageDataset:
    if labels is not None:
        raise DataError(f"{spec}: a separate labels file only goes with .npy images")
    return ds


def context_from_spec(spec: str, label_names: Sequence[str]) -> np.ndarray:
    """(L,) float32 context from text: "hero", "hero+food:0.6", "hero 1 + food 0.6", "2"
    (a label index), "0.5,0,1,0,0" (the whole vector), or "" / "none" (unconditional)."""
    names = [str(n) for n in label_names]
    text = spec.strip()
    if text.lower() in ("", "none") and "none" not in (n.lower() for n in names):
        return np.zeros(len(names), np.float32)
    if "," in text:
        return _explicit_vector(text, names)
    context = np.zeros(len(names), np.float32)
    for term in text.split("+"):
        index, weight = _parse_term(term, names, spec)
        context[index] += weight
    return context


def _explicit_vector(text: str, names: list[str]) -> np.ndarray:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise DataError(f"context '{text}': a vector must be numbers separated by commas") from None
    if len(values) != len(names) or not all(_weight_ok(v) for v in values):
        raise DataError(f"context '{text}': expected {len(names)} numbers from -{MAX_CONTEXT_WEIGHT:g} to "
                        f"{MAX_CONTEXT_WEIGHT:g} "
                        f"({', '.join(names) or 'no labels'}), got {len(values)}")
    return np.array(values, np.float32)


# "name:0.6", "name=0.6" or "name 0.6": a label name, then a weight after ':' '=' or a space.
_WEIGHTED = re.compile(r"^(?P<name>.*?)\s*(?:[:=]|\s)\s*"
                       r"(?P<w>[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)$", re.IGNORECASE)


def _parse_term(term: str, names: list[str], spec: str) -> tuple[int, float]:
    """(label index, weight) of 'name', 'name:0.6', 'name 0.6' or an index like '2'."""
    term = term.strip()
    index = _resolve_label(term, names)
    if index is not None:
        return index, 1.0
    match = _WEIGHTED.match(term)
    if match:
        index = _resolve_label(match["name"], names)
        if index is not None and _weight_ok(float(match["w"])):
            return index, float(match["w"])
        if index is not None:
            raise DataError(f"context '{spec}': weight {match['w']} for label {names[index]} is out of range "
                            f"(use a number from -{MAX_CONTEXT_WEIGHT:g} to {MAX_CONTEXT_WEIGHT:g})")
    name, sep, weight = term.rpartition(":") if ":" in term else term.rpartition("=")
    if sep and _resolve_label(name, names) is not None:
        raise DataError(f"context '{spec}': bad weight '{weight.strip()}' for label {names[_resolve_label(name, names)]} "
                        "(use a number such as 0.6)")
    valid = ", ".join(names) if names else "none, this data set is unlabelled"
    raise DataError(f"context '{spec}': unknown label '{term}'; valid labels: {valid} "
                    f"(or an index 0..{max(len(names) - 1, 0)})")


MAX_CONTEXT_WEIGHT = 100.0  # far past any useful mix; 1e30 only makes black images


def _weight_ok(w: float) -> bool:
    return math.isfinite(w) and abs(w) <= MAX_CONTEXT_WEIGHT


def _resolve_label(text: str, names: list[str]) -> int | None:
    """Index of a label by case-insensitive name, or by number when the text is an integer."""
    key = text.strip().lower()
    for i, name in enumerate(names):
        if name.strip().lower() == key:
            return i
    if key.isdigit() and int(key) < len(names):
        return int(key)
    return None
