"""Measuring how responsive the GUI thread is: a timer probe of the event-loop delay.

A QTimer asks to fire every `interval_ms`; each time it fires late, the lateness is how long the event
loop was busy (or starved of the CPU or the GIL) -- what a user feels as a stutter. Use it around
any long-running work:

    probe = EventLoopProbe(); probe.start()
    ...                                   # train / sample with the window open
    probe.stop(); print(probe.summary())  # {'samples', 'p50_ms', 'p99_ms', 'max_ms'}
"""
from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer


class EventLoopProbe(QObject):
    """Records the delay of a periodic timer (ms beyond its interval) on the thread that owns it."""

    def __init__(self, interval_ms: int = 10, parent=None):
        super().__init__(parent)
        self.interval_ms = interval_ms
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._last: float | None = None
        self.delays_ms: list[float] = []

    def start(self) -> None:
        self.delays_ms.clear()
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self._last = None

    @property
    def running(self) -> bool:
        return self._timer.isActive()

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.delays_ms.append(max(0.0, (now - self._last) * 1000.0 - self.interval_ms))
        self._last = now

    def summary(self) -> dict:
        """{'samples', 'p50_ms', 'p99_ms', 'max_ms'} of the delays seen so far (zeros when none)."""
        d = np.asarray(self.delays_ms, dtype=np.float64)
        if d.size == 0:
            return {"samples": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        return {"samples": int(d.size), "p50_ms": float(np.percentile(d, 50)),
                "p99_ms": float(np.percentile(d, 99)), "max_ms": float(d.max())}
