"""Device and precision choice: CUDA when detected, else the CPU; bf16 where the hardware has it."""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class DeviceError(UserError, ValueError):
    """A device or precision the machine cannot provide; str() says what to choose instead."""


def pick_device(pref: str = "auto") -> torch.device:
    """'auto' -> cuda:0 when a CUDA GPU is usable, else cpu; 'cpu' / 'cuda' / 'cuda:N' as asked."""
    pref = (pref or "auto").lower()
    if pref == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda: no CUDA GPU is available here (this torch build or driver); use cpu")
        return torch.device("cuda:0" if pref == "cuda" else pref)
    if pref == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"unknown device {pref!r}; choose auto, cpu or cuda")


def cpu_has_fast_bf16() -> bool:
    """True when the CPU runs bf16 matrix work natively (AVX-512 BF16 / AMX), where autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(pref: str, device: torch.device) -> str:
    """'auto' -> bf16 where it is fast (CUDA with bf16, CPUs with native bf16), else fp32."""
    pref = (pref or "auto").lower()
    if pref not in PRECISIONS:
        raise DeviceError(f"unknown precision {pref!r}; choose one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if pref == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return pref
    if pref == "fp16":
        raise DeviceError("fp16 is for CUDA GPUs; on the CPU use bf16 or fp32")
    if pref == "auto":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return pref


def autocast(device: torch.device, precision: str):
    """Context manager running the forward pass in the chosen precision (fp32: a no-op)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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
    training then runs as under OMP_WAIT_POLICY=PASSIVE: measured 20-25% slower on 2 cores (a trainer
    on a second Python thread beside a main thread that had trained: 253-270 vs 282-379 images/s).
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
    than a single thread (measured on a 2-core box: 25 vs 280 images/s under load). So every
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

    The CLI's train and sample loops and the app's training worker share this policy, so a busy
    machine slows every front end the same (little), instead of collapsing the multi-threaded one."""

    def __init__(self, tuner: "ThreadTuner"):
        self.tuner, self.i = tuner, 0
        torch.set_num_threads(tuner.threads_for(0))
        self._last = time.perf_counter()

    def tick(self) -> int:
        """Record the step that just ended; returns the thread count for the next one."""
        now = time.perf_counter()
        self.tuner.record(self.i, now - self._last)
        self.i += 1
        n = self.tuner.threads_for(self.i)
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        self._last = time.perf_counter()
        return n


def describe(device: torch.device) -> str:
    """Human-readable device, e.g. 'CPU (2 threads)' or 'CUDA: NVIDIA H100 80GB HBM3'."""
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'s' if n != 1 else ''})"


# NHWC: oneDNN's convolutions (and cuDNN's with AMP) run faster on it. Measured on the 2-core CPU, course
# network: a training step 1.28x faster, a forward at batch 32 1.15x (n_feat 64) and 1.15x (n_feat 32).
MEMORY_FORMAT = torch.channels_last


def to_fast_layout(t):
    """A module or a 4-D tensor in the memory format the convolutions prefer (values unchanged)."""
    if isinstance(t, torch.Tensor):
        return t.contiguous(memory_format=MEMORY_FORMAT) if t.dim() == 4 else t
    return t.to(memory_format=MEMORY_FORMAT)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall times are honest (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Runtime:
    """The device and precision a run uses, as reported to users."""

    device: torch.device
    precision: str

    @property
    def label(self) -> str:
        return f"{describe(self.device)}, {self.precision}"


def runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    dev = pick_device(device)
    return Runtime(dev, resolve_precision(precision, dev))


# --- torch.compile for sampling -----------------------------------------------------------------------------

def compiler_available(device: torch.device) -> bool:
    """Whether torch.compile can build kernels here: Triton on CUDA, a C++ compiler on the CPU. The packaged
    app has neither compiler nor sources to trace, so it is always False there."""
    if getattr(sys, "frozen", False):
        return False
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return any(shutil.which(cc) for cc in ("c++", "g++", "clang++"))


class CompiledForward:
    """The net's forward through torch.compile where it can be built, else the eager net, silently.

    On CUDA the mode is "reduce-overhead": the forward is captured as a CUDA graph, which removes the
    per-kernel launch cost that dominates the many small steps of sampling; its outputs live in the graph's
    memory pool, so they are cloned before the next replay can overwrite them. Shapes are static (one
    compile per batch size; guidance doubles the batch). A failure while compiling or running falls back
    to eager for good, and `note` says why. Measured on a 2-core CPU at batch 32: 1.14-1.34x per call after
    ~10-50 s of compiling; worth it for long DDPM runs and repeated sampling, not for one 10-step grid."""

    def __init__(self, net: torch.nn.Module, device: torch.device):
        self.net = net
        self.cuda_graphs = device.type == "cuda"
        self.note: str | None = None
        self._fn = None
        if compiler_available(device):
            self._fn = torch.compile(net, dynamic=False, mode="reduce-overhead" if self.cuda_graphs else None)
        else:
            self.note = "torch.compile needs " + ("Triton" if device.type == "cuda" else "a C++ compiler") + \
                        "; running eagerly"

    @property
    def compiled(self) -> bool:
        return self._fn is not None

    def __call__(self, *args):
        if self._fn is not None:
            try:
                if self.cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                    return self._fn(*args).clone()
                return self._fn(*args)
            except Exception as e:  # noqa: BLE001 - any compiler failure: the eager net gives the same values
                self._fn = None
                self.note = f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); running eagerly"
        return self.net(*args)


_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, CompiledForward]" = weakref.WeakKeyDictionary()


def compiled_forward(net: torch.nn.Module, device: torch.device) -> CompiledForward:
    """One CompiledForward per net, so a second sampling run reuses the first one's compiled kernels."""
    fwd = _COMPILED.get(net)
    if fwd is None:
        fwd = _COMPILED[net] = CompiledForward(net, device)
    return fwd
