"""Where shipped resources and per-user data live, from source and from a PyInstaller build alike."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def app_root() -> Path:
    """Folder holding `resources/` and `checkpoints/`: the repo root, or the frozen bundle's folder."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root)
    return Path(__file__).resolve().parent.parent


def resource_path(*parts: str) -> Path:
    """Path of a shipped, read-only file under `resources/`."""
    return app_root().joinpath("resources", *parts)


def checkpoint_path(*parts: str) -> Path:
    """Path of a shipped, read-only file under `checkpoints/`."""
    return app_root().joinpath("checkpoints", *parts)


def default_checkpoint() -> Path | None:
    """The shipped pretrained model, or None when this build has none."""
    path = checkpoint_path("default.safetensors")
    return path if path.is_file() else None


def user_data_dir() -> Path:
    """Per-user writable folder (runs, imported data sets). Overridable with DIFFUSION_DESK_HOME.

    The same folder as the app's QStandardPaths.AppDataLocation (organisation and application are
    both "DiffusionDesk", so Qt appends both), computed without importing Qt.
    """
    override = os.environ.get("DIFFUSION_DESK_HOME")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "DiffusionDesk" / "DiffusionDesk"
