"""Command line: `train`, `sample` and `bench` (argparse). The only importer of benchmarks, and the only place that prints."""
from __future__ import annotations

import argparse
import json
import os
import math
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from core.errors import UserError, one_line

EXIT_USER_ERROR = 2


class CliError(UserError):
    """A user mistake: printed as one line on stderr, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Diffusion Desk: train and sample the course's context-conditioned diffusion model. "
                    "With no command, opens the desktop app.",
    )
    sub = p.add_subparsers(dest="command", metavar="{train,sample,grid,tune-steps,distill,bench}")
    _add_train(sub.add_parser("train", help="train a model on a data set", description=_TRAIN_DESC))
    _add_sample(sub.add_parser("sample", help="sample an image grid from a checkpoint", description=_SAMPLE_DESC))
    _add_grid(sub.add_parser("grid", help="an X/Y grid: one setting along each axis, from the same noise",
                             description=_GRID_DESC))
    _add_tune_steps(sub.add_parser("tune-steps", help="search the timesteps a sampler should visit at few model "
                                   "calls, for one model", description=_TUNE_DESC))
    _add_distill(sub.add_parser("distill", help="teach a shortcut: distil a model into a student that draws in "
                                "1-4 model calls", description=_DISTILL_DESC))
    bench = sub.add_parser("bench", help="benchmarks against the course code (speed, quality)")
    try:
        from benchmarks.bench import add_arguments
        add_arguments(bench)
    except ImportError:  # a packaged app ships without the benchmarks
        bench.set_defaults(bench_missing=True)
    return p


_TRAIN_DESC = ("Train the ContextUnet on DATA: a built-in name (emoji16, emoji32), a folder of images "
               "(sub-folders become labels), a course .npy images file (labels found beside it or given "
               "with --labels), or a saved .npz data set. Writes model.safetensors, resume.safetensors and "
               "loss.csv into --out.")
_SAMPLE_DESC = ("Sample a grid of images. CKPT is one of our .safetensors checkpoints or a course .pth weight "
                "file; without --checkpoint the shipped default model is used.")


def _add_train(p: argparse.ArgumentParser) -> None:
    from core.config import TRAIN_FIELDS, TRAIN_PRESETS, add_config_flags

    p.add_argument("--data", default="emoji16", help="data set (default: emoji16)")
    p.add_argument("--labels", help="labels .npy for a course images .npy")
    p.add_argument("--size", type=int, default=16, help="image size for folders and sprite sheets (default 16)")
    p.add_argument("--cell", type=int, help="cell size in pixels, to cut a PNG sprite sheet")
    p.add_argument("--out", required=True, help="run folder for checkpoints and the loss log")
    p.add_argument("--preset", choices=sorted(TRAIN_PRESETS), default="quick",
                   help="starting hyperparameters: quick (n_feat 32, v target, zero-terminal-SNR, min-SNR), "
                        "course (the lessons' recipe: n_feat 64, eps, linear, plain MSE), tiny (tests)")
    p.add_argument("--config", metavar="FILE.json",
                   help="training settings as a JSON object (TrainConfig fields, as the app writes them) over the "
                        "preset; the flags below override it")
    add_config_flags(p, TRAIN_FIELDS)  # one flag per training setting that has one (core.config)
    p.add_argument("--device", default="auto", help="auto (CUDA when detected), cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--force", action="store_true",
                   help="with --resume: continue a run that stopped because its loss exploded or became NaN")
    p.add_argument("--init", metavar="CKPT",
                   help="fine-tune: start from this checkpoint ('default' = the shipped model) instead of from "
                        "scratch; labels are matched by name, new labels start from zero (try --preset finetune)")


def _add_sample(p: argparse.ArgumentParser) -> None:
    from core.catalog import PRECISIONS, SPACINGS
    from core.samplers import SAMPLERS

    p.add_argument("--checkpoint", help="model file (default: the shipped default model)")
    p.add_argument("--out", required=True, help="PNG file for the grid")
    p.add_argument("--sampler", choices=list(SAMPLERS), default="ddim")
    p.add_argument("--steps", type=int, help="model-call steps (default: 500 for ddpm, 25 ddim, 10 dpmpp2m)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 DDPM-like")
    p.add_argument("--spacing", default="trailing",
                   help=f"which timesteps the steps visit: {', '.join(SPACINGS)}, or one the model holds (tuned-5 "
                        "from tune-steps, distilled-4 of a distilled model)")
    p.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile (CUDA graphs on a GPU) where a compiler is "
                        "installed, else as usual; pays off for DDPM's 500 calls, not for one 10-step grid "
                        "(compiling takes ~30 s on a small CPU)")
    p.add_argument("--n", type=int, help="number of images (default: 8 per label)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variation-seed", type=int,
                   help="variations: mix the noise of --seed with this seed's (on the sphere, as the image tools' "
                        "variation seeds), by --variation-strength: the same images, nudged")
    p.add_argument("--variation-strength", type=float, default=0.1,
                   help="with --variation-seed: 0 = the --seed images, 1 = the --variation-seed ones (default 0.1)")
    p.add_argument("--context", default="each",
                   help="'each' (one row per label), 'none' (unconditional), a label name, a mix such as "
                        "'hero+food:0.6', or a vector '1,0,0.6,0,0'")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--guidance-rescale", type=float, default=0.0,
                   help="CFG rescale phi in [0, 1] (Lin et al. 2024): tames over-saturated guided images; 0 = off")
    p.add_argument("--guidance-interval", default="0,1",
                   help="guide only for t/T in LO,HI (Kynkaanniemi et al. 2024), e.g. 0.1,0.8; default 0,1 (always)")
    p.add_argument("--negative",
                   help="guide away from this label instead of from 'no label' (needs --guidance above 1): "
                        "e.g. --context fruit --negative food draws 'fruit, not food'")
    p.add_argument("--guide-model",
                   help="autoguidance (Karras et al. 2024): guide with this weaker model of the same kind (an early "
                        "checkpoint of the run) instead of with 'no label'; 'auto' uses the guide shipped beside "
                        "the model (<name>.guide.safetensors)")
    p.add_argument("--init-image", metavar="PNG",
                   help="finish this sketch or image instead of starting from noise (SDEdit, Meng et al. 2022): it "
                        "is noised to --strength, then denoised under --context by --sampler")
    p.add_argument("--strength", type=float, default=0.6,
                   help="with --init-image: how much noise is added first, 0 (keep it) to 1 (start from pure "
                        "noise); default 0.6")
    p.add_argument("--mask", metavar="PNG",
                   help="with --init-image: inpaint (RePaint, Lugmayr et al. 2022): redraw where the mask is light, "
                        "keep the rest of the image (ancestral steps; --steps default 50)")
    p.add_argument("--resample", type=int, default=5,
                   help="with --mask: how often each step is redone to blend the redrawn part in (default 5)")
    p.add_argument("--clip-x0", action="store_true", help="clip the predicted image to [-1, 1] at every step")
    p.add_argument("--gif", help="also write the denoising as an animated GIF")
    p.add_argument("--force", action="store_true",
                   help="let --out / --gif replace an existing file that is not a PNG / GIF (never the model read)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object with the run's figures")


_TUNE_DESC = ("Tune the steps: for one sampler and number of model calls, search the timesteps whose images land "
              "closest to a 100-step solution of the model's own ODE (GITS: dynamic programming over a fine grid, on "
              "a few hundred noise images), about a minute on a CPU. The model is written again to --out with the "
              "result as a named spacing (tuned-5, or tuned-<sampler>-N), which `sample --spacing`, the grid and "
              "the app's spacing menus then offer.")


def _add_tune_steps(p: argparse.ArgumentParser) -> None:
    from core.step_search import DISTANCES, TUNABLE_SAMPLERS, RampSearchConfig, StepSearchConfig

    d = StepSearchConfig()
    p.add_argument("--checkpoint", help="model file (default: the shipped default model)")
    p.add_argument("--calls", type=int, default=d.calls, help=f"model calls per image (default {d.calls})")
    p.add_argument("--sampler", choices=TUNABLE_SAMPLERS, default=d.sampler, help=f"default {d.sampler}")
    p.add_argument("--out", help="new model file with the spacing added (default: <checkpoint>.tuned.safetensors "
                                 "beside it); an existing file is never replaced")
    p.add_argument("--trajectories", type=int, default=d.trajectories,
                   help=f"noise images the search fits on (default {d.trajectories}; {d.held_out} more judge it)")
    p.add_argument("--guidance", type=float, default=1.0, help="tune for this classifier-free guidance (1 = off)")
    p.add_argument("--distance", choices=DISTANCES, default=d.distance,
                   help="how the sampler's images are compared with the 100-step ones: pixel (RMS, default), "
                        "perceptual (LPIPS-style, the evaluation classifier's early maps), distribution (Frechet "
                        "distance of the two sets)")
    p.add_argument("--method", choices=("gits", "ramp"), default="gits",
                   help="gits (default): the timesteps closest to the 100-step solution; ramp: the Karras ramp "
                        "(rho, largest sigma, last noise level) whose images are closest to the training images in "
                        "the evaluation classifier's features (a feature-FID on --images images)")
    p.add_argument("--data", help="ramp: the model's training data set (default: the one the model names, when it "
                                  "is a built-in one)")
    p.add_argument("--images", type=int, default=RampSearchConfig().n,
                   help=f"ramp: images per candidate (default {RampSearchConfig().n})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object with the result")


def _distance_words(distance: str) -> str:
    if distance == "data":
        return "Frechet distance to the training images (the classifier's features)"
    return f"{distance} distance to the 100-step images"


def _ramp_data(args, bundle):
    """The data set a ramp search compares with: --data, else the built-in one the model was trained on."""
    from core.catalog import BUILTIN_DATASETS
    from core.data import load_dataset

    spec = args.data or bundle.meta.get("dataset") or ""
    if not args.data and spec not in BUILTIN_DATASETS:
        raise CliError("--method ramp: name the model's training data set with --data (the model names none that "
                       "is built in)")
    try:
        return load_dataset(spec)
    except (OSError, ValueError) as e:
        raise CliError(f"--data: {one_line(e)}") from None


def cmd_tune_steps(args) -> int:
    from core.catalog import sampler_choice
    from core.checkpoint import load_checkpoint, resave_checkpoint
    from core.device import runtime
    from core.paths import default_checkpoint
    from core.schedule import Schedule
    from core.step_search import RampSearchConfig, StepSearchConfig, search_ramp, search_steps
    from core.threads import configure_threads

    configure_threads()
    ckpt = args.checkpoint or default_checkpoint()
    if ckpt is None:
        raise CliError("no --checkpoint given and this installation has no default model")
    out = Path(args.out) if args.out else Path(ckpt).with_name(Path(ckpt).name.split(".")[0] + ".tuned.safetensors")
    if out.exists() or _same_path(out, Path(ckpt)):
        raise CliError(f"--out {out}: the file exists; name a new file (tune-steps never replaces one)")
    _check_writable("--out", out)
    try:
        if args.method == "ramp":
            config = RampSearchConfig(calls=args.calls, sampler=args.sampler, n=args.images, guidance=args.guidance,
                                      seed=args.seed)
        else:
            config = StepSearchConfig(calls=args.calls, sampler=args.sampler, trajectories=args.trajectories,
                                      guidance=args.guidance, seed=args.seed, distance=args.distance)
    except ValueError as e:
        raise CliError(str(e)) from None
    rt = runtime(args.device, "fp32")
    bundle = load_checkpoint(ckpt, rt.device)
    data = _ramp_data(args, bundle) if args.method == "ramp" else None
    last = [-1]

    def progress(done, total):
        pct = 100 * done // total
        if pct // 10 > last[0] and not args.json:
            last[0] = pct // 10
            print(f"tune-steps: {pct}%", file=sys.stderr, flush=True)

    schedule = Schedule(bundle.schedule_config)
    if data is not None:
        try:
            res = search_ramp(bundle.net, schedule, config, data, progress=progress)
        except ValueError as e:
            raise CliError(f"--method ramp: {one_line(e)}") from None
    else:
        res = search_steps(bundle.net, schedule, config, progress=progress)
    info = {"sampler": res.sampler, "calls": res.calls, "timesteps": res.timesteps, "distance": res.distance,
            "error": round(res.error, 5),
            "baselines": {k: round(v, 5) for k, v in res.baselines.items()}, "seconds": round(res.seconds, 1),
            "guidance": args.guidance, "seed": args.seed, "method": args.method,
            **({"images": args.images, "data": data.name, **res.ramp} if data is not None
               else {"trajectories": args.trajectories})}
    tuned = dict((bundle.meta.get("extra") or {}).get("tuned") or {})
    tuned[res.name] = info
    resave_checkpoint(bundle, out, schedule_config=bundle.schedule_config.with_spacing(res.name, res.timesteps),
                      extra={"tuned": tuned})
    if args.json:
        print(json.dumps({"spacing": res.name, "out": str(out), **info}))
        return 0
    base = ", ".join(f"{k} {v:.4f}" for k, v in res.baselines.items())
    print(f"{res.name}: {sampler_choice(res.sampler).label}, {res.calls} calls, timesteps "
          f"{', '.join(f'{t:g}' for t in (round(t, 1) for t in res.timesteps))}\n"
          f"  {_distance_words(res.distance)}: {res.error:.4f} (built-in spacings: {base}); "
          f"{res.seconds:.0f} s\n"
          f"  wrote {out}\n  sample with: python main.py sample --checkpoint {out} --sampler {res.sampler} "
          f"--steps {res.steps} --spacing {res.name}")
    return 0


_DISTILL_DESC = ("Teach a shortcut: a student starts from the model's weights and learns to make, in one step, the "
                 "jump the model's accurate solver makes between two of the student's timesteps (SFD, Zhou et al. "
                 "2024), on a pool of the model's own solutions. Writes the student (model.safetensors, its "
                 "sampler: DDIM over the spacing distilled-<calls>), resume.safetensors, pool.safetensors and "
                 "loss.csv into --out; Ctrl-C saves, --resume continues exactly. A student can be the teacher of a "
                 "student of fewer calls (a second round): it teaches what its own DDIM steps draw.")


def _add_distill(p: argparse.ArgumentParser) -> None:
    from core.catalog import PRECISIONS
    from core.training.distill import DistillConfig

    d = DistillConfig()
    p.add_argument("--checkpoint", help="the teacher (default: the shipped default model)")
    p.add_argument("--out", required=True, help="run folder for the student")
    p.add_argument("--calls", type=int, help=f"the student's model calls per image, 1-8 (default {d.calls})")
    p.add_argument("--spacing", help="the student's timesteps: auto (the teacher's tuned-<calls> if it has one, else "
                                     "trailing), trailing, logsnr, karras or a named spacing of the teacher")
    p.add_argument("--guidance", type=float, help="classifier-free guidance built into the student (default 1: none)")
    p.add_argument("--steps", type=int, help=f"optimizer steps (default {d.steps}); with --resume: a new total")
    p.add_argument("--trajectories", type=int, help=f"teacher solutions to learn from (default {d.trajectories})")
    p.add_argument("--teacher-calls", type=int, help=f"the teacher's solver steps (default {d.teacher_calls})")
    p.add_argument("--teacher-spacing",
                   help="what the student learns to draw: auto (default: of the teacher's ramp-tuned spacings with "
                        "more steps than --calls the best-scored one, else karras), karras (the teacher's accurate solution, "
                        "--teacher-calls Karras steps) or a spacing the teacher holds, e.g. tuned-5 (what that "
                        "few-step sampler draws; the student's timesteps are then some of its); a student as the "
                        "teacher: auto or its own distilled-N")
    p.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=float, help=f"default {d.lr:g}")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--precision", choices=PRECISIONS, help="default auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")


_DISTILL_FLAGS = ("calls", "spacing", "guidance", "steps", "trajectories", "teacher_calls", "teacher_spacing",
                  "batch_size", "lr", "seed", "precision")


def cmd_distill(args) -> int:
    from core.catalog import RESUME_FILE
    from core.checkpoint import load_checkpoint
    from core.device import runtime
    from core.paths import default_checkpoint
    from core.threads import configure_threads
    from core.training.distill import CONFIG_FILE, DistillConfig, Distiller

    configure_threads()
    ckpt = args.checkpoint or default_checkpoint()
    if ckpt is None:
        raise CliError("no --checkpoint given and this installation has no default model")
    out = Path(args.out)
    given = {k: getattr(args, k) for k in _DISTILL_FLAGS if getattr(args, k) is not None}
    if args.resume:
        if not (out / RESUME_FILE).is_file() or not (out / CONFIG_FILE).is_file():
            raise CliError(f"{out}: no distillation to resume ({RESUME_FILE} or {CONFIG_FILE} not found)")
        fixed = [f"--{k.replace('_', '-')}" for k in given if k != "steps"]
        if fixed:
            raise CliError(f"{' '.join(fixed)}: a resumed run keeps its settings; only --steps can change")
        try:
            saved = json.loads((out / CONFIG_FILE).read_text()[:1 << 20])["distill_config"]
            config = DistillConfig.from_saved({**saved, **given})
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CliError(f"{out / CONFIG_FILE}: cannot read the run's settings ({e})") from None
    else:
        _refuse_a_folder_with_files(out)
        try:
            config = DistillConfig(**given)
        except (TypeError, ValueError) as e:
            raise CliError(str(e)) from None
    rt = runtime(args.device, config.precision)
    teacher = load_checkpoint(ckpt, rt.device)
    last = [-1]

    def progress(done, total):
        if 10 * done // total > last[0]:
            last[0] = 10 * done // total
            print(f"teacher solutions: {done}/{total}", flush=True)

    distiller = Distiller(teacher, config, out, resume=args.resume, progress=progress)
    try:
        return _distill_loop(distiller, out)
    finally:
        distiller.close()


def _distill_loop(distiller, out: Path) -> int:
    from core.progress import TimeLeft

    last_print, time_left = 0.0, TimeLeft()
    with _StopRequest(distiller) as stop:
        for m in distiller.run():
            time_left.add(m.elapsed, m.step)
            now = time.perf_counter()
            if now - last_print >= 2.0 or m.step == m.total_steps:
                last_print = now
                print(f"step {m.step}/{m.total_steps}  loss {m.loss:.5f}  lr {m.lr:.2e}  {m.images_per_s:.0f} img/s  "
                      f"elapsed {_hms(m.elapsed)}  eta {_eta(time_left, m)}", flush=True)
    path = distiller.save()
    if stop.signal is not None:
        print(f"\n{signal.Signals(stop.signal).name}: saved step {distiller.step} to {path}; continue with --resume",
              file=sys.stderr)
        return 128 + stop.signal
    c = distiller.config
    print(f"student: {path} ({c.calls} calls{f', guidance {c.guidance:g} built in' if c.guidance != 1 else ''})\n"
          f"sample with: python main.py sample --checkpoint {path} --sampler ddim --steps {c.calls} "
          f"--spacing {c.spacing_name}")
    return 0


_GRID_DESC = ("Draw an X/Y grid: --x and --y each vary one setting (NAME=V1,V2,...), every other setting comes "
              "from the flags below, and every cell starts from the same noise (unless seed is an axis). Each cell "
              "is exactly what `sample` draws with its settings. Axes: sampler, steps, spacing, eta, guidance, "
              "guide, seed, context (label), mix.")


def _add_grid(p: argparse.ArgumentParser) -> None:
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
    interval = _interval(args.guidance_interval)
    _check_writable("--out", Path(args.out))
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
    guide = _load_guide(args.guide_model, ckpt, bundle, rt.device) if args.guide_model else None
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


# --- train --------------------------------------------------------------------------------------------

def cmd_train(args) -> int:
    from core.data import load_dataset
    from core.device import describe
    from core.threads import configure_threads
    from core.training import MODEL_FILE, RESUME_FILE, Trainer

    configure_threads()
    for flag, value in (("--out", args.out), ("--data", args.data)):
        if not value.strip():
            raise CliError(f"{flag} is empty; give a {'run folder' if flag == '--out' else 'data set'} "
                           f"(an empty path would mean the current folder)")
    from core.data.images import SIZE_MIN
    from core.unet import IMAGE_SIDE_MAX

    if not SIZE_MIN <= args.size <= IMAGE_SIDE_MAX:  # checked for every data kind, before anything loads
        raise CliError(f"--size {args.size}: the image size must be from {SIZE_MIN} to {IMAGE_SIDE_MAX} px "
                       "(it resizes folders and sprite sheets; built-in and saved sets keep their own size)")
    out = Path(args.out)
    if args.resume and args.init:
        raise CliError("--init starts a new run from a checkpoint; --resume continues one: use one of them")
    if args.resume:
        if not (out / RESUME_FILE).is_file():
            raise CliError(f"{out}: no run to resume ({RESUME_FILE} not found)")
        fixed = [f"--{dest.replace('_', '-')}" for dest in _train_flags() if dest != "steps"
                 and getattr(args, dest) is not None] + (["--config"] if getattr(args, "config", None) else [])
        if fixed:  # silently ignoring them would train with other settings than the user believes
            raise CliError(f"{' '.join(fixed)}: a resumed run keeps the settings it was started with; only "
                           "--steps (and --device) can change on --resume. Leave the rest out, or start a new run")
        if args.steps is not None:
            _train_config(argparse.Namespace(**{**vars(args), **{f: None for f in _train_flags() if f != "steps"}}))
    else:
        existing = [f for f in (MODEL_FILE, RESUME_FILE) if (out / f).exists()]
        if existing:
            raise CliError(f"{out}: already holds a run ({', '.join(existing)}); use --resume to continue it or "
                           "choose another --out")
        _refuse_a_folder_with_files(out, inputs=[args.data, getattr(args, "config", None)])
        config = _train_config(args)  # bad flags are reported before the data set loads
        if args.init:
            config = replace(config, init=_init_path(args.init))
    ds = load_dataset(args.data, size=args.size, labels=args.labels, cell=args.cell)
    for file, reason in ds.skipped:
        print(f"skipped {file}: {reason}", file=sys.stderr)
    if args.resume:
        trainer = Trainer.from_run(ds, out, device=args.device, steps=args.steps, force=args.force)
    else:
        trainer = Trainer(ds, config, out, device=args.device)
    say = _main_process_print(trainer)
    for note in trainer.notes:
        say(f"note: {note}", file=sys.stderr)
    procs = f", {trainer.dist.world_size} processes of {trainer.rank_batch}" if trainer.dist else ""
    say(f"training on {ds.name} ({ds.n} images, {ds.size}x{ds.size}, labels: {', '.join(ds.label_names) or 'none'}) "
          f"with {describe(trainer.device)}, {trainer.precision}; {trainer.config.network} network, "
          f"n_feat {trainer.config.n_feat}, "
          f"{trainer.config.steps} steps of {trainer.config.batch_size}{procs}; {trainer.config.prediction} target, "
          f"{trainer.config.schedule} schedule, {trainer.config.loss_weighting} loss")
    try:
        code = _train_loop(trainer)
    except BaseException:
        trainer.close(together=False)  # a peer may be gone: waiting for it would only time out
        raise
    trainer.close()
    return code


def _refuse_a_folder_with_files(out: Path, inputs=()) -> None:
    """A new run starts in a new or empty folder: its loss.csv must not truncate one already there, nor its
    files mix with anyone else's. The command's own inputs may be there (the app's multi-process launcher
    writes the data set and the config into the run folder). A folder with a lock is left to the lock (it
    names the live writer)."""
    from core.catalog import LOG_FILE
    from core.runlock import LOCK_FILE

    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out}: is a file, not a folder; choose a folder for the run")
    if not out.is_dir() or (out / LOCK_FILE).exists():
        return
    own = [Path(p) for p in inputs if p and Path(p).is_file()]
    present = sorted(p.name for p in out.iterdir() if not any(_same_path(p, q) for q in own))
    if present:
        ours = LOG_FILE in present
        shown = ", ".join(present[:4]) + (f" and {len(present) - 4} more" if len(present) > 4 else "")
        raise CliError(f"--out {out}: the folder is not empty ({shown}); "
                       + ("it holds a run's loss log but no resume file to continue it; " if ours else "")
                       + "choose a new or empty folder")


def _same_path(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _train_flags() -> dict[str, str]:
    """{argparse dest: TrainConfig field} of every training flag."""
    from core.config import flag_fields

    return flag_fields()


def _init_path(text: str) -> str:
    from core.paths import default_checkpoint

    if text == "default":
        path = default_checkpoint()
        if path is None:
            raise CliError("--init default: this installation has no shipped model")
        return str(path)
    if not Path(text).is_file():
        raise CliError(f"--init {text}: no such file")
    return text


def _train_config(args):
    """The preset with the given flags; a bad value is reported with the flag that carries it."""
    from core.config import TRAIN_PRESETS, TrainConfig

    flags = _train_flags()
    base = TRAIN_PRESETS[args.preset].to_dict()
    if getattr(args, "config", None):
        given_cfg = _read_config_file(args.config)
        unknown = sorted(set(given_cfg) - set(base))
        if unknown:
            raise CliError(f"--config {args.config}: unknown setting(s) {', '.join(unknown)}; "
                           f"known: {', '.join(base)}")
        base = {**base, **given_cfg}
        try:
            TrainConfig.from_dict(base)
        except ValueError as e:
            raise CliError(f"--config {args.config}: {e}") from None
    given = {flag: getattr(args, flag) for flag in flags if getattr(args, flag) is not None}
    try:
        return TrainConfig.from_dict({**base, **{flags[f]: v for f, v in given.items()}})
    except ValueError as e:
        combined = e
    for flag, value in given.items():  # name the flag whose value is bad on its own
        try:
            TrainConfig.from_dict({**base, flags[flag]: value})
        except ValueError as e:
            if "go together" not in str(e) and "linear_zsnr" not in str(e):
                raise CliError(f"--{flag.replace('_', '-')} {value}: {e}") from None
    raise CliError(f"these settings do not go together: {combined}")


def _read_config_file(path: str) -> dict:
    """The --config file's JSON object, read through core.schema: its size and nesting are bounded before it is
    parsed (a settings file is a few hundred bytes, one level deep); the values are TrainConfig's to check."""
    from core.schema import read_json_file

    try:
        data = read_json_file(path, max_bytes=1 << 20, max_depth=8, error=CliError, source=f"--config {path}")
    except OSError as e:
        raise CliError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise CliError(f"--config {path}: must hold one JSON object of training settings")
    return data


class _StopRequest:
    """SIGINT / SIGTERM ask the loop to stop after the current step (a save mid-step would not resume exactly);
    a second signal stops at once."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.signal = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        self.trainer.request_stop()

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


def _main_process_print(trainer):
    """print on rank 0 only: with several training processes, one of them reports."""
    return print if trainer.is_main else (lambda *a, **k: None)


def _train_loop(trainer) -> int:
    from core.progress import TimeLeft

    last_print, time_left = 0.0, TimeLeft()
    say = _main_process_print(trainer)
    from core.threads import tuned_threads

    tuned = tuned_threads(trainer.device) if trainer.dist is None else None  # torchrun sets threads per process
    with _StopRequest(trainer) as stop:
        for m in trainer.run():  # ends early, at one step for all processes, after a stop request
            time_left.add(m.elapsed, m.step)
            if tuned is not None:
                tuned.tick()
            now = time.perf_counter()
            if now - last_print >= 2.0 or m.step == m.total_steps:
                last_print = now
                say(f"step {m.step}/{m.total_steps}  loss {m.loss:.4f}  lr {m.lr:.2e}  "
                    f"{m.images_per_s:.0f} img/s  elapsed {_hms(m.elapsed)}  eta {_eta(time_left, m)}", flush=True)
    if stop.signal is not None:
        path = trainer.save()
        name = signal.Signals(stop.signal).name
        say(f"\n{name}: saved step {trainer.step} to {path}; continue with --resume", file=sys.stderr)
        return 128 + stop.signal
    path = trainer.save()
    say(f"done: {trainer.step} steps in {_hms(trainer.elapsed)}; model in {path}")
    return 0


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _eta(time_left, m) -> str:
    """h:mm:ss left at the recent pace, or '-:--:--' while the sitting warms up."""
    seconds = time_left.seconds(m.total_steps)
    return "-:--:--" if seconds is None else _hms(seconds)


# --- sample -------------------------------------------------------------------------------------------

SAMPLE_CHUNK = 256  # images per generate() call: large --n is sampled in batches, so it simply works
MAX_IMAGES = 100_000


def cmd_sample(args) -> int:
    from core.checkpoint import load_checkpoint
    from core.device import runtime
    from core.threads import configure_threads
    from core.paths import default_checkpoint
    from core.samplers import get_sampler
    from core.schedule import Schedule

    configure_threads()
    _check_sample_flags(args, get_sampler(args.sampler))
    ckpt = args.checkpoint or default_checkpoint()
    if ckpt is None:
        raise CliError("no --checkpoint given and this installation has no default model (checkpoints/default.safetensors)")
    rt = runtime(args.device, args.precision)
    bundle = load_checkpoint(ckpt, rt.device)
    schedule = Schedule(bundle.schedule_config)
    if args.steps is not None and args.steps > schedule.T:
        raise CliError(f"--steps {args.steps}: this model has {schedule.T} noise levels; use 1 to {schedule.T}")
    context, row_labels, n = _sample_contexts(args, bundle)
    if args.gif and n > SAMPLE_CHUNK:
        raise CliError(f"--gif: at most {SAMPLE_CHUNK} images can be animated; use a smaller --n")
    frames = []
    callback = _gif_collector(frames, args.steps, args.sampler) if args.gif else None
    steps = args.steps or (schedule.T if args.sampler == "ddpm" else get_sampler(args.sampler).default_steps)
    from core.threads import tuned_threads

    tuned = tuned_threads(rt.device, every=100, sample=3, warmup=2) if steps >= 50 else None
    if tuned is not None:  # long runs (DDPM's 500 steps) re-time 1 vs all threads between model calls
        callback = _chain(callback, lambda info: tuned.tick())
    negative = _negative_context(args, bundle, context)
    guide = _guide_model(args, ckpt, bundle, rt.device)
    res = _generate_chunked(bundle, schedule, args, context, n, rt.precision, callback, negative=negative, guide=guide)
    if not res.finite:
        raise CliError(f"{ckpt}: sampling produced NaN or infinite values (broken weights or extreme settings); "
                       "nothing was written")
    ncols = n // len(row_labels) if row_labels else None
    text = {"software": "Diffusion Desk", "model": Path(ckpt).name, "sampler": res.sampler, "steps": res.steps,
            "eta": args.eta, "guidance": args.guidance, "seed": args.seed, "context": args.context, "nfe": res.nfe,
            "spacing": args.spacing, "negative": args.negative or "",
            "guide_model": Path(guide.path).name if guide is not None and guide.path else ""}
    if args.variation_seed is not None:  # the PNG says how to make it again
        text.update(variation_seed=args.variation_seed, variation_strength=args.variation_strength)
    _write_outputs(args, res, frames, ncols, row_labels, text)
    _report_sample(args, res, rt, ckpt, n)
    return 0


def _chain(first, second):
    if first is None:
        return second

    def both(info):
        first(info)
        second(info)

    return both


def _check_sample_flags(args, info) -> None:
    """Refuse values that would only make black images or a traceback, naming the flag."""
    def bad(flag, value, why):
        raise CliError(f"{flag} {value}: {why}")

    if args.n is not None and not 1 <= args.n <= MAX_IMAGES:
        bad("--n", args.n, f"number of images must be from 1 to {MAX_IMAGES:,}")
    if args.steps is not None and args.steps < 1:
        bad("--steps", args.steps, "must be at least 1")
    if not math.isfinite(args.eta) or not 0 <= args.eta <= 1:
        bad("--eta", args.eta, "must be from 0 (deterministic) to 1 (DDPM-like)")
    if args.eta != 0 and not info.has_eta:
        bad("--eta", args.eta, f"the {info.name} sampler has no eta setting (only ddim has)")
    if not math.isfinite(args.guidance) or not 0 <= args.guidance <= 50:
        bad("--guidance", args.guidance, "must be from 0 to 50 (1 = off)")
    if not math.isfinite(args.guidance_rescale) or not 0 <= args.guidance_rescale <= 1:
        bad("--guidance-rescale", args.guidance_rescale, "must be from 0 (off) to 1")
    if not 0 <= args.seed < 2**63:
        bad("--seed", args.seed, "must be from 0 to 2**63 - 1")
    if not math.isfinite(args.variation_strength) or not 0 <= args.variation_strength <= 1:
        bad("--variation-strength", args.variation_strength, "must be from 0 (the --seed images) to 1")
    if args.variation_seed is not None and not 0 <= args.variation_seed < 2**63:
        bad("--variation-seed", args.variation_seed, "must be from 0 to 2**63 - 1")
    if not math.isfinite(args.strength) or not 0 <= args.strength <= 1:
        bad("--strength", args.strength, "must be from 0 (keep the image) to 1 (pure noise)")
    if args.mask and not args.init_image:
        bad("--mask", args.mask, "needs --init-image, the picture to inpaint")
    if not 1 <= args.resample <= 50:
        bad("--resample", args.resample, "must be from 1 to 50")
    if args.init_image and args.gif:
        bad("--gif", args.gif, "is not made for --init-image runs yet; leave it out")
    for flag, path in (("--out", args.out), ("--gif", args.gif)):
        if path:
            _check_writable(flag, Path(path))
    _check_outputs_replace_nothing(args)


def _check_outputs_replace_nothing(args) -> None:
    """--out and --gif never replace the model read, a shipped model, a run's or a data set's file, or another
    kind of file."""
    from core.paths import OutputRefused, check_output, shipped_models

    if args.gif and args.out and Path(args.gif).resolve() == Path(args.out).resolve():
        raise CliError(f"--gif {args.gif}: the same file as --out; give the animation its own name")
    try:
        for flag, path, kind in (("--out", args.out, "png"), ("--gif", args.gif, "gif")):
            if path:
                inputs = [args.checkpoint, args.guide_model, *(p for _, p in shipped_models())]
                check_output(flag, path, kind, inputs=inputs, force=args.force)
    except OutputRefused as e:
        raise CliError(str(e)) from None


def _check_writable(flag: str, path: Path) -> None:
    """Fail before sampling when the output cannot be written (an existing folder, or no permission)."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"{flag} {path}: cannot create the folder ({e.strerror or e})") from None
    if path.is_dir() or not os.access(folder, os.W_OK):
        raise CliError(f"{flag} {path}: " + ("is a folder; give a file name" if path.is_dir() else "no permission to write there"))


def _negative_context(args, bundle, context):
    """--negative LABEL as one context row (the same for every image), or None."""
    if not args.negative:
        return None
    from core.context import context_from_spec
    from core.errors import DataError

    if context is None:
        raise CliError("--negative: needs a label to guide (--context each or a label); unconditional images have none")
    if args.guidance == 1.0:
        raise CliError("--negative: only acts with guidance; add --guidance 2 (or more)")
    try:
        return context_from_spec(args.negative, bundle.label_names)[None, :]
    except DataError as e:
        raise CliError(f"--negative: {e}") from None


def _guide_model(args, ckpt, bundle, device):
    """--guide-model FILE|auto as a loaded bundle of the same size, labels and objective, or None."""
    if not args.guide_model:
        return None
    if args.guidance == 1.0:
        raise CliError("--guide-model: only acts with guidance; add --guidance 2 (or more)")
    return _load_guide(args.guide_model, ckpt, bundle, device)


def _load_guide(text: str, ckpt, bundle, device):
    """The guide model named by --guide-model (a file, or 'auto': the one shipped beside the model), checked to
    be of the model's kind."""
    from core.checkpoint import CheckpointError, load_checkpoint

    path = Path(text)
    if text == "auto":
        from core.paths import guide_model_for

        path = guide_model_for(ckpt)
        if not path.is_file():
            raise CliError(f"--guide-model auto: no guide model beside {ckpt} ({path.name}); give a file")
    try:
        guide = load_checkpoint(path, device)
    except CheckpointError as e:
        raise CliError(f"--guide-model: {e}") from None
    same = (guide.net.config.height, [n.lower() for n in guide.label_names], guide.schedule_config) == \
           (bundle.net.config.height, [n.lower() for n in bundle.label_names], bundle.schedule_config)
    if not same:
        raise CliError(f"--guide-model {path}: it must draw the same size with the same labels and schedule as the "
                       f"model (it has {guide.net.config.height} px, labels {guide.label_names}, "
                       f"{guide.schedule_config.kind}/{guide.schedule_config.prediction})")
    return guide


def _generate_chunked(bundle, schedule, args, context, n: int, precision: str, callback, *, negative=None,
                      guide=None):
    """generate() in batches of SAMPLE_CHUNK; one batch (the usual case) is exactly one call."""
    import numpy as np

    from core.samplers import generate

    common = dict(sampler=args.sampler, steps=args.steps, guidance=args.guidance, eta=args.eta, precision=precision,
                  clip_x0=args.clip_x0, spacing=args.spacing, guidance_rescale=args.guidance_rescale,
                  guidance_interval=_interval(args.guidance_interval), compile=args.compile,
                  negative_context=negative, guide_net=guide.net if guide is not None else None)
    ctx = None if context is None else np.resize(np.asarray(context, np.float32), (n, context.shape[1]))
    if args.init_image:
        return _edit(bundle, schedule, args, ctx, n, precision, common)
    parts = []
    for k, start in enumerate(range(0, n, SAMPLE_CHUNK)):
        m = min(SAMPLE_CHUNK, n - start)
        parts.append(generate(bundle.net, schedule, n=m, context=None if ctx is None else ctx[start:start + m],
                              seed=args.seed + k, callback=callback if k == 0 else None,
                              noise=_variation_noise(bundle, args, m, k), **common))
    res = parts[0]
    if len(parts) > 1:
        res.images = np.concatenate([p.images for p in parts])
        res.seconds = sum(p.seconds for p in parts)
        res.finite = all(p.finite for p in parts)
    return res


def _variation_noise(bundle, args, m: int, k: int):
    """--variation-seed: the starting noise of --seed slerped towards that seed's, or None (plain --seed)."""
    if args.variation_seed is None:
        return None
    from core.editing import slerp_noise
    from core.samplers import initial_noise

    cfg = bundle.net.config
    device = next(bundle.net.parameters()).device
    shape = (cfg.in_channels, cfg.height, cfg.height)
    return slerp_noise(initial_noise(m, shape, args.seed + k, device),
                       initial_noise(m, shape, args.variation_seed + k, device), args.variation_strength)


def _edit(bundle, schedule, args, ctx, n: int, precision: str, common: dict):
    """--init-image: SDEdit from the image, or with --mask RePaint inpainting; n copies, each its own noise."""
    import numpy as np
    import torch

    from core.data import DataError, load_image
    from core.editing import inpaint, sdedit

    size = bundle.net.config.height
    try:
        rgb = load_image(args.init_image, size)
        mask = load_image(args.mask, size) if args.mask else None
    except DataError as e:
        raise CliError(f"--{'mask' if args.mask and str(e).startswith(str(args.mask)) else 'init-image'}: {e}") from None
    device = next(bundle.net.parameters()).device
    x0 = (torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 127.5 - 1).expand(n, -1, -1, -1)
    if mask is not None:
        redraw = torch.from_numpy((mask.mean(axis=2) > 127).astype(np.float32))
        return inpaint(bundle.net, schedule, x0.contiguous(), redraw, steps=args.steps or 50, resample=args.resample,
                       seed=args.seed, context=ctx, guidance=args.guidance, precision=precision)
    kwargs = {k: v for k, v in common.items() if k not in ("sampler", "steps")}
    return sdedit(bundle.net, schedule, x0.contiguous().to(device), args.strength, seed=args.seed,
                  sampler=args.sampler, steps=args.steps or 10, context=ctx, **kwargs)


def _interval(text: str) -> tuple[float, float]:
    """--guidance-interval LO,HI as two fractions of T with 0 <= LO <= HI <= 1."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise CliError(f"--guidance-interval: expected LO,HI such as 0.1,0.8, got {text!r}") from None
    if not (0 <= lo <= hi <= 1):
        raise CliError(f"--guidance-interval: need 0 <= LO <= HI <= 1, got {text!r}")
    return lo, hi


def _sample_contexts(args, bundle):
    """(context rows, row labels or None, n) for --context and --n."""
    import numpy as np

    from core.context import context_from_spec
    from core.errors import DataError

    names = bundle.label_names
    spec = args.context.strip()
    if spec.lower() == "each" and names:
        per = math.ceil(args.n / len(names)) if args.n else 8
        return np.repeat(np.eye(len(names), dtype=np.float32), per, axis=0), list(names), per * len(names)
    n = args.n or 16
    if spec.lower() in ("each", "none", ""):
        return None, None, n
    try:
        vec = context_from_spec(spec, names)
    except DataError as e:
        raise CliError(f"--context: {e}") from None
    return vec[None, :], None, n


def _gif_collector(frames: list, steps, sampler):
    """Keeps about 40 frames of the predicted image for the GIF."""
    from core.catalog import T_DEFAULT
    from core.export import make_grid
    from core.samplers import SAMPLERS, to_uint8

    total = steps or (T_DEFAULT if sampler == "ddpm" else SAMPLERS[sampler].default_steps)
    every = max(1, total // 40)

    def callback(info):
        if info["i"] % every == 0 or info["s"] == 0:
            frames.append(make_grid(to_uint8(info["x"]), scale=3))

    return callback


def _write_outputs(args, res, frames, ncols, row_labels, text) -> None:
    """Both files or neither: the GIF is written first, and removed again if the PNG then fails."""
    from core.export import make_grid, save_gif, save_png

    grid = make_grid(res.images, ncols=ncols, row_labels=row_labels, scale=4 if len(res.images) <= 1024 else 1)
    if args.gif:
        save_gif(frames, args.gif)
    try:
        save_png(grid, args.out, text)
    except BaseException:
        if args.gif:
            Path(args.gif).unlink(missing_ok=True)
        raise


def _report_sample(args, res, rt, ckpt, n) -> None:
    if args.json:
        print(json.dumps({
            "sampler": res.sampler, "steps": res.steps, "nfe": res.nfe, "seconds": round(res.seconds, 4),
            "ms_per_call": round(res.ms_per_call, 3), "n": n, "seed": res.seed, "guidance": args.guidance,
            "eta": args.eta, "device": str(rt.device), "precision": rt.precision, "checkpoint": str(ckpt),
            "out": str(args.out), "compiled": res.settings.get("compiled", False)}))
    else:
        compiled = ", compiled" if res.settings.get("compiled") else ""
        print(f"{res.sampler} {res.steps} steps: {n} images in {res.seconds:.2f} s ({res.nfe} model calls, "
              f"{res.ms_per_call:.1f} ms per call, {rt.label}{compiled}) -> {args.out}")
    if res.settings.get("compile_note"):
        print(f"note: {res.settings['compile_note']}", file=sys.stderr)


# --- entry ---------------------------------------------------------------------------------------------

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
        return _cmd_bench(args)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop's own handler (loading, sampling, benches)
        print(f"interrupted: {args.command} stopped; a run folder keeps its last saved step", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as e:  # user-facing errors carry one-line messages; anything else is a bug: raised
        if _is_user_error(e):
            return _fail(one_line(e, limit=1000))
        raise


def _cmd_bench(args) -> int:
    if getattr(args, "bench_missing", False):
        raise CliError("the benchmarks are not part of this installation (run from a source checkout)")
    from benchmarks.bench import run
    return run(args)


def _is_user_error(e: Exception) -> bool:
    """Our own errors, and the ValueError/OSError of bad values and files, carry one-line messages."""
    return isinstance(e, (UserError, ValueError, OSError))


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR
