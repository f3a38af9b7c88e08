"""The self-test's checks and probes, free of any window: when the process started, whether a sampled
grid looks like pictures, whether the Qt binding keeps its reference counts, what is in a folder."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_T_IMPORT = time.time()  # fallback "process start" where the OS cannot tell us


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------

def process_start_time() -> tuple[float, str]:
    """(Unix time at which this process started, how it was found).

    DIFFUSION_DESK_T0 (set by a launcher such as tools/build_app.py just before it starts the
    executable) wins; else the OS's record of the process start (Linux /proc, Windows
    GetProcessTimes); else the moment this module was imported.
    """
    env = os.environ.get("DIFFUSION_DESK_T0")
    if env:
        try:
            return float(env), "launcher"
        except ValueError:
            pass
    for probe in (_linux_start_time, _windows_start_time):
        try:
            t = probe()
        except (OSError, ValueError, AttributeError, IndexError):
            t = None
        if t is not None:
            return t, "os"
    return _T_IMPORT, "import"


def _linux_start_time() -> float | None:
    stat = Path("/proc/self/stat")
    if not stat.is_file():
        return None
    fields = stat.read_text().rsplit(")", 1)[1].split()  # the command name may contain spaces
    ticks = int(fields[19])  # field 22 of stat(5): start time in clock ticks after boot
    btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                 if line.startswith("btime "))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def _windows_start_time() -> float | None:
    if sys.platform != "win32":
        return None
    import ctypes
    from ctypes import wintypes

    k32 = ctypes.windll.kernel32
    times = [wintypes.FILETIME() for _ in range(4)]
    if not k32.GetProcessTimes(k32.GetCurrentProcess(), *[ctypes.byref(t) for t in times]):
        return None
    created = (times[0].dwHighDateTime << 32) | times[0].dwLowDateTime  # 100 ns since 1601
    return created / 1e7 - 11644473600.0


# ----------------------------------------------------------------------------------------------
# Checking a sampled grid (pure numpy, so tests can feed it anything)
# ----------------------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def check_grid(images: np.ndarray, *, n: int, height: int, finite: bool = True) -> list[Check]:
    """Sanity checks of sampled images (n, H, W, 3) uint8: what a broken build or model would fail."""
    checks = [Check("shape", images.shape == (n, height, height, 3) and images.dtype == np.uint8,
                    f"{images.shape} {images.dtype}, expected ({n}, {height}, {height}, 3) uint8"),
              Check("finite", bool(finite), "no NaN/inf in the sampler's output" if finite
                    else "the sampler produced NaN or inf")]
    if images.ndim != 4 or images.size == 0:
        return checks
    x = images.astype(np.float32)
    std = float(x.std())
    checks.append(Check("not constant", std > 4.0, f"pixel std {std:.1f} (needs > 4)"))
    flat = x.reshape(len(x), -1)
    per_image = flat.std(axis=1)
    blank = float(np.mean(per_image < 1.0))
    checks.append(Check("no blank images", blank <= 0.25, f"{blank:.0%} of images are one flat colour"))
    if len(flat) > 1:
        diff = float(np.abs(flat[1:] - flat[:-1]).mean())
        checks.append(Check("images differ", diff > 2.0, f"mean difference between neighbours {diff:.1f}"))
    clipped = float(np.mean((images == 0) | (images == 255)))
    mean = float(x.mean())
    checks.append(Check("plausible colours", clipped < 0.9 and 8.0 < mean < 250.0,
                        f"mean {mean:.0f}/255, {clipped:.0%} of values at 0 or 255"))
    return checks


# ----------------------------------------------------------------------------------------------
# The Qt binding's reference counting
# ----------------------------------------------------------------------------------------------

def binding_reference_drift(n: int = 100) -> dict[str, int]:
    """Change in the reference counts of None and True over n emits of a Python-connected Qt signal.

    Both stay put with a sound Qt binding. PySide6 6.12.0 on Python < 3.12 drops one reference per
    emit, and the app dies with "Fatal Python error: none_dealloc/bool_dealloc" once a count reaches
    zero (about a minute of training); n is kept small so the probe itself cannot get there.
    """
    import gc

    from PySide6.QtCore import QObject, Signal

    class _Emitter(QObject):
        ping = Signal()

    emitter = _Emitter()
    emitter.ping.connect(lambda: None)
    gc.collect()
    none0, true0 = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(min(n, true0 // 4, none0 // 4)):
        emitter.ping.emit()
    gc.collect()
    return {"None": sys.getrefcount(None) - none0, "True": sys.getrefcount(True) - true0}


# ----------------------------------------------------------------------------------------------
# "The app never writes inside its own folder"
# ----------------------------------------------------------------------------------------------

def install_folder(root: Path) -> Path:
    """The folder a user installed: the executable's folder when frozen (it holds _internal/)."""
    return Path(sys.executable).resolve().parent if getattr(sys, "frozen", False) else root


def folder_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath, name)
            try:
                st = p.stat()
            except OSError:
                continue
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def changed_files(before: dict, after: dict) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
