"""Time left in a training or distillation run, from the pace of its recent steps.

The run's own mean (seconds trained / steps) misleads twice: the first seconds of a sitting (imports, first
allocations, a cold cache) are slow, and a run resumed on a quieter or faster machine keeps the old sitting's
pace in its mean (a run whose first 500 steps shared the CPU said 16 h left when 5 h were). So the estimate
uses only the last ETA_WINDOW_S seconds of training, and none of the first ETA_WARMUP_S of this sitting.
"""
from __future__ import annotations

import math
from collections import deque

ETA_WARMUP_S = 15.0  # the first seconds of a sitting say little about its pace (1 min read for a 4 min run)
ETA_WINDOW_S = 30.0  # the rate of the last half minute of training
ETA_MIN_SPAN_S = 2.0  # fewer seconds than this between two samples give no rate


class TimeLeft:
    """Feed it (seconds trained, step) after each step or group of steps; `seconds(total)` is the time left,
    or None while the sitting is still warming up. Seconds trained may start anywhere (a resumed run's
    clock goes on from its checkpoint); only differences count."""

    def __init__(self) -> None:
        self._first: float | None = None
        self._samples: deque[tuple[float, int]] = deque()

    def clear(self) -> None:
        """A new sitting: time it afresh."""
        self._first = None
        self._samples.clear()

    def add(self, elapsed: float, step: int) -> None:
        if not math.isfinite(elapsed):  # a row without a clock (an old loss.csv row) says nothing of the pace
            return
        if self._samples and elapsed < self._samples[-1][0]:  # the clock went back: another run's metrics
            self.clear()
        if self._first is None:
            self._first = elapsed
        if self._samples and elapsed == self._samples[-1][0]:  # a group of steps read at one time (CUDA logs
            self._samples[-1] = (float(elapsed), int(step))  # every 10): one sample, at its last step
            return
        self._samples.append((float(elapsed), int(step)))
        # keep one sample at or before the window's start, so a window with sparse reports still has a start
        while len(self._samples) > 2 and self._samples[1][0] <= elapsed - ETA_WINDOW_S:
            self._samples.popleft()

    def steps_per_second(self) -> float | None:
        if not self._samples:
            return None
        now_s, now_step = self._samples[-1]
        warm = self._first + ETA_WARMUP_S
        if now_s < warm:
            return None
        # the oldest sample after the warm-up; the one kept from before the window where it qualifies
        start = next((t, k) for t, k in self._samples if t >= warm)
        if now_s - start[0] < ETA_MIN_SPAN_S or now_step <= start[1]:
            return None
        return (now_step - start[1]) / (now_s - start[0])

    def seconds(self, total_steps: int) -> float | None:
        rate = self.steps_per_second()
        if rate is None:
            return None
        return max(total_steps - self._samples[-1][1], 0) / rate
