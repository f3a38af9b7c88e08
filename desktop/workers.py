"""QThread workers: a one-shot function call and the training loop.

Rules: a worker is a QObject with no parent, moved to its own QThread; it talks to the
GUI only through signals (small payloads, throttled); pause and stop are `threading.Event`s checked
between steps; it always ends with `finished`, wired by the owner to `thread.quit` / `deleteLater`.
core and torch are imported inside `run`, on the worker thread.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot

PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress signals a second, however fast the steps are


class FunctionWorker(QObject):
    """Runs fn(*args) once; emits done(result) or failed(one-line message), then finished."""

    done = Signal(object)
    failed = Signal(str)
    finished = Signal()

    def __init__(self, fn, *args):
        super().__init__()
        self._fn, self._args = fn, args

    @Slot()
    def run(self):
        from desktop.services import user_message

        try:
            result = self._fn(*self._args)
        except Exception as e:  # noqa: BLE001 - every failure becomes a dialog, never a traceback
            self.failed.emit(user_message(e))
        else:
            self.done.emit(result)
        finally:
            self.finished.emit()


class TrainingWorker(QObject):
    """Drives `core.train.Trainer.run()` on a worker thread and reports through signals.

    progress carries a list of tuples (step, loss, lr, images_per_s, elapsed, eta, low, mid, high),
    everything since the previous emit; previews are (rows, per_label, H, W, 3) uint8 grids.
    """

    started = Signal(dict)  # {"out_dir", "step", "total_steps", "device", "precision", "resumed"}
    progress = Signal(object)  # list[tuple]
    preview_ready = Signal(int, object)  # step, uint8 grid
    paused = Signal(object)  # a snapshot ModelBundle of the EMA model (meta["live"] = True)
    resumed = Signal()
    saved = Signal(int, str)  # step, checkpoint path (after stop / finish)
    threads_changed = Signal(int)  # torch CPU threads chosen by the ThreadTuner
    run_ended = Signal(str, object)  # "finished" or "stopped", snapshot ModelBundle
    failed = Signal(str)  # what happened and what was kept
    finished = Signal()  # always the last signal

    def __init__(self, dataset, config=None, out_dir: str | Path = "", *, resume: bool = False,
                 total_steps: int | None = None, preview_every: int = 200, device: str = "auto",
                 threads: int | None = None):
        super().__init__()
        self.dataset, self.config, self.out_dir = dataset, config, Path(out_dir)
        self.resume, self.total_steps, self.device = resume, total_steps, device
        self.preview_every, self.threads = preview_every, threads  # threads None: one per core
        self._pause, self._stop = threading.Event(), threading.Event()
        self.trainer = None

    # --- control, called from the GUI thread (events only: thread-safe) ---------------------------
    def request_pause(self) -> None:
        self._pause.set()

    def request_resume(self) -> None:
        self._pause.clear()

    def request_stop(self) -> None:
        self._stop.set()
        self._pause.clear()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    # --- the thread's body -------------------------------------------------------------------------
    @Slot()
    def run(self):
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - reported as a dialog with what was kept
            self.failed.emit(self._failure_message(e))
        finally:
            self.trainer = None
            self.finished.emit()

    def _run(self):
        from core.device import ThreadTuner, configure_threads
        from core.train import Trainer

        n = configure_threads(self.threads)
        # Tune only when the thread count is the app's choice and the run is on the CPU.
        self._tuner = ThreadTuner(n) if self.threads is None else None
        if self.resume:
            tr = Trainer.from_run(self.dataset, self.out_dir, device=self.device, steps=self.total_steps)
        else:
            tr = Trainer(self.dataset, self.config, self.out_dir, device=self.device)
        self.trainer = tr
        self.started.emit({"out_dir": str(tr.out_dir), "step": tr.step, "total_steps": tr.config.steps,
                           "device": str(tr.device), "precision": tr.precision, "resumed": self.resume,
                           "config": tr.config.to_dict()})
        stopped = self._loop(tr)
        if stopped or tr.step < tr.config.steps:
            path = tr.save()  # "Stop saves a checkpoint"; a finished run saved on its last step already
        else:
            path = tr.out_dir / "model.safetensors"
        self.saved.emit(tr.step, str(path))
        self._emit_preview(tr)
        self.run_ended.emit("stopped" if stopped else "finished", self._snapshot(tr, live=False))

    def _loop(self, tr) -> bool:
        """Iterate the trainer; returns True when stopped by the user."""
        pending, last_emit = [], time.monotonic()
        tuner = self._tuner if tr.device.type == "cpu" else None
        first, threads, best = tr.step, None, None
        if tuner is not None:
            threads = self._set_threads(tuner.threads_for(0), None)
        for m in tr.run():
            if tuner is not None:
                i = m.step - first - 1
                tuner.record(i, tr.config.batch_size / max(m.images_per_s, 1e-9))
                threads = self._set_threads(tuner.threads_for(i + 1), threads)
                if tuner.best != best:
                    best = tuner.best
                    self.threads_changed.emit(best)
            pending.append((m.step, m.loss, m.lr, m.images_per_s, m.elapsed, m.eta, *m.band_loss))
            now = time.monotonic()
            if now - last_emit >= PROGRESS_INTERVAL_S or m.step == m.total_steps:
                self.progress.emit(pending)
                pending, last_emit = [], now
            if self.preview_every and m.step % self.preview_every == 0 and m.step < m.total_steps:
                self._emit_preview(tr)
            if self._pause.is_set() and not self._stop.is_set():
                if pending:
                    self.progress.emit(pending)
                    pending = []
                self._wait_while_paused(tr)
            if self._stop.is_set():
                break
        if pending:
            self.progress.emit(pending)
        return self._stop.is_set()

    def _set_threads(self, n: int, current: int | None) -> int:
        if n != current:
            import torch

            torch.set_num_threads(n)
        return n

    def _wait_while_paused(self, tr) -> None:
        """Block this worker thread (not the GUI) until resume or stop; the model stays in memory."""
        self.paused.emit(self._snapshot(tr, live=True))
        while self._pause.is_set() and not self._stop.is_set():
            time.sleep(0.05)
        if not self._stop.is_set():
            self.resumed.emit()

    def _emit_preview(self, tr) -> None:
        grid = tr.preview(per_label=6, steps=20, seed=1234)
        self.preview_ready.emit(tr.step, grid)

    @staticmethod
    def _snapshot(tr, *, live: bool):
        """The EMA model copied out, so sampling on another thread never sees weights change under it."""
        import copy

        from core.checkpoint import ModelBundle

        b = tr.bundle()
        meta = dict(b.meta, live=live, run_dir=str(tr.out_dir), train_config=tr.config.to_dict())
        return ModelBundle(copy.deepcopy(b.net).eval(), b.schedule_config, list(b.label_names), meta, b.path)

    def _failure_message(self, e: Exception) -> str:
        from core.train import TrainingDiverged
        from desktop.services import user_message

        kept = self._kept_text()
        if isinstance(e, TrainingDiverged):
            return str(e)  # already says what happened and what was kept
        if isinstance(e, OSError):
            return f"Could not write to the run folder {self.out_dir}: {user_message(e)} {kept}"
        return f"Training stopped: {user_message(e)} {kept}"

    def _kept_text(self) -> str:
        model = self.out_dir / "model.safetensors"
        if not model.is_file():
            return "No checkpoint had been saved yet."
        try:
            from core.checkpoint import read_metadata

            step = read_metadata(model)["step"]
        except Exception:  # noqa: BLE001 - a damaged file is reported as such
            return f"The checkpoint file in {self.out_dir} could not be read back."
        return f"The last checkpoint (step {step}) in {self.out_dir} was kept; you can resume from it."
