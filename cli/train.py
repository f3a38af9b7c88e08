"""`train`: a run folder from a data set and a TrainConfig (flags, a preset or a --config file); Ctrl-C saves."""
from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from cli.common import CliError, StopRequest, eta_hms, hms, refuse_a_folder_with_files


TRAIN_DESC = ("Train a model on DATA: a built-in name (emoji16, emoji32), a folder of images "
              "(sub-folders become labels), a course .npy images file (labels found beside it or given "
              "with --labels), or a saved .npz data set. Writes model.safetensors, resume.safetensors and "
              "loss.csv into --out.")


def add_train(p: argparse.ArgumentParser) -> None:
    from core.config import TRAIN_FIELDS, TRAIN_PRESETS, add_config_flags

    p.add_argument("--data", default="emoji16", help="data set (default: emoji16)")
    p.add_argument("--labels", help="labels .npy for a course images .npy")
    p.add_argument("--size", type=int, default=16, help="image size for folders and sprite sheets (default 16)")
    p.add_argument("--cell", type=int, help="cell size in pixels, to cut a PNG sprite sheet")
    p.add_argument("--out", required=True, help="run folder for checkpoints and the loss log")
    p.add_argument("--preset", choices=sorted(TRAIN_PRESETS), default="quick",
                   help="starting hyperparameters: quick (the desk network, n_feat 32, v target, zero-terminal-SNR, "
                        "min-SNR), course (the lessons' ContextUnet and recipe: n_feat 64, eps, linear, plain "
                        "MSE), finetune (teach a new label to a model given with --init), tiny (tests)")
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
            train_config(argparse.Namespace(**{**vars(args), **{f: None for f in _train_flags() if f != "steps"}}))
    else:
        existing = [f for f in (MODEL_FILE, RESUME_FILE) if (out / f).exists()]
        if existing:
            raise CliError(f"{out}: already holds a run ({', '.join(existing)}); use --resume to continue it or "
                           "choose another --out")
        refuse_a_folder_with_files(out, inputs=[args.data, getattr(args, "config", None)])
        config = train_config(args)  # bad flags are reported before the data set loads
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


def train_config(args):
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


def _main_process_print(trainer):
    """print on rank 0 only: with several training processes, one of them reports."""
    return print if trainer.is_main else (lambda *a, **k: None)


def _train_loop(trainer) -> int:
    from core.progress import TimeLeft

    last_print, time_left = 0.0, TimeLeft()
    say = _main_process_print(trainer)
    from core.threads import tuned_threads

    tuned = tuned_threads(trainer.device) if trainer.dist is None else None  # torchrun sets threads per process
    with StopRequest(trainer) as stop:
        for m in trainer.run():  # ends early, at one step for all processes, after a stop request
            time_left.add(m.elapsed, m.step)
            if tuned is not None:
                tuned.tick()
            now = time.perf_counter()
            if now - last_print >= 2.0 or m.step == m.total_steps:
                last_print = now
                say(f"step {m.step}/{m.total_steps}  loss {m.loss:.4f}  lr {m.lr:.2e}  "
                    f"{m.images_per_s:.0f} img/s  elapsed {hms(m.elapsed)}  eta {eta_hms(time_left, m)}", flush=True)
    if stop.signal is not None:
        path = trainer.save()
        name = signal.Signals(stop.signal).name
        say(f"\n{name}: saved step {trainer.step} to {path}; continue with --resume", file=sys.stderr)
        return 128 + stop.signal
    path = trainer.save()
    say(f"done: {trainer.step} steps in {hms(trainer.elapsed)}; model in {path}")
    return 0
