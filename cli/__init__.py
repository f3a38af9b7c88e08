"""Command line: `train`, `sample`, `grid`, `tune-steps`, `distill` and `bench` (argparse), one module per
command. The only place that prints; cli.bench is the only importer of benchmarks.

    common.py     CliError, outputs that replace nothing, Ctrl-C that saves, small parsers
    train.py      train
    sample.py     sample
    grid.py       grid
    shortcuts.py  tune-steps, distill
    bench.py      bench
"""
from __future__ import annotations

import argparse
import signal
import sys

from core.errors import UserError, one_line

from cli.common import EXIT_USER_ERROR, CliError
from cli.bench import add_bench, cmd_bench
from cli.grid import GRID_DESC, add_grid, cmd_grid
from cli.sample import SAMPLE_DESC, add_sample, cmd_sample
from cli.shortcuts import DISTILL_DESC, TUNE_DESC, add_distill, add_tune_steps, cmd_distill, cmd_tune_steps
from cli.train import TRAIN_DESC, add_train, cmd_train

__all__ = ["CliError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Diffusion Desk: train and sample the course's context-conditioned diffusion model. "
                    "With no command, opens the desktop app.",
    )
    sub = p.add_subparsers(dest="command", metavar="{train,sample,grid,tune-steps,distill,bench}")
    add_train(sub.add_parser("train", help="train a model on a data set", description=TRAIN_DESC))
    add_sample(sub.add_parser("sample", help="sample an image grid from a checkpoint", description=SAMPLE_DESC))
    add_grid(sub.add_parser("grid", help="an X/Y grid: one setting along each axis, from the same noise",
                            description=GRID_DESC))
    add_tune_steps(sub.add_parser("tune-steps", help="search the timesteps a sampler should visit at few model "
                                  "calls, for one model", description=TUNE_DESC))
    add_distill(sub.add_parser("distill", help="teach a shortcut: distil a model into a student that draws in "
                               "1-4 model calls", description=DISTILL_DESC))
    add_bench(sub.add_parser("bench", help="benchmarks against the course code (speed, quality)"))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "sample":
            return cmd_sample(args)
        if args.command == "grid":
            return cmd_grid(args)
        if args.command == "tune-steps":
            return cmd_tune_steps(args)
        if args.command == "distill":
            return cmd_distill(args)
        return cmd_bench(args)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop's own handler (loading, sampling, benches)
        print(f"interrupted: {args.command} stopped; a run folder keeps its last saved step", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as e:  # user-facing errors carry one-line messages; anything else is a bug: raised
        if _is_user_error(e):
            return _fail(one_line(e, limit=1000))
        raise


def _is_user_error(e: Exception) -> bool:
    """Our own errors, and the ValueError/OSError of bad values and files, carry one-line messages."""
    return isinstance(e, (UserError, ValueError, OSError))


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR
