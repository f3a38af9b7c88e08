"""`bench peak`: the best matmul GFLOP/s of this machine, fp32 and bf16 (where native): the ceiling the
other benchmarks' percentages of peak are taken against.

    python main.py bench peak
"""
from __future__ import annotations

import time

from .common import Settings, log


def bench_peak(s: Settings) -> dict:
    """Best GFLOP/s of square matmuls (a few sizes, best of several runs), fp32 and bf16 (where native)."""
    import torch
    from core.device import cpu_has_fast_bf16

    sizes = [s.peak_size // 2, s.peak_size, s.peak_size * 3 // 2]
    out = {"size": "/".join(map(str, sizes))}
    dtypes = [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] if cpu_has_fast_bf16() else [])
    for name, dt in dtypes:
        best = {"gflops": 0.0}
        for n in sizes:
            a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
            torch.mm(a, b)  # warm-up: library dispatch, page faults
            for _ in range(6 if n >= 1024 else 20):
                t0 = time.perf_counter()
                torch.mm(a, b)
                g = 2 * n**3 / (time.perf_counter() - t0) / 1e9
                if g > best["gflops"]:
                    best = {"gflops": g, "size": n}
        out[name] = best
        log(f"peak: {name} {best['gflops']:.0f} GFLOP/s (n={best['size']})")
    return out
