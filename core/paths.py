"""Where shipped resources live (from source and from a PyInstaller build alike), and the one atomic file write."""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

from .errors import UserError


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


# The shipped models, in the order the model menus list them: (file under checkpoints/, menu label).
SHIPPED_MODELS = (("default.safetensors", "Shipped model"),
                  ("course_unet.safetensors", "Shipped course model"),
                  ("default.shortcut4.safetensors", "Shipped model's 4-call shortcut"),
                  ("default.shortcut2.safetensors", "Shipped model's 2-call shortcut"))


def shipped_models() -> list[tuple[str, Path]]:
    """(menu label, path) of each shipped model this build has."""
    return [(label, checkpoint_path(name)) for name, label in SHIPPED_MODELS if checkpoint_path(name).is_file()]


def guide_model_for(model: str | Path) -> Path:
    """Where a model's guide for autoguidance lives: <name>.guide.safetensors beside it."""
    model = Path(model)
    return model.with_name(model.stem + ".guide.safetensors")


def shipped_guide_model() -> Path | None:
    """The shipped default model's guide (a weaker model of the same run), or None when none is shipped."""
    path = guide_model_for(checkpoint_path("default.safetensors"))
    return path if path.is_file() else None


def file_digest(path: str | Path) -> str:
    """sha256 of a file (hex): the model a picture was drawn with, recorded beside its settings."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


# --- outputs never replace what the user owns ----------------------------------------------------------

class OutputRefused(UserError):
    """An output path that names an input, a model, run or data file, or a file of another type."""


FILE_SIGNATURES = {"png": (b"\x89PNG\r\n\x1a\n",), "gif": (b"GIF87a", b"GIF89a")}
RUN_FILE_NAMES = ("model.safetensors", "resume.safetensors", "loss.csv", "run.lock")


def check_output(flag: str, path: str | Path, kind: str, *, inputs=(), force: bool = False) -> None:
    """Refuse to write a `kind` file ("png", "gif") at `path` when that would replace one of `inputs` (never
    allowed), a run folder's file, or an existing file that is not already a `kind` file (allowed with force).
    An existing file of the same kind is replaced: that is re-running the same command."""
    path = Path(path)
    for other in inputs:
        if other and _same_file(path, Path(other)):
            raise OutputRefused(f"{flag} {path}: that is an input of this command ({other}); choose another file")
    if not path.exists() or force:
        return
    if path.name in RUN_FILE_NAMES:
        raise OutputRefused(f"{flag} {path}: that is a training run's {path.name}; choose another file "
                            "(or add --force to replace it)")
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return  # unreadable: the write itself will say what is wrong
    if not any(head.startswith(sig) for sig in FILE_SIGNATURES[kind]):
        what = _describe_head(head)
        raise OutputRefused(f"{flag} {path}: the file exists and is {what}, not a {kind.upper()} image; choose "
                            "another file (or add --force to replace it)")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _describe_head(head: bytes) -> str:
    if head[8:9] == b"{":  # safetensors: an 8-byte header length, then the JSON header
        return "a model or run file (safetensors)"
    if head.startswith(b"PK"):
        return "a zip archive (a data set or PyTorch file)"
    if head.startswith(b"\x93NUMPY"):
        return "a numpy array file"
    for kind, sigs in FILE_SIGNATURES.items():
        if any(head.startswith(s) for s in sigs):
            return f"a {kind.upper()} image"
    return "another kind of file"
