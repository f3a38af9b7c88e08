"""The Sample & compare panel's background work: sampling columns, quality figures, exports.

This is the only module of the panel that reaches into `core` and torch, and it does so inside
functions, never at import time, so the window can appear before torch has loaded. Workers follow
the threading rules: a QObject without a parent, moved to a QThread, talking through signals only,
cancelled through a `threading.Event` that the sampler checks before every model call.
"""
from __future__ import annotations

import copy
import json
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from core.catalog import SAMPLER_CATALOG, SamplerChoice, model_calls

SOFTWARE = "Diffusion Desk"
PROGRESS_HZ = 15  # live frames per second sent to the GUI, at most
TRAJECTORY_BUDGET = 160 * 2**20  # bytes of stored x_t + x0 frames per column; beyond it, keep every k-th step


# --- what the GUI can know before torch loads ----------------------------------------------------------

def sampler_catalog() -> list[SamplerChoice]:
    """The samplers the panel offers: core.catalog's list (torch-free, so it is there before torch loads)."""
    return list(SAMPLER_CATALOG)


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the comparison: a sampler and its settings."""

    sampler: str
    steps: int
    eta: float = 0.0
    guidance: float = 1.0
    label: str = ""  # display name of the sampler
    spacing: str = "trailing"  # which timesteps the steps visit (core.catalog.SPACINGS)

    @property
    def title(self) -> str:
        name = self.label or self.sampler
        text = f"{name}, {self.steps} steps"
        text += f", eta {self.eta:g}" if self.sampler == "ddim" else ""
        return text + (f", {self.spacing}" if self.spacing != "trailing" else "")

    @property
    def calls_per_step(self) -> int:
        """Batch multiplier of one model call: guidance runs the conditional and unconditional pass together."""
        return 1 if self.guidance == 1.0 else 2

    @property
    def calls(self) -> int:
        """Model calls per image (Heun makes two per step)."""
        return model_calls(self.sampler, self.steps, guided=self.guidance != 1.0)


@dataclass
class SampleJob:
    """Everything a run needs besides the model: the same noise and contexts for every column."""

    columns: list[ColumnSpec]
    seed: int
    context: np.ndarray  # (R, L) float32: one row of the grid per context
    per_row: int  # images per context row
    precision: str = "auto"

    @property
    def n(self) -> int:
        return len(self.context) * self.per_row

    def context_batch(self) -> np.ndarray:
        """(n, L): image k gets row k // per_row, so the grid reads row by row."""
        return np.repeat(np.asarray(self.context, np.float32), self.per_row, axis=0)


@dataclass
class Frame:
    """A live look at one column mid-run (small uint8 copies, safe to hand across threads)."""

    column: int
    step: int  # steps done
    steps: int
    t: int  # the noise level x has reached
    x: np.ndarray  # (n, H, W, 3) uint8, current x_t
    x0: np.ndarray  # (n, H, W, 3) uint8, predicted clean image


@dataclass
class ColumnResult:
    """A finished column: final images, honest timing and the stored trajectory."""

    index: int
    spec: ColumnSpec
    images: np.ndarray  # (n, H, W, 3) uint8
    nfe: int  # model evaluations per image
    seconds: float
    timesteps: list[int]
    frames_x: np.ndarray  # (F, n, H, W, 3) uint8; frame 0 is the starting noise
    frames_x0: np.ndarray  # (F, n, H, W, 3) uint8; frame 0 is grey (no prediction yet)
    frame_t: list[int]  # noise level reached at each frame (T for frame 0, 0 for the last)
    frame_calls: list[int]  # steps done at each frame (0 for frame 0)
    precision: str = "fp32"

    @property
    def ms_per_call(self) -> float:
        return 1000 * self.seconds / max(self.nfe, 1)


@dataclass
class RunSummary:
    results: list[ColumnResult] = field(default_factory=list)
    runtime_label: str = ""
    precision: str = ""
    warmup_seconds: float = 0.0
    cancelled: bool = False
    seed: int = 0
    model: str = ""


@dataclass
class QualityPoint:
    index: int
    spec: ColumnSpec
    fid: float
    accuracy: float | None
    n: int
    seconds: float


# --- torch-side helpers (lazy imports) ------------------------------------------------------------------

def _cancelled_type():
    from core.samplers import SamplingCancelled

    return SamplingCancelled


def one_line(e: BaseException) -> str:
    from desktop.services import user_message

    return user_message(e)[:300]


def runtime_for(bundle, precision_pref: str = "auto") -> tuple[str, str]:
    """(precision, label) for sampling `bundle` where its weights live, e.g. ('bf16', 'CPU (2 threads), bf16')."""
    from core.device import describe, resolve_precision

    device = next(bundle.net.parameters()).device
    precision = resolve_precision(precision_pref, device)
    return precision, f"{describe(device)}, {precision}"


def precision_choices(bundle) -> list[str]:
    """Precisions the model's device can run: fp16 only on CUDA."""
    device = next(bundle.net.parameters()).device
    return ["auto", "fp32", "bf16", "fp16"] if device.type == "cuda" else ["auto", "fp32", "bf16"]


def schedule_curves(schedule_config) -> dict:
    """alpha_bar and log-SNR over t = 0..T as numpy arrays (log-SNR at t = 0 is infinite: left out)."""
    from core.schedule import Schedule

    sched = Schedule(schedule_config)
    ab = sched.ab_t.numpy().copy()
    return {"T": sched.T, "t": np.arange(sched.T + 1), "alpha_bar": ab, "log_snr": sched.log_snr().numpy().copy()}


def timesteps_for(spec: ColumnSpec, schedule_config) -> list:
    """The timesteps a column visits, for its steps and spacing on the model's schedule."""
    from core.schedule import Schedule, spaced_timesteps

    return spaced_timesteps(spec.steps, Schedule(schedule_config), spec.spacing)


def quality_available() -> tuple[bool, str]:
    """Whether core.metrics and its classifier can be used here; the reason in plain words when not."""
    try:
        from core import metrics

        metrics.load_classifier()
    except Exception as e:  # missing module, missing or damaged classifier file: the button says why
        return False, f"The quality measure is not available in this installation ({one_line(e)})."
    return True, ""


def quality_fits(bundle) -> tuple[bool, str]:
    """Whether the evaluation classifier can read this model's images (it was trained at one size)."""
    from core import metrics

    size = metrics.load_classifier().image_size
    if bundle.net.config.height != size:
        return False, (f"The quality measure reads {size}×{size} images; this model draws "
                       f"{bundle.net.config.height}×{bundle.net.config.height}.")
    return True, ""


def target_labels(context: np.ndarray, per_row: int) -> np.ndarray | None:
    """Label index per image when every context row is a single label (one-hot), else None."""
    ctx = np.asarray(context, np.float32)
    if len(ctx) == 0:
        return None
    one_hot = ((ctx == 0) | (ctx == 1)).all(axis=1) & (ctx.sum(axis=1) == 1)
    if not one_hot.all():
        return None
    return np.repeat(ctx.argmax(axis=1), per_row).astype(np.int64)


def _u8(x):
    """(B, C, H, W) in [-1, 1] -> uint8 on the same device: no host sync inside the timed loop."""
    import torch

    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _host(x_u8) -> np.ndarray:
    """Device uint8 (..., C, H, W) -> host (..., H, W, C)."""
    return x_u8.movedim(-3, -1).cpu().numpy()


def _snapshot(bundle):
    """A private copy of the network: a model still training on another thread cannot change mid-run."""
    net = copy.deepcopy(bundle.net)
    net.eval()
    return net


def _warm_up(net, job: SampleJob, precision: str) -> float:
    """One untimed model call per batch shape the run will use (oneDNN/cuDNN build kernels on first use)."""
    import torch

    from core.device import autocast, synchronize

    device = next(net.parameters()).device
    cfg = net.config
    start = time.perf_counter()
    shapes = sorted({job.n * c.calls_per_step for c in job.columns})
    with torch.inference_mode():
        for b in shapes:
            x = torch.zeros((b, cfg.in_channels, cfg.height, cfg.height), device=device)
            c = torch.zeros((b, cfg.n_cfeat), device=device)
            with autocast(device, precision):
                net(x, torch.full((1,), 0.5, device=device), c)
    synchronize(device)
    return time.perf_counter() - start


class _TrajectoryRecorder:
    """Sampler callback: keeps x_t and x0 per step (on the device) and sends throttled live frames."""

    def __init__(self, column: int, steps: int, T: int, x_T, emit, *, stride: int = 1):
        self.column, self.steps, self.stride, self.emit = column, steps, stride, emit
        self.xs, self.x0s = [_u8(x_T)], [None]  # frame 0: the starting noise, no prediction yet
        self.frame_t, self.frame_calls = [T], [0]
        self._last_emit = 0.0
        self._interval = 1.0 / PROGRESS_HZ

    def __call__(self, info: dict) -> None:
        i = info["i"]
        last = i == self.steps - 1
        if (i + 1) % self.stride == 0 or last:
            self.xs.append(_u8(info["x"]))
            self.x0s.append(_u8(info["denoised"]))
            self.frame_t.append(int(info["s"]))
            self.frame_calls.append(i + 1)
        now = time.perf_counter()
        if last or now - self._last_emit >= self._interval:
            self._last_emit = now
            self.emit(Frame(self.column, i + 1, self.steps, int(info["s"]), _host(_u8(info["x"])),
                            _host(_u8(info["denoised"]))))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        import torch

        grey = torch.full_like(self.xs[0], 127)
        x0s = [grey] + self.x0s[1:]
        return _host(torch.stack(self.xs)), _host(torch.stack(x0s))


def _stride(job: SampleJob, steps: int, net) -> int:
    cfg = net.config
    per_frame = 2 * job.n * cfg.in_channels * cfg.height * cfg.height
    return max(1, -(-(steps + 1) * per_frame // TRAJECTORY_BUDGET))


def sample_column(net, schedule, job: SampleJob, index: int, noise, precision: str, cancel: threading.Event,
                  emit=lambda frame: None) -> ColumnResult:
    """Run one column from the shared noise; raises core.samplers.SamplingCancelled when cancelled."""
    from core.samplers import generate

    spec = job.columns[index]
    rec = _TrajectoryRecorder(index, spec.steps, schedule.T, noise, emit, stride=_stride(job, spec.steps, net))
    res = generate(net, schedule, sampler=spec.sampler, steps=spec.steps, context=job.context_batch(),
                   guidance=spec.guidance, eta=spec.eta, seed=job.seed, precision=precision, callback=rec,
                   cancel=cancel, noise=noise, spacing=spec.spacing)
    frames_x, frames_x0 = rec.arrays()
    return ColumnResult(index, spec, res.images, res.nfe, res.seconds, list(res.timesteps), frames_x, frames_x0,
                        rec.frame_t, rec.frame_calls, precision)


# --- workers --------------------------------------------------------------------------------------------

class SamplingWorker(QObject):
    """Runs the columns one after another (each timed alone), from one shared starting noise."""

    started = Signal(str, float)  # runtime label, warm-up seconds
    noise_ready = Signal(object)  # (n, H, W, 3) uint8: the starting noise every column shares
    column_started = Signal(int)
    progress = Signal(object)  # Frame
    column_finished = Signal(object)  # ColumnResult
    finished = Signal(object)  # RunSummary (also after a cancel: the finished columns are kept)
    errored = Signal(str)

    def __init__(self, bundle, job: SampleJob, cancel: threading.Event):
        super().__init__()  # no parent: it is moved to a QThread
        self.bundle, self.job, self.cancel = bundle, job, cancel

    @Slot()
    def run(self) -> None:
        summary = RunSummary(seed=self.job.seed, model=getattr(self.bundle, "description", ""))
        try:
            self._run(summary)
        except Exception as e:
            if isinstance(e, _cancelled_type()):
                summary.cancelled = True
                self.finished.emit(summary)
            else:
                self.errored.emit(f"Sampling stopped: {one_line(e)}")
            return
        self.finished.emit(summary)

    def _run(self, summary: RunSummary) -> None:
        from core.samplers import initial_noise
        from core.schedule import Schedule

        summary.precision, summary.runtime_label = runtime_for(self.bundle, self.job.precision)
        net = _snapshot(self.bundle)
        schedule = Schedule(self.bundle.schedule_config)
        summary.warmup_seconds = _warm_up(net, self.job, summary.precision)
        self.started.emit(summary.runtime_label, summary.warmup_seconds)
        cfg = net.config
        device = next(net.parameters()).device
        noise = initial_noise(self.job.n, (cfg.in_channels, cfg.height, cfg.height), self.job.seed, device)
        self.noise_ready.emit(_host(_u8(noise)))
        for index in range(len(self.job.columns)):
            self.column_started.emit(index)
            result = sample_column(net, schedule, self.job, index, noise, summary.precision, self.cancel,
                                   self.progress.emit)
            summary.results.append(result)
            self.column_finished.emit(result)


class QualityWorker(QObject):
    """Samples a larger batch per column and scores it with core.metrics (feature-FID, label accuracy).

    When the model's labels are the data set's, the batch follows the data set's label mix
    (metrics.reference_targets), so the FID compares like with like; otherwise it repeats the
    composer's rows. Accuracy needs the model's labels to be the classifier's.
    """

    started = Signal(dict)  # {"n", "mix", "floor", "accuracy", "classifier_labels"}
    column_started = Signal(int)
    column_finished = Signal(object)  # QualityPoint
    finished = Signal(bool)  # cancelled
    errored = Signal(str)

    def __init__(self, bundle, job: SampleJob, reference, cancel: threading.Event, *, n: int = 240):
        super().__init__()
        self.bundle, self.job, self.reference, self.cancel, self.n = bundle, job, reference, cancel, n

    @Slot()
    def run(self) -> None:
        try:
            self._run()
        except Exception as e:
            if isinstance(e, _cancelled_type()):
                self.finished.emit(True)
            else:
                self.errored.emit(f"Measuring quality stopped: {one_line(e)}")
            return
        self.finished.emit(False)

    def _contexts(self, metrics) -> tuple[np.ndarray, np.ndarray | None, str]:
        """(n, L) contexts, target label per image (or None), and how they were chosen."""
        ds, names = self.reference, list(self.bundle.label_names)
        L = self.bundle.net.config.n_cfeat
        if list(ds.label_names) == names and ds.n_labels == L and ds.labels.max(initial=0) > 0:
            targets = metrics.reference_targets(ds, self.n, seed=self.job.seed)
            return np.eye(L, dtype=np.float32)[targets], targets, "labels in the data set's proportions"
        targets = target_labels(self.job.context, self.job.per_row)
        return (self.job.context_batch()[: self.n], None if targets is None else targets[: self.n],
                "the context composer's rows")

    def _run(self) -> None:
        from core import metrics
        from core.samplers import generate
        from core.schedule import Schedule

        clf = metrics.load_classifier()
        ds = self.reference
        if ds.size != clf.image_size:
            raise ValueError(f"the quality measure reads {clf.image_size}x{clf.image_size} images; the loaded data "
                             f"set has {ds.size}x{ds.size}. Load the data set the model was trained on.")
        precision, _ = runtime_for(self.bundle, self.job.precision)
        net = _snapshot(self.bundle)
        schedule = Schedule(self.bundle.schedule_config)
        ctx, targets, mix = self._contexts(metrics)
        with_acc = clf.label_names == list(self.bundle.label_names)
        floor = metrics.real_vs_real_fid(ds, clf, seed=self.job.seed, n=self.n) if ds.n >= self.n + 2 else None
        self.started.emit({"n": len(ctx), "mix": mix, "floor": floor, "accuracy": with_acc,
                           "classifier_labels": clf.label_names})
        _warm_up(net, SampleJob(self.job.columns, self.job.seed, ctx, 1), precision)
        for index, spec in enumerate(self.job.columns):
            self.column_started.emit(index)
            res = generate(net, schedule, sampler=spec.sampler, steps=spec.steps, n=len(ctx), context=ctx,
                           guidance=spec.guidance, eta=spec.eta, seed=self.job.seed, precision=precision,
                           cancel=self.cancel, spacing=spec.spacing)
            report = metrics.evaluate(res.images, targets if with_acc else None, reference=ds, classifier=clf)
            acc = None if report.accuracy is None else float(report.accuracy)
            self.column_finished.emit(QualityPoint(index, spec, float(report.fid), acc, int(report.n), res.seconds))


# --- exports (Pillow; grids through core.export) ----------------------------------------------------------

def export_text(summary_like: dict) -> dict[str, str]:
    """PNG text chunks: sampler settings, seed, model, software (one comma-separated value per column)."""
    cols: list[ColumnSpec] = summary_like["columns"]
    text = {
        "software": SOFTWARE,
        "sampler": ", ".join(c.sampler for c in cols),
        "steps": ", ".join(str(c.steps) for c in cols),
        "eta": ", ".join(f"{c.eta:g}" if c.sampler == "ddim" else "-" for c in cols),
        "guidance": ", ".join(f"{c.guidance:g}" for c in cols),
        "seed": str(summary_like["seed"]),
        "model": summary_like.get("model", ""),
        "precision": summary_like.get("precision", ""),
        "contexts": ", ".join(summary_like.get("row_names", [])),
    }
    if "nfe" in summary_like:
        text["nfe"] = ", ".join(str(v) for v in summary_like["nfe"])
    if "seconds" in summary_like:
        text["seconds"] = ", ".join(f"{v:.4f}" for v in summary_like["seconds"])
    if "position" in summary_like:
        text["frame"] = summary_like["position"]
    text["settings"] = json.dumps({"columns": [c.__dict__ for c in cols], "seed": summary_like["seed"]})
    return text


def compose_columns(grids: list[list[np.ndarray]], titles: list[str], per_row: int, *,
                    row_names: list[str] | None = None, caption: str | None = None):
    """One picture of several columns side by side, each one or two grids (x_t | x0) under a title."""
    from PIL import Image, ImageDraw, ImageFont

    from core.export import make_grid

    font = ImageFont.load_default()
    scale = max(1, 48 // grids[0][0].shape[1])  # 16 px emoji -> 48 px tiles
    tiles = [[make_grid(g, ncols=per_row, scale=scale) for g in col] for col in grids]
    label_w = 8 + max((int(font.getlength(t)) for t in row_names), default=0) if row_names else 0
    gap, head, foot = 12, 22, 20 if caption else 4
    widths = [sum(t.width for t in col) + 4 * (len(col) - 1) for col in tiles]
    widths = [max(w, int(font.getlength(title)) + 4) for w, title in zip(widths, titles)]
    grid_h = max(t.height for col in tiles for t in col)
    canvas = Image.new("RGB", (label_w + sum(widths) + gap * (len(tiles) + 1), head + grid_h + foot), "white")
    draw = ImageDraw.Draw(canvas)
    x = label_w + gap
    for col, title, w in zip(tiles, titles, widths):
        draw.text((x, 5), title, fill=(30, 30, 30), font=font)
        cx = x
        for tile in col:
            canvas.paste(tile, (cx, head))
            cx += tile.width + 4
        x += w + gap
    if row_names:
        rows = -(-len(grids[0][0]) // per_row)
        cell = tiles[0][0].height / rows
        for r, name in enumerate(row_names[:rows]):
            draw.text((4, head + int(cell * (r + 0.5)) - 6), name, fill=(60, 60, 60), font=font)
    if caption:
        draw.text((label_w + gap, head + grid_h + 3), caption, fill=(90, 90, 90), font=font)
    return canvas


def export_png(path: str, grids, titles, per_row, row_names, text: dict[str, str], caption) -> str:
    """Compose the columns and write a PNG (atomically) with `text` as tEXt chunks."""
    from core.export import save_png

    save_png(compose_columns(grids, titles, per_row, row_names=row_names, caption=caption), path, text)
    return str(path)


def export_gif(path: str, frames, titles, per_row, row_names, comment: str, captions,
               *, ms_per_frame: int = 80, hold_last_ms: int = 1500) -> str:
    """Looping GIF of the composed columns, frame by frame; the settings go in its comment block
    (core.export.save_gif writes no comment)."""
    import io

    from PIL import Image

    from core.paths import atomic_write_bytes

    if not frames:
        raise ValueError("no frames to write")
    images = [compose_columns(f, titles, per_row, row_names=row_names, caption=c) for f, c in zip(frames, captions)]
    durations = [ms_per_frame] * (len(images) - 1) + [hold_last_ms]
    buf = io.BytesIO()
    # One shared palette (the frames' colours barely change) and per-frame optimisation: a 60-frame GIF
    # was 10.6 MB with a palette per frame.
    palette = images[-1].convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
    frames_p = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    frames_p[0].save(buf, format="GIF", save_all=True, append_images=frames_p[1:], duration=durations, loop=0,
                     comment=comment.encode("utf-8"), optimize=True, disposal=1)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)
