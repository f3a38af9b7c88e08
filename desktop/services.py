"""The app's door to the core: lazy imports, background calls, the per-user data folder, settings, recents.

Widgets call the functions here instead of importing `core` (which pulls in torch, ~1-2 s): every
core import happens inside a function, and the slow ones run on a worker thread through
`run_in_background`, so the window is on screen before torch has loaded.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, QSettings, QStandardPaths, QThread, QTimer, Slot

ORG_NAME = APP_NAME = "DiffusionDesk"
MAX_RECENT = 8

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
    last = settings().value("export/last_dir", "")
    if last and Path(last).is_dir():
        return Path(last)
    pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    if pictures and Path(pictures).is_dir():
        return Path(pictures)
    folder = user_data_dir() / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def remember_export_dir(path: str) -> None:
    settings().setValue("export/last_dir", str(Path(path).parent))


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


def settings() -> QSettings:
    """App settings. With DIFFUSION_DESK_HOME set (tests, portable use) they live in that folder."""
    override = os.environ.get("DIFFUSION_DESK_HOME")
    if override:
        return QSettings(str(Path(override) / "settings.ini"), QSettings.Format.IniFormat)
    return QSettings(ORG_NAME, APP_NAME)


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
    raw = settings().value("recent/items", [], type=list) or []
    items = []
    for entry in raw:
        kind, _, spec = str(entry).partition("|")
        if kind in ("dataset", "checkpoint") and spec:
            items.append(RecentItem(kind, spec))
    return items


def add_recent(kind: str, spec: str) -> None:
    items = [it for it in recent_items() if not (it.kind == kind and it.spec == spec)]
    items.insert(0, RecentItem(kind, spec))
    settings().setValue("recent/items", [f"{it.kind}|{it.spec}" for it in items[:MAX_RECENT]])


def clear_recent() -> None:
    settings().setValue("recent/items", [])


# --------------------------------------------------------------------------------------------
# Running a function off the GUI thread
# --------------------------------------------------------------------------------------------


def _receiver_alive(callback) -> bool:
    """False for no callback, or a bound method of a widget that was closed and deleted meanwhile
    (a background save that finishes after its panel is gone must not touch the dead widget)."""
    if callback is None:
        return False
    owner = getattr(callback, "__self__", None)
    return not isinstance(owner, QObject) or shiboken6.isValid(owner)


class _Relay(QObject):
    """Lives in the GUI thread; the worker's queued signals land here and call the callbacks."""

    def __init__(self, on_done, on_error):
        super().__init__()
        self._on_done, self._on_error = on_done, on_error

    @Slot(object)
    def done(self, result):
        if _receiver_alive(self._on_done):
            self._on_done(result)

    @Slot(str)
    def failed(self, message):
        if _receiver_alive(self._on_error):
            self._on_error(message)

    @Slot()
    def cleanup(self):
        """Queued from QThread.finished: hand our references to the reaper."""
        for entry in [e for e in _running if e[2] is self]:
            _running.discard(entry)
            retire_thread(entry[0], entry[1], entry[2])


_running: set = set()  # (thread, worker, relay) triples of run_in_background calls in flight
_retired: list = []  # (thread, objects) kept alive until the thread has really ended
_reaper: QTimer | None = None


def retire_thread(thread: QThread, *keep) -> None:
    """Drop `thread` (and `keep`) once it has really ended -- checked by a timer, never by blocking.

    Never call QThread.wait() on the GUI thread while a worker may still run Python: PySide6's wait()
    keeps the GIL, so the worker can never finish (a deadlock until the timeout).
    """
    global _reaper
    _retired.append((thread, keep))
    if _reaper is None:
        _reaper = QTimer()
        _reaper.setInterval(20)
        _reaper.timeout.connect(_reap)
    if not _reaper.isActive():
        _reaper.start()


def _reap() -> None:
    _retired[:] = [(t, k) for t, k in _retired if not _has_ended(t)]
    if not _retired and _reaper is not None:
        _reaper.stop()


def _has_ended(thread: QThread) -> bool:
    try:
        return thread.isFinished() or not thread.isRunning()
    except RuntimeError:  # the C++ object is already gone
        return True


def run_in_background(fn: Callable, *args, on_done: Callable | None = None,
                      on_error: Callable[[str], None] | None = None) -> QThread:
    """Call fn(*args) on a new QThread; on_done(result) / on_error(one-line message) run on the GUI thread."""
    from desktop.workers import FunctionWorker

    thread, worker, relay = QThread(), FunctionWorker(fn, *args), _Relay(on_done, on_error)
    worker.moveToThread(thread)
    thread.started.connect(worker.run)
    worker.done.connect(relay.done)
    worker.failed.connect(relay.failed)
    worker.finished.connect(thread.quit)
    worker.finished.connect(worker.deleteLater)
    # relay is a GUI-thread QObject, so this is a queued call: never drop a QThread from inside itself
    thread.finished.connect(relay.cleanup)
    _running.add((thread, worker, relay))
    thread.start()
    return thread


def background_busy() -> bool:
    return bool(_running) or any(not _has_ended(t) for t, _ in _retired)


def wait_for_background(timeout_s: float = 30.0) -> bool:
    """At exit: keep the event loop turning (never QThread.wait) until background jobs have ended."""
    deadline = time.monotonic() + timeout_s
    while background_busy() and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.01)  # releases the GIL for the workers
    _reap()
    return not background_busy()


# --------------------------------------------------------------------------------------------
# Core calls (each imports core lazily; the slow ones are meant for run_in_background)
# --------------------------------------------------------------------------------------------


def runtime_label(device: str = "auto", precision: str = "auto") -> str:
    """'CPU (2 threads), bf16' or 'CUDA: <card>, bf16'. Imports torch: call it off the GUI thread."""
    from core.device import configure_threads, runtime

    configure_threads()
    return runtime(device, precision).label


def warm_up_training() -> None:
    """Import what the first training run needs but torch loads lazily (torch._dynamo, pulled in by the
    optimizer: ~3 s once), so pressing Start does not wait for it. Meant for run_in_background."""
    import torch._dynamo  # noqa: F401


def builtin_names() -> list[str]:
    return ["emoji16", "emoji32"]  # mirrors core.data.BUILTIN_DATASETS without importing torch


def load_dataset(spec: str, *, size: int = 16):
    """A data set from a built-in name, a folder, an .npz, or 'course:<sprites.npy>[|<labels.npy>]'."""
    from core.data import load_course_npy, load_dataset as core_load

    if spec.startswith("course:"):
        images, _, labels = spec[len("course:"):].partition("|")
        return load_course_npy(images, labels or None)
    return core_load(spec, size=size)


def load_sprite_sheet(path: str, *, cell: int, size: int, margin: int = 0, spacing: int = 0):
    from core.data import load_sprite_sheet as core_sheet

    return core_sheet(path, cell=cell, size=size, margin=margin, spacing=spacing)


def save_dataset(dataset, path: str | Path) -> Path:
    from core.data import save_npz

    return save_npz(dataset, path)


def imported_copy_path(dataset) -> Path:
    """Where an imported or edited data set is kept: <data folder>/datasets/<name>.npz."""
    return datasets_dir() / f"{safe_name(dataset.name)}.npz"


def load_checkpoint(path: str):
    from core.checkpoint import load_checkpoint as core_load
    from core.device import pick_device

    return core_load(path, pick_device("auto"))


def model_choices() -> list[tuple[str, str]]:
    """(label, path) of the models a user can switch to: the shipped one, then each run (newest first)."""
    import time as _time

    from core.checkpoint import CheckpointError, read_metadata

    out = []
    shipped = default_checkpoint()
    if shipped:
        out.append(("Shipped default model", shipped))
    runs = sorted(runs_dir().glob("*/model.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True) \
        if runs_dir().is_dir() else []
    for path in runs[:30]:
        try:
            step = read_metadata(path)["step"]
        except CheckpointError:
            continue
        when = _time.strftime("%d %b %H:%M", _time.localtime(path.stat().st_mtime))
        out.append((f"Run {path.parent.name} (step {step:,}, {when})", str(path)))
    return out


def default_checkpoint() -> str | None:
    from core.paths import default_checkpoint as core_default  # no torch in core.paths

    path = core_default()
    return str(path) if path else None


def licences_text() -> str:
    from core.paths import resource_path

    path = resource_path("LICENSES.md")
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return f"The licence file ({path}) is missing from this installation."


def _is_out_of_memory(text: str) -> bool:
    """torch reports CPU and GPU exhaustion as RuntimeError ('[enforce fail at alloc_cpu.cpp...]', 'CUDA out of memory')."""
    low = text.lower()
    return "alloc_cpu" in low or "out of memory" in low or "not enough memory" in low or "failed to allocate" in low


def user_message(error: BaseException) -> str:
    """One readable line for a dialog: our own errors already are one; others get their type named."""
    from_core = type(error).__module__.startswith("core.")
    text = " ".join(str(error).split())
    if isinstance(error, MemoryError) or _is_out_of_memory(text):
        return ("Not enough memory for this. Use fewer images per sampler, a smaller batch size, a narrower "
                "network or a smaller data set.")
    if isinstance(error, OSError) and getattr(error, "errno", None) == 28:
        return f"The disk is full ({error.filename or 'while writing'}). Free some space and try again."
    if from_core or isinstance(error, (ValueError, OSError)):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------


def train_presets() -> dict:
    """{'quick': TrainConfig, 'course': ..., 'tiny': ...} (imports torch)."""
    from core.train import TRAIN_PRESETS

    return dict(TRAIN_PRESETS)


def train_config_class():
    from core.train import TrainConfig

    return TrainConfig


def read_run_info(folder: str | Path) -> dict:
    """{'step', 'train_config' (dict), 'dataset', 'label_names'} of a run folder, or CheckpointError."""
    from core.checkpoint import CheckpointError, read_metadata

    folder = Path(folder)
    model, resume = folder / "model.safetensors", folder / "resume.safetensors"
    if not model.is_file() or not resume.is_file():
        raise CheckpointError(f"{folder}: not a training run folder (model.safetensors and resume.safetensors "
                              "are written at the first checkpoint)")
    meta = read_metadata(model)
    return {"step": meta["step"], "train_config": meta["train_config"], "dataset": meta["dataset"],
            "dataset_fingerprint": meta["dataset_fingerprint"], "label_names": meta["label_names"]}


def read_loss_log(folder: str | Path) -> dict:
    from core.train import read_loss_log as core_read

    path = Path(folder) / "loss.csv"
    return core_read(path) if path.is_file() else {}
