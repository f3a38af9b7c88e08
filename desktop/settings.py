"""The app's per-user side: its data folder, settings file, recent items, defaults shared by the panels.

No torch here, and of core only the torch-free schema layer (core.paths' folders are the install's; these are the
user's). The settings file is the user's and may be edited or damaged: every value is read through a typed reader
(read_str, read_int, read_bytes, load_json) that falls back to the default rather than fail, so a bad value costs
only itself and the window always opens.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QStandardPaths

from core.schema import load_json_text

ORG_NAME = APP_NAME = "DiffusionDesk"
MAX_RECENT = 8
MAX_TEXT = 4096  # characters: a longer settings string (a path, a key) is not one the app wrote
MAX_JSON_BYTES, MAX_JSON_DEPTH = 1 << 20, 32  # the JSON the app keeps in its settings is small and shallow
DEFAULT_SEED = 1234  # the starting noise of training previews, Sample & compare and the self-test
QUALITY_IMAGES = 240  # images per sampler of "Measure quality", unless the user picks another count

# --------------------------------------------------------------------------------------------
# Per-user folders and settings
# --------------------------------------------------------------------------------------------


def user_data_dir() -> Path:
    """Writable per-user folder: $DIFFUSION_DESK_HOME, else QStandardPaths.AppDataLocation."""
    override = os.environ.get("DIFFUSION_DESK_HOME")
    if override:
        path = Path(override)
    else:
        location = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
        path = Path(location) if location else Path.home() / ".diffusion-desk"
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    return user_data_dir() / "runs"


def datasets_dir() -> Path:
    return user_data_dir() / "datasets"


def export_dir() -> Path:
    """Where save dialogs open: the last folder used, else the user's Pictures, else the data folder's
    exports/ (never the install folder)."""
    last = read_str("export/last_dir")
    if last and Path(last).is_dir():
        return Path(last)
    pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    if pictures and Path(pictures).is_dir():
        return Path(pictures)
    folder = user_data_dir() / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def remember_export_dir(path: str) -> None:
    qsettings().setValue("export/last_dir", str(Path(path).parent))


def new_run_dir(dataset_name: str) -> Path:
    """<data folder>/runs/<timestamp>-<dataset>/ (not created yet; the trainer creates it on first save)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = runs_dir() / f"{stamp}-{safe_name(dataset_name)}"
    path, k = base, 2
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


def safe_name(text: str) -> str:
    """A file-name-safe version of a data set name ('animal & nature' -> 'animal-nature')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "data"


def qsettings() -> QSettings:
    """App settings. With DIFFUSION_DESK_HOME set (tests, portable use) they live in that folder."""
    override = os.environ.get("DIFFUSION_DESK_HOME")
    if override:
        return QSettings(str(Path(override) / "settings.ini"), QSettings.Format.IniFormat)
    return QSettings(ORG_NAME, APP_NAME)


def read_str(key: str, default: str = "", st: QSettings | None = None, *, max_len: int = MAX_TEXT) -> str:
    """A string setting; `default` when it is missing, not a string (an INI line with a comma reads as a list),
    longer than `max_len` or holds a NUL."""
    value = (st or qsettings()).value(key, default)
    return value if isinstance(value, str) and len(value) <= max_len and "\0" not in value else default


def read_int(key: str, default: int, lo: int, hi: int, st: QSettings | None = None) -> int:
    """An integer setting in [lo, hi] (INI files hold text: "3" reads as 3); `default` otherwise."""
    value = (st or qsettings()).value(key, default)
    if isinstance(value, str) and len(value) <= 20:
        try:
            value = int(value.strip())
        except ValueError:
            return default
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi else default


def read_bytes(key: str, st: QSettings | None = None) -> QByteArray | None:
    """A saved Qt state (window geometry, splitter sizes), or None when it is missing or not one."""
    value = (st or qsettings()).value(key)
    return value if isinstance(value, QByteArray) and not value.isEmpty() and value.size() <= MAX_JSON_BYTES else None


def load_json(key: str, st: QSettings | None = None):
    """A value save_json stored under `key`, or None when it is missing or unreadable: too long, nested too deep
    (core.schema checks both before parsing) or not JSON."""
    text = read_str(key, "", st, max_len=MAX_JSON_BYTES)
    if not text:
        return None
    try:
        return load_json_text(text, source=key, max_bytes=MAX_JSON_BYTES, max_depth=MAX_JSON_DEPTH, error=ValueError)
    except ValueError:
        return None


def save_json(key: str, value) -> None:
    qsettings().setValue(key, json.dumps(value))


# --------------------------------------------------------------------------------------------
# Recent items (data sets and checkpoints), kept in the settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecentItem:
    kind: str  # "dataset" or "checkpoint"
    spec: str  # a built-in name, a path, or "course:<images.npy>"

    @property
    def title(self) -> str:
        what = "Data set" if self.kind == "dataset" else "Model"
        shown = self.spec.removeprefix("course:")
        return f"{what}: {shown}"


def recent_items() -> list[RecentItem]:
    raw = qsettings().value("recent/items", [])
    raw = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    items = []
    for entry in raw[:MAX_RECENT * 4]:
        kind, _, spec = (entry if isinstance(entry, str) and len(entry) <= MAX_TEXT else "").partition("|")
        if kind in ("dataset", "checkpoint") and spec and "\0" not in spec:
            items.append(RecentItem(kind, spec))
    return items


def add_recent(kind: str, spec: str) -> None:
    items = [it for it in recent_items() if not (it.kind == kind and it.spec == spec)]
    items.insert(0, RecentItem(kind, spec))
    qsettings().setValue("recent/items", [f"{it.kind}|{it.spec}" for it in items[:MAX_RECENT]])


def clear_recent() -> None:
    qsettings().setValue("recent/items", [])


def imported_copy_path(dataset) -> Path:
    """Where an imported or edited data set is kept: <data folder>/datasets/<name>.npz."""
    return datasets_dir() / f"{safe_name(dataset.name)}.npz"

