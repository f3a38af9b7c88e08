"""Where shipped resources live (from source and from a PyInstaller build alike), and the one atomic file write."""
from __future__ import annotations

import os
import sys
import tempfile
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


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: the old file survives a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; a checkpoint is an ordinary user file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
