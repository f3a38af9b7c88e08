"""Data-set files: our own .npz (and the built-in sets in it), the course's .npy pair. Untrusted files are
read with allow_pickle=False, so loading never runs code; every problem is a one-line DataError."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npf

from ..catalog import BUILTIN_DATASETS
from ..errors import DataError
from ..memory import available_bytes, gigabytes
from ..paths import atomic_write_bytes, resource_path

from .dataset import ImageDataset, _describe, course_label_names, mirror_safe


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


# The arrays of a data-set file, as (dtype kind, number of dimensions, what to say): checked from the
# arrays' headers before any is read. Other arrays (the built-in sets' style) are allowed, never used.
NPZ_ARRAYS = {"images": ("u", 4, "(N, H, W, 3) uint8"), "labels": ("f", 2, "(N, L) float32"),
              "label_names": ("U", 1, "(L,) text"), "name": ("U", 0, "one text"), "mirror_ok": ("b", 1, "(N,) bool"),
              "names": ("U", 1, "(N,) text")}
NAME_MAX = 1000  # characters in a data set's name
MAX_LABELS = 4096  # context inputs a network takes (UNetConfig's n_cfeat limit)


def load_npz(path) -> ImageDataset:
    """A data set saved by `save_npz` (arrays images, labels, label_names; name optional)."""
    path = Path(path)
    _check_npz_index(path, _npz_index(path))
    arrays = _read_npz(path)
    names = arrays["label_names"]
    name = str(arrays["name"])[:NAME_MAX] if "name" in arrays else path.stem
    ds = ImageDataset(arrays["images"], arrays["labels"], names.tolist(), name, str(path))
    if "mirror_ok" in arrays:
        return ds._replace(mirror_ok=arrays["mirror_ok"])
    image_names = arrays.get("names")
    if image_names is not None and image_names.dtype.kind == "U" and image_names.shape == (ds.n,):
        return ds._replace(mirror_ok=mirror_safe(image_names.tolist(), ds.labels, ds.label_names))
    return ds


def _npz_index(path: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """{array name: (shape, dtype)} of an .npz from each array's header alone, refusing object arrays and a
    header whose shape does not match the bytes stored (a size lie would allocate before numpy noticed), and
    a total the machine cannot hold."""
    _check_numpy_header(path, ".npz")
    index, total = {}, 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                with zf.open(info) as f:
                    shape, dtype, stored = _array_header(f, info.file_size, path, info.filename)
                index[info.filename.removesuffix(".npy")] = (shape, dtype)
                total += stored
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - not a zip, truncated, a bad header: the user's file at fault
        raise DataError(f"{path}: not a readable .npz file ({_one_line(e)})") from None
    _check_fits(path, total)
    return index


def _array_header(f, size: int, path: Path, member: str = "") -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, data bytes) of the .npy in file object `f` of `size` bytes (`member` of an .npz at
    `path`, or the .npy `path` itself), from its header alone."""
    version = npf.read_magic(f)
    shape, _, dtype = (npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0)(f)
    if dtype.hasobject:
        raise DataError(f"{path}: contains Python objects (pickled data), which are not loaded for safety")
    where = f"{path}: array {member}" if member else str(path)
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    stored = size - f.tell()
    if declared != stored:
        raise DataError(f"{where} claims shape {shape[:6]} ({gigabytes(declared)}) but the file holds "
                        f"{stored:,} bytes of it; the file is damaged")
    return tuple(shape), dtype, stored


def _check_fits(path: Path, nbytes: int) -> None:
    free = available_bytes("cpu")
    if free is not None and nbytes > free:
        raise DataError(f"{path}: the arrays take {gigabytes(nbytes)}, but this machine has {gigabytes(free)} of "
                        "memory free; use a smaller data set")


def _check_npz_index(path: Path, index: dict) -> None:
    """The data set's arrays by name, dtype, dimensions and matching lengths, before any is read."""
    missing = [k for k in ("images", "labels", "label_names") if k not in index]
    if missing:
        raise DataError(f"{path}: not a data set file, missing array(s) {', '.join(missing)}")
    for key, (kind, ndim, words) in NPZ_ARRAYS.items():
        if key in index and (index[key][1].kind != kind or len(index[key][0]) != ndim):
            shape, dtype = index[key]
            raise DataError(f"{path}: {key} must be {words}, got {shape[:6]} {dtype}")
    n = index["images"][0][0]
    if n == 0:
        raise DataError(f"{path}: contains no images")
    rows = {"labels": index["labels"][0][0], "mirror_ok": index.get("mirror_ok", ((n,),))[0][0]}
    bad = next((k for k, r in rows.items() if r != n), None)
    if bad:
        raise DataError(f"{path}: {n} images but {rows[bad]} rows of {bad}")
    if index["label_names"][0][0] != index["labels"][0][1]:
        raise DataError(f"{path}: {index['labels'][0][1]} label columns but {index['label_names'][0][0]} label names")


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
    extra = {} if ds.mirror_ok is None else {"mirror_ok": ds.mirror_ok}
    np.savez_compressed(buf, images=ds.images, labels=ds.labels,
                        label_names=np.array(ds.label_names, dtype=np.str_).reshape(-1),
                        name=np.array(ds.name, dtype=np.str_), **extra)
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
    """One array from a .npy file without unpickling anything (its header checked before it is read)."""
    _check_numpy_header(path, ".npy")
    try:
        with open(path, "rb") as f:
            _, _, stored = _array_header(f, path.stat().st_size, path)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a header numpy cannot parse
        raise DataError(f"{path}: not a readable .npy file ({_one_line(e)})") from None
    _check_fits(path, stored)
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
        if array.max() >= MAX_LABELS:  # one column per class id: a huge id would allocate a huge matrix
            raise DataError(f"{path}: class id {int(array.max())} is too large; a model takes at most {MAX_LABELS} "
                            f"labels (ids 0 to {MAX_LABELS - 1})")
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
