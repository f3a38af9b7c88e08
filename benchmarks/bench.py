"""`python main.py bench {train,sample,quality,peak,all,report}`: our code against the course's, side by side.

    bench peak                       matmul GFLOP/s, fp32 and bf16: the ceiling
    bench train   [--rounds 5]       images/s of the course network at batch 100: course vs ours fp32 / bf16,
                                     plus the loss after equal steps in fp32 and bf16
    bench sample  [--rounds 3]       32 images: course DDPM-500 / DDIM-25 loops vs our samplers
    bench quality [--checkpoint C] [--samplers ddpm:500,ddim:25,...] [--n 1000] [--seeds 3]
                                     feature-FID and label accuracy per sampler, seconds, a plot
    bench all --report               everything, then docs/bench_results.json, PNGs and docs/benchmarks.md
    bench report                     rebuild docs/benchmarks.md from docs/bench_results.json

    bench ddp / bench busy           see benchmarks/ddp.py, benchmarks/busy.py

Every sub-benchmark prints its table; --json merges its section into a JSON file. Torch loads lazily.
A sampler entry is name:steps with optional modifiers, e.g. `ddim:25+eta=1`, `dpmpp2m:10+clip`, `ddim:25+g=2`.

This module is the driver: the options, the order of the sections, the JSON and the docs. Each benchmark
is a module of its own (peak, train_speed, sample_speed, quality, ddp, busy); the tables, pictures and
page are written by tables.py, pictures.py and pages.py.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

from .common import (QUALITY_LIST, QUICK, ROOT, SAMPLE_LIST, BenchError, Settings, judge_quality, load_json,
                     machine_info, machine_stamp, parse_entries, peak_here, reading, save_json)
from .pages import write_markdown
from .peak import bench_peak
from .quality import bench_quality, merge_quality, quality_grids, retime_quality
from .sample_speed import bench_sample
from .tables import print_section
from .train_speed import bench_train

WHATS = ("train", "sample", "quality", "peak", "ddp", "busy", "all", "report")
REGENERATE = "python main.py bench all --report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the bench options on the `bench` sub-parser (called by cli/bench.py)."""
    parser.add_argument("what", choices=WHATS, help="which benchmark: " + ", ".join(WHATS))
    parser.add_argument("--json", metavar="OUT.json", help="merge the results into this JSON file")
    parser.add_argument("--report", action="store_true",
                        help="write docs/bench_results.json, the PNGs and docs/benchmarks.md")
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="folder for --report output (default docs/)")
    parser.add_argument("--rounds", type=int, default=None, help="alternated timing rounds (train 5, sample 3)")
    parser.add_argument("--steps-per-round", type=int, default=10, help="training steps timed per round")
    parser.add_argument("--loss-steps", type=int, default=200, help="steps of the fp32-vs-bf16 loss check")
    parser.add_argument("--checkpoint", help="model for `quality` (default: the shipped default model)")
    parser.add_argument("--samplers", default=QUALITY_LIST, help=f"quality entries (default {QUALITY_LIST})")
    parser.add_argument("--sample-list", default=SAMPLE_LIST, help=f"our entries in `sample` (default {SAMPLE_LIST})")
    parser.add_argument("--n", type=int, default=1000, help="generated images per quality figure (default 1000)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per quality figure, for the spread (default 3)")
    parser.add_argument("--precision", default="auto", help="quality: auto, fp32 or bf16 (default auto)")
    parser.add_argument("--guidance", type=float, default=1.0, help="quality: classifier-free guidance (default 1)")
    parser.add_argument("--retime", action="store_true",
                        help="quality: re-measure only the seconds of the entries already in --json (keeps the FIDs)")
    parser.add_argument("--add", action="store_true",
                        help="quality: add the --samplers entries to the results already in --json (same model, n, seeds)")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke test, not a measurement")
    parser.add_argument("--compile", action="store_true",
                        help="sample: also time each of our entries through torch.compile (fp32; compiled in an "
                             "untimed warm-up; eager where no compiler is installed)")


def settings_from_args(args) -> Settings:
    s = Settings(steps_per_round=args.steps_per_round, loss_steps=args.loss_steps, quality_list=args.samplers,
                 sample_list=args.sample_list, quality_n=args.n, quality_seeds=args.seeds,
                 precision=args.precision, guidance=args.guidance, checkpoint=args.checkpoint,
                 compile=getattr(args, "compile", False))
    if args.rounds:
        s = replace(s, rounds=args.rounds, sample_rounds=args.rounds)
    if args.quick:
        keep = {k: getattr(s, k) for k in ("checkpoint", "precision", "guidance")}
        if args.samplers != QUALITY_LIST:  # an explicit list wins over the quick default
            keep["quality_list"] = args.samplers
        s = replace(s, **{**QUICK, **keep})
    return s


# --- driver ---------------------------------------------------------------------------------------------

def _command_line(args) -> str:
    return "python main.py bench " + " ".join(sys.argv[sys.argv.index("bench") + 1:] if "bench" in sys.argv else
                                              sys.argv[1:])


def run(args) -> int:
    """Run the chosen benchmark(s); print tables; write JSON / docs as asked. Returns the exit code."""
    try:
        return _run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # CheckpointError, ClassifierError, DataError are ValueErrors
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2


def check_args(args) -> None:
    """Every flag's value, before any work: a bad one found after the timing rounds would lose them."""
    import math

    def bad(flag, value, why):
        raise BenchError(f"{flag} {value}: {why}")

    if args.rounds is not None and args.rounds < 1:
        bad("--rounds", args.rounds, "must be at least 1")
    if args.steps_per_round < 1:
        bad("--steps-per-round", args.steps_per_round, "must be at least 1")
    if args.loss_steps < 1:  # the loss check is part of the train benchmark's verdict: it cannot be skipped
        bad("--loss-steps", args.loss_steps, "must be at least 1 (the fp32-vs-bf16 loss check is part of `train`)")
    if not 1 <= args.n <= 100_000:
        bad("--n", args.n, "images per quality figure must be from 1 to 100,000")
    if not 1 <= args.seeds <= 100:
        bad("--seeds", args.seeds, "must be from 1 to 100")
    if not math.isfinite(args.guidance) or not 0 <= args.guidance <= 50:
        bad("--guidance", args.guidance, "must be a number from 0 to 50 (1 = off)")
    if args.what in ("quality", "all"):
        for e in parse_entries(args.samplers, "--samplers"):  # unknown samplers, modifiers and step counts say so here
            for key in ("guidance", "eta", "rescale"):
                v = e.get(key)
                if v is not None and not math.isfinite(v):
                    bad("--samplers", e["entry"], f"{key} must be a finite number")
    if args.what in ("sample", "all"):
        parse_entries(args.sample_list, "--sample-list")
    if args.quick and (args.n != 1000 or args.seeds != 3 or args.sample_list != SAMPLE_LIST):
        raise BenchError("--quick sets its own --n, --seeds and --sample-list (a smoke test); leave those out, "
                         "or drop --quick to measure with them")


def _run(args) -> int:
    check_args(args)
    docs = Path(args.docs)
    wants_docs = args.report or args.what == "report"
    json_path = Path(args.json) if args.json else (docs / "bench_results.json" if wants_docs else None)
    results = load_json(json_path) if json_path else {}
    if args.what == "report":
        if not results:
            raise BenchError(f"{json_path}: no results to report; run `bench all --report` first")
        with reading(json_path):
            print(f"wrote {write_markdown(results, docs)}")
        return 0
    import torch
    from core.threads import configure_threads

    configure_threads()
    torch.manual_seed(0)
    s = settings_from_args(args)
    cmd = _command_line(args)
    whats = ["peak", "train", "sample", "quality"] if args.what == "all" else [args.what]
    results["machine"] = machine_info()
    results.setdefault("commands", {})
    results["regenerate"] = REGENERATE
    results.setdefault("settings", {}).update({w: {**asdict(s), "quick": bool(args.quick)} for w in whats})
    pictures = None
    for what in whats:
        load_before = os.getloadavg()[0]
        if what == "peak":
            results["peak"] = bench_peak(s)
        elif what == "train":
            results["train"] = bench_train(s, peak_here(results))
        elif what == "sample":
            results["sample"] = bench_sample(s, peak_here(results))
        elif what == "ddp":
            from .ddp import bench_ddp
            results["ddp"] = bench_ddp(s)
        elif what == "busy":
            from .busy import bench_busy
            results["busy"] = bench_busy(s)
        elif args.retime:
            if not results.get("quality"):
                raise BenchError("--retime needs earlier quality results in --json")
            retime_quality(results["quality"], s)
        else:
            q = bench_quality(s, (results.get("sample") or {}).get("course_ddpm_seconds"))
            results["quality"] = merge_quality(results.get("quality"), q) if args.add else q
            judge_quality(results["quality"], (results.get("sample") or {}).get("course_ddpm_seconds"))
        results["commands"][what] = cmd
        results[what]["machine"] = machine_stamp(results["machine"])  # sections are re-run one at a time
        # Other work on the machine skews timings: keep the 1-minute load average around each section.
        results[what]["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        print(f"\n== {what} ==\n{print_section(what, results[what])}", flush=True)
        if json_path:
            save_json(results, json_path)  # after every section: a crash keeps what was measured
    if results.get("quality"):  # the time target compares with the course DDPM-500 of the latest sample run
        judge_quality(results["quality"], (results.get("sample") or {}).get("course_ddpm_seconds"))
        if json_path:
            save_json(results, json_path)
    if args.report:
        if "quality" in whats:
            pictures = quality_grids(results["quality"], s)
        _write_docs(results, pictures, docs, json_path)
    return 0


def _write_docs(results: dict, pictures: dict | None, docs: Path, json_path: Path) -> None:
    from .pictures import grid_image, plot_quality

    q = results.get("quality")
    if q:
        png = plot_quality(q, docs / "quality_vs_time.png",
                           course_ddpm_seconds=(results.get("sample") or {}).get("course_ddpm_seconds"))
        print(f"wrote {png}")
    if q and pictures:
        img = grid_image(pictures["panels"], pictures["label_names"], title=f"Default model: {q['model']}")
        img.save(docs / "default_model_grid.png")
        q["grid"] = {"file": "default_model_grid.png",
                     "caption": f"{len(pictures['panels'][0][1][0])} samples per label (rows), the same starting "
                                "noise in each panel; " + ", ".join(p[0] for p in pictures["panels"]) + "."}
        save_json(results, json_path)
        print(f"wrote {docs / 'default_model_grid.png'}")
    with reading(json_path):  # the page also shows the sections earlier runs left in the file
        print(f"wrote {write_markdown(results, docs)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # also: python -m benchmarks.bench ...
    sys.exit(main())
