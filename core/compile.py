"""torch.compile for sampling: the net's forward compiled where a compiler exists, else eager, silently."""
from __future__ import annotations

import importlib.util
import shutil
import sys
import weakref

import torch


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
    to eager for good, and `note` says why. Compiling takes seconds to a minute, so it pays for long DDPM
    runs and repeated sampling, not for one 10-step grid (docs/benchmarks.md has the speed-up)."""

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
