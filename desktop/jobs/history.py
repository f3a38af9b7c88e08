"""The history of sampling runs: every Sample & compare run, X/Y grid and sketch / inpaint run kept in the data
folder (a JSON file of settings and a PNG thumbnail each), newest first, capped, and read back to restore any of
them.

The files are the user's and may be edited or damaged: every reader checks types and sizes and skips (the
list) or refuses with one line (a restore) what it cannot use. Writing and listing run on worker threads
(`threads.run_in_background`); nothing here imports torch.
"""
from __future__ import annotations

import base64
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HISTORY_FOLDER = "history"
MAX_ENTRIES = 500  # the oldest go first beyond this
MAX_ENTRY_BYTES = 1 << 20  # a settings file larger than this is not one of ours
MAX_PNG_BYTES = 64 << 20
THUMB_TILE = 32  # px per image in a thumbnail
ENTRY_VERSION = 1
_ID = re.compile(r"^\d{8}-\d{6}-\d{6}$")


def history_dir() -> Path:
    from desktop.settings import user_data_dir

    return user_data_dir() / HISTORY_FOLDER


# --- making entries (GUI thread: plain data only) --------------------------------------------------------

def compare_entry(summary, job, bundle, row_names: list[str], composition, columns: list[dict]) -> dict:
    """A Sample & compare run as plain data: everything Run needs to draw it again, and what it measured."""
    results = sorted(summary.results, key=lambda r: r.index)
    names = list(bundle.label_names)
    return {
        "version": ENTRY_VERSION, "kind": "compare", "time": time.time(), "model": _model(bundle),
        "seed": int(job.seed), "per_row": int(job.per_row), "precision": job.precision,
        "runtime": summary.runtime_label, "columns": columns,
        "composer": {"names": names, "rows": np.asarray(job.context, np.float64).tolist(),
                     "guidance": float(composition.guidance), "guide_with": composition.guide_with,
                     "negatives": [r.negative for r in composition.rows] if job.row_negatives is not None
                     and len(composition.rows) == len(job.context) else [""] * len(job.context)},
        "row_names": list(row_names),
        "results": [{"title": r.spec.title, "sampler": r.spec.sampler, "steps": r.spec.steps, "nfe": r.nfe,
                     "seconds": round(r.seconds, 4)} for r in results],
        "cancelled": bool(summary.cancelled),
    }


def grid_entry(spec, summary) -> dict:
    return {"version": ENTRY_VERSION, "kind": "grid", "time": time.time(),
            "model": {"path": summary.model_path, "name": summary.model, "sha256": summary.model_hash},
            "grid": spec.to_dict(), "runtime": summary.runtime_label, "precision": summary.precision,
            "row_names": [spec.base.context], "results": [
                {"title": c.settings.describe(spec.x.name), "sampler": c.settings.sampler, "steps": c.settings.steps,
                 "nfe": c.nfe, "seconds": round(c.seconds, 4)} for c in summary.cells.values()],
            "cancelled": bool(summary.cancelled)}


SKETCH_MODES = ("sketch", "inpaint")  # desktop.panels.sketch_dialog's SKETCH and INPAINT
MAX_SKETCH_SIDE = 256  # pixels: a picture larger than any model here is not one of ours


def sketch_entry(job, result, bundle, mode: str, runtime: str = "") -> dict:
    """A sketch (SDEdit) or inpaint (RePaint) run as plain data: the canvas, the mask and every setting, so the
    dialog can draw it again. `job` is a desktop.jobs.editing SketchJob or InpaintJob, `result` its EditResult."""
    image = np.ascontiguousarray(getattr(job, "sketch", None) if mode == "sketch" else job.image, np.uint8)
    mask = getattr(job, "mask", None)
    sketch = {"mode": mode, "side": int(image.shape[0]), "image": base64.b64encode(image.tobytes()).decode(),
              "mask": None if mask is None else base64.b64encode(np.packbits(np.asarray(mask, bool))).decode(),
              "label": job.label, "strength": float(getattr(job, "strength", 1.0)),
              "sampler": getattr(job, "sampler", "ddim"), "steps": int(job.steps),
              "resample": int(getattr(job, "resample", 4)), "jump": int(getattr(job, "jump", 5)),
              "guidance": float(job.guidance), "seed": int(job.seed), "n": int(job.n), "precision": job.precision}
    title = "Sketch → emoji" if mode == "sketch" else "Inpaint"
    return {"version": ENTRY_VERSION, "kind": "sketch", "time": time.time(), "model": _model(bundle),
            "seed": int(job.seed), "precision": job.precision, "runtime": runtime, "sketch": sketch,
            "row_names": [job.label],
            "results": [{"title": title, "sampler": sketch["sampler"] if mode == "sketch" else "repaint",
                         "steps": int(job.steps), "nfe": int(result.nfe), "seconds": round(result.seconds, 4)}],
            "cancelled": bool(result.cancelled)}


def sketch_thumbnail(source: np.ndarray, result) -> np.ndarray:
    """(H, W, 3) uint8: the input, then the first outputs."""
    return _tile_rows([np.concatenate([np.asarray(source, np.uint8)[None], result.images[:4]])])


def sketch_settings(d) -> dict:
    """A kept sketch run's settings, checked, with "image" (side, side, 3) uint8 and "mask" (side, side) bool or
    None decoded: what SketchDialog.apply_settings takes. ValueError with one line when they cannot be used."""
    from core.catalog import PRECISIONS, SAMPLER_NAMES

    if not isinstance(d, dict) or d.get("mode") not in SKETCH_MODES:
        raise ValueError("the sketch's settings are missing or damaged")
    side = d.get("side")
    if not (_is_int(side) and 1 <= side <= MAX_SKETCH_SIDE):
        raise ValueError("the sketch's size is missing or out of range")
    image = _decode(d.get("image"), side * side * 3, "picture").reshape(side, side, 3)
    mask = None
    if d.get("mask") is not None:
        bits = _decode(d["mask"], (side * side + 7) // 8, "mask")
        mask = np.unpackbits(bits)[: side * side].reshape(side, side).astype(bool)
    out = {"mode": d["mode"], "image": image, "mask": mask}
    label = d.get("label")
    out["label"] = label if isinstance(label, str) and len(label) <= 200 else ""
    for key, lo, hi in (("steps", 1, 1000), ("resample", 1, 20), ("jump", 1, 100), ("seed", 0, 2**31 - 1),
                        ("n", 1, 8)):
        if not (_is_int(d.get(key)) and lo <= d[key] <= hi):
            raise ValueError(f"the sketch's {key} is missing or out of range")
        out[key] = d[key]
    for key, lo, hi in (("strength", 0.0, 1.0), ("guidance", 0.0, 10.0)):
        v = d.get(key)
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi):
            raise ValueError(f"the sketch's {key} is missing or out of range")
        out[key] = float(v)
    out["sampler"] = d.get("sampler") if d.get("sampler") in SAMPLER_NAMES else "dpmpp3m"
    out["precision"] = d.get("precision") if d.get("precision") in PRECISIONS else "auto"
    return out


def _decode(text, size: int, what: str) -> np.ndarray:
    if not isinstance(text, str) or len(text) > 4 * size // 3 + 8:
        raise ValueError(f"the sketch's {what} is missing or damaged")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError(f"the sketch's {what} is damaged") from None
    if len(raw) != size:
        raise ValueError(f"the sketch's {what} has the wrong size")
    return np.frombuffer(raw, np.uint8).copy()


def _model(bundle) -> dict:
    path = str(bundle.path) if bundle.path is not None else ""
    return {"path": path, "name": Path(path).name if path else "(unsaved)", "sha256": ""}


def compare_thumbnail(summary) -> np.ndarray:
    """(H, W, 3) uint8: one row per column, its first images."""
    rows = [r.images[:4] for r in sorted(summary.results, key=lambda r: r.index)]
    return _tile_rows(rows)


def grid_thumbnail(spec, summary) -> np.ndarray:
    rows, cols = spec.shape
    first = next(iter(summary.cells.values())).images[0]
    blank = np.full_like(first, 255)
    grid = [[summary.cells[r, c].images[0] if (r, c) in summary.cells else blank for c in range(cols)]
            for r in range(rows)]
    return _tile_rows([np.stack(row) for row in grid])


def _tile_rows(rows: list[np.ndarray]) -> np.ndarray:
    h = rows[0].shape[1]
    width = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + 1), width * (h + 1), 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            out[i * (h + 1):i * (h + 1) + h, j * (h + 1):j * (h + 1) + h] = img
    return out


# --- the store (worker threads) ----------------------------------------------------------------------------

def _digest(path: str) -> str:
    from core.paths import file_digest

    try:
        return file_digest(path) if path else ""
    except OSError:
        return ""


def record(entry: dict, thumbnail: np.ndarray, folder: Path | None = None) -> dict:
    """Write one entry (the model's sha256 filled in) and its thumbnail; drop the oldest beyond MAX_ENTRIES.
    Returns the entry as written, with its "id"."""
    from PIL import Image

    from core.paths import atomic_write_bytes

    folder = folder or history_dir()
    folder.mkdir(parents=True, exist_ok=True)
    entry = json.loads(json.dumps(entry))  # a private copy: the caller's dict stays as it was
    if not entry["model"].get("sha256"):
        entry["model"]["sha256"] = _digest(entry["model"].get("path", ""))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(entry["time"]))
    entry["id"] = f"{stamp}-{int(entry['time'] * 1e6) % 1_000_000:06d}"
    while (folder / f"{entry['id']}.json").exists():  # two runs in one microsecond: the next free id
        entry["id"] = entry["id"][:-6] + f"{(int(entry['id'][-6:]) + 1) % 1_000_000:06d}"
    h, w = thumbnail.shape[:2]
    scale = max(1, THUMB_TILE // 16)
    image = Image.fromarray(np.ascontiguousarray(thumbnail)).resize((w * scale, h * scale), Image.NEAREST)
    image.save(folder / f"{entry['id']}.png")
    atomic_write_bytes(folder / f"{entry['id']}.json", json.dumps(entry).encode())
    _prune(folder)
    return entry


def _ids(folder: Path) -> list[str]:
    try:
        return sorted((p.stem for p in folder.glob("*.json") if _ID.match(p.stem)), reverse=True)
    except OSError:
        return []


def _prune(folder: Path, keep: int = MAX_ENTRIES) -> None:
    for old in _ids(folder)[keep:]:
        delete(old, folder)


def delete(entry_id: str, folder: Path | None = None) -> None:
    folder = folder or history_dir()
    if not _ID.match(entry_id):
        return  # only our own files are ever removed
    for ext in (".json", ".png"):
        (folder / f"{entry_id}{ext}").unlink(missing_ok=True)


def clear(folder: Path | None = None) -> int:
    folder = folder or history_dir()
    ids = _ids(folder)
    for entry_id in ids:
        delete(entry_id, folder)
    return len(ids)


def load_entries(folder: Path | None = None) -> list[dict]:
    """Every readable entry, newest first, each with "thumbnail" (its PNG's path, or ""); damaged ones skipped."""
    folder = folder or history_dir()
    out = []
    for entry_id in _ids(folder):
        path = folder / f"{entry_id}.json"
        try:
            if path.stat().st_size > MAX_ENTRY_BYTES:
                continue
            entry = _parse(path.read_text(encoding="utf-8"))
            restorable(entry)
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        thumb = folder / f"{entry_id}.png"
        entry["id"], entry["thumbnail"] = entry_id, str(thumb) if thumb.is_file() else ""
        out.append(entry)
    return out


def _parse(text: str) -> dict:
    from core.schema import load_json_text

    entry = load_json_text(text, source="the settings", max_bytes=MAX_ENTRY_BYTES, max_depth=16, error=ValueError)
    if not isinstance(entry, dict):
        raise ValueError("the settings are not a JSON object")
    return entry


# --- reading an entry back ---------------------------------------------------------------------------------

@dataclass
class Restorable:
    kind: str
    title: str
    model_path: str = ""
    model_hash: str = ""
    columns: list | None = None
    seed: int = 0
    per_row: int = 4
    precision: str = "auto"
    composer: dict | None = None
    grid: object = None  # core.xy_grid.GridSpec for a grid
    sketch: dict | None = None  # sketch_settings(...) for a sketch or inpaint run


def restorable(entry) -> Restorable:
    """The settings of an entry, checked (ValueError with one line when they cannot be used)."""
    from core.catalog import PRECISIONS, SAMPLER_NAMES
    from core.errors import UserError
    from core.xy_grid import GridSpec
    from desktop.state import composer_state
    from desktop.widgets.column_strip import valid_column_settings

    if not isinstance(entry, dict) or entry.get("kind") not in ("compare", "grid", "sketch"):
        raise ValueError("these are not the settings of a Diffusion Desk run")
    model = entry.get("model") if isinstance(entry.get("model"), dict) else {}
    path, digest = model.get("path", ""), model.get("sha256", "")
    path, digest = (path if isinstance(path, str) else ""), (digest if isinstance(digest, str) else "")
    when = entry.get("time")
    stamp = time.strftime("%d %b %H:%M", time.localtime(when)) if isinstance(when, (int, float)) and \
        0 < when < 1e11 else "an earlier run"
    if entry["kind"] == "grid":
        try:
            grid = GridSpec.from_dict(entry.get("grid"))
        except (UserError, AttributeError) as e:
            raise ValueError(f"the grid's settings are damaged ({e})") from None
        return Restorable("grid", f"the grid of {stamp}", path, digest, grid=grid)
    if entry["kind"] == "sketch":
        sketch = sketch_settings(entry.get("sketch"))
        what = "sketch" if sketch["mode"] == "sketch" else "inpainting"
        return Restorable("sketch", f"the {what} of {stamp}", path, digest, sketch=sketch)
    columns = valid_column_settings(entry.get("columns"), set(SAMPLER_NAMES))
    seed, per_row = entry.get("seed"), entry.get("per_row")
    if not columns:
        raise ValueError("the run's sampler columns are missing or damaged")
    if not (_is_int(seed) and 0 <= seed < 2**31 and _is_int(per_row) and 1 <= per_row <= 16):
        raise ValueError("the run's seed or images per row are missing or out of range")
    precision = entry.get("precision") if entry.get("precision") in PRECISIONS else "auto"
    return Restorable("compare", f"the run of {stamp}", path, digest, columns, seed, per_row, precision,
                      composer_state(entry.get("composer")))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_png_entry(path: str) -> dict:
    """The run settings an exported PNG carries (its "entry" or grid "settings" text chunk); ValueError if none."""
    from PIL import Image

    p = Path(path)
    if p.stat().st_size > MAX_PNG_BYTES:
        raise ValueError("the file is too large to be one of this app's pictures")
    try:
        with Image.open(p) as im:
            if im.format != "PNG":
                raise ValueError(f"this is a {im.format} file, not a PNG")
            text = dict(getattr(im, "text", {}) or {})
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"not a readable PNG ({e})") from None
    if "entry" in text:
        entry = _parse(text["entry"])
    elif text.get("kind") == "xy-grid" and "settings" in text:
        settings = _parse(text["settings"])
        entry = {"kind": "grid", "grid": settings.get("grid"),
                 "model": {"path": "", "name": settings.get("model", ""), "sha256": settings.get("model_sha256", "")}}
    else:
        raise ValueError("it carries no Diffusion Desk settings (only pictures this app exported do)")
    restorable(entry)
    return entry


# --- the model a restore asks for ------------------------------------------------------------------------

def exists(path: str) -> bool:
    return bool(path) and Path(path).is_file()


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def digest_matches(path: str, digest: str) -> bool:
    """True when the file is the one recorded (or nothing was recorded to compare with)."""
    return not digest or _digest(path) == digest

