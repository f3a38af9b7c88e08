"""Where a training step's time goes: torch.profiler over a few steps of the Trainer, grouped by kind of op.

    python -m benchmarks.profile_step [--network course|desk] [--n-feat 64] [--batch 100] [--steps 5] [--threads 1]
                                      [--precision fp32]
    python -m benchmarks.profile_step --onednn [--threads 2]

Self CPU time per op, summed into the groups of docs/benchmarks.md ("Where the time goes"), then the
raw top ops. One thread by default, so the shares do not depend on how busy the other core is.

--onednn looks one level down, at the oneDNN primitives one training step runs (its verbose log, in a
child process): time and GFLOP/s per kind of convolution pass and shape, against this machine's
fp32 matmul peak -- how close the convolutions, most of a step, come to what the CPU can do.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.catalog import NETWORKS  # noqa: E402 (torch-free; after the path, for `python benchmarks/...`)

# (group, substrings of the op names that belong to it); the first match wins
GROUPS = (
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("mkldnn_convolution", "_convolution", "conv2d", "conv_transpose")),
    ("BatchNorm forward + backward", ("batch_norm",)),
    ("GroupNorm forward + backward", ("group_norm",)),
    ("GELU forward + backward", ("gelu",)),
    ("SiLU forward + backward", ("silu",)),
    ("attention (matmuls, softmax)", ("scaled_dot_product", "attention", "bmm", "softmax")),
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


def _shape_fields(shape: str) -> dict[str, int]:
    """oneDNN's verbose shape, e.g. mb100_ic64oc64_ih16oh16kh3..._iw16ow16kw3..., as {"mb": 100, "ic": 64, ...}."""
    return {k: int(v) for k, v in re.findall(r"([a-z]+)(\d+)", shape)}


def conv_flops(kind: str, shape: str) -> float:
    """FLOPs of one oneDNN (de)convolution from its verbose shape: 2 * mb * ic * oc * kh * kw per output
    pixel of a convolution, per input pixel of a deconvolution."""
    d = _shape_fields(shape)
    pixels = d["ih"] * d["iw"] if kind == "deconvolution" else d["oh"] * d["ow"]
    return 2.0 * d["mb"] * d["ic"] * d["oc"] * d["kh"] * d["kw"] * pixels


def _shape_text(shape: str) -> str:
    d = _shape_fields(shape)
    if not {"ic", "oc", "ih", "iw", "kh"} <= d.keys():
        return shape
    return f"{d['ic']}->{d['oc']} ch, {d['ih']}x{d['iw']} in, {d['kh']}x{d['kw']}"


def onednn_table(log: str, steps: int, peak_gflops: float) -> list[str]:
    """Aggregate oneDNN verbose `exec` lines: (primitive, pass, shape) -> ms per step and GFLOP/s."""
    agg: dict[tuple[str, str, str], list[float]] = {}
    total = 0.0
    for line in log.splitlines():
        f = line.strip().split(",")
        if len(f) < 8 or f[0] != "onednn_verbose" or "exec" not in f[:4]:
            continue
        i = f.index("exec")
        kind, impl, pass_, shape, ms = f[i + 2], f[i + 3], f[i + 4], f[-2], float(f[-1])
        total += ms
        a = agg.setdefault((kind, pass_, shape), [0.0, 0.0, impl])
        a[0] += ms
        if kind in ("convolution", "deconvolution"):
            a[1] += conv_flops(kind, shape)
    out = [f"oneDNN primitives of one training step: {total / steps:.0f} ms per step in all "
           f"(fp32 matmul peak here: {peak_gflops:.0f} GFLOP/s)", "",
           "| primitive | pass | shape | implementation | ms per step | share | GFLOP/s | % of peak |",
           "|---|---|---|---|---:|---:|---:|---:|"]
    by_pass: dict[str, list[float]] = {}
    for (kind, pass_, shape), (ms, flops, impl) in sorted(agg.items(), key=lambda kv: -kv[1][0]):
        g = flops / (ms / 1000) / 1e9 if flops else None
        if flops:
            bp = by_pass.setdefault(f"{kind} {pass_}", [0.0, 0.0])
            bp[0] += ms
            bp[1] += flops
        if ms / total >= 0.01:
            out.append(f"| {kind} | {pass_} | {_shape_text(shape)} | {impl} | {ms / steps:.1f} | "
                       f"{100 * ms / total:.1f}% | {'' if g is None else f'{g:.0f}'} | "
                       f"{'' if g is None else f'{100 * g / peak_gflops:.0f}%'} |")
    out += ["", "| pass (all shapes) | ms per step | share | GFLOP/s | % of peak |", "|---|---:|---:|---:|---:|"]
    for name, (ms, flops) in sorted(by_pass.items(), key=lambda kv: -kv[1][0]):
        g = flops / (ms / 1000) / 1e9
        out.append(f"| {name} | {ms / steps:.1f} | {100 * ms / total:.1f}% | {g:.0f} | {100 * g / peak_gflops:.0f}% |")
    return out


def _onednn_child(a) -> str:
    """Run `a.steps` training steps after a warm-up with oneDNN's verbose log on; return the log."""
    code = f"""
import sys, tempfile, torch
sys.path.insert(0, {str(ROOT)!r})
from core.data import load_dataset
from core.training import TrainConfig, Trainer
torch.set_num_threads({a.threads})
cfg = TrainConfig(network={a.network!r}, n_feat={a.n_feat}, steps=10**6, batch_size={a.batch}, precision={a.precision!r},
                  checkpoint_every=10**6)
with tempfile.TemporaryDirectory() as tmp:
    tr = Trainer(load_dataset("emoji16"), cfg, tmp, device="cpu")
    it = tr.run()
    for _ in range(3):
        next(it)
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        for _ in range({a.steps}):
            next(it)
    tr.close()
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def _peak_fp32() -> float:
    """This machine's fp32 matmul peak, measured as `bench peak` measures it."""
    from benchmarks.common import Settings
    from benchmarks.peak import bench_peak

    return bench_peak(Settings())["fp32"]["gflops"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", choices=NETWORKS, default="course")
    ap.add_argument("--n-feat", type=int, default=64)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--onednn", action="store_true", help="time the oneDNN primitives of the step instead")
    a = ap.parse_args()
    if a.onednn:
        import torch

        torch.set_num_threads(a.threads)
        log = _onednn_child(a)
        print("\n".join(onednn_table(log, a.steps, _peak_fp32())))
        return 0

    import torch
    from torch.profiler import ProfilerActivity, profile

    from core.data import load_dataset
    from core.training import TrainConfig, Trainer

    torch.set_num_threads(a.threads)
    cfg = TrainConfig(network=a.network, n_feat=a.n_feat, steps=10**6, batch_size=a.batch, precision=a.precision,
                      checkpoint_every=10**6)
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
    print(f"{a.steps} steps, {a.network} network, n_feat {a.n_feat}, batch {a.batch}, {a.precision}, {a.threads} thread(s): "
          f"{total / 1e6 / a.steps:.3f} s of self CPU time per step\n")
    print("| op | share |\n|---|---|")
    for group, t in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"| {group} | {100 * t / total:.1f}% |")
    print()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
