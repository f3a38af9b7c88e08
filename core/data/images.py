"""Images from a folder (sub-folders become labels) or a sprite sheet, and `load_dataset`, the one entry point
that takes a built-in name, a folder, a .npy, an .npz or a sheet."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..catalog import BUILTIN_DATASETS, IMAGE_SIDE_MAX
from ..errors import DataError
from ..schema import is_int

from .dataset import ImageDataset, _on_white, _to_rgb, resize_images
from .files import _one_line, load_builtin, load_course_npy, load_npz

IMAGE_FORMATS = {"PNG", "JPEG", "GIF", "BMP", "WEBP"}  # PIL format names we accept
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"}
SIZE_MIN = 4  # px: the smallest side the networks halve down to (4x4 at the bottom)


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
    _check_size(size, root)
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
    except Exception as e:  # noqa: BLE001 - PIL raises many types for truncated / non-image files
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError("not an image file") from None
        raise DataError(f"cannot read image ({_one_line(e)})") from None


def load_image(path, size: int) -> np.ndarray:
    """One image file as (size, size, 3) uint8 (centre-cropped, pixel-art-friendly resize): a sketch to
    finish or an image to inpaint. A missing or unreadable file is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    try:
        rgb = _read_image_file(path)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    return resize_images(rgb[None], size)[0]


def load_sprite_sheet(path, *, cell, size=None, margin: int = 0, spacing: int = 0,
                      label_names=None, skip_blank: bool = True) -> ImageDataset:
    """Cut an image on a grid of `cell` (int or (w, h)) pixels, row by row.

    `margin` is the border around the grid, `spacing` the gap between cells. With
    `label_names`, each grid row is one label (a common sheet layout: one thing per row), so
    there must be one name per row. Fully transparent or single-colour cells are dropped.
    """
    path = Path(path)
    if size is not None:
        _check_size(size, path)
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


def _check_size(size, where) -> None:
    """The side images are resized to: one a network can be built for (a huge one would allocate at once)."""
    if not is_int(size) or not SIZE_MIN <= size <= IMAGE_SIDE_MAX:
        raise DataError(f"{where}: image size {size!r} px (--size) is out of range; choose {SIZE_MIN} to "
                        f"{IMAGE_SIDE_MAX} px, the largest a network is built for")


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
