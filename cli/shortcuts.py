"""`tune-steps` and `distill`: few-call sampling for one model, by searching its timesteps or teaching a
student."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from core.errors import one_line

from cli.common import CliError, StopRequest, check_writable, eta_hms, hms, refuse_a_folder_with_files, same_path


TUNE_DESC = ("Tune the steps: for one sampler and number of model calls, search the timesteps whose images land "
             "closest to a 100-step solution of the model's own ODE (GITS: dynamic programming over a fine grid, on "
             "a few hundred noise images), about a minute on a CPU. The model is written again to --out with the "
             "result as a named spacing (tuned-5, or tuned-<sampler>-N), which `sample --spacing`, the grid and "
             "the app's spacing menus then offer.")


def add_tune_steps(p: argparse.ArgumentParser) -> None:
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
    if out.exists() or same_path(out, Path(ckpt)):
        raise CliError(f"--out {out}: the file exists; name a new file (tune-steps never replaces one)")
    check_writable("--out", out)
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


DISTILL_DESC = ("Teach a shortcut: a student starts from the model's weights and learns to make, in one step, the "
                "jump the model's accurate solver makes between two of the student's timesteps (SFD, Zhou et al. "
                "2024), on a pool of the model's own solutions. Writes the student (model.safetensors, its "
                "sampler: DDIM over the spacing distilled-<calls>), resume.safetensors, pool.safetensors and "
                "loss.csv into --out; Ctrl-C saves, --resume continues exactly. A student can be the teacher of a "
                "student of fewer calls (a second round): it teaches what its own DDIM steps draw.")


def add_distill(p: argparse.ArgumentParser) -> None:
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
        refuse_a_folder_with_files(out)
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
    with StopRequest(distiller) as stop:
        for m in distiller.run():
            time_left.add(m.elapsed, m.step)
            now = time.perf_counter()
            if now - last_print >= 2.0 or m.step == m.total_steps:
                last_print = now
                print(f"step {m.step}/{m.total_steps}  loss {m.loss:.5f}  lr {m.lr:.2e}  {m.images_per_s:.0f} img/s  "
                      f"elapsed {hms(m.elapsed)}  eta {eta_hms(time_left, m)}", flush=True)
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
