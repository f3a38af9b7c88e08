"""docs/benchmarks.md from the bench results (the JSON `benchmarks.bench` writes): the page's layout.

The wording lives in benchmarks/page_text.py, the tables in benchmarks/tables.py, the target verdicts
in benchmarks/common.py; this module reads the results and puts those pieces in order. No torch here.
"""
from __future__ import annotations

from pathlib import Path

from . import page_text as text
from .common import load_json, target_rows
from .tables import (app_rows, busy_rows, loss_rows, markdown_table, peak_rows, quality_rows, sample_rows,
                     train_rows)

HAND_MEASURED = "benchmarks_measured.md"
SECTIONS = ("peak", "train", "sample", "quality", "ddp", "busy", "app")


def write_markdown(results: dict, docs: str | Path) -> Path:
    """docs/benchmarks.md from the results dict; PNGs referenced by their file names beside it."""
    docs = Path(docs)
    out = ["# Benchmarks", "", text.INTRO, "", "```", results.get("regenerate", "python main.py bench all --report"),
           "```", "", "## Machine", "", *_machine_lines(results.get("machine", {})), *_section_machines(results), ""]
    quick = [w for w, st in results.get("settings", {}).items() if st.get("quick")]
    if quick:
        out += [text.QUICK.substitute(sections=", ".join(quick)), ""]
    rows = target_rows(results)
    if rows:
        out += ["## Targets", "", markdown_table(["target", "goal", "measured", "verdict"], rows), ""]
    out += _peak_md(results.get("peak")) + _train_md(results.get("train")) + _sample_md(results.get("sample"))
    out += _busy_md(results.get("busy"), results.get("app"))
    out += _quality_md(results.get("quality"), _investigation(docs))
    measured = docs / HAND_MEASURED  # sections measured by other commands, kept across regenerations
    if measured.is_file():
        out += [measured.read_text().rstrip("\n"), ""]
    out += _commands_md(results)
    path = docs / "benchmarks.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))
    return path


def _investigation(docs: Path) -> dict | None:
    """More quality entries measured the same way (docs/quality_investigation.json), with their command."""
    path = docs / "quality_investigation.json"
    extra = load_json(path).get("quality") if path.is_file() else None
    if extra:
        extra["command"] = load_json(path).get("commands", {}).get("quality", "")
    return extra


def _machine_lines(m: dict) -> list[str]:
    get = {k: m.get(k, "?") for k in ("cpu", "cores", "torch", "threads", "omp_wait_policy", "bf16", "date", "python")}
    return [text.MACHINE.substitute(get), text.RUN.substitute(get, note=m.get("note", "")).rstrip("; ")]


def _section_machines(results: dict) -> list[str]:
    """One line naming where and when each section was measured, when they differ (sections are re-run
    one at a time, so a page can mix machines; ratios are always from one run on one machine)."""
    seen = {w: results[w]["machine"] for w in SECTIONS if isinstance(results.get(w), dict) and "machine" in results[w]}
    if len({(m.get("cpu"), m.get("bf16"), m.get("date", "")[:10]) for m in seen.values()}) <= 1:
        return []
    parts = [text.SECTION_MACHINE.substitute(section=w, day=m.get("date", "?")[:10], cpu=m.get("cpu", "?"),
                                             cores=m.get("cores", "?"), bf16="yes" if m.get("bf16") else "no")
             for w, m in seen.items()]
    return [text.SECTIONS_DIFFER.substitute(parts="; ".join(parts))]


def _commands_md(results: dict) -> list[str]:
    loads = {k: results[k]["load_average"] for k in ("peak", "train", "sample", "quality")
             if isinstance(results.get(k), dict) and "load_average" in results[k]}
    out = ["## Commands", "", text.COMMANDS, "", "```",
           *[f"{k}: {v}" for k, v in results.get("commands", {}).items()], "```", ""]
    if loads:
        each = ", ".join(f"{k} {a:.1f}/{b:.1f}" for k, (a, b) in loads.items())
        out += [text.LOADS.substitute(cores=results.get("machine", {}).get("cores", "?"), loads=each), ""]
    return out + [text.RAW, ""]


def _peak_md(peak) -> list[str]:
    if not peak:
        return []
    return ["## Matrix-multiply peak", "", text.PEAK, "", markdown_table(*peak_rows(peak)), ""]


def _train_md(tr) -> list[str]:
    if not tr:
        return []
    intro = text.TRAIN.substitute(n_feat=tr["n_feat"], n_params=f"{tr['n_params']:,}",
                                  gflop=f"{tr['gflop_per_image']:.2f}", batch=tr["batch_size"], rounds=tr["rounds"],
                                  steps=tr["steps_per_round"])
    out = [text.TRAIN_TITLE.substitute(batch=tr["batch_size"]), "", intro, "", markdown_table(*train_rows(tr)), ""]
    if any(r["precision"] == "bf16" for r in tr["loss_check"]["runs"]):
        return out + _loss_md(tr)
    return out + [text.NO_BF16, "", markdown_table(*loss_rows(tr)), ""]


def _loss_md(tr) -> list[str]:
    lc = tr["loss_check"]
    gap = text.BF16_GAP.substitute(gap=f"{lc['precision_gap']:+.5f}", spread=f"{lc['seed_gap']:.5f}",
                                   within="within" if lc["within_noise"] else "NOT within")
    return [text.BF16_LOSS.substitute(steps=lc["steps"], eval_n=lc["eval_n"]), "", markdown_table(*loss_rows(tr)), "",
            gap, ""]


def _busy_md(busy, app) -> list[str]:
    """`bench busy` (the CLI's loop) and `python -m benchmarks.app_vs_cli` (the Train tab against the CLI)."""
    out = []
    if busy:
        out += ["## Training on a busy machine", "", text.BUSY, "", markdown_table(*busy_rows(busy)), ""]
    if app:
        command = "python -m benchmarks.app_vs_cli" + (" --busy" if app.get("busy") else "")
        out += ["## In the app vs on the command line", "",
                text.APP.substitute(steps=app["steps"], rounds=app["rounds"], command=command), "",
                markdown_table(*app_rows(app)), ""]
    return out


def _sample_md(sm) -> list[str]:
    if not sm:
        return []
    intro = text.SAMPLE.substitute(n=sm["n"], n_feat=sm["n_feat"], rounds=sm["rounds"], ddpm_rounds=sm["ddpm_rounds"])
    return ["## Sampling speed", "", intro, "", markdown_table(*sample_rows(sm)), ""]


def _quality_md(q, extra: dict | None = None) -> list[str]:
    """The quality section; `extra` = more entries measured the same way (docs/quality_investigation.json)."""
    if not q:
        return []
    clf = q.get("classifier", {})
    intro = text.QUALITY.substitute(checkpoint=q["checkpoint"], model=q.get("model", ""), precision=q["precision"],
                                    guidance=q["guidance"], n=q["n"], n_seeds=q["n_seeds"],
                                    n_reference=q["n_reference"])
    out = ["## Sample quality per second (the default model)", "", intro, "", markdown_table(*quality_rows(q)), "",
           text.FLOOR.substitute(n=q["n"], others=q["n_reference"] - q["n"]), "",
           "![quality against time](quality_vs_time.png)", ""]
    if q.get("target"):
        out += [text.QUALITY_TARGET.substitute(summary=q["target"]["summary"]), ""]
    out += _findings(q, extra)
    per_label = ", ".join(f"{k} {v:.2f}" for k, v in clf.get("per_label", {}).items())
    measure = text.MEASURE.substitute(feature_dim=clf.get("feature_dim", "?"),
                                      accuracy=f"{clf.get('held_out_accuracy', float('nan')):.3f}",
                                      n_held_out=clf.get("n_held_out", "?"), per_label=per_label)
    out += ["### The quality measure", "", measure, ""]
    if q.get("grid"):
        out += ["### The default model, per label", "", q["grid"]["caption"], "",
                f"![default model samples]({q['grid']['file']})", ""]
    return out


def _entry(q: dict, entry: str) -> dict | None:
    return next((r for r in q["results"] if r["entry"] == entry), None)


def _findings(q: dict, extra: dict | None) -> list[str]:
    """Plain-language reading of the table, sentences only where their entries were measured."""
    rows = list(q["results"])
    if extra and all(extra.get(k) == q.get(k) for k in ("checkpoint", "n", "n_seeds", "precision", "guidance")):
        rows += [r for r in extra["results"] if not _entry(q, r["entry"])]
    else:
        extra = None
    by = {r["entry"]: r for r in rows}
    ddpm = by.get("ddpm:500")
    if not ddpm:
        return []

    def rel(e: str) -> str:
        gap = 100 * (by[e]["fid_mean"] / ddpm["fid_mean"] - 1)
        return text.RELATIVE.substitute(fid=f"{by[e]['fid_mean']:.3g}", gap=f"{gap:+.0f}%")

    def listed(entries) -> str:
        return ", ".join(f"{e} {rel(e)}" for e in entries)

    out = ["### What the numbers say", ""]
    fast = sorted((e for e in by if "+g=" not in e and by[e]["nfe"] <= 20), key=lambda e: by[e]["fid_mean"])
    if fast:
        within = [e for e in fast if by[e]["fid_mean"] <= 1.1 * ddpm["fid_mean"]]
        verdict = text.SOME_WITHIN.substitute(within=len(within), fast=len(fast)) if within else text.NONE_WITHIN
        out.append(text.UNGUIDED.substitute(entries=listed(fast), ddpm=f"{ddpm['fid_mean']:.3g}", verdict=verdict))
        accs = [by[e]["accuracy_mean"] for e in fast]
        out.append(text.ACCURACY.substitute(low=f"{min(accs):.2f}", high=f"{max(accs):.2f}",
                                            ddpm=f"{ddpm['accuracy_mean']:.2f}"))
    sto = [e for e in ("ddim:50+eta=1", "ddpm:100", "ddim:20+eta=1", "ddpm:20", "ddim:20+eta=0.5") if e in by]
    if sto:
        out.append(text.STOCHASTIC.substitute(entries=listed(sto)))
    clip = [e for e in ("ddim:20+clip", "dpmpp2m:20+clip") if e in by]
    if clip:
        out.append(text.CLIPPED.substitute(entries=listed(clip)))
    guided = [e for e in by if "+g=" in e and by[e]["sampler"] != "ddpm"]
    if guided:
        entries = ", ".join(text.GUIDED_ENTRY.substitute(entry=e, nfe=by[e]["nfe"], relative=rel(e),
                                                         accuracy=f"{by[e]['accuracy_mean']:.2f}") for e in guided)
        out.append(text.GUIDED.substitute(entries=entries, ddpm_accuracy=f"{ddpm['accuracy_mean']:.2f}"))
        for e in [e for e in by if by[e]["sampler"] == "ddpm" and "+g=" in e]:
            g = e.split("+g=")[1]
            best = min((x for x in guided if x.endswith(f"+g={g}") or f"+g={g}+" in x), default=None,
                       key=lambda x: by[x]["fid_mean"])
            rest = "." if not best else text.LIKE_FOR_LIKE_BEST.substitute(
                best=best, nfe=by[best]["nfe"], gap=f"{100 * (by[best]['fid_mean'] / by[e]['fid_mean'] - 1):+.0f}%")
            out.append(text.LIKE_FOR_LIKE.substitute(entry=e, nfe=by[e]["nfe"], fid=f"{by[e]['fid_mean']:.3g}",
                                                     accuracy=f"{by[e]['accuracy_mean']:.2f}", rest=rest))
    if extra:
        out.append(text.ALSO_MEASURED.substitute(command=extra.get("command", "")))
    return out + [""]
