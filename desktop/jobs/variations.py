"""Variation seeds for one image of Sample & compare (AUTOMATIC1111's semantics), and the label mix.

Image k of a run starts from row k of `core.samplers.initial_noise(n, shape, seed)`. A neighbour starts from
slerp(that row, row k of the variation seed's noise, strength): strength 0 is the image itself, strength 1
is image k of a run with the variation seed. The label mix keeps image k's own noise and gives it the
context (1 - w) A + w B.

Every picture is drawn inside the original run's batch: the same n images, contexts, negatives and seed,
with only image k's noise (or context) swapped, and row k kept. Why: on the CPU the arithmetic of one
image changes with the batch's size and with the image's place in it (in fp32 the last bits, now and then
a grey level of the result), so a picture drawn alone or in a batch of eight is not quite the grid's. In the
same layout it is the grid's image bit for bit, and the samplers that add noise along the way (DDPM, DDIM
eta > 0, Euler ancestral) give row k the very noise the run gave it. The price: each picture costs a batch
of n.

`draw_pictures` is a generator for `threads.GeneratorWorker(..., control=True)`, like run_columns: core and
torch are imported inside it, its pictures come back as uint8 numpy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from core.catalog import sampler_choice
from desktop.jobs.sampling import ColumnSpec, SampleJob

STRIP = 8  # pictures per strip: the neighbours, and the steps of the label mix
PROGRESS_HZ = 10  # step reports per second, at most
SOFTWARE = "Diffusion Desk"


@dataclass(frozen=True)
class Source:
    """The picked image: the run that drew it (SamplePanel.make_job()), the column's settings, its index."""

    job: SampleJob
    spec: ColumnSpec
    index: int

    def __post_init__(self):
        if not 0 <= self.index < self.job.n:
            raise ValueError(f"image {self.index} is not in a run of {self.job.n} images")

    @property
    def row(self) -> int:
        return self.index // self.job.per_row

    @property
    def context(self) -> np.ndarray:
        """(L,) the context the run gave this image: label A of the mix."""
        return np.asarray(self.job.context[self.row], np.float32)


@dataclass(frozen=True)
class Draw:
    """One picture: image k's noise (optionally slerped towards a variation seed's) and its context."""

    strip: str  # "original", "variations" or "mix"
    slot: int
    variation_seed: int | None = None  # None: the image's own noise
    strength: float = 0.0
    context: np.ndarray | None = None  # image k's context for this picture; None: the run's
    weight: float = 0.0  # mix: w of label B


def variation_draws(variation_seed: int, strength: float, count: int = STRIP) -> list[Draw]:
    """Neighbour j mixes in the noise of variation seed `variation_seed + j`."""
    return [Draw("variations", j, int(variation_seed) + j, float(strength)) for j in range(count)]


def mix_draws(a: np.ndarray, b: np.ndarray, count: int = STRIP) -> list[Draw]:
    """w from 0 (label A's image) to 1 (label B's) in `count` steps, all from the image's own noise."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return [Draw("mix", i, context=((1 - w) * a + w * b).astype(np.float32), weight=float(w))
            for i, w in enumerate(np.linspace(0.0, 1.0, count))]


def label_choices(source: Source, row_names: list[str], label_names: list[str]) -> tuple[list, int]:
    """Label B's choices, (name, context (L,)): the run's rows, then the model's labels (one-hot) not among
    them; and the index of the first that is not A."""
    a = source.context
    choices = list(zip(row_names, np.asarray(source.job.context, np.float32)))
    for i, label in enumerate(label_names[:len(a)]):
        v = np.eye(len(a), dtype=np.float32)[i]
        if not any(np.array_equal(v, c) for _, c in choices):
            choices.append((label, v))
    first = next((i for i, (_, v) in enumerate(choices) if not np.array_equal(v, a)), 0)
    return choices, first


def seed_for_panel(source: Source, strength: float, variation_seed: int, course_compat: bool = False):
    """(seed, what it does) when a neighbour is exactly image k of a plain run with one seed, else (None, why).

    Only strength 1 is: the neighbour's noise is then the variation seed's own. But the run's seed also seeds
    the sampler's added noise and the course network's random shortcut, and those stay the original run's."""
    spec = source.spec
    if strength < 1:
        return None, ("Not available: this neighbour blends two seeds' noise, and Sample & compare has one seed and "
                      "no variation strength (at strength 1 a neighbour is its own seed's image).")
    if sampler_choice(spec.sampler).stochastic or (spec.sampler == "ddim" and spec.eta > 0):
        return None, (f"Not available: {spec.label or spec.sampler} adds noise at every step, and that noise stays "
                      "the original run's; a run with the neighbour's seed would add other noise.")
    if course_compat:
        return None, ("Not available: the course network's random shortcut is seeded by the run's seed, which stays "
                      "the original's.")
    return int(variation_seed), (f"Sets Sample & compare's seed to {variation_seed}: image {source.index + 1} of its "
                                 "next run (same settings) is this neighbour.")


# --- what the job yields ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Started:
    runtime_label: str
    total: int  # pictures to draw
    batch: int  # images per picture's batch (the run's n)


@dataclass(frozen=True)
class Step:
    """Throttled progress inside one picture (a DDPM picture takes hundreds of calls)."""

    done: int  # pictures finished
    total: int
    step: int
    steps: int


@dataclass(frozen=True)
class Picture:
    draw: Draw
    image: np.ndarray  # (H, W, 3) uint8


@dataclass
class DrawSummary:
    pictures: int = 0
    cancelled: bool = False
    seconds: float = 0.0
    precision: str = ""
    runtime_label: str = ""
    strips: set = field(default_factory=set)


class _Throttle:
    """Sampler callback: a Step at most PROGRESS_HZ times a second."""

    def __init__(self, report, done: int, total: int, steps: int):
        self.report, self.done, self.total, self.steps = report, done, total, steps
        self._last = 0.0

    def __call__(self, info: dict) -> None:
        now = time.perf_counter()
        if now - self._last >= 1.0 / PROGRESS_HZ:
            self._last = now
            self.report(Step(self.done, self.total, info["i"] + 1, self.steps))


def draw_pictures(bundle, source: Source, draws: list[Draw], *, control):
    """Draw each picture as row k of the run's batch (see the module docstring). Yields Started, then a Picture
    per draw (Steps go through control.report); returns a DrawSummary, also after a cancel."""
    from core.editing import slerp_noise
    from core.samplers import SamplingCancelled, generate, initial_noise
    from core.schedule import Schedule
    from desktop.engine import runtime_for
    from desktop.jobs.sampling import _snapshot, load_guide

    job, spec, k = source.job, source.spec, source.index
    summary = DrawSummary(strips={d.strip for d in draws})
    start = time.perf_counter()
    try:
        summary.precision, summary.runtime_label = runtime_for(bundle, job.precision)
        net = _snapshot(bundle)  # a model still training elsewhere cannot change mid-strip
        guide_net = load_guide(job.guide_model, net)
        schedule = Schedule(bundle.schedule_config)
        cfg = net.config
        shape = (cfg.in_channels, cfg.height, cfg.height)
        device = next(net.parameters()).device
        own = initial_noise(job.n, shape, job.seed, device)  # exactly the run's noise, row k is the image's
        contexts, negative = job.context_batch(), job.negative_batch()
        yield Started(summary.runtime_label, len(draws), job.n)
        for done, d in enumerate(draws):
            noise = own.clone()
            if d.variation_seed is not None:
                other = initial_noise(job.n, shape, d.variation_seed, device)[k:k + 1]
                noise[k:k + 1] = slerp_noise(own[k:k + 1], other, d.strength)
            ctx = contexts.copy()
            if d.context is not None:
                ctx[k] = d.context
            res = generate(net, schedule, sampler=spec.sampler, steps=spec.steps, context=ctx,
                           guidance=spec.guidance, eta=spec.eta, seed=job.seed, precision=summary.precision,
                           callback=_Throttle(control.report, done, len(draws), spec.steps), cancel=control.stop,
                           noise=noise, spacing=spec.spacing, negative_context=negative, guide_net=guide_net,
                           **spec.guidance_kwargs)
            summary.pictures += 1
            yield Picture(d, np.ascontiguousarray(res.images[k]))
    except SamplingCancelled:
        summary.cancelled = True
    summary.seconds = time.perf_counter() - start
    return summary


# --- exports (meant for threads.run_in_background) ---------------------------------------------------------

def export_text(source: Source, info: dict) -> dict[str, str]:
    """PNG text chunks: how the pictures were made (the run, the image, the variation and mix settings)."""
    import json

    spec, job = source.spec, source.job
    text = {"software": SOFTWARE, "sampler": spec.sampler, "steps": str(spec.steps), "spacing": spec.spacing,
            "eta": f"{spec.eta:g}", "guidance": f"{spec.guidance:g}", "seed": str(job.seed),
            "image": f"{source.index + 1} of {job.n} ({job.per_row} per row)"}
    if spec.partly_guided:
        text["guidance interval"] = spec.interval_text
    if spec.guided and spec.guidance_rescale > 0:
        text["guidance rescale"] = f"{spec.guidance_rescale:g}"
    text.update({key: str(value) for key, value in info.items()})
    text["settings"] = json.dumps({"column": spec.__dict__, "seed": job.seed, "index": source.index,
                                   "per_row": job.per_row, "context": np.asarray(job.context).tolist(),
                                   "negative": None if job.negative is None else np.asarray(job.negative).tolist(),
                                   "row_negatives": None if job.row_negatives is None
                                   else np.asarray(job.row_negatives).tolist(),
                                   "guide_model": job.guide_model, "precision": job.precision} | info)
    return text


def export_info(variation_seed: int, strength: float, label_a: str, label_b: str, context_b, model: str) -> dict:
    """The dialog's settings, as they go into the PNG text and the GIF comment with export_text."""
    return {"variation_seeds": f"{variation_seed} to {variation_seed + STRIP - 1}",
            "variation_strength": f"{strength:g}", "label_a": label_a, "label_b": label_b,
            "label_b_context": [float(v) for v in np.asarray(context_b, np.float32)],
            "mix_weights": ", ".join(f"{w:.3f}" for w in np.linspace(0, 1, STRIP)), "model": model}


def mix_captions(label_a: str, label_b: str) -> list[str]:
    return [f"{label_a} {1 - w:.2f} + {label_b} {w:.2f}" for w in np.linspace(0, 1, STRIP)]


def _refuse_existing(path: str, replace: bool) -> None:
    from pathlib import Path

    if Path(path).exists() and not replace:
        raise FileExistsError(f"{path} exists and was not replaced")


def save_strips_png(path: str, strips: list[np.ndarray], row_labels: list[str], text: dict[str, str],
                    replace: bool = False) -> str:
    """The strips one above the other (each (k, H, W, 3), padded to STRIP), the settings as tEXt chunks."""
    from core.export import make_grid, save_png

    _refuse_existing(path, replace)
    h, w = strips[0].shape[1:3]
    rows = [np.concatenate([s, np.full((STRIP - len(s), h, w, 3), 255, np.uint8)]) if len(s) < STRIP else s[:STRIP]
            for s in strips]
    save_png(make_grid(np.concatenate(rows), ncols=STRIP, scale=4, row_labels=row_labels), path, text)
    return str(path)


def save_mix_gif(path: str, images: np.ndarray, captions: list[str], comment: str, replace: bool = False,
                 ms_per_frame: int = 250) -> str:
    """The label mix as a looping GIF, A to B and back, each frame enlarged with its caption; the settings go
    in the GIF's comment (core.export.save_gif writes none)."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    from core.paths import atomic_write_bytes

    _refuse_existing(path, replace)
    if len(images) == 0:
        raise ValueError("no pictures to write")
    font, scale = ImageFont.load_default(), max(1, 128 // images.shape[1])
    pic_w, pic_h = images.shape[2] * scale, images.shape[1] * scale
    width = max([pic_w] + [int(font.getlength(c)) + 8 for c in captions])  # every frame the same size
    frames = []
    for img, caption in zip(images, captions):
        frame = Image.new("RGB", (width, pic_h + 18), "white")
        frame.paste(Image.fromarray(img).resize((pic_w, pic_h), Image.NEAREST), ((width - pic_w) // 2, 0))
        ImageDraw.Draw(frame).text((4, pic_h + 3), caption, fill=(40, 40, 40), font=font)
        frames.append(frame)
    # One palette from all the frames together: A's colours and B's both survive the 256-colour limit.
    montage = Image.new("RGB", (width, len(frames) * frames[0].height))
    for i, f in enumerate(frames):
        montage.paste(f, (0, i * f.height))
    palette = montage.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
    frames = frames + frames[-2:0:-1]  # and back: a morph reads best as a loop
    frames_p = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    buf = io.BytesIO()
    frames_p[0].save(buf, format="GIF", save_all=True, append_images=frames_p[1:], duration=ms_per_frame, loop=0,
                     comment=comment.encode("utf-8"))
    atomic_write_bytes(path, buf.getvalue())
    return str(path)
