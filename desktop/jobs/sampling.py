"""Sample & compare's core work: sampler columns from one shared noise, and the quality measure.

Both jobs are generators run by `threads.GeneratorWorker(..., control=True)`: what they yield (and
the live frames they report from the sampler's callback) reaches the panel as progress; they return
the run's summary. The worker's stop event is the sampler's cancel event, checked before every model
call. core and torch are imported inside the functions, on the worker thread; the data types at the
top are plain (numpy only), so the panel and its widgets use them before torch has loaded.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np

from core.catalog import GUIDANCE_EVERYWHERE, model_calls

PROGRESS_HZ = 15  # live frames per second sent to the GUI, at most
TRAJECTORY_BUDGET = 160 * 2**20  # bytes of stored x_t + x0 frames per column; beyond it, keep every k-th step


# --- what the GUI can know before torch loads ----------------------------------------------------------

@dataclass(frozen=True)
class ColumnSpec:
    """One column of the comparison: a sampler and its settings."""

    sampler: str
    steps: int
    eta: float = 0.0
    guidance: float = 1.0
    label: str = ""  # display name of the sampler
    spacing: str = "trailing"  # which timesteps the steps visit (core.catalog.SPACINGS or a model's tuned-5...)
    zero_terminal: bool = False  # the model's schedule ends in pure noise (Heun then saves a call)
    guidance_interval: tuple[float, float] = GUIDANCE_EVERYWHERE  # t/T where guidance acts (core.denoiser)
    guidance_rescale: float = 0.0  # CFG rescale phi (core.denoiser); 0 = off

    @property
    def guided(self) -> bool:
        return self.guidance != 1.0

    @property
    def partly_guided(self) -> bool:
        """Guidance only inside an interval of noise levels: some steps make one pass, not two."""
        return self.guided and tuple(self.guidance_interval) != GUIDANCE_EVERYWHERE

    @property
    def title(self) -> str:
        if self.spacing.startswith("distilled-"):  # a student's own sampler: DDIM over the steps it learnt
            return f"distilled, {self.steps} calls"
        name = self.label or self.sampler
        text = f"{name}, {self.steps} steps"
        text += f", eta {self.eta:g}" if self.sampler == "ddim" else ""
        text += f", {self.spacing}" if self.spacing != "trailing" else ""
        if self.partly_guided:
            text += f", guided {self.interval_text}"
        return text + (f", rescale {self.guidance_rescale:g}" if self.guided and self.guidance_rescale > 0 else "")

    @property
    def short_name(self) -> str:
        """The sampler's name for labels: a student's own sampler is "distilled", not DDIM."""
        return "distilled" if self.spacing.startswith("distilled-") else (self.label or self.sampler)

    @property
    def calls_per_step(self) -> int:
        """Batch multiplier of one model call: guidance runs the conditional and unconditional pass together."""
        return 1 if self.guidance == 1.0 else 2

    @property
    def calls(self) -> int:
        """Model calls per image (Heun makes two per step); with guidance inside an interval only, the most it
        can make (the run counts the exact number: ColumnResult.nfe)."""
        return model_calls(self.sampler, self.steps, guided=self.guided, zero_terminal=self.zero_terminal)

    @property
    def interval_text(self) -> str:
        """The guidance interval as the PNG text and titles write it: "0.1-0.8"."""
        return "-".join(f"{v:g}" for v in self.guidance_interval)

    @property
    def guidance_kwargs(self) -> dict:
        """What core.samplers.generate takes for this column's guidance besides its scale."""
        return {"guidance_interval": tuple(self.guidance_interval), "guidance_rescale": self.guidance_rescale}


@dataclass
class SampleJob:
    """Everything a run needs besides the model: the same noise and contexts for every column."""

    columns: list[ColumnSpec]
    seed: int
    context: np.ndarray  # (R, L) float32: one row of the grid per context
    per_row: int  # images per context row
    precision: str = "auto"
    # What guidance pushes away from (see the composer's "Guide with"): "no label" when both are unset,
    # another label's context vector (L,) ("fruit, not food"), or a weaker model (autoguidance).
    negative: np.ndarray | None = None
    guide_model: str = ""
    # (R, L): each context row's own negative (the composer's per-row "Not"), overriding `negative`; None = none.
    row_negatives: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.context) * self.per_row

    def context_batch(self) -> np.ndarray:
        """(n, L): image k gets row k // per_row, so the grid reads row by row."""
        return np.repeat(np.asarray(self.context, np.float32), self.per_row, axis=0)

    def negative_batch(self, contexts: np.ndarray | None = None) -> np.ndarray | None:
        """(n, L): what guidance pushes each image away from, or None (every image: "no label"). For the run's
        own images (contexts None) row k's negative; for other contexts (the quality measure's, one label each)
        the negative of the context row asking for the same vector, else `negative`, else "no label"."""
        n = self.n if contexts is None else len(contexts)
        if self.row_negatives is None:
            if self.negative is None:
                return None
            return np.repeat(np.asarray(self.negative, np.float32)[None, :], n, axis=0)
        rows = np.asarray(self.row_negatives, np.float32)
        if contexts is None:
            return np.repeat(rows, self.per_row, axis=0)
        fallback = np.zeros(rows.shape[1], np.float32) if self.negative is None else np.asarray(self.negative,
                                                                                                np.float32)
        own = np.asarray(self.context, np.float32)
        out = np.repeat(fallback[None, :], n, axis=0)
        for i, c in enumerate(np.asarray(contexts, np.float32)):
            hit = np.flatnonzero(np.abs(own - c).max(axis=1) < 1e-6)
            if len(hit):
                out[i] = rows[hit[0]]
        return out


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
    calibrated_ms: dict[int, float] = field(default_factory=dict)  # column index: ms per model call (see Calibrated)


@dataclass
class Calibrated:
    """ms per model call of each column's batch, timed alternately across the columns after the run, so load
    that came and went while one column ran does not skew the comparison (the wall times stay as measured)."""

    ms_per_call: dict[int, float]
    rounds: int


# --- what the jobs yield --------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunStarted:
    runtime_label: str
    warmup_seconds: float


@dataclass(frozen=True)
class NoiseReady:
    noise: np.ndarray  # (n, H, W, 3) uint8: the starting noise every column shares


@dataclass(frozen=True)
class ColumnStarted:
    index: int


# --- torch-side helpers (lazy imports) ------------------------------------------------------------------

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


def load_guide(path: str, net):
    """The guide model of autoguidance on the main model's device, or None; it must be the same kind of model
    (same size, labels and network family checked by the sampler)."""
    if not path:
        return None
    from core.checkpoint import load_checkpoint

    device = next(net.parameters()).device
    return load_checkpoint(path, device).net.eval()


def _step_passes(spec: ColumnSpec, n: int, net, guide_net=None) -> list[tuple]:
    """(network, batch) of the passes one step of this column makes: one, a doubled batch for guidance, or the
    model and its guide side by side (autoguidance)."""
    if spec.calls_per_step == 1:
        return [(net, n)]
    return [(net, n), (guide_net, n)] if guide_net is not None else [(net, 2 * n)]


def _blank_call(model, batch: int, precision: str) -> None:
    """One model call on zeros of the run's shape (the inputs do not change the cost)."""
    import torch

    from core.device import autocast

    cfg, device = model.config, next(model.parameters()).device
    x = torch.zeros((batch, cfg.in_channels, cfg.height, cfg.height), device=device)
    c = torch.zeros((batch, cfg.n_cfeat), device=device)
    with autocast(device, precision):
        model(x, torch.full((1,), 0.5, device=device), c)


def _warm_up(net, job: SampleJob, precision: str, guide_net=None) -> float:
    """One untimed model call per batch shape the run will use (oneDNN/cuDNN build kernels on first use)."""
    import torch

    from core.device import synchronize

    device = next(net.parameters()).device
    start = time.perf_counter()
    shapes = {(id(m), b): (m, b) for spec in job.columns for m, b in _step_passes(spec, job.n, net, guide_net)}
    with torch.inference_mode():
        for model, b in shapes.values():
            _blank_call(model, b, precision)
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


def sample_column(net, schedule, job: SampleJob, index: int, noise, precision: str, cancel,
                  emit=lambda frame: None, guide_net=None) -> ColumnResult:
    """Run one column from the shared noise; raises core.samplers.SamplingCancelled when cancelled."""
    from core.samplers import generate

    spec = job.columns[index]
    rec = _TrajectoryRecorder(index, spec.steps, schedule.T, noise, emit, stride=_stride(job, spec.steps, net))
    res = generate(net, schedule, sampler=spec.sampler, steps=spec.steps, context=job.context_batch(),
                   guidance=spec.guidance, eta=spec.eta, seed=job.seed, precision=precision, callback=rec,
                   cancel=cancel, noise=noise, spacing=spec.spacing, negative_context=job.negative_batch(),
                   guide_net=guide_net, **spec.guidance_kwargs)
    frames_x, frames_x0 = rec.arrays()
    return ColumnResult(index, spec, res.images, res.nfe, res.seconds, list(res.timesteps), frames_x, frames_x0,
                        rec.frame_t, rec.frame_calls, precision)


# --- the jobs -------------------------------------------------------------------------------------------

def column_order(columns: list[ColumnSpec]) -> list[int]:
    """Cheapest first (model calls per image, guidance counted): the 10-call columns show their result in a
    moment instead of waiting behind DDPM's 500 calls. Ties keep the columns' order."""
    return sorted(range(len(columns)), key=lambda i: columns[i].calls)


def run_columns(bundle, job: SampleJob, *, control):
    """Run the columns one after another (each timed alone, cheapest first) from one shared starting noise.

    Yields RunStarted, NoiseReady, then ColumnStarted and ColumnResult per column (Frames go through
    control.report); returns the RunSummary, also after a cancel (the finished columns are kept).
    """
    from core.samplers import SamplingCancelled, initial_noise
    from core.schedule import Schedule
    from desktop.engine import runtime_for

    summary = RunSummary(seed=job.seed, model=getattr(bundle, "description", ""))
    try:
        summary.precision, summary.runtime_label = runtime_for(bundle, job.precision)
        net = _snapshot(bundle)
        guide_net = load_guide(job.guide_model, net)
        schedule = Schedule(bundle.schedule_config)
        summary.warmup_seconds = _warm_up(net, job, summary.precision, guide_net)
        yield RunStarted(summary.runtime_label, summary.warmup_seconds)
        cfg = net.config
        device = next(net.parameters()).device
        noise = initial_noise(job.n, (cfg.in_channels, cfg.height, cfg.height), job.seed, device)
        yield NoiseReady(_host(_u8(noise)))
        for index in column_order(job.columns):
            yield ColumnStarted(index)
            result = sample_column(net, schedule, job, index, noise, summary.precision, control.stop,
                                   control.report, guide_net)
            summary.results.append(result)
            yield result
        if len(job.columns) > 1 and not control.stop.is_set():
            summary.calibrated_ms = calibrate_calls(net, job, summary.precision, guide_net)
            yield Calibrated(summary.calibrated_ms, CALIBRATION_ROUNDS)
    except SamplingCancelled:
        summary.cancelled = True
    return summary


CALIBRATION_ROUNDS = 5


def calibrate_calls(net, job: SampleJob, precision: str, guide_net=None, rounds: int = CALIBRATION_ROUNDS) -> dict:
    """Median ms of one model call (all of a step's passes) per column, the columns timed in turn, round after
    round: the benchmark's alternating method, so every column sees the same machine."""
    import statistics

    import torch

    from core.device import synchronize

    device = next(net.parameters()).device
    times: dict[int, list[float]] = {i: [] for i in range(len(job.columns))}
    with torch.inference_mode():
        for _ in range(rounds):
            for i, spec in enumerate(job.columns):
                synchronize(device)
                start = time.perf_counter()
                for model, b in _step_passes(spec, job.n, net, guide_net):
                    _blank_call(model, b, precision)
                synchronize(device)
                times[i].append(1000 * (time.perf_counter() - start) / spec.calls_per_step)
    return {i: statistics.median(v) for i, v in times.items()}


def sample_grid(bundle, *, steps: int, per_label: int, seed: int) -> dict:
    """DDIM grid from the model, one row per label; numbers for the report. Runs off the GUI thread."""
    import torch

    from core.device import describe, resolve_precision
    from core.samplers import generate
    from core.schedule import Schedule

    net = bundle.net
    n_labels = net.config.n_cfeat
    context = np.repeat(np.eye(n_labels, dtype=np.float32), per_label, axis=0)  # (n, L)
    device = next(net.parameters()).device
    precision = resolve_precision("auto", device)
    # every step's x, not only the last (a clipped x0 can hide an overflow); kept on the device and read once
    # after the run, so that the timed steps do not wait for a GPU
    all_finite = torch.ones((), dtype=torch.bool, device=device)

    def watch(info):
        all_finite.logical_and_(torch.isfinite(info["x"]).all())

    res = generate(net, Schedule(bundle.schedule_config), sampler="ddim", steps=steps, n=len(context),
                   context=context, seed=seed, precision=precision, callback=watch)
    return {"images": res.images, "finite": bool(all_finite), "seconds": res.seconds, "nfe": res.nfe,
            "n": len(context), "height": net.config.height, "context": context,
            "runtime": f"{describe(device)}, {precision}", "ms_per_call": res.ms_per_call}


def label_accuracy(images: np.ndarray, context: np.ndarray, label_names: list[str]) -> float | None:
    """Share of images the shipped emoji classifier assigns to the label asked for (None: not applicable)."""
    from core.metrics import label_accuracy as core_accuracy
    from core.metrics import load_classifier

    try:
        clf = load_classifier()
    except Exception:  # noqa: BLE001 - no classifier in this build: the check is skipped, not failed
        return None
    if list(clf.label_names) != list(label_names) or images.shape[1] != clf.image_size:
        return None
    return float(core_accuracy(images, context.argmax(axis=1), clf))
