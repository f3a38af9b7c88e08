"""Where a training step's time goes: torch.profiler over a few steps of the Trainer, grouped by kind of op.

    python -m benchmarks.profile_step [--n-feat 64] [--batch 100] [--steps 5] [--threads 1] [--precision fp32]

Self CPU time per op, summed into the groups of docs/benchmarks.md ("Where the time goes"), then the
raw top ops. One thread by default, so the shares do not depend on how busy the other core is.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (group, substrings of the op names that belong to it); the first match wins
GROUPS = (
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("mkldnn_convolution", "_convolution", "conv2d", "conv_transpose")),
    ("BatchNorm forward + backward", ("batch_norm",)),
    ("GELU forward + backward", ("gelu",)),
    ("layout copies (contiguous / to channels_last)", ("copy_", "clone", "contiguous")),
    ("skip connections (cat)", ("aten::cat",)),
    ("max-pool", ("max_pool",)),
    ("Adam step", ("adam", "_foreach_add", "_foreach_mul", "_foreach_addcmul", "_foreach_addcdiv", "_foreach_sqrt",
                   "_foreach_div", "_foreach_lerp_")),
    ("gradient clipping", ("_foreach_norm", "clip_grad")),
)


def group_of(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS:
        if any(k.lower() in low for k in keys):
            return group
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-feat", type=int, default=64)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="fp32")
    a = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from core.data import load_dataset
    from core.train import TrainConfig, Trainer

    torch.set_num_threads(a.threads)
    cfg = TrainConfig(n_feat=a.n_feat, steps=10**6, batch_size=a.batch, precision=a.precision, checkpoint_every=10**6)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(load_dataset("emoji16"), cfg, tmp, device="cpu")
        it = tr.run()
        for _ in range(3):  # warm-up
            next(it)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(a.steps):
                next(it)
        tr.close()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = {}
    for e in events:
        shares[group_of(e.key)] = shares.get(group_of(e.key), 0.0) + e.self_cpu_time_total
    print(f"{a.steps} steps, n_feat {a.n_feat}, batch {a.batch}, {a.precision}, {a.threads} thread(s): "
          f"{total / 1e6 / a.steps:.3f} s of self CPU time per step\n")
    print("| op | share |\n|---|---|")
    for group, t in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"| {group} | {100 * t / total:.1f}% |")
    print()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
