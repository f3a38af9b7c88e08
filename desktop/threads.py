"""The one way the app runs work off the GUI thread: a worker QObject on its own QThread.

Two workers, one signal vocabulary:

    FunctionWorker(fn, *args)   calls fn(*args) once
    GeneratorWorker(fn, *args)  iterates fn(*args): every item it yields is emitted as progress

    progress(object)  an item of a generator job (or one a job reports from inside a callback)
    result(object)    the job's return value (a generator's `return` value)
    failed(object)    the exception that ended the job (its traceback dropped)
    finished()        always the last signal

A job that must see its stop request or report from inside a callback (a sampler's per-step
callback) is built with `control=True`: it is then called with `control=Control(stop, report)`,
and it ends itself when `control.stop` is set (training saves a checkpoint first). A generator
without control is simply closed between two items once a stop was requested.

`start(worker, on_progress=..., on_result=..., on_failed=..., on_finished=...)` moves the worker
to a new QThread and starts it. The callbacks run on the GUI thread, through a relay, and are
skipped when they belong to a widget that was deleted meanwhile; `on_finished` runs once the
thread's event loop has ended. `run_in_background(fn, *args, on_done, on_error)` is the one-shot
shorthand with a one-line message for `on_error`.

Lifetime rules, each learnt from a crash:
  * the thread, the worker and the relay stay referenced here (`_running`) while the job runs, and
    are retired together (`retire_thread`) once the thread has really ended -- a timer checks;
  * the GUI thread never calls QThread.wait(): PySide6's wait() keeps the GIL, so a worker still
    running Python could never finish;
  * the worker is never deleted on its own thread (no deleteLater): it is a Python-made QObject, so
    ~QObject calls back into PySide (disconnectNotify looks for a Python override) for the GIL while
    holding Qt's connection locks, and a GUI thread that builds a widget meanwhile holds the GIL and
    waits for one of those locks: a deadlock (the suite's rare hang at window creation, caught under
    gdb on 2026-12-07). The reaper drops the worker on the GUI thread once its thread has ended;
  * a thread is retired only once it has really ended (wait(0)), never while it still runs its
    deferred deletes (a double delete: the suite's old rare SIGBUS/SIGSEGV).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, QTimer, Signal, Slot


@dataclass(frozen=True)
class Control:
    """What a job built with control=True sees of its worker."""

    stop: threading.Event  # set by request_stop(), from the GUI thread
    report: Callable[[object], None]  # emits progress(item) from the worker thread


class _Worker(QObject):
    """The shared vocabulary and stop request of FunctionWorker and GeneratorWorker."""

    progress = Signal(object)
    result = Signal(object)
    failed = Signal(object)
    finished = Signal()

    def __init__(self, fn: Callable, *args, control: bool = False, **kwargs):
        super().__init__()  # no parent: it is moved to its own QThread
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self.stop_event = threading.Event()
        self._control = Control(self.stop_event, self.progress.emit) if control else None

    def request_stop(self) -> None:
        """Thread-safe: the job stops at its next check (between items, or where it looks at control.stop)."""
        self.stop_event.set()

    def _invoke(self):
        if self._control is not None:
            return self._fn(*self._args, control=self._control, **self._kwargs)
        return self._fn(*self._args, **self._kwargs)

    def _body(self):
        raise NotImplementedError

    @Slot()
    def run(self) -> None:
        try:
            value = self._body()
        except Exception as e:  # noqa: BLE001 - every failure reaches the GUI as failed(exception)
            # Without its traceback: the frames would keep this worker (and the job's tensors) alive in the GUI.
            self.failed.emit(e.with_traceback(None))
        else:
            self.result.emit(value)
        finally:
            self.finished.emit()


class FunctionWorker(_Worker):
    """Runs fn(*args, **kwargs) once: result(return value) or failed(exception), then finished."""

    def _body(self):
        return self._invoke()


class GeneratorWorker(_Worker):
    """Iterates fn(*args, **kwargs): progress(item) per item, result(the generator's return value)."""

    def _body(self):
        gen = self._invoke()
        while True:
            if self._control is None and self.stop_event.is_set():
                gen.close()  # cooperative: between two items
                return None
            try:
                item = next(gen)
            except StopIteration as end:
                return end.value
            self.progress.emit(item)


# --------------------------------------------------------------------------------------------
# Starting a worker and retiring it
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

    def __init__(self, on_progress, on_result, on_failed, on_finished):
        super().__init__()
        self._on = {"progress": on_progress, "result": on_result, "failed": on_failed, "finished": on_finished}

    def _call(self, name: str, *args) -> None:
        callback = self._on[name]
        if _receiver_alive(callback):
            callback(*args)

    @Slot(object)
    def progress(self, item):
        self._call("progress", item)

    @Slot(object)
    def result(self, value):
        self._call("result", value)

    @Slot(object)
    def failed(self, error):
        self._call("failed", error)

    @Slot()
    def cleanup(self):
        """Queued from QThread.finished: hand our references to the reaper, then tell the owner."""
        for entry in [e for e in _running if e[2] is self]:
            _running.discard(entry)
            retire_thread(entry[0], entry[1], entry[2])
        self._call("finished")


_running: set = set()  # (thread, worker, relay) triples in flight: the keep-alive set
_retired: list = []  # (thread, objects) kept alive until the thread has really ended
_reaper: QTimer | None = None


def start(worker: _Worker, *, on_progress: Callable | None = None, on_result: Callable | None = None,
          on_failed: Callable | None = None, on_finished: Callable | None = None) -> QThread:
    """Run `worker` on a new QThread; the callbacks run on the GUI thread (see the module docstring)."""
    thread, relay = QThread(), _Relay(on_progress, on_result, on_failed, on_finished)
    worker.moveToThread(thread)
    thread.started.connect(worker.run)
    worker.progress.connect(relay.progress)
    worker.result.connect(relay.result)
    worker.failed.connect(relay.failed)
    # Direct: the worker thread quits itself, so its end never waits for the GUI's event loop.
    worker.finished.connect(thread.quit, Qt.ConnectionType.DirectConnection)
    # No worker.deleteLater: see the module docstring (a deadlock); the reaper drops it on this thread.
    # relay is a GUI-thread QObject, so this is a queued call: never drop a QThread from inside itself
    thread.finished.connect(relay.cleanup)
    _running.add((thread, worker, relay))
    from . import engine

    engine.release_gui_openmp_threads()  # on the GUI thread: its OpenMP team would slow the job's
    thread.start()
    return thread


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
    """Really ended, past its own clean-up: Qt 6's isRunning() is already False and isFinished() already
    True while the ending thread still runs its deferred deletes; dropping the thread's last Python
    reference then races that clean-up (a segfault at exit, seen under gdb, when the worker was still
    deleted there). wait(0) is True only once the thread is done, and never blocks."""
    try:
        return thread.wait(0)
    except RuntimeError:  # the C++ object is already gone
        return True


def run_in_background(fn: Callable, *args, on_done: Callable | None = None,
                      on_error: Callable[[str], None] | None = None) -> QThread:
    """Call fn(*args) on a new QThread; on_done(result) / on_error(one-line message) run on the GUI thread."""
    from desktop.engine import user_message

    def failed(error: BaseException) -> None:
        if _receiver_alive(on_error):
            on_error(user_message(error))

    return start(FunctionWorker(fn, *args), on_result=on_done, on_failed=failed)


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
