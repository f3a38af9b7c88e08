"""The Sketch dialog's core work: SDEdit (a sketch noised part-way, then denoised under a label) and RePaint
inpainting (a masked region redrawn, the rest kept), plus loading a picture for the canvas and saving results.

Both jobs are generators run by `threads.GeneratorWorker(..., control=True)`, as desktop.jobs.sampling's
run_columns: they yield EditStarted, report EditFrames (small uint8 copies) from the sampler's callback through
control.report, and return an EditResult, also after a cancel (cancelled=True, no images). The worker's stop
event is the sampler's cancel event, checked before every model call. core and torch are imported inside the
functions, on the worker thread; the data types here are plain numpy, so the dialog uses them before torch loads.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field

import numpy as np

from core.catalog import model_calls
from desktop.jobs.sampling import PROGRESS_HZ, TRAJECTORY_BUDGET

SOFTWARE = "Diffusion Desk"


# --- what the GUI can know before torch loads ----------------------------------------------------------

@dataclass(frozen=True)
class SketchJob:
    """SDEdit: `n` variations of one sketch, each from its own row of the seed's noise."""

    sketch: np.ndarray  # (H, W, 3) uint8
    strength: float  # 0..1: t0 = strength * T
    sampler: str = "dpmpp3m"
    steps: int = 10
    context: np.ndarray | None = None  # (L,) float32; None = no label
    guidance: float = 1.0
    seed: int = 0
    n: int = 4
    label: str = "no label"  # what the context is called, for captions and the PNG's text
    precision: str = "auto"

    @property
    def guided(self) -> bool:
        return self.guidance != 1.0 and self.context is not None

    @property
    def calls(self) -> int:
        """Model calls per image (0 at strength 0: nothing is denoised). SDEdit never starts from pure noise, so
        Heun keeps its first correction."""
        if self.strength <= 0:
            return 0
        return model_calls(self.sampler, self.steps, guided=self.guided)


@dataclass(frozen=True)
class InpaintJob:
    """RePaint: `n` redraws of the masked part of one image."""

    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool: True = redraw
    steps: int = 25
    resample: int = 4  # r: each block of steps walked this many times
    jump: int = 5  # j: steps per block (RePaint's jump length)
    context: np.ndarray | None = None
    guidance: float = 1.0
    seed: int = 0
    n: int = 4
    label: str = "no label"
    precision: str = "auto"

    @property
    def calls(self) -> int:
        guided = self.guidance != 1.0 and self.context is not None
        return self.steps * max(1, self.resample) * (2 if guided else 1)


@dataclass(frozen=True)
class EditStarted:
    runtime_label: str
    t0: float  # where denoising starts (T for inpainting)
    total: int  # progress units: steps (SDEdit) or step passes (inpainting)


@dataclass(frozen=True)
class EditFrame:
    """A live look mid-run (small uint8 copies, safe to hand across threads)."""

    done: int  # steps (or step passes) done
    total: int
    t: float  # the noise level x has reached
    x: np.ndarray  # (n, H, W, 3) uint8
    x0: np.ndarray  # (n, H, W, 3) uint8


@dataclass
class EditResult:
    """A finished (or cancelled) edit: the outputs and, per output, its trajectory."""

    mode: str  # "sdedit" or "inpaint"
    images: np.ndarray | None  # (n, H, W, 3) uint8; None when cancelled
    frames_x: np.ndarray | None  # (F, n, H, W, 3): frame 0 the noised start, then x_t after each step
    frames_x0: np.ndarray | None  # (F, n, H, W, 3): frame 0 the input itself, then x0-hat after each step
    frame_t: list[float] = field(default_factory=list)  # noise level at each frame (t0 first, 0 last)
    seconds: float = 0.0  # the denoising loop (core's timing)
    nfe: int = 0  # model calls per image
    seed: int = 0
    settings: dict = field(default_factory=dict)  # what made it: for captions and the PNG's text
    cancelled: bool = False

    @property
    def n_frames(self) -> int:
        return 0 if self.frames_x is None else len(self.frames_x)

    def frame_caption(self, k: int) -> str:
        if k == 0:
            start = "the noised sketch" if self.mode == "sdedit" else "noise in the region to redraw"
            return f"start: {start} (t = {self.frame_t[0]:g})"
        return f"after step {k} of {self.n_frames - 1}: t = {self.frame_t[k]:.4g}"

    def png_text(self) -> dict[str, str]:
        text = {"software": SOFTWARE, "mode": "SDEdit" if self.mode == "sdedit" else "RePaint inpainting",
                "seed": str(self.seed), "nfe": str(self.nfe), "seconds": f"{self.seconds:.4f}"}
        text.update({k: str(v) for k, v in self.settings.items()})
        text["settings"] = json.dumps({"mode": self.mode, "seed": self.seed, **self.settings})
        return text


def strength_text(strength: float, T: int, alpha_bar: np.ndarray | None) -> str:
    """What a strength means on this model's schedule: t0 in steps, and how much sketch is left in the noise."""
    t0 = strength * T
    if strength <= 0:
        return f"t0 = 0 of {T} steps: nothing is noised, so Run returns the sketch unchanged."
    head = f"t0 = {t0:.0f} of {T} steps. "
    if alpha_bar is None:
        return head
    ab = float(np.interp(t0, np.arange(len(alpha_bar)), alpha_bar))
    a, s = np.sqrt(ab), np.sqrt(max(1 - ab, 0.0))
    head += f"The start is {a:.2f} × sketch + {s:.2f} × noise: "
    if a >= 0.8:
        return head + "a light touch; colours and shapes stay, the model cleans edges and adds shading."
    if a >= 0.5:
        return head + "the layout and colours stay; the model redraws the details."
    if a >= 0.2:
        return head + "only the rough shapes and colours stay; the model draws the rest."
    if a > 0:
        return head + "little of the sketch survives: close to drawing from scratch."
    return head + "pure noise; the sketch is ignored (plain sampling)."


# --- files (for threads.run_in_background) --------------------------------------------------------------

def load_sketch(path: str, size: int) -> np.ndarray:
    """A picture file as (size, size, 3) uint8 for the canvas (centre-cropped, pixel-art-friendly resize).
    The file is untrusted: a missing, damaged or non-image file is a core.errors.DataError naming it."""
    from core.data import load_image

    return load_image(path, size)


def fit_image(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 of any size -> (size, size, 3), the way load_sketch resizes."""
    from core.data import resize_images

    return resize_images(np.ascontiguousarray(image, np.uint8)[None], size)[0]


def save_result_png(path: str, result: EditResult, source: np.ndarray, mask: np.ndarray | None = None,
                    entry: dict | None = None) -> str:
    """One row, the input (the redrawn region tinted for inpainting) then the outputs, magnified, with the
    settings as PNG text chunks (and `entry`, the run as the history keeps it, so "Settings from a PNG…" restores
    it); written atomically."""
    from core.export import make_grid, save_png

    src = np.asarray(source, np.uint8).copy()
    if mask is not None and mask.any():
        src[mask] = (0.55 * src[mask] + 0.45 * np.array([230, 30, 90])).astype(np.uint8)
    row = np.concatenate([src[None], result.images])
    scale = max(1, 64 // row.shape[1])  # 16 px emoji -> 64 px tiles
    text = result.png_text()
    if entry:
        text["entry"] = json.dumps(entry)
    save_png(make_grid(row, ncols=len(row), scale=scale), path, text)
    return str(path)


# --- torch-side helpers (lazy imports) ------------------------------------------------------------------

def _snapshot(bundle):
    """A private copy of the network: a model still training on another thread cannot change mid-run."""
    net = copy.deepcopy(bundle.net)
    net.eval()
    return net


def _batch(image: np.ndarray, n: int, device):
    """(H, W, 3) uint8 -> (n, 3, H, W) float in [-1, 1] on the device."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image, np.uint8)).permute(2, 0, 1).float() / 127.5 - 1
    return x.expand(n, -1, -1, -1).contiguous().to(device)


def _u8(x):
    import torch

    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _host(x_u8) -> np.ndarray:
    return x_u8.movedim(-3, -1).cpu().numpy()


class _Recorder:
    """Sampler callback: keeps x_t and x0-hat of the steps that stay (on the device, every `stride`-th) and
    sends throttled live frames. `keep(x)` maps what the sampler holds to what is shown (inpainting pastes
    the kept part back in, so the last frame is the result)."""

    def __init__(self, total: int, x_start, x0_start, t_start: float, emit, keep=lambda x: x, stride: int = 1):
        self.total, self.emit, self.keep, self.stride = total, emit, keep, stride
        self.xs, self.x0s, self.frame_t = [_u8(x_start)], [_u8(x0_start)], [float(t_start)]
        self.done, self._last_emit, self._interval = 0, 0.0, 1.0 / PROGRESS_HZ
        self.steps = 0

    def __call__(self, info: dict) -> None:
        self.done += 1
        x, x0 = self.keep(info["x"]), self.keep(info["denoised"])
        final = info.get("final", True)
        if final:
            self.steps += 1
            last_step = info["s"] == 0
            if self.steps % self.stride == 0 or last_step:
                self.xs.append(_u8(x))
                self.x0s.append(_u8(x0))
                self.frame_t.append(float(info["s"]))
        now = time.perf_counter()
        if self.done == self.total or now - self._last_emit >= self._interval:
            self._last_emit = now
            self.emit(EditFrame(self.done, self.total, float(info["s"]), _host(_u8(x)), _host(_u8(x0))))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        import torch

        return _host(torch.stack(self.xs)), _host(torch.stack(self.x0s))


def _stride(n: int, height: int, steps: int) -> int:
    per_frame = 2 * n * 3 * height * height
    return max(1, -(-(steps + 1) * per_frame // TRAJECTORY_BUDGET))


def _context(job):
    return None if job.context is None else np.asarray(job.context, np.float32)[None, :]


def _common_settings(job, bundle, precision: str, T: int) -> dict:
    return {"label": job.label, "guidance": job.guidance, "n": job.n, "precision": precision, "T": T,
            "model": getattr(bundle, "description", "")}


# --- the jobs -------------------------------------------------------------------------------------------

def run_sdedit(bundle, job: SketchJob, *, control):
    """SDEdit on a snapshot of the model: yields EditStarted, reports EditFrames, returns an EditResult whose
    frame 0 is the noised sketch (x) and the sketch itself (x0); strength 0 returns the sketch unchanged."""
    from core.editing import sdedit, sdedit_start
    from core.samplers import SamplingCancelled
    from core.schedule import Schedule
    from desktop.engine import runtime_for

    precision, runtime_label = runtime_for(bundle, job.precision)
    net = _snapshot(bundle)
    schedule = Schedule(bundle.schedule_config)
    device = next(net.parameters()).device
    x0 = _batch(job.sketch, job.n, device)
    settings = _common_settings(job, bundle, precision, schedule.T) | {
        "sampler": job.sampler, "steps": job.steps, "strength": job.strength, "t0": job.strength * schedule.T}
    t0 = min(max(job.strength, 0.0), 1.0) * schedule.T
    steps = min(job.steps, int(np.ceil(t0))) if job.sampler == "ddpm" else job.steps  # as sdedit's DDPM
    yield EditStarted(runtime_label, t0, steps)
    if job.strength <= 0:  # nothing to denoise: the sketch itself, one frame
        images = _host(_u8(x0))
        return EditResult("sdedit", images, images[None], images[None], [0.0], 0.0, 0, job.seed, settings)
    x_t0, t0 = sdedit_start(schedule, x0, job.strength, seed=job.seed)
    rec = _Recorder(steps, x_t0, x0, t0, control.report, stride=_stride(job.n, net.config.height, steps))
    try:
        res = sdedit(net, schedule, x0, job.strength, seed=job.seed, sampler=job.sampler, steps=job.steps,
                     context=_context(job), guidance=job.guidance, precision=precision, callback=rec,
                     cancel=control.stop)
    except SamplingCancelled:
        return EditResult("sdedit", None, None, None, seed=job.seed, settings=settings, cancelled=True)
    frames_x, frames_x0 = rec.arrays()
    return EditResult("sdedit", res.images, frames_x, frames_x0, rec.frame_t, res.seconds, res.nfe, job.seed,
                      settings)


def run_inpaint(bundle, job: InpaintJob, *, control):
    """RePaint on a snapshot of the model: yields EditStarted, reports EditFrames, returns an EditResult. Its
    frames show the redrawn region's state with the kept part pasted in (frame 0: the starting noise there and
    the image itself), so the last frame is the result; an empty mask returns the image exactly."""
    import torch

    from core.editing import inpaint
    from core.samplers import SamplingCancelled, initial_noise
    from core.schedule import Schedule
    from desktop.engine import runtime_for

    precision, runtime_label = runtime_for(bundle, job.precision)
    net = _snapshot(bundle)
    schedule = Schedule(bundle.schedule_config)
    device = next(net.parameters()).device
    known = _batch(job.image, job.n, device)
    m = torch.from_numpy(np.asarray(job.mask, np.float32)).to(device)[None, None]  # (1, 1, H, W)
    total = job.steps * max(1, job.resample)
    settings = _common_settings(job, bundle, precision, schedule.T) | {
        "steps": job.steps, "resample": job.resample, "jump": job.jump, "redrawn": float(np.mean(job.mask))}
    yield EditStarted(runtime_label, float(schedule.T), total)

    def keep(x):
        return m * x + (1 - m) * known

    start = initial_noise(job.n, tuple(known.shape[1:]), job.seed, device)  # inpaint's own starting noise
    rec = _Recorder(total, keep(start), known, schedule.T, control.report, keep,
                    stride=_stride(job.n, net.config.height, job.steps))
    try:
        res = inpaint(net, schedule, known, m, steps=job.steps, resample=job.resample, jump=job.jump, seed=job.seed,
                      context=_context(job), guidance=job.guidance, precision=precision, callback=rec,
                      cancel=control.stop)
    except SamplingCancelled:
        return EditResult("inpaint", None, None, None, seed=job.seed, settings=settings, cancelled=True)
    frames_x, frames_x0 = rec.arrays()
    return EditResult("inpaint", res.images, frames_x, frames_x0, rec.frame_t, res.seconds, res.nfe, job.seed,
                      settings)
