"""How much memory a network needs, estimated before it is built, against what this machine has free.

A configuration from a file or a flag can describe a network of billions of parameters (n_feat 1024 at
512 px) or a batch no machine holds; building it would fail deep inside torch's allocator with a
traceback, or push a shared machine into swap. The network is built on the meta device (shapes only) to
count its parameters and, with one forward pass there, the activations a training step keeps for the
backward pass, so the refusal comes first and says how much would have been needed.
"""
from __future__ import annotations

import os

import torch

from .errors import UserError
from .tensors import meta_network

FLOAT_BYTES = 4  # weights, optimizer state and activations are float32 (bf16 autocast keeps fp32 master weights)
# Weights, their gradients, Adam's two moments and the EMA copy: five float copies of the parameters.
TRAINING_COPIES = 5


class NotEnoughMemory(UserError):
    """A configuration that would need more memory than the machine has free; str() says how much."""


def gigabytes(n: int) -> str:
    return f"{n / 2**30:,.1f} GB"


def network_numel(net: torch.nn.Module) -> int:
    return sum(v.numel() for v in net.state_dict().values())


def activation_numel(net: torch.nn.Module, config) -> int:
    """Numbers the forward pass of one image produces, summed over the leaf modules: roughly what autograd
    keeps for the backward pass (measured on the meta device, so nothing is computed or allocated)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()
    hooks = [m.register_forward_hook(count) for m in net.modules() if not list(m.children())]
    try:
        with torch.device("meta"):
            h = config.height
            net(torch.zeros(1, config.in_channels, h, h), torch.zeros(1), torch.zeros(1, config.n_cfeat))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def model_bytes(config) -> int:
    """Bytes of a network's weights and buffers in float32."""
    return network_numel(meta_network(config)) * FLOAT_BYTES


def training_bytes(config, batch: int, n_images: int) -> int:
    """A training run's memory: the parameters' copies, one batch's activations, the data set as floats."""
    net = meta_network(config)
    params = sum(p.numel() for p in net.parameters())
    data = n_images * config.in_channels * config.height ** 2
    return FLOAT_BYTES * (TRAINING_COPIES * params + batch * activation_numel(net, config) + data)


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory free for this process on `device`: CUDA's free memory, or on the CPU the system's available
    memory (within this process's address-space limit, where one is set); None where it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except RuntimeError:
            return None
    if device.type != "cpu":
        return None
    free = _meminfo_available()
    room = _address_space_room()
    known = [v for v in (free, room) if v is not None]
    return min(known) if known else None


def check_fits(need: int, device: torch.device | str, what: str, advice: str) -> None:
    """Raise NotEnoughMemory when `need` bytes exceed what `device` has free (nothing when that is unknown)."""
    free = available_bytes(device)
    if free is not None and need > free:
        where = "this machine" if torch.device(device).type == "cpu" else str(device)
        raise NotEnoughMemory(f"{what} would need about {gigabytes(need)} of memory, but {where} has "
                              f"{gigabytes(free)} free; {advice}")


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # other Unix: all physical memory (how much is free is not told)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _address_space_room() -> int | None:
    """What an address-space limit (ulimit -v) leaves this process, where one is set (Linux)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        return max(0, soft - size)
    except (ImportError, OSError, ValueError, StopIteration):
        return None
