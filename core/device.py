"""Device and precision choice: CUDA when detected, else the CPU; bf16 where the hardware has it; the memory
layout the convolutions prefer. CPU threads live in core.threads, torch.compile in core.compile."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

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


def cuda_has_fast_bf16(device: torch.device) -> bool:
    """True on GPUs with bf16 in hardware: NVIDIA compute capability 8.0 on (Ampere), and ROCm. Older GPUs
    (V100, T4) run bf16 only by emulation, far slower than fp16, which torch.cuda.is_bf16_supported() counts
    as supported by default; they take fp16 with loss scaling instead."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_properties(device).major >= 8


def resolve_precision(pref: str, device: torch.device) -> str:
    """'auto' -> bf16 where it is fast (CUDA with bf16, CPUs with native bf16), else fp32."""
    pref = (pref or "auto").lower()
    if pref not in PRECISIONS:
        raise DeviceError(f"unknown precision {pref!r}; choose one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if pref == "auto":
            return "bf16" if cuda_has_fast_bf16(device) else "fp16"
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


def describe(device: torch.device) -> str:
    """Human-readable device, e.g. 'CPU (2 threads)' or 'CUDA: NVIDIA H100 80GB HBM3'."""
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'s' if n != 1 else ''})"


# NHWC: oneDNN's convolutions (and cuDNN's with AMP) run faster on it, for training and sampling alike
# (the figures are in docs/benchmarks.md).
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



