"""One rank of a multi-process test run (tests/core/test_distributed.py starts two, with torchrun's variables).

    python tests/ddp_rank.py train OUT STEPS STOP_AT RESULT.json [resume] [global]
    python tests/ddp_rank.py batchnorm RESULT.json

train: a tiny model on a small seeded set; writes the logged losses, this rank's own losses, a hash of
the final weights and the notes to RESULT.json. batchnorm: each rank normalises its half of a fixed
batch with GlobalBatchNorm2d and writes its outputs and input gradients.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def small_set():
    from core.data import ImageDataset

    rng = np.random.default_rng(0)
    which = rng.integers(0, 3, 48)
    labels = np.eye(3, dtype=np.float32)[which]
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]])
    imgs = (rng.random((48, 16, 16, 3)) * 50 + colours[which][:, None, None, :]).clip(0, 255).astype(np.uint8)
    return ImageDataset(imgs, labels, ["red", "green", "blue"], "blobs")


def train(out: str, steps: int, stop_at: int, result: str, *flags: str) -> None:
    from core.training import TRAIN_PRESETS, Trainer

    ds = small_set()
    if "resume" in flags:
        tr = Trainer.from_run(ds, out, device="cpu")
    else:
        cfg = replace(TRAIN_PRESETS["tiny"], steps=steps, checkpoint_every=1000,
                      batchnorm="global" if "global" in flags else "per_rank")
        tr = Trainer(ds, cfg, out, device="cpu")
    logged, own = [], []
    for m in tr.run():
        logged.append(m.loss)
        own.extend(tr.rank_losses)
        if m.step == stop_at:
            tr.request_stop()
    tr.save()
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in tr.net.parameters())).hexdigest()
    Path(result).write_text(json.dumps({"rank": tr.dist.rank if tr.dist else 0, "logged": logged, "own": own,
                                        "weights": digest, "notes": tr.notes, "step": tr.step}))
    tr.close()


def batchnorm(result: str) -> None:
    from core import distributed

    ctx = distributed.from_env()
    distributed.start(ctx, torch.device("cpu"))
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 + 1  # the whole batch
    mine = x[ctx.rank * 4:(ctx.rank + 1) * 4].clone().requires_grad_(True)
    bn = distributed.GlobalBatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 0.3]))
    y = bn(mine)
    (y * torch.arange(y.numel(), dtype=torch.float32).view_as(y).sin()).sum().backward()
    Path(result).write_text(json.dumps({"y": y.tolist(), "grad": mine.grad.tolist(),
                                        "running_mean": bn.running_mean.tolist(), "running_var": bn.running_var.tolist()}))
    del y  # the graph holds the all-reduce's inputs; free it before leaving the group
    distributed.stop(ctx)


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], *sys.argv[6:])
    else:
        batchnorm(sys.argv[2])
