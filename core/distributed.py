"""Training with several processes under torchrun (DistributedDataParallel): the environment and the collectives.

torchrun's environment is the interface: RANK, LOCAL_RANK and WORLD_SIZE say who this process is,
MASTER_ADDR / MASTER_PORT (set by torchrun, or by hand) where rank 0 listens. Without them, or with
one process in all, `from_env()` is None and training runs exactly as a single process does.

What the Trainer does with several processes (core/train.py):
- the batch size is the global batch; each rank trains on batch / world of it;
- the images of a step are drawn from a generator seeded with the run's seed, the same on every
  rank, and each rank takes its own slice of them (the in-memory set is never copied or re-loaded);
  noise, timesteps and flips come from a generator of (seed, rank);
- the net is wrapped in DDP (gradients averaged across ranks in the backward pass);
- BatchNorm: "per_rank" (each rank normalises by its own slice, DDP's default; rank 0's running
  statistics are broadcast) or "global" (GlobalBatchNorm2d below: statistics of the whole batch);
- losses are gathered from every rank, so the logged loss, the NaN check and the explosion check are
  the same on every rank and all ranks stop together;
- only rank 0 keeps the EMA, writes files and holds the run lock; saves end with a barrier.
Every collective turns a lost peer into PeerLost, one line that says what happened.
"""
from __future__ import annotations

import base64
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch

from .errors import UserError
from .schema import Float, check

TIMEOUT_ENV = "DIFFUSION_DESK_DIST_TIMEOUT"  # seconds a collective may wait for the others
DEFAULT_TIMEOUT_S = 300
TIMEOUT_RANGE_S = (1, 7 * 24 * 3600)  # a second to a week: a slow first compile or a long save may wait


class PeerLost(UserError, RuntimeError):
    """Another process of a multi-process run stopped or failed; this one cannot go on alone."""


@dataclass(frozen=True)
class DistContext:
    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env(environ=os.environ) -> DistContext | None:
    """This process's place in a torchrun launch, or None when it runs alone (no WORLD_SIZE, or 1)."""
    if "WORLD_SIZE" not in environ:
        return None
    values = {}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        text = environ.get(name, "0" if name == "LOCAL_RANK" else "")
        try:
            values[name] = int(text)
        except ValueError:
            raise UserError(f"environment variable {name}={text!r}: must be a whole number "
                            "(torchrun sets it; start the run with torchrun or unset WORLD_SIZE)") from None
    world, rank = values["WORLD_SIZE"], values["RANK"]
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"environment variables RANK={rank}, WORLD_SIZE={world}: RANK must be from 0 to WORLD_SIZE - 1")
    if world == 1:
        return None
    return DistContext(rank, values["LOCAL_RANK"], world)


def timeout_seconds(environ=os.environ) -> float:
    """DIFFUSION_DESK_DIST_TIMEOUT in seconds (default DEFAULT_TIMEOUT_S), a finite number in TIMEOUT_RANGE_S:
    inf or 1e400 overflow timedelta, 0 or less fail every collective at once."""
    text = environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return float(DEFAULT_TIMEOUT_S)
    try:
        value = float(text)
    except ValueError:
        value = text
    return check(value, Float(*TIMEOUT_RANGE_S), f"environment variable {TIMEOUT_ENV}={text[:40]!r}",
                 error=UserError)


def start(ctx: DistContext, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on the CPU); returns this rank's device."""
    import torch.distributed as dist

    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {ctx.local_rank}: this machine has {torch.cuda.device_count()} CUDA "
                            "device(s); start at most that many processes per machine (--nproc_per_node)")
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=timeout_seconds())
    with guard(ctx, "joining the other processes"):
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return device


def stop(ctx: DistContext | None = None) -> None:
    """Leave the process group. With `ctx`, first wait until every rank is done with its collectives, so
    that no rank tears its connections down while a peer still uses them (gloo can abort the process
    then); without, leave at once (the path after a lost peer, where a barrier would only time out)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    if ctx is not None:
        barrier(ctx, "finishing")
    dist.destroy_process_group()


@contextmanager
def guard(ctx: DistContext, what: str):
    """Turn a collective that failed because a peer went away into PeerLost."""
    try:
        yield
    except PeerLost:
        raise
    except RuntimeError as e:  # gloo/NCCL errors (DistBackendError is a RuntimeError)
        raise PeerLost(f"rank {ctx.rank} of {ctx.world_size}: lost contact with the other training processes while "
                       f"{what} (one of them stopped or failed; its own message says why)") from e


def gather(ctx: DistContext, t: torch.Tensor) -> torch.Tensor:
    """Every rank's tensor (same shape on all) concatenated along dim 1, rank order: (k, b) -> (k, world * b)."""
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(ctx.world_size)]
    with guard(ctx, "gathering the step losses"):
        dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=1)


def any_rank(ctx: DistContext, flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any (e.g. a stop request that reached one process)."""
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    with guard(ctx, "agreeing on a stop"):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(ctx: DistContext, obj) -> list:
    import torch.distributed as dist

    out = [None] * ctx.world_size
    with guard(ctx, "collecting the random-number states"):
        dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext, what: str) -> None:
    import torch.distributed as dist

    with guard(ctx, what):
        dist.barrier()


def wrap(ctx: DistContext, net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The net in DDP: rank 0's weights and buffers broadcast at the start, gradients averaged in backward."""
    from torch.nn.parallel import DistributedDataParallel

    with guard(ctx, "setting up DistributedDataParallel"):
        return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


# --- random streams ----------------------------------------------------------------------------------

def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """Seed of rank `rank`'s noise generator (from step `step` on, for a resume with another world size)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def pack_state(state: torch.Tensor) -> str:
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def unpack_state(text: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy())


# --- BatchNorm over the global batch -------------------------------------------------------------------

class _SumOverRanks(torch.autograd.Function):
    """Sum of a tensor over all ranks, differentiable: the gradient of every rank's input is the sum of
    the gradients of every rank's output (each output depends on each input with weight 1)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _SumOverRanks.apply(grad)


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole batch across ranks.

    Per-channel sums and sums of squares are summed over the ranks by a differentiable all-reduce, so
    gradients flow through the statistics exactly as in one process. Unlike PyTorch's
    SyncBatchNorm it also runs on the CPU (gloo). Outside training, or alone, it is plain BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        C = x.shape[1]
        xf = x.float()
        local = torch.cat([xf.sum(dim=(0, 2, 3)), (xf * xf).sum(dim=(0, 2, 3)),
                           xf.new_full((1,), x.numel() / C)])  # (2C + 1,)
        total = _SumOverRanks.apply(local)
        n = total[-1]
        mean = total[:C] / n
        var = (total[C:2 * C] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        y = (xf - mean.view(1, C, 1, 1)) * torch.rsqrt(var + self.eps).view(1, C, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, C, 1, 1) + self.bias.view(1, C, 1, 1)
        return y.to(x.dtype)


def use_global_batchnorm(net: torch.nn.Module) -> torch.nn.Module:
    """Swap every BatchNorm2d of `net` for a GlobalBatchNorm2d with the same weights and statistics."""
    for name, child in net.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats).to(child.weight.device)
            new.load_state_dict(child.state_dict())
            setattr(net, name, new)
        else:
            use_global_batchnorm(child)
    return net
