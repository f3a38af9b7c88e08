"""`grid`: an X/Y grid, one setting along each axis, every cell from the same noise."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from cli.common import CliError, check_writable, parse_interval
from cli.sample import load_guide


GRID_DESC = ("Draw an X/Y grid: --x and --y each vary one setting (NAME=V1,V2,...), every other setting comes "
             "from the flags below, and every cell starts from the same noise (unless seed is an axis). Each cell "
             "is exactly what `sample` draws with its settings. Axes: sampler, steps, spacing, eta, guidance, "
             "guide, seed, context (label), mix.")


def add_grid(p: argparse.ArgumentParser) -> None:
    from core.catalog import PRECISIONS, SPACINGS
    from core.samplers import SAMPLERS
    from core.xy_grid import CellSettings

    base = CellSettings()
    p.add_argument("--checkpoint", help="model file (default: the shipped default model)")
    p.add_argument("--out", required=True, help="PNG file for the grid (its settings go into its text chunks)")
    p.add_argument("--x", required=True, metavar="NAME=V1,V2", help="the setting along x, e.g. sampler=ddim,heun")
    p.add_argument("--y", metavar="NAME=V1,V2", help="the setting along y, e.g. steps=5,10,20 (optional)")
    p.add_argument("--n", type=int, default=8, help="images per cell (default 8)")
    p.add_argument("--sampler", choices=list(SAMPLERS), default=base.sampler)
    p.add_argument("--steps", type=int, default=base.steps)
    p.add_argument("--spacing", default=base.spacing,
                   help=f"{', '.join(SPACINGS)}, or a spacing the model holds (tuned-5, distilled-4)")
    p.add_argument("--eta", type=float, default=base.eta, help="DDIM noise: 0 deterministic, 1 DDPM-like")
    p.add_argument("--guidance", type=float, default=base.guidance, help="guidance scale (1 = off)")
    p.add_argument("--guide", default=base.guide,
                   help="what guidance pushes away from: nolabel (default), model (--guide-model), or a label")
    p.add_argument("--guidance-interval", default="0,1",
                   help="guide only for t/T in LO,HI, as sample's (default 0,1: always)")
    p.add_argument("--guidance-rescale", type=float, default=base.guidance_rescale,
                   help="CFG rescale phi in [0, 1], as sample's (default 0: off)")
    p.add_argument("--guide-model", help="the weaker model for guide=model (autoguidance); 'auto' as for sample")
    p.add_argument("--seed", type=int, default=base.seed)
    p.add_argument("--context", default="", help="label or mix for every cell, as sample's --context (default: "
                                                 "the model's first label)")
    p.add_argument("--mix-with", default="", help="the label the mix axis blends towards")
    p.add_argument("--force", action="store_true", help="let --out replace an existing file that is not a PNG")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object with each cell's time and calls")


def cmd_grid(args) -> int:
    from core.checkpoint import load_checkpoint
    from core.device import runtime
    from core.export import save_png
    from core.paths import OutputRefused, check_output, default_checkpoint, file_digest, shipped_models
    from core.schedule import Schedule
    from core.threads import configure_threads
    from core.xy_grid import Axis, CellSettings, GridSpec, compose_grid, grid_text, parse_axis, run_grid

    configure_threads()
    x = parse_axis(args.x, "--x")
    y = parse_axis(args.y, "--y") if args.y else Axis("seed", ())
    for flag, value, ok in (("--steps", args.steps, args.steps >= 1), ("--seed", args.seed, 0 <= args.seed < 2**63),
                            ("--guidance", args.guidance, math.isfinite(args.guidance) and 0 <= args.guidance <= 50),
                            ("--eta", args.eta, math.isfinite(args.eta) and 0 <= args.eta <= 1),
                            ("--guidance-rescale", args.guidance_rescale,
                             math.isfinite(args.guidance_rescale) and 0 <= args.guidance_rescale <= 1)):
        if not ok:
            raise CliError(f"{flag} {value}: out of range (see --help)")
    interval = parse_interval(args.guidance_interval)
    check_writable("--out", Path(args.out))
    ckpt = args.checkpoint or default_checkpoint()
    if ckpt is None:
        raise CliError("no --checkpoint given and this installation has no default model (checkpoints/default.safetensors)")
    try:
        check_output("--out", args.out, "png", inputs=[ckpt, args.guide_model, *(p for _, p in shipped_models())],
                     force=args.force)
    except OutputRefused as e:
        raise CliError(str(e)) from None
    rt = runtime(args.device, args.precision)
    bundle = load_checkpoint(ckpt, rt.device)
    names = list(bundle.label_names)
    base = CellSettings(sampler=args.sampler, steps=args.steps, spacing=args.spacing, eta=args.eta,
                        guidance=args.guidance, guide=args.guide, seed=args.seed,
                        context=args.context or (names[0] if names else "none"), mix_with=args.mix_with,
                        guidance_interval=interval, guidance_rescale=args.guidance_rescale)
    spec = GridSpec(base, x, y, args.n)
    guide = load_guide(args.guide_model, ckpt, bundle, rt.device) if args.guide_model else None
    schedule = Schedule(bundle.schedule_config)
    cells = {}
    for cell in run_grid(bundle.net, schedule, spec, names, precision=rt.precision,
                         guide_net=guide.net if guide is not None else None, zero_terminal=schedule.zero_terminal):
        if not cell.finite:
            raise CliError(f"{ckpt}: the cell {cell.settings} produced NaN or infinite values; nothing was written")
        cells[cell.row, cell.col] = cell
    title = f"{Path(ckpt).name}, {rt.label}"
    save_png(compose_grid(cells, spec, title=title), args.out, grid_text(spec, Path(ckpt).name, file_digest(ckpt)))
    total = sum(c.seconds for c in cells.values())
    if args.json:
        print(json.dumps({"out": str(args.out), "seconds": round(total, 4), "device": str(rt.device),
                          "precision": rt.precision, "cells": [
                              {"row": c.row, "col": c.col, "seconds": round(c.seconds, 4), "nfe": c.nfe}
                              for c in sorted(cells.values(), key=lambda c: (c.row, c.col))]}))
    else:
        rows, cols = spec.shape
        print(f"{rows} x {cols} grid of {args.n} images per cell in {total:.2f} s of sampling ({rt.label}) -> {args.out}")
    return 0
