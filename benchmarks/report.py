"""Turns bench results (the JSON `benchmarks.bench` writes) into tables, PNGs and docs/benchmarks.md.

No torch here: text tables for the terminal, Markdown for the docs, and two pictures drawn with
Pillow (matplotlib is not a dependency): quality against time, and a sample grid per label.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# --- tables --------------------------------------------------------------------------------------------


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


def print_section(name: str, results: dict) -> str:
    """The terminal table(s) for one bench section."""
    makers = {"peak": [peak_rows], "train": [train_rows, loss_rows], "sample": [sample_rows], "quality": [quality_rows],
              "ddp": [ddp_rows, ddp_loss_rows], "busy": [busy_rows], "app": [app_rows]}
    return "\n\n".join(text_table(*m(results)) for m in makers[name])


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


# --- pictures --------------------------------------------------------------------------------------------

def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


PALETTE = {"ddpm": (200, 60, 50), "ddim": (40, 110, 200), "dpmpp2m": (30, 150, 80)}


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _nice_step(raw: float) -> float:
    """The 1, 2 or 5 times a power of ten at or above raw (axis tick spacing)."""
    e = 10.0 ** math.floor(math.log10(raw))
    return next(m * e for m in (1, 2, 5, 10) if m * e >= raw)


def plot_quality(quality: dict, path: str | Path, *, course_ddpm_seconds: float | None = None) -> Path:
    """Feature-FID against seconds for 32 images (log x), error bars = sd over seeds, floor dashed."""
    W, H, L, R, T, B = 900, 560, 90, 30, 50, 70
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    f, fs = _font(16), _font(13)
    res = quality["results"]
    xs = [r["seconds_32"] for r in res]
    ys_hi = [r["fid_mean"] + (r["fid_sd"] or 0) for r in res]
    floor = quality["floor"]["mean"]
    x_lo, x_hi = min(xs) / 1.6, max(xs + ([course_ddpm_seconds] if course_ddpm_seconds else [])) * 1.6
    y_step = _nice_step(max(ys_hi + [floor]) * 1.12 / 5)
    y_hi = y_step * math.ceil(max(ys_hi + [floor]) * 1.08 / y_step)
    px = lambda x: L + (math.log10(x) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo)) * (W - L - R)
    py = lambda y: H - B - y / y_hi * (H - T - B)
    d.rectangle([L, T, W - R, H - B], outline=(0, 0, 0))
    for e in range(math.floor(math.log10(x_lo)), math.ceil(math.log10(x_hi)) + 1):  # log ticks
        for m in (1, 2, 5):
            x = m * 10.0 ** e
            if x_lo <= x <= x_hi:
                d.line([px(x), T, px(x), H - B], fill=(225, 225, 225))
                d.text((px(x), H - B + 6), f"{x:g}", fill=(0, 0, 0), font=fs, anchor="mt")
    for k in range(round(y_hi / y_step) + 1):
        y = y_step * k
        d.line([L, py(y), W - R, py(y)], fill=(225, 225, 225))
        d.text((L - 6, py(y)), f"{y:.4g}", fill=(0, 0, 0), font=fs, anchor="rm")
    for x in range(L, W - R, 12):  # the real-vs-real floor
        d.line([x, py(floor), x + 6, py(floor)], fill=(120, 120, 120), width=2)
    d.text((W - R - 6, py(floor) - 4), "real vs real (floor)", fill=(90, 90, 90), font=fs, anchor="rb")
    if course_ddpm_seconds:
        for ref, text in ((course_ddpm_seconds, "course DDPM-500 (32 images)"),
                          (course_ddpm_seconds / 50, "1/50 of the course DDPM-500")):
            if x_lo <= ref <= x_hi:
                for y in range(T, H - B, 12):
                    d.line([px(ref), y, px(ref), y + 6], fill=(200, 140, 0), width=2)
                right = px(ref) > 0.7 * W  # label on the side with room
                d.text((px(ref) + (-4 if right else 4), T + 4), text, fill=(170, 110, 0), font=fs,
                       anchor="rt" if right else "lt")
    ddpm = next((r for r in res if r["sampler"] == "ddpm" and r["steps"] == 500 and not r.get("clip_x0")), None)
    if ddpm:  # the quality target: DDPM-500's feature-FID + 10%
        y = py(1.1 * ddpm["fid_mean"])
        for x in range(L, W - R, 8):
            d.line([x, y, x + 3, y], fill=(200, 60, 50), width=1)
        d.text((L + 6, y - 3), "DDPM-500 + 10%", fill=(200, 60, 50), font=fs, anchor="lb")
    taken = []  # label boxes placed so far: each label takes the first free spot around its point
    for r in sorted(res, key=lambda r: r["seconds_32"]):
        color = PALETTE.get(r["sampler"], (80, 80, 80))
        x, y, sd = px(r["seconds_32"]), py(r["fid_mean"]), r["fid_sd"] or 0
        d.line([x, py(r["fid_mean"] - sd), x, py(r["fid_mean"] + sd)], fill=color, width=2)
        d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=color)
        taken.append((x - 6, y - 6, x + 6, y + 6))
    for r in sorted(res, key=lambda r: r["seconds_32"]):
        color = PALETTE.get(r["sampler"], (80, 80, 80))
        x, y = px(r["seconds_32"]), py(r["fid_mean"])
        text = f"{r['entry']} ({r['nfe']} calls)"
        for dx, dy, anchor in ((8, -2, "lb"), (8, 2, "lt"), (-8, -2, "rb"), (-8, 2, "rt"), (8, -16, "lb"),
                               (8, 16, "lt"), (-8, -16, "rb"), (-8, 16, "rt"), (8, -30, "lb"), (8, 30, "lt")):
            box = d.textbbox((x + dx, y + dy), text, font=fs, anchor=anchor)
            if box[0] > L and box[2] < W - R and not any(_overlap(box, t) for t in taken):
                break
        d.text((x + dx, y + dy), text, fill=color, font=fs, anchor=anchor)
        taken.append(box)
    d.text((W / 2, 14), f"Quality against time: feature-FID (lower is better), {quality['n']} images per point",
           fill=(0, 0, 0), font=f, anchor="mt")
    d.text((W / 2, H - 22), "seconds to sample 32 images (log scale)", fill=(0, 0, 0), font=f, anchor="mt")
    label = Image.new("RGB", (200, 24), "white")
    ImageDraw.Draw(label).text((100, 12), "feature-FID", fill=(0, 0, 0), font=f, anchor="mm")
    label = label.rotate(90, expand=True)
    img.paste(label, (8, int((T + H - B) / 2 - 100)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def grid_image(panels: list[tuple[str, np.ndarray]], label_names: list[str], *, scale: int = 4,
               title: str = "") -> Image.Image:
    """Side-by-side panels of (rows = labels, cols = samples) uint8 grids (L, k, H, W, 3), labelled."""
    f, fs = _font(15), _font(13)
    L, k, h, w, _ = panels[0][1].shape
    cell, gap, left, top = h * scale, 2, 130, 58 if title else 34
    panel_w = k * (cell + gap)
    width = max(left + len(panels) * (panel_w + 20), 16 + int(f.getlength(title)) if title else 0)
    img = Image.new("RGB", (width, top + L * (cell + gap) + 8), "white")
    d = ImageDraw.Draw(img)
    if title:
        d.text((8, 6), title, fill=(0, 0, 0), font=f)
    for p, (name, grid) in enumerate(panels):
        x0 = left + p * (panel_w + 20)
        d.text((x0, top - 22), name, fill=(0, 0, 0), font=f)
        for i in range(L):
            for j in range(k):
                tile = Image.fromarray(grid[i, j]).resize((cell, cell), Image.NEAREST)
                img.paste(tile, (x0 + j * (cell + gap), top + i * (cell + gap)))
    for i, name in enumerate(label_names[:L]):
        d.text((8, top + i * (cell + gap) + cell / 2), name, fill=(0, 0, 0), font=fs, anchor="lm")
    return img


# --- the Markdown page -----------------------------------------------------------------------------------

def _machine_lines(m: dict) -> list[str]:
    return [f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch {m.get('torch', '?')} "
            f"({m.get('threads', '?')} threads, OMP_WAIT_POLICY={m.get('omp_wait_policy', '?')}), "
            f"bf16 matrix support: {m.get('bf16', '?')}",
            f"- Run on {m.get('date', '?')}; Python {m.get('python', '?')}; {m.get('note', '')}".rstrip("; ")]


def _section_machines(results: dict) -> list[str]:
    """One line naming where and when each section was measured, when they differ (sections are re-run
    one at a time, so a page can mix machines; ratios are always from one run on one machine)."""
    seen = {w: results[w]["machine"] for w in ("peak", "train", "sample", "quality", "ddp", "busy", "app")
            if isinstance(results.get(w), dict) and "machine" in results[w]}
    if len({(m.get("cpu"), m.get("bf16"), m.get("date", "")[:10]) for m in seen.values()}) <= 1:
        return []
    parts = [f"{w} on {m.get('date', '?')[:10]} ({m.get('cpu', '?')}, {m.get('cores', '?')} cores, fast bf16 "
             f"{'yes' if m.get('bf16') else 'no'})" for w, m in seen.items()]
    return ["- Sections from different runs: " + "; ".join(parts) + ". Every ratio on this page compares "
            "contestants measured side by side in one run on one machine."]


def _targets(results: dict) -> list[list]:
    rows = []
    tr = results.get("train")
    if tr:
        thr, lc = tr["throughput"], tr["loss_check"]
        fp = thr.get("ours fp32")
        if fp:
            rows.append(["training images/s of the course network, batch 100: ours fp32", ">= 1.1x course",
                         f"{fp['ratio_vs_course']:.2f}x", "met" if fp["ratio_vs_course"] >= 1.1 else "missed"])
        bf = thr.get("ours bf16")
        rows.append(["the same, ours bf16", ">= 2.5x course", f"{bf['ratio_vs_course']:.2f}x" if bf else
                     "not run: this CPU has no fast bf16", ("met" if bf["ratio_vs_course"] >= 2.5 else "missed")
                     if bf else "not measured"])
        if bf:
            rows.append(["loss after equal steps (bf16 vs fp32)", "within run-to-run noise",
                         f"difference {lc['precision_gap']:.5f}, seed-to-seed {lc['seed_gap']:.5f}",
                         "met" if lc["within_noise"] else "missed"])
    sm = results.get("sample")
    if sm and sm.get("best_per_call_speedup"):
        v = sm["best_per_call_speedup"]
        bf16 = "bf16" in v["what"]
        rows.append(["per model call at batch 32 vs the course DDPM loop (bf16)", ">= 2.5x",
                     f"{v['value']:.2f}x ({v['what']}" + ("" if bf16 else "; this CPU has no fast bf16") + ")",
                     ("met" if v["value"] >= 2.5 else "missed") if bf16 else "not measured in bf16"])
    busy = results.get("busy")
    if busy:
        rows.append(["training beside a process keeping one core busy: the CLI", ">= 40% of idle",
                     f"{100 * busy['tuned_ratio']:.0f}%", "met" if busy["tuned_ratio"] >= 0.4 else "missed"])
    app = results.get("app")
    if app and app.get("busy"):
        r = app["busy"]["app_busy_vs_idle"]
        rows.append(["the same: the app", ">= 40% of idle", f"{100 * r:.0f}%", "met" if r >= 0.4 else "missed"])
    if app:
        rows.append(["in-app training throughput vs the CLI, idle machine", ">= 90%",
                     f"{100 * app['app_vs_cli']:.0f}%", "met" if app["app_vs_cli"] >= 0.9 else "missed"])
    q = results.get("quality")
    if q and q.get("target"):
        t = q["target"]
        rows.append(["sampler at <= 20 calls with feature-FID within 10% of DDPM-500 (the course's way, "
                     "no guidance)", "<= +10%", f"{t['entry']}: {100 * _gap(q, t['entry']):+.0f}%",
                     "met" if t["fid_met"] else "missed"])
        if t.get("same_guidance"):
            sg = t["same_guidance"]
            rows.append([f"the same, like for like: DDPM-500 at the same guidance ({sg['entry']})", "<= +10%",
                         f"{t['entry']}: {100 * sg['gap']:+.0f}%", "met" if sg["met"] else "missed"])
        if t.get("unguided"):
            ug = t["unguided"]
            rows.append(["the same, without guidance on either side", "<= +10%", f"{ug['entry']}: {100 * ug['gap']:+.0f}%",
                         "met" if ug["met"] else "missed"])
        if t.get("time_fraction") is not None:
            rows.append(["32 images vs course DDPM-500 time", "<= 1/50",
                         f"1/{1 / t['time_fraction']:.0f} ({t['entry']})", "met" if t["time_fraction"] <= 1 / 50 else "missed"])
    return rows


def _gap(q: dict, entry: str) -> float:
    return next(r["fid_vs_ddpm"] for r in q["results"] if r["entry"] == entry)


HAND_MEASURED = "benchmarks_measured.md"


def write_markdown(results: dict, docs: str | Path) -> Path:
    """docs/benchmarks.md from the results dict; PNGs referenced by their file names beside it."""
    docs = Path(docs)
    out = ["# Benchmarks", "",
           "How Diffusion Desk compares with the course notebooks' own code, measured side by side in one "
           "process on one machine, and how good its samplers are per second. Regenerate this page (and "
           "its JSON and pictures) with:", "", "```", results.get("regenerate", "python main.py bench all --report"),
           "```", "", "## Machine", "", *_machine_lines(results.get("machine", {})), *_section_machines(results), ""]
    quick = [w for w, st in results.get("settings", {}).items() if st.get("quick")]
    if quick:
        out += [f"> **Smoke-test settings (--quick) for {', '.join(quick)}: tiny networks and sample counts, "
                "not a measurement.**", ""]
    rows = _targets(results)
    if rows:
        out += ["## Targets", "", markdown_table(["target", "goal", "measured", "verdict"], rows), ""]
    out += _peak_md(results.get("peak")) + _train_md(results.get("train")) + _sample_md(results.get("sample"))
    out += _busy_md(results.get("busy"), results.get("app"))
    extra_path = docs / "quality_investigation.json"
    extra = load_json(extra_path).get("quality") if extra_path.is_file() else None
    if extra:
        extra["command"] = load_json(extra_path).get("commands", {}).get("quality", "")
    out += _quality_md(results.get("quality"), extra)
    measured = docs / HAND_MEASURED  # sections measured by other commands, kept across regenerations
    if measured.is_file():
        out += [measured.read_text().rstrip("\n"), ""]
    loads = {k: results[k]["load_average"] for k in ("peak", "train", "sample", "quality")
             if isinstance(results.get(k), dict) and "load_average" in results[k]}
    out += ["## Commands", "", "Each section was produced by:", "", "```",
            *[f"{k}: {v}" for k, v in results.get("commands", {}).items()], "```", ""]
    if loads:
        out += [f"1-minute load average before/after each section (the machine has "
                f"{results.get('machine', {}).get('cores', '?')} cores; above that, something else was "
                "running): " + ", ".join(f"{k} {a:.1f}/{b:.1f}" for k, (a, b) in loads.items()) + ".", ""]
    out += ["Raw numbers: [bench_results.json](bench_results.json).", ""]
    path = docs / "benchmarks.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))
    return path


def _peak_md(peak) -> list[str]:
    if not peak:
        return []
    return ["## Matrix-multiply peak", "",
            "The best of several large matrix multiplies in the same run: the ceiling the network's "
            "convolutions could approach. Percentages below are of this peak in the matching precision.", "",
            markdown_table(*peak_rows(peak)), ""]


def _train_md(tr) -> list[str]:
    if not tr:
        return []
    lc = tr["loss_check"]
    return [f"## Training throughput (course network, batch {tr['batch_size']})", "",
            f"The course ContextUnet (n_feat {tr['n_feat']}, {tr['n_params']:,} parameters, {tr['gflop_per_image']:.2f} "
            f"GFLOP per image per training step) on emoji16, batch {tr['batch_size']}. Contestants alternate "
            f"A/B/C over {tr['rounds']} rounds of {tr['steps_per_round']} steps after a warm-up; median and "
            "range over rounds. *course* is the notebooks' code path (benchmarks/course_baseline.py: "
            "per-item ToTensor/Normalize, DataLoader num_workers=1, fresh shortcut conv per call); *ours* "
            "is the app's Trainer (data held as one tensor, registered shortcut, EMA, gradient clipping, "
            "random flips) in fp32 and, where the CPU has fast bf16, under bf16 autocast.", "",
            markdown_table(*train_rows(tr)), "",
            *(_loss_md(tr) if any(r["precision"] == "bf16" for r in lc["runs"]) else
              ["bf16 was not run: this CPU has no fast bf16 matrix instructions (bf16 is emulated there, "
               "slower than fp32), so neither the bf16 speed nor its loss check is measured on this page. "
               "The fp32 loss check alone:", "", markdown_table(*loss_rows(tr)), ""])]


def _loss_md(tr) -> list[str]:
    lc = tr["loss_check"]
    return [f"**Does bf16 hurt learning?** Our trainer, {lc['steps']} steps from the same seeds, fp32 against "
            "bf16; the held-out loss is the noise-prediction MSE of the final weights on a fixed set of "
            f"{lc['eval_n']} (image, t, noise) triples, evaluated in fp32.", "",
            markdown_table(*loss_rows(tr)), "",
            f"Mean gap bf16 - fp32: {lc['precision_gap']:+.5f}; seed-to-seed spread at equal precision: "
            f"{lc['seed_gap']:.5f} -> {'within' if lc['within_noise'] else 'NOT within'} run-to-run noise.", ""]


def _busy_md(busy, app) -> list[str]:
    """`bench busy` (the CLI's loop) and `python -m benchmarks.app_vs_cli` (the Train tab against the CLI)."""
    out = []
    if busy:
        out += ["## Training on a busy machine", "",
                "Our trainer (n_feat 32, batch 100, fp32) on the idle machine, then beside a second process that "
                "spins one torch thread on matrix products (`bench busy` starts and stops it), with the thread "
                "tuner the CLI and the app use (all cores vs one thread, re-timed as the run goes) and, for "
                "comparison, with the threads fixed at one per core.", "",
                markdown_table(*busy_rows(busy)), ""]
    if app:
        out += ["## In the app vs on the command line", "",
                f"The Train tab (its training job on a worker thread, the live loss plot) against the CLI's loop "
                f"in a process of its own, same settings (n_feat 32, batch 100, fp32, {app['steps']} steps), "
                f"{app['rounds']} alternated rounds; wall-clock images/s from step 20 as each consumer sees them "
                "(`python -m benchmarks.app_vs_cli" + (" --busy" if app.get("busy") else "") + "`).", "",
                markdown_table(*app_rows(app)), ""]
    return out


def _sample_md(sm) -> list[str]:
    if not sm:
        return []
    return ["## Sampling speed", "",
            f"{sm['n']} images from the course network (n_feat {sm['n_feat']}, weights random: speed does not "
            "depend on them). *course* rows run the notebooks' sampling loops; *ours* runs "
            "core.samplers.generate. Wall time around the whole call; the median over "
            f"{sm['rounds']} alternated rounds (DDPM-500: {sm['ddpm_rounds']}). Per-call speed-up is against the "
            "course loop's ms per call.", "",
            markdown_table(*sample_rows(sm)), ""]


def _quality_md(q, extra: dict | None = None) -> list[str]:
    """The quality section; `extra` = more entries measured the same way (docs/quality_investigation.json)."""
    if not q:
        return []
    clf = q.get("classifier", {})
    out = ["## Sample quality per second (the default model)", "",
           f"Checkpoint `{q['checkpoint']}` ({q.get('model', '')}), precision {q['precision']}, guidance "
           f"{q['guidance']}. For each sampler: {q['n']} images conditioned on labels in emoji16's own "
           f"proportions, {q['n_seeds']} seeds (mean ± sd); feature-FID against all {q['n_reference']} "
           "emoji16 images; label accuracy = how often the classifier sees the asked-for label. Seconds: "
           "32 images at batch 32 (median of repeats).", "",
           markdown_table(*quality_rows(q)), "",
           f"The floor row compares {q['n']} real images with the other {q['n_reference'] - q['n']}: "
           "what a perfect model would score at this sample count. Its label accuracy is the "
           "classifier's on real images (mostly ones it was trained on).", "",
           "![quality against time](quality_vs_time.png)", ""]
    if q.get("target"):
        out += [f"**Quality-matched speed:** {q['target']['summary']}.", ""]
    out += _findings(q, extra)
    out += ["### The quality measure", "",
            f"Inception weights cannot be downloaded, so the features come from a small CNN trained on emoji16's "
            f"labels (tools/train_classifier.py -> resources/classifier_emoji16.safetensors, "
            f"{clf.get('feature_dim', '?')}-dimensional penultimate layer). Held-out accuracy "
            f"{clf.get('held_out_accuracy', float('nan')):.3f} on a stratified {clf.get('n_held_out', '?')}-image split "
            "it never trained on; per label: "
            + ", ".join(f"{k} {v:.2f}" for k, v in clf.get("per_label", {}).items())
            + ". Food and object overlap at 16 px: among held-out mistakes are grapes, a melon and chopsticks "
              "taken for objects, and a volleyball, a CD and a plaster taken for food. Feature-FID is only "
              "comparable at equal sample counts with the same classifier file.", ""]
    if q.get("grid"):
        out += ["### The default model, per label", "", q["grid"]["caption"], "",
                f"![default model samples]({q['grid']['file']})", ""]
    return out


def _fid(q: dict, entry: str) -> dict | None:
    return next((r for r in q["results"] if r["entry"] == entry), None)


def _findings(q: dict, extra: dict | None) -> list[str]:
    """Plain-language reading of the table, sentences only where their entries were measured."""
    rows = list(q["results"])
    if extra and all(extra.get(k) == q.get(k) for k in ("checkpoint", "n", "n_seeds", "precision", "guidance")):
        rows += [r for r in extra["results"] if not _fid(q, r["entry"])]
    else:
        extra = None
    by = {r["entry"]: r for r in rows}
    ddpm = by.get("ddpm:500")
    if not ddpm:
        return []
    rel = lambda e: f"{by[e]['fid_mean']:.3g} ({100 * (by[e]['fid_mean'] / ddpm['fid_mean'] - 1):+.0f}%)"
    out = ["### What the numbers say", ""]
    fast = sorted((e for e in by if "+g=" not in e and by[e]["nfe"] <= 20), key=lambda e: by[e]["fid_mean"])
    if fast:
        within = [e for e in fast if by[e]["fid_mean"] <= 1.1 * ddpm["fid_mean"]]
        verdict = (f"{len(within)} of {len(fast)} within 10% of it" if within else
                   "none within 10% of it: here the deterministic (probability-flow) path does worse than "
                   "DDPM's ancestral sampling, whose re-injected noise corrects the model's errors")
        out.append(f"- **Unguided at <= 20 model calls**, best first: " + ", ".join(f"{e} {rel(e)}" for e in fast)
                   + f" against DDPM-500's {ddpm['fid_mean']:.3g}; {verdict}.")
        accs = [by[e]["accuracy_mean"] for e in fast]
        out.append(f"- **Label accuracy unguided:** {min(accs):.2f}-{max(accs):.2f} for those, "
                   f"{ddpm['accuracy_mean']:.2f} for DDPM-500.")
    sto = [e for e in ("ddim:50+eta=1", "ddpm:100", "ddim:20+eta=1", "ddpm:20", "ddim:20+eta=0.5") if e in by]
    if sto:
        out.append("- **Noise added along the way closes the gap, given enough steps:** "
                   + ", ".join(f"{e} {rel(e)}" for e in sto) + " against DDPM-500.")
    clip = [e for e in ("ddim:20+clip", "dpmpp2m:20+clip") if e in by]
    if clip:
        out.append("- **Clipping the predicted clean image to [-1, 1] does not help:** "
                   + ", ".join(f"{e} {rel(e)}" for e in clip) + ".")
    guided = [e for e in by if "+g=" in e and by[e]["sampler"] != "ddpm"]
    if guided:
        text = ", ".join(f"{e} ({by[e]['nfe']} calls) {rel(e)}, label accuracy {by[e]['accuracy_mean']:.2f}"
                         for e in guided)
        out.append(f"- **Classifier-free guidance helps most:** {text} (DDPM-500 without guidance: label accuracy "
                   f"{ddpm['accuracy_mean']:.2f}). Guidance 2 costs two model calls per step.")
        for e in [e for e in by if by[e]["sampler"] == "ddpm" and "+g=" in e]:
            g = e.split("+g=")[1]
            best = min((x for x in guided if x.endswith(f"+g={g}") or f"+g={g}+" in x), default=None,
                       key=lambda x: by[x]["fid_mean"])
            out.append(f"- **Like for like:** {e} ({by[e]['nfe']} calls) scores {by[e]['fid_mean']:.3g}, label accuracy "
                       f"{by[e]['accuracy_mean']:.2f}"
                       + (f"; {best} at {by[best]['nfe']} calls is "
                          f"{100 * (by[best]['fid_mean'] / by[e]['fid_mean'] - 1):+.0f}% from it." if best else "."))
    if extra:
        out.append("- Also measured the same way (`" + extra.get("command", "") + "`), seconds not shown (taken while "
                   "the machine was busy): see docs/quality_investigation.json.")
    return out + [""]


def save_json(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=False, default=float))
    tmp.replace(path)
    return path


def load_json(path: str | Path) -> dict:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}
