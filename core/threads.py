"""CPU threads: how many torch uses, the OpenMP team a thread leaves behind, and the tuner that picks
between all cores and one thread while a run goes on (the one policy of the CLI, the app and the benchmarks)."""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import torch


def configure_threads(n: int | None = None) -> int:
    """Intra-op threads for the CPU: OMP_NUM_THREADS when the user set it, else one per core (hyperthreads
    slow conv work down)."""
    if n is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        n = int(os.environ["OMP_NUM_THREADS"])
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def release_openmp_threads() -> bool:
    """Free the calling thread's OpenMP thread team, if it has one (OpenMP 5.0 omp_pause_resource_all).

    Why: libgomp (PyTorch's OpenMP on Linux) cuts its spin-wait between parallel regions to almost
    nothing once it manages more threads than there are cores. A thread that ran one parallel op keeps
    its team, so a GUI thread that once did would leave a second team beside the training thread's, and
    training then runs as under OMP_WAIT_POLICY=PASSIVE, clearly slower (docs/benchmarks.md, "In the app vs on the command line").
    Returns whether the call was made; a no-op where the OpenMP library lacks it (never an error)."""
    fn = _omp_pause_resource_all()
    return fn is not None and fn(1) == 0  # omp_pause_soft: the team ends; the next parallel region makes one


@functools.cache
def _omp_pause_resource_all():
    """The OpenMP library's omp_pause_resource_all (the one torch loaded), looked up once; None without it."""
    import ctypes

    candidates = [Path(torch.__file__).parent / "lib" / name for name in ("libgomp.so.1", "libomp.dylib", "libiomp5md.dll")]
    for path in [*[str(c) for c in candidates if c.is_file()], "libgomp.so.1"]:
        try:
            fn = ctypes.CDLL(path).omp_pause_resource_all
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


class ThreadTuner:
    """Chooses between all cores and one torch thread while a CPU run trains, re-checking now and then.

    With the cores free, one thread per core is fastest. When other programs keep the cores busy, a
    multi-threaded step waits for its slowest thread at every layer and can run several times slower
    than a single thread (docs/benchmarks.md, "Training on a busy machine"). So every
    `every` steps both settings are timed for a few steps and the faster one is kept.
    """

    def __init__(self, n_threads: int, *, every: int = 400, sample: int = 6, warmup: int = 3):
        self.candidates = [n_threads, 1] if n_threads > 1 else [1]
        self.best = self.candidates[0]
        self.every, self.sample, self.warmup = every, sample, warmup
        self._times: dict[int, list[float]] = {}

    def threads_for(self, step_in_run: int) -> int:
        """Thread count for the step with this 0-based index in the run."""
        if len(self.candidates) == 1:
            return self.best
        o = step_in_run % self.every
        trial_start = self.warmup + self.sample
        if trial_start <= o < trial_start + self.sample:
            return self._other()
        return self.best

    def record(self, step_in_run: int, seconds: float) -> None:
        """Time of that step; at the end of a trial window the faster setting wins."""
        if len(self.candidates) == 1:
            return
        o = step_in_run % self.every
        lo, hi = self.warmup, self.warmup + 2 * self.sample
        if not lo <= o < hi:
            return
        used = self.best if o < lo + self.sample else self._other()
        if (o - lo) % self.sample:  # the first step after a switch pays for it: not counted
            self._times.setdefault(used, []).append(seconds)
        if o == hi - 1:
            self._decide()

    def _other(self) -> int:
        return next(c for c in self.candidates if c != self.best)

    def _decide(self) -> None:
        med = {k: sorted(v)[len(v) // 2] for k, v in self._times.items() if v}
        other = self._other()
        if other in med and self.best in med and med[other] < 0.85 * med[self.best]:
            self.best = other  # switch only for a clear win: timing noise must not flip it back and forth
        self._times.clear()


class TunedThreads:
    """Drives a ThreadTuner from any loop: call tick() after each step; it sets torch's thread count.

    The CLI's train and sample loops, the app's training worker and the benchmarks all use this one
    policy (made by `tuned_threads`), so a busy machine slows every front end the same (little),
    instead of collapsing the multi-threaded one."""

    def __init__(self, tuner: "ThreadTuner"):
        self.tuner, self.i = tuner, 0
        torch.set_num_threads(tuner.threads_for(0))
        self._last = time.perf_counter()

    @property
    def best(self) -> int:
        return self.tuner.best

    def tick(self, seconds: float | None = None) -> int:
        """Record the step that just ended (its time, or the time since the last tick); returns the thread
        count for the next one."""
        now = time.perf_counter()
        self.tuner.record(self.i, now - self._last if seconds is None else seconds)
        self.i += 1
        n = self.tuner.threads_for(self.i)
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        self._last = time.perf_counter()
        return n


def tuned_threads(device: torch.device, *, threads: int | None = None, **tuner_args) -> TunedThreads | None:
    """All cores vs one thread, re-timed now and then; None where nothing is to be tuned: on CUDA, on a
    one-core machine, or when the user chose (OMP_NUM_THREADS set, or `threads` given)."""
    if device.type != "cpu" or threads is not None or os.environ.get("OMP_NUM_THREADS"):
        return None
    tuner = ThreadTuner(torch.get_num_threads(), **tuner_args)
    return TunedThreads(tuner) if len(tuner.candidates) > 1 else None
