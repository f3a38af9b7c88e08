"""The benchmarks' result tables: fixed-width text for the terminal and Markdown for the docs, built
from the same rows. No torch, numpy or Pillow here.
"""
from __future__ import annotations

import math

# --- table formats -----------------------------------------------------------------------------------------

def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def text_table(headers: list[str], rows: list[list]) -> str:
    """A fixed-width table for the terminal."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def markdown_table(headers: list[str], rows: list[list]) -> str:
    cells = [[_cell(v) for v in r] for r in rows]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(out)


def _pm(mean, sd) -> str:
    return f"{mean:.3g} ± {sd:.2g}" if sd is not None else f"{mean:.3g}"


# --- the section tables (shared by the terminal and the Markdown) -----------------------------------------

def peak_rows(peak: dict) -> tuple[list[str], list[list]]:
    return (["precision", "matmul GFLOP/s (best)", "at size n (n x n times n x n)"],
            [[p, peak[p]["gflops"], peak[p].get("size", peak.get("size"))] for p in ("fp32", "bf16") if p in peak])


def train_rows(train: dict) -> tuple[list[str], list[list]]:
    headers = ["contestant", "images/s (median)", "min-max over rounds", "x course", "ms/step", "% of matmul peak"]
    rows = []
    for name, r in train["throughput"].items():
        peak = r.get("peak_fraction")
        rows.append([name, r["median_ips"], f"{r['min_ips']:.0f}-{r['max_ips']:.0f}", r.get("ratio_vs_course"),
                     1000 * train["batch_size"] / r["median_ips"], None if peak is None else f"{100 * peak:.0f}%"])
    return headers, rows


def loss_rows(train: dict) -> tuple[list[str], list[list]]:
    headers = ["precision", "seed", "held-out loss after N steps", "mean train loss, last 50 steps", "seconds"]
    rows = [[r["precision"], r["seed"], round(r["eval_loss"], 5), round(r["train_loss_last50"], 5), r["seconds"]]
            for r in train["loss_check"]["runs"]]
    return headers, rows


def sample_rows(sample: dict) -> tuple[list[str], list[list]]:
    headers = ["code path", "sampler", "precision", "model calls", f"seconds for {sample['n']} images",
               "ms per call", "x faster than course DDPM-500", "per-call speed-up", "% of matmul peak"]
    rows = []
    for r in sample["results"]:
        peak = r.get("peak_fraction")
        rows.append([r["who"], r["sampler_label"], r["precision"], r["calls"], r["seconds"], r["ms_per_call"],
                     r.get("speedup_vs_course_ddpm"), r.get("per_call_speedup"),
                     None if peak is None else f"{100 * peak:.0f}%"])
    return headers, rows


def quality_rows(quality: dict) -> tuple[list[str], list[list]]:
    headers = ["sampler", "model calls", f"feature-FID (n={quality['n']}, mean ± sd over {quality['n_seeds']} seeds)",
               "label accuracy", "seconds for 32 images", "FID vs DDPM-500"]
    rows = []
    for r in quality["results"]:
        acc = r.get("accuracy_mean")
        rows.append([r["entry"], r["nfe"], _pm(r["fid_mean"], r["fid_sd"]),
                     None if acc is None else _pm(acc, r.get("accuracy_sd")), r["seconds_32"],
                     None if r.get("fid_vs_ddpm") is None else f"{100 * r['fid_vs_ddpm']:+.0f}%"])
    floor = quality["floor"]
    rows.append(["real vs real (floor)", "-", _pm(floor["mean"], floor["sd"]), quality.get("real_accuracy"), "-", "-"])
    return headers, rows


def ddp_rows(d: dict) -> tuple[list[str], list[list]]:
    """1 vs 2 training processes (torchrun, gloo), course network, same global batch."""
    return (["training processes", "images/s", "vs 1 process", "communication share"],
            [["1 (all cores)", d["one_process_img_s"], 1.0, "-"],
             ["2 (1 thread each)", d["two_process_img_s"], d["speedup"], f"{d['communication_share']:.0%}"],
             ["2, no gradient all-reduce", d["two_process_no_sync_img_s"], d["two_process_no_sync_img_s"] /
              d["one_process_img_s"], "-"]])


def busy_rows(d: dict) -> tuple[list[str], list[list]]:
    """Training beside a process that keeps one core busy (bench busy)."""
    return (["training (n_feat 32, batch 100, fp32)", "images/s", "vs idle"],
            [["idle machine, thread tuner", d["idle_img_s"], 1.0],
             ["one core busy, thread tuner (the CLI, the app)", d["busy_tuned_img_s"], d["tuned_ratio"]],
             ["one core busy, one thread per core fixed", d["busy_fixed_img_s"], d["fixed_ratio"]]])


def app_rows(d: dict) -> tuple[list[str], list[list]]:
    """The app against the CLI, idle and (with --busy) beside a process keeping one core busy."""
    rows = [["idle machine", d["cli_img_s"], d["app_img_s"], d["app_vs_cli"], "-", "-"]]
    if d.get("busy"):
        b = d["busy"]
        rows.append(["one core busy", b["cli_img_s"], b["app_img_s"], b["app_img_s"] / b["cli_img_s"],
                     f"{100 * b['cli_busy_vs_idle']:.0f}%", f"{100 * b['app_busy_vs_idle']:.0f}%"])
    return ["machine", "CLI images/s", "app images/s", "app / CLI", "CLI vs idle", "app vs idle"], rows


def ddp_loss_rows(d: dict) -> tuple[list[str], list[list]]:
    return ([f"held-out loss after {d['loss_steps']} steps (n_feat {d['loss_n_feat']})", "batchnorm", "seed",
             "eval loss", "last-50 train loss", "s"],
            [[f"{r['processes']} process(es)", r["batchnorm"], r["seed"], f"{r['eval_loss']:.5f}",
              f"{r['train_loss_last50']:.5f}", r["seconds"]] for r in d["losses"]])


def print_section(name: str, results: dict) -> str:
    """The terminal table(s) for one bench section."""
    makers = {"peak": [peak_rows], "train": [train_rows, loss_rows], "sample": [sample_rows], "quality": [quality_rows],
              "ddp": [ddp_rows, ddp_loss_rows], "busy": [busy_rows], "app": [app_rows]}
    return "\n\n".join(text_table(*m(results)) for m in makers[name])
