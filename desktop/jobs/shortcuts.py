"""Making a model fast, its core work on worker threads: "Tune the steps" (core.step_search) and "Teach a
shortcut" (core.training.distill), generator jobs for threads.GeneratorWorker(..., control=True).

core and torch are imported inside the functions, on the worker thread.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from desktop.jobs.sampling import _snapshot

STUDENT_PREVIEW_EVERY = 100  # optimizer steps between two previews of the student


@dataclass(frozen=True)
class Progress:
    phase: str  # "search" (tune), "pool" (the teacher's solutions), "train"
    done: int
    total: int


@dataclass
class TuneResult:
    name: str
    sampler: str
    calls: int
    steps: int
    timesteps: list[float]
    error: float
    baselines: dict[str, float]
    seconds: float
    distance: str = "pixel"  # "data" for the ramp search (a Frechet distance to the training images)
    ramp: dict = field(default_factory=dict)  # the ramp search's choice (rho, sigma_max, t_last; or built_in)


TUNE_METHODS = ("ramp", "gits")  # core.step_search.search_ramp and search_steps: the dialog's "Search for" menu


def tune_steps(bundle, sampler: str, calls: int, method: str = "gits", dataset=None, *, control):
    """Search the timesteps for the loaded model (a private copy of it); returns a TuneResult, or None when
    stopped. Yields Progress("search", done, total). method "ramp" scores ramps against `dataset` (the images the
    model was trained on, with its labels); "gits" against a 100-step solution."""
    from core.samplers import SamplingCancelled
    from core.schedule import Schedule
    from core.step_search import RampSearchConfig, StepSearchConfig, search_ramp, search_steps

    if method == "ramp" and dataset is None:
        raise ValueError("load the model's training data set first (Data & labels): the search compares with it")
    net = _snapshot(bundle)

    def progress(done, total):  # called inside the search: hand the item to the GUI at once
        control.report(Progress("search", done, total))

    yield Progress("search", 0, 1)
    schedule = Schedule(bundle.schedule_config)
    try:
        if method == "ramp":
            res = search_ramp(net, schedule, RampSearchConfig(calls=calls, sampler=sampler), dataset,
                              progress=progress, cancel=control.stop)
        else:
            res = search_steps(net, schedule, StepSearchConfig(calls=calls, sampler=sampler), progress=progress,
                               cancel=control.stop)
    except SamplingCancelled:
        return None
    return TuneResult(res.name, res.sampler, res.calls, res.steps, res.timesteps, res.error, res.baselines, res.seconds,
                      res.distance, dict(res.ramp))


def with_spacing(bundle, name: str, timesteps: list[float]):
    """The loaded model with one more named spacing (in memory: the same weights, a new schedule config)."""
    import dataclasses

    return dataclasses.replace(bundle, schedule_config=bundle.schedule_config.with_spacing(name, timesteps))


def save_with_spacings(bundle, path: str, tuned: dict) -> Path:
    """Write the model with its named spacings to a new file (never over an existing one)."""
    from core.checkpoint import resave_checkpoint

    out = Path(path)
    if out.exists():
        raise FileExistsError(f"{out}: the file exists; choose a new name (nothing is replaced)")
    return resave_checkpoint(bundle, out, extra={"tuned": tuned} if tuned else None)


# --- Teach a shortcut ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TeacherImages:
    images: np.ndarray  # (L, H, W, 3) uint8: one per label, the teacher's accurate solution


@dataclass(frozen=True)
class StudentImages:
    step: int
    images: np.ndarray  # (L, H, W, 3) uint8 from the same noise, the student's few calls


@dataclass(frozen=True)
class DistillSteps:
    metrics: list = field(default_factory=list)  # core StepMetrics since the last item


@dataclass
class DistillSummary:
    out_dir: str
    step: int
    total: int
    stopped: bool
    seconds: float
    model_path: str


def new_run_folder(runs: Path, calls: int) -> Path:
    """A fresh folder in the user's runs for a student of `calls` calls."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = runs / f"shortcut{calls}-{stamp}"
    k = 1
    while out.exists():
        k += 1
        out = runs / f"shortcut{calls}-{stamp}-{k}"
    return out


def distill(teacher_path: str, config_dict: dict, out_dir: str, resume: bool, *, control):
    """Distil the model file `teacher_path` (read afresh on this thread, so the GUI's model is untouched) into the
    run folder; yields Progress, TeacherImages, DistillSteps and StudentImages; returns a DistillSummary (also
    when stopped: the run is saved and can be resumed)."""
    from core.checkpoint import load_checkpoint
    from core.device import pick_device
    from core.samplers import SamplingCancelled, to_uint8
    from core.training.distill import DistillConfig, Distiller, preview_inputs

    start = time.perf_counter()
    config = DistillConfig.from_dict(config_dict)
    teacher = load_checkpoint(teacher_path, pick_device("auto"))

    def pool_progress(done, total):
        control.report(Progress("pool", done, total))

    try:
        d = Distiller(teacher, config, out_dir, resume=resume, progress=pool_progress, cancel=control.stop)
    except SamplingCancelled:
        return None
    try:
        noise, ctx = preview_inputs(teacher)
        yield TeacherImages(to_uint8(d.teacher_preview(noise, ctx)))
        yield StudentImages(d.step, to_uint8(d.preview(noise, ctx)))
        batch, last_emit = [], time.monotonic()
        for m in d.run():
            batch.append(m)
            if time.monotonic() - last_emit > 0.25 or m.step == m.total_steps:
                yield DistillSteps(batch)
                batch, last_emit = [], time.monotonic()
            if m.step % STUDENT_PREVIEW_EVERY == 0 or m.step == m.total_steps:
                yield StudentImages(m.step, to_uint8(d.preview(noise, ctx)))
            if control.stop.is_set():
                d.request_stop()
        if batch:
            yield DistillSteps(batch)
        path = d.save()
        return DistillSummary(str(d.out_dir), d.step, config.steps, d.step < config.steps,
                              time.perf_counter() - start, str(path))
    finally:
        d.close()
