"""`sample`: an image grid (or a GIF of the steps) from a checkpoint, with guidance, edits and variations."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from cli.common import CliError, check_writable, parse_interval


SAMPLE_DESC = ("Sample a grid of images. CKPT is one of our .safetensors checkpoints or a course .pth weight "
               "file; without --checkpoint the shipped default model is used.")


def add_sample(p: argparse.ArgumentParser) -> None:
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
            check_writable(flag, Path(path))
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
    return load_guide(args.guide_model, ckpt, bundle, device)


def load_guide(text: str, ckpt, bundle, device):
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
                  guidance_interval=parse_interval(args.guidance_interval), compile=args.compile,
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
