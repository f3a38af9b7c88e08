"""What the benchmarks share: settings, logging, the machine description, FLOP counting, the sampler
list syntax, JSON I/O, a font for the pictures, and the judging of results against their targets.

Nothing here loads torch, numpy or Pillow at import time: `main.py --help` imports the bench driver.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.schema import Bool, Either, Float, Int, List, Null, Obj, Str, read_json_file

ROOT = Path(__file__).resolve().parent.parent
# The list, then what the investigation found (stochastic DDIM; guidance 2, with DDPM-500 at the same
# guidance for a like-for-like comparison).
QUALITY_LIST = ("ddpm:500,ddim:50,ddim:25,ddim:10,dpmpp2m:20,dpmpp2m:10,"
                "ddim:50+eta=1,ddim:20+eta=1,dpmpp2m:10+g=2,ddim:10+g=2+eta=1,ddpm:500+g=2")
SAMPLE_LIST = "ddpm:500,ddim:25,ddim:10,dpmpp2m:20,dpmpp2m:10"


class BenchError(Exception):
    """A problem to report in one line (bad checkpoint, bad sampler list, missing classifier...)."""


@dataclass(frozen=True)
class Settings:
    n_feat: int = 64  # the course network
    batch_size: int = 100
    rounds: int = 5
    sample_rounds: int = 3
    ddpm_rounds: int = 1
    steps_per_round: int = 10
    warmup_steps: int = 3
    loss_steps: int = 200
    loss_eval_n: int = 1000
    data_limit: int | None = None
    sample_n: int = 32
    sample_list: str = SAMPLE_LIST
    course_ddim_n: int = 25
    course_ddpm: bool = True
    peak_size: int = 2048
    quality_list: str = QUALITY_LIST
    quality_n: int = 1000
    quality_seeds: int = 3
    quality_batch: int = 500
    precision: str = "auto"
    precision_resolved: str = "fp32"  # what "auto" became on this machine (set by the quality bench)
    guidance: float = 1.0
    checkpoint: str | None = None
    grid_per_label: int = 8
    compile: bool = False  # sample: also time our entries through torch.compile


QUICK = dict(n_feat=8, batch_size=8, rounds=2, sample_rounds=1, steps_per_round=2, warmup_steps=1, loss_steps=3,
             loss_eval_n=16, data_limit=120, sample_n=4, sample_list="ddim:4,dpmpp2m:3", course_ddim_n=5,
             course_ddpm=False, peak_size=128, quality_list="ddim:4,dpmpp2m:3", quality_n=40, quality_seeds=2,
             quality_batch=40, grid_per_label=2)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def now_stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z")


# --- the machine ---------------------------------------------------------------------------------------

def machine_info() -> dict:
    import torch
    from core.device import cpu_has_fast_bf16

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "bf16": cpu_has_fast_bf16(), "python": platform.python_version(), "platform": platform.platform(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
            "date": now_stamp()}


MACHINE_KEYS = ("cpu", "cores", "bf16")  # what makes two runs "the same machine" for this page


def machine_stamp(m: dict | None = None) -> dict:
    """Which machine, and when, a section was measured on (kept in the section: sections are re-run alone)."""
    m = m or machine_info()
    return {k: m[k] for k in (*MACHINE_KEYS, "date")}


def peak_here(results: dict) -> dict | None:
    """The stored matmul peak if it was measured on this machine (same CPU, cores and bf16 support), else
    None: a percentage of another machine's peak means nothing (sections are re-run one at a time)."""
    peak = results.get("peak")
    if not peak:
        return None
    here, there = results.get("machine") or machine_info(), peak.get("machine", {})
    same = all(here.get(k) == there.get(k) for k in MACHINE_KEYS)
    if not same:
        log("peak: the stored matmul peak is from another machine; run `bench peak` here for % of peak")
    return peak if same else None


# --- timing ------------------------------------------------------------------------------------------------

def forward_flops(net, batch: int, n_cfeat: int, height: int, *, backward: bool = False) -> float:
    """FLOPs of one forward (and backward) pass of a ContextUnet-like net at `batch`, by torch's counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch, 3, height, height)
    t = torch.rand(batch)
    c = torch.zeros(batch, n_cfeat)
    with FlopCounterMode(display=False) as counter:
        if backward:
            net(x, t, c).pow(2).mean().backward()
        else:
            with torch.no_grad():
                net(x, t, c)
    net.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


# --- sampler lists -------------------------------------------------------------------------------------------

def parse_entries(text: str, flag: str = "") -> list[dict]:
    """'ddim:25+eta=1,dpmpp2m:10+clip+sp=karras' -> [{'entry', 'sampler', 'steps', 'eta', 'clip_x0', 'guidance',
    'spacing', 'rescale', 'interval', 'guide'}]. Modifiers: clip, eta=X, g=X (guidance),
    sp=trailing|logsnr|karras or a named spacing the model holds (tuned-5), r=X (CFG rescale phi), gi=LO-HI
    (guidance interval in t/T), ag=FILE (autoguidance: guide with the model in FILE, relative to the
    repository, instead of with "no label"). Errors name `flag` (the option the text came from) when given."""
    from core.catalog import NAMED_SPACING, SPACINGS
    from core.samplers import SAMPLERS

    where = f"{flag} " if flag else ""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        head, *mods = item.split("+")
        name, _, steps = head.partition(":")
        if name not in SAMPLERS:
            raise BenchError(f"{where}{item}: unknown sampler {name!r} (choose {', '.join(SAMPLERS)})")
        if steps and not steps.strip().isdigit():
            raise BenchError(f"{where}{item}: the step count {steps!r} is not a whole number (e.g. {name}:10)")
        try:
            e = {"entry": item, "sampler": name, "steps": int(steps) if steps else SAMPLERS[name].default_steps,
                 "eta": 0.0, "clip_x0": False, "guidance": None, "spacing": "trailing", "rescale": 0.0,
                 "interval": [0.0, 1.0], "guide": None}
            for m in mods:
                key, _, val = m.partition("=")
                if key == "clip":
                    e["clip_x0"] = True
                elif key in ("eta", "g", "r"):
                    e[{"eta": "eta", "g": "guidance", "r": "rescale"}[key]] = float(val)
                elif key == "sp" and (val in SPACINGS or NAMED_SPACING.fullmatch(val)):
                    e["spacing"] = val
                elif key == "gi":
                    e["interval"] = [float(v) for v in val.split("-")]
                elif key == "ag" and val:
                    if not (ROOT / val).is_file() and not Path(val).is_file():
                        raise ValueError(f"ag={val}: no such guide model file")
                    e["guide"] = val
                else:
                    raise ValueError(f"unknown modifier {m!r} (use clip, eta=X, g=X, sp={'|'.join(SPACINGS)}, "
                                     "r=X, gi=LO-HI or ag=FILE)")
        except ValueError as err:
            raise BenchError(f"{where}{item}: {err}") from None
        if not 1 <= e["steps"] <= 500:
            raise BenchError(f"{where}{item}: steps must be between 1 and 500")
        out.append(e)
    if not out:
        raise BenchError(f"{where}the sampler list is empty".strip())
    return out


# --- files ------------------------------------------------------------------------------------------------

def save_json(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=False, default=float))
    tmp.replace(path)
    return path


# A results file is read back (merged into, reported from), and anyone may have edited it: its size, depth and
# the fields read before a benchmark runs (to merge, judge or retime) are checked when it is read; the
# page's tables read more, under `reading` below.
RESULTS_MAX_BYTES = 64 << 20  # every section together is well under a megabyte
RESULTS_MAX_DEPTH = 32
_NUMBER = Either(Float(), Null())
QUALITY_ENTRY = Obj({"entry": Str(200), "sampler": Str(64), "steps": Int(1, 100_000), "nfe": Int(0, 10**7),
                     "clip_x0": Bool(), "guidance": _NUMBER, "fid_mean": Float(), "seconds_32": Float(0)},
                    optional=("guidance",))
QUALITY = Obj({"results": List(QUALITY_ENTRY, 10_000), "guidance": Float(), "precision": Str(16),
               "checkpoint": Either(Str(4096), Null()), "n": Int(1, 10**7), "n_seeds": Int(1, 10_000)},
              optional=("checkpoint", "n", "n_seeds"))
BENCH_RESULTS = Obj({"machine": Obj(), "settings": Obj(extra=Obj()), "commands": Obj(extra=Str(100_000)),
                     "regenerate": Str(10_000), "peak": Obj({"machine": Obj()}, optional=("machine",)),
                     "sample": Obj({"course_ddpm_seconds": _NUMBER}, optional=("course_ddpm_seconds",)),
                     "quality": QUALITY, "train": Obj(), "ddp": Obj(), "busy": Obj(), "app": Obj()},
                    optional=("machine", "settings", "commands", "regenerate", "peak", "sample", "quality", "train",
                              "ddp", "busy", "app"))

CALIBRATION = Obj(extra=Float(0, 1e6, above=True))  # the recipe study's seconds per step, by recipe name
RUN_RESULT = Obj()  # a benchmark's worker result (benchmarks/ddp.py): read by the section that started it


def load_json(path: str | Path, schema=BENCH_RESULTS) -> dict:
    """A results file ({} when there is none yet), checked against `schema`; BenchError names the file."""
    path = Path(path)
    if not path.is_file():
        return {}
    return read_json_file(path, max_bytes=RESULTS_MAX_BYTES, max_depth=RESULTS_MAX_DEPTH, error=BenchError,
                          schema=schema)


@contextmanager
def reading(path: str | Path):
    """Around code that reads a results file's sections in depth (the page's tables): a field missing or of
    another type there is the file's fault, said in one line that names it."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        what = f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"
        raise BenchError(f"{path}: a section is not as `bench` writes it ({what}); re-run the benchmark that writes "
                         "it, or remove the file") from None


def relative_to_root(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def font(size: int):
    """Pillow's default font at `size` (the bitmap font where Pillow is too old to scale it)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


# --- judging ---------------------------------------------------------------------------------------------

def _guidance(r: dict, q: dict) -> float:
    return r["guidance"] if r.get("guidance") is not None else q["guidance"]


def _ddpm500(q: dict, guidance: float) -> dict | None:
    return next((r for r in q["results"] if r["sampler"] == "ddpm" and r["steps"] == 500 and not r["clip_x0"]
                 and _guidance(r, q) == guidance), None)


def judge_quality(q: dict, course_ddpm_seconds: float | None) -> None:
    """The quality-matched speed target: the best entry at <= 20 calls against DDPM-500's feature-FID.

    The reference is DDPM-500 as the course samples (the run's guidance, default 1). A guided entry
    is also compared with DDPM-500 at its own guidance, when that was measured: like for like.
    """
    ddpm = _ddpm500(q, q["guidance"])
    for r in q["results"]:
        r["fid_vs_ddpm"] = r["fid_mean"] / ddpm["fid_mean"] - 1 if ddpm else None
    fast = [r for r in q["results"] if r["nfe"] <= 20]
    if not (ddpm and fast):
        return
    best = min(fast, key=lambda r: r["fid_mean"])
    frac = best["seconds_32"] / course_ddpm_seconds if course_ddpm_seconds else None
    summary = (f"best at <= 20 calls is {best['entry']} with feature-FID {best['fid_mean']:.3g} vs DDPM-500's "
               f"{ddpm['fid_mean']:.3g} ({100 * best['fid_vs_ddpm']:+.0f}%), {best['seconds_32']:.2f} s for 32 images")
    if frac:
        summary += f" = 1/{1 / frac:.0f} of the course's DDPM-500 ({course_ddpm_seconds:.1f} s, course network)"
    target = {"entry": best["entry"], "fid_met": best["fid_vs_ddpm"] <= 0.10, "time_fraction": frac}
    g = _guidance(best, q)
    same = _ddpm500(q, g) if g != q["guidance"] else None
    if same:
        gap = best["fid_mean"] / same["fid_mean"] - 1
        summary += (f"; like for like, against DDPM-500 with the same guidance {g:g} ({same['fid_mean']:.3g}) "
                    f"it is {100 * gap:+.0f}%")
        target["same_guidance"] = {"entry": same["entry"], "gap": gap, "met": gap <= 0.10}
    plain = [r for r in fast if _guidance(r, q) == q["guidance"]]
    if plain and best not in plain:
        b2 = min(plain, key=lambda r: r["fid_mean"])
        summary += f"; without guidance the best at <= 20 calls is {b2['entry']} at {100 * b2['fid_vs_ddpm']:+.0f}%"
        target["unguided"] = {"entry": b2["entry"], "gap": b2["fid_vs_ddpm"], "met": b2["fid_vs_ddpm"] <= 0.10}
    q["target"] = {**target, "summary": summary}


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def _fid_gap(q: dict, entry: str) -> float:
    return next(r["fid_vs_ddpm"] for r in q["results"] if r["entry"] == entry)


def target_rows(results: dict) -> list[list]:
    """[target, goal, measured, verdict] for every target the results can judge (the page's Targets table)."""
    rows = []
    tr = results.get("train")
    if tr:
        thr, lc = tr["throughput"], tr["loss_check"]
        fp = thr.get("ours fp32")
        if fp:
            rows.append(["training images/s of the course network, batch 100: ours fp32", ">= 1.1x course",
                         f"{fp['ratio_vs_course']:.2f}x", _verdict(fp["ratio_vs_course"] >= 1.1)])
        bf = thr.get("ours bf16")
        rows.append(["the same, ours bf16", ">= 2.5x course", f"{bf['ratio_vs_course']:.2f}x" if bf else
                     "not run: this CPU has no fast bf16", _verdict(bf["ratio_vs_course"] >= 2.5)
                     if bf else "not measured"])
        if bf:
            rows.append(["loss after equal steps (bf16 vs fp32)", "within run-to-run noise",
                         f"difference {lc['precision_gap']:.5f}, seed-to-seed {lc['seed_gap']:.5f}",
                         _verdict(lc["within_noise"])])
    sm = results.get("sample")
    if sm and sm.get("best_per_call_speedup"):
        v = sm["best_per_call_speedup"]
        bf16 = "bf16" in v["what"]
        rows.append(["per model call at batch 32 vs the course DDPM loop (bf16)", ">= 2.5x",
                     f"{v['value']:.2f}x ({v['what']}" + ("" if bf16 else "; this CPU has no fast bf16") + ")",
                     _verdict(v["value"] >= 2.5) if bf16 else "not measured in bf16"])
    busy = results.get("busy")
    if busy:
        rows.append(["training beside a process keeping one core busy: the CLI", ">= 40% of idle",
                     f"{100 * busy['tuned_ratio']:.0f}%", _verdict(busy["tuned_ratio"] >= 0.4)])
    app = results.get("app")
    if app and app.get("busy"):
        r = app["busy"]["app_busy_vs_idle"]
        rows.append(["the same: the app", ">= 40% of idle", f"{100 * r:.0f}%", _verdict(r >= 0.4)])
    if app:
        rows.append(["in-app training throughput vs the CLI, idle machine", ">= 90%",
                     f"{100 * app['app_vs_cli']:.0f}%", _verdict(app["app_vs_cli"] >= 0.9)])
    q = results.get("quality")
    if q and q.get("target"):
        t = q["target"]
        rows.append(["sampler at <= 20 calls with feature-FID within 10% of DDPM-500 (the course's way, "
                     "no guidance)", "<= +10%", f"{t['entry']}: {100 * _fid_gap(q, t['entry']):+.0f}%",
                     _verdict(t["fid_met"])])
        if t.get("same_guidance"):
            sg = t["same_guidance"]
            rows.append([f"the same, like for like: DDPM-500 at the same guidance ({sg['entry']})", "<= +10%",
                         f"{t['entry']}: {100 * sg['gap']:+.0f}%", _verdict(sg["met"])])
        if t.get("unguided"):
            ug = t["unguided"]
            rows.append(["the same, without guidance on either side", "<= +10%", f"{ug['entry']}: {100 * ug['gap']:+.0f}%",
                         _verdict(ug["met"])])
        if t.get("time_fraction") is not None:
            rows.append(["32 images vs course DDPM-500 time", "<= 1/50",
                         f"1/{1 / t['time_fraction']:.0f} ({t['entry']})", _verdict(t["time_fraction"] <= 1 / 50)])
    return rows
