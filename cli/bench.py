"""`bench`: the benchmarks, from a source checkout (the one module of the command line that imports them)."""
from __future__ import annotations

import argparse

from cli.common import CliError


def add_bench(p: argparse.ArgumentParser) -> None:
    try:
        from benchmarks.bench import add_arguments
        add_arguments(p)
    except ImportError:  # a packaged app ships without the benchmarks
        p.set_defaults(bench_missing=True)


def cmd_bench(args) -> int:
    if getattr(args, "bench_missing", False):
        raise CliError("the benchmarks are not part of this installation (run from a source checkout)")
    from benchmarks.bench import run
    return run(args)
