"""The app's per-user side: its data folder, settings file, recent items, defaults shared by the panels.

No core and no torch here (core.paths' folders are the install's; these are the user's).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths

ORG_NAME = APP_NAME = "DiffusionDesk"
MAX_RECENT = 8
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
    last = qsettings().value("export/last_dir", "")
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


def load_json(key: str):
    """A value save_json stored under `key`, or None when it is missing or unreadable (the settings file is
    the user's: a damaged entry costs only itself)."""
    text = qsettings().value(key)
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
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
    raw = qsettings().value("recent/items", [], type=list) or []
    items = []
    for entry in raw:
        kind, _, spec = str(entry).partition("|")
        if kind in ("dataset", "checkpoint") and spec:
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

