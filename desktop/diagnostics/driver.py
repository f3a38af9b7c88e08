"""The self-test's hold on the window: its report, the dialog watchdog, waiting without blocking Qt."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


class SelfTestFailed(Exception):
    """A step of the self-test failed; str() is the reason."""


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.lines.append(text)
        if sys.stdout is not None:  # a windowed Windows build has no console: see --report
            print(text, flush=True)

    def verdict(self, ok: bool, text: str, failure: str) -> None:
        """'ok' or 'FAIL' before `text`; when not ok, `failure` (with the first error dialog, if any) is recorded."""
        self.say(f"  {'ok  ' if ok else 'FAIL'}  {text}")
        if not ok:
            self.failures.append(failure + (f" ({self.dialogs[0]})" if self.dialogs else ""))

    def fail(self, text: str) -> None:
        self.failures.append(text)
        self.say(f"  FAIL  {text}")


class Driver:
    """Owns the window during the test: timings, the dialog watchdog, waiting without blocking Qt."""

    def __init__(self, args, report: Report, t0: float):
        from PySide6.QtCore import QEvent, QObject, QTimer

        self.args, self.report, self.t0 = args, report, t0
        self.t_shown: float | None = None
        self.t_model: float | None = None
        self.watchdog = QTimer()
        self.watchdog.setInterval(100)
        self.watchdog.timeout.connect(self._close_dialogs)
        outer = self

        class _ShownFilter(QObject):
            def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
                if outer.t_shown is None and event.type() in (QEvent.Type.Paint, QEvent.Type.Expose):
                    outer.t_shown = time.time()
                return False

        self._filter = _ShownFilter()

    def _close_dialogs(self) -> None:
        """An app error dialog (QMessageBox) is a failure: record what it says and close it."""
        from PySide6.QtWidgets import QApplication, QDialog, QMessageBox

        for w in QApplication.topLevelWidgets():
            if isinstance(w, QMessageBox) and w.isVisible():
                text = " ".join(f"{w.windowTitle()}: {w.text()}".split())
                self.report.dialogs.append(text)
                w.done(0)
            elif isinstance(w, QDialog) and w.isVisible() and w.isModal():
                self.report.dialogs.append(f"unexpected dialog: {w.windowTitle()}")
                w.reject()

    def wait(self, what: str, predicate, timeout_s: float) -> float:
        """Run the event loop until predicate() is true; seconds waited, or SelfTestFailed on timeout."""
        from PySide6.QtCore import QEventLoop, QTimer

        start = time.time()
        loop = QEventLoop()
        poll = QTimer()
        poll.setInterval(20)
        poll.timeout.connect(lambda: (predicate() or time.time() - start > timeout_s) and loop.quit())
        poll.start()
        if not predicate():
            loop.exec()
        poll.stop()
        if not predicate():
            raise SelfTestFailed(f"{what}: nothing after {timeout_s:.0f} s")
        return time.time() - start

    def background(self, what: str, fn, *args, timeout_s: float):
        """fn(*args) on a worker thread (the app's own service), waiting with the event loop running."""
        from desktop import threads

        box: dict = {}
        threads.run_in_background(fn, *args, on_done=lambda r: box.setdefault("ok", r),
                                   on_error=lambda m: box.setdefault("error", m))
        self.wait(what, lambda: bool(box), timeout_s)
        if "error" in box:
            raise SelfTestFailed(f"{what}: {box['error']}")
        return box["ok"]
