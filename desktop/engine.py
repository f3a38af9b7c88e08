"""The app's door to the core: every call the widgets make into `core`, each importing it lazily.

Widgets call the functions here instead of importing `core` (which pulls in torch, ~1-2 s), so the
window is on screen before torch has loaded; the slow calls run through `threads.run_in_background`.
Longer core work with progress (training, sampling, exports) lives in `desktop.jobs`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from desktop.settings import DEFAULT_SEED, runs_dir

# --------------------------------------------------------------------------------------------
# Core calls (each imports core lazily; the slow ones are meant for threads.run_in_background)
# --------------------------------------------------------------------------------------------


def runtime_label(device: str = "auto", precision: str = "auto") -> str:
    """'CPU (2 threads), bf16' or 'CUDA: <card>, bf16'. Imports torch: call it off the GUI thread."""
    from core.device import runtime
    from core.threads import configure_threads

    configure_threads()
    return runtime(device, precision).label


def load_trainer() -> None:
    """Import the trainer (with torch) off the GUI thread at start-up, so a run starts at once."""
    import core.training  # noqa: F401


def warm_up_training() -> None:
    """Import what the first training run needs but torch loads lazily (torch._dynamo, pulled in by the
    optimizer: seconds, once), so pressing Start does not wait for it. Meant for run_in_background."""
    import torch._dynamo  # noqa: F401


def release_gui_openmp_threads() -> None:
    """Before a job starts on a worker thread: end the GUI thread's OpenMP team, if a torch call made one,
    so the job's threads keep their full spin-waits (see core.threads.release_openmp_threads). Does
    nothing before torch has been loaded."""
    if "torch" in sys.modules:
        from core.threads import release_openmp_threads

        release_openmp_threads()


def builtin_names() -> list[str]:
    from core.catalog import BUILTIN_DATASETS  # torch-free

    return list(BUILTIN_DATASETS)


def load_dataset(spec: str, *, size: int = 16):
    """A data set from a built-in name, a folder, an .npz, or 'course:<sprites.npy>[|<labels.npy>]'."""
    from core.data import load_course_npy, load_dataset as core_load

    if spec.startswith("course:"):
        images, _, labels = spec[len("course:"):].partition("|")
        return load_course_npy(images, labels or None)
    return core_load(spec, size=size)


def load_sprite_sheet(path: str, *, cell: int, size: int, margin: int = 0, spacing: int = 0):
    from core.data import load_sprite_sheet as core_sheet

    return core_sheet(path, cell=cell, size=size, margin=margin, spacing=spacing)


def save_dataset(dataset, path: str | Path) -> Path:
    from core.data import save_npz

    return save_npz(dataset, path)


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file; raises (with Pillow's reason) when it is none."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def load_checkpoint(path: str):
    from core.checkpoint import load_checkpoint as core_load
    from core.device import pick_device

    return core_load(path, pick_device("auto"))


def model_choices() -> list[tuple[str, str]]:
    """(label, path) of the models a user can switch to: the shipped ones, then each run (newest first)."""
    import time as _time

    from core.checkpoint import CheckpointError, read_metadata

    from core.paths import shipped_models

    out = []
    for label, path in shipped_models():
        try:
            network = read_metadata(path)["unet_config"].get("network", "course")
        except CheckpointError:
            continue
        out.append((f"{label} ({'ContextUnet' if network == 'course' else 'desk network'})", str(path)))
    runs = sorted(run_models(), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in runs[:30]:
        try:
            meta = read_metadata(path)
        except CheckpointError:
            continue
        when = _time.strftime("%d %b %H:%M", _time.localtime(path.stat().st_mtime))
        shortcut = (meta.get("extra") or {}).get("distilled")
        if isinstance(shortcut, dict):  # a distilled student: say what it is a shortcut of
            out.append((f"Shortcut {path.parent.name} ({shortcut.get('calls')} calls, of "
                        f"{str(shortcut.get('teacher', '?'))[:40]}, {when})", str(path)))
        else:
            out.append((f"Run {path.parent.name} (step {meta['step']:,}, {when})", str(path)))
    return out


def cuda_device_count() -> int:
    """CUDA devices torch sees (0 without CUDA). Imports torch: call it once torch has loaded."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def checkpoint_preview(path: str, *, per_label: int = 6, steps: int = 20, seed: int = DEFAULT_SEED):
    """(step, grid) from a saved model: one row per label by DPM-Solver++, as the previews made while training
    (a run in another process is previewed from its checkpoints)."""
    from core.schedule import Schedule
    from core.training import preview_grid

    b = load_checkpoint(path)
    grid = preview_grid(b.net, Schedule(b.schedule_config), len(b.label_names), per_label=per_label, steps=steps,
                        seed=seed)
    return int(b.meta.get("step", 0)), grid


def shipped_guide_model() -> str:
    """The shipped model's guide for autoguidance, or "" (core.paths: no torch)."""
    from core.paths import shipped_guide_model as core_guide

    path = core_guide()
    return str(path) if path else ""


def default_checkpoint() -> str | None:
    from core.paths import default_checkpoint as core_default  # no torch in core.paths

    path = core_default()
    return str(path) if path else None


def licences_text() -> str:
    from core.paths import resource_path

    path = resource_path("LICENSES.md")
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return f"The licence file ({path}) is missing from this installation."


def resource_path(*parts: str) -> Path:
    from core.paths import resource_path as core_resource  # no torch: core.paths only knows folders

    return core_resource(*parts)


def app_root() -> Path:
    from core.paths import app_root as core_root

    return core_root()


def _is_out_of_memory(text: str) -> bool:
    """torch reports CPU and GPU exhaustion as RuntimeError ('[enforce fail at alloc_cpu.cpp...]',
    'CUDA out of memory')."""
    low = text.lower()
    return "alloc_cpu" in low or "out of memory" in low or "not enough memory" in low or "failed to allocate" in low


def user_message(error: BaseException) -> str:
    """One readable line for a dialog: our own errors already are one; others get their type named."""
    from_core = type(error).__module__.startswith("core.")
    text = " ".join(str(error).split())
    if isinstance(error, MemoryError) or _is_out_of_memory(text):
        return ("Not enough memory for this. Use fewer images per sampler, a smaller batch size, a narrower "
                "network or a smaller data set.")
    if isinstance(error, OSError) and getattr(error, "errno", None) == 28:
        return f"The disk is full ({error.filename or 'while writing'}). Free some space and try again."
    if from_core or isinstance(error, (ValueError, OSError)):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------


def run_models() -> list[Path]:
    """The model file of every training run in the user's runs folder (sorted by folder name)."""
    from core.training import MODEL_FILE

    return sorted(runs_dir().glob(f"*/{MODEL_FILE}")) if runs_dir().is_dir() else []


def can_resume(folder: str | Path) -> bool:
    """Whether a run folder holds the resume file Resume continues from."""
    from core.training import RESUME_FILE

    return (Path(folder) / RESUME_FILE).is_file()


def read_run_info(folder: str | Path) -> dict:
    """{'step', 'train_config' (dict), 'dataset', 'label_names'} of a run folder, or CheckpointError."""
    from core.checkpoint import CheckpointError, read_metadata
    from core.training import MODEL_FILE, RESUME_FILE
    from core.training.resume import diverged_note

    folder = Path(folder)
    model, resume = folder / MODEL_FILE, folder / RESUME_FILE
    if not model.is_file() or not resume.is_file():
        raise CheckpointError(f"{folder}: not a training run folder ({MODEL_FILE} and {RESUME_FILE} "
                              "are written at the first checkpoint)")
    meta = read_metadata(model)
    return {"step": meta["step"], "train_config": meta["train_config"], "dataset": meta["dataset"],
            "dataset_fingerprint": meta["dataset_fingerprint"], "label_names": meta["label_names"],
            "diverged": diverged_note(folder)}



# --------------------------------------------------------------------------------------------
# Sampling: what the Sample & compare panel asks about a model (quick; on the GUI thread)
# --------------------------------------------------------------------------------------------


def runtime_for(bundle, precision_pref: str = "auto") -> tuple[str, str]:
    """(precision, label) for sampling `bundle` where its weights live, e.g. ('bf16', 'CPU (2 threads), bf16')."""
    from core.device import describe, resolve_precision

    device = next(bundle.net.parameters()).device
    precision = resolve_precision(precision_pref, device)
    return precision, f"{describe(device)}, {precision}"


def precision_choices(bundle) -> list[str]:
    """Precisions the model's device can run: fp16 only on CUDA."""
    from core.catalog import PRECISIONS

    device = next(bundle.net.parameters()).device
    return list(PRECISIONS) if device.type == "cuda" else [p for p in PRECISIONS if p != "fp16"]


def schedule_curves(schedule_config) -> dict:
    """alpha_bar and log-SNR over t = 0..T as numpy arrays (log-SNR at t = 0 is infinite: left out)."""
    import numpy as np

    from core.schedule import Schedule

    sched = Schedule(schedule_config)
    ab = sched.ab_t.numpy().copy()
    return {"T": sched.T, "t": np.arange(sched.T + 1), "alpha_bar": ab, "log_snr": sched.log_snr().numpy().copy()}


def timesteps_for(spec, schedule_config) -> list:
    """The timesteps a column (a jobs.sampling.ColumnSpec) visits, for its steps and spacing on the model's schedule;
    [] when the spacing does not fit (a named spacing of another model, or of another step count)."""
    from core.schedule import Schedule, spaced_timesteps

    try:
        return spaced_timesteps(spec.steps, Schedule(schedule_config), spec.spacing)
    except ValueError:
        return []


def named_spacings(bundle) -> dict[str, int]:
    """The loaded model's own spacings (tuned-5, distilled-4) and the steps each takes."""
    if bundle is None:
        return {}
    return {name: len(ts) - 1 for name, ts in bundle.schedule_config.spacings}


def distilled_info(bundle) -> dict | None:
    """What a distilled student's file says of its teacher and calls; None for any other model."""
    info = ((bundle.meta or {}).get("extra") or {}).get("distilled") if bundle is not None else None
    return info if isinstance(info, dict) and isinstance(info.get("calls"), int) else None


def quality_available() -> tuple[bool, str]:
    """Whether core.metrics and its classifier can be used here; the reason in plain words when not."""
    try:
        from core import metrics

        metrics.load_classifier()
    except Exception as e:  # noqa: BLE001 - missing module, missing or damaged classifier file: the button says why
        return False, f"The quality measure is not available in this installation ({user_message(e)[:300]})."
    return True, ""


def quality_fits(bundle) -> tuple[bool, str]:
    """Whether the evaluation classifier can read this model's images (it was trained at one size)."""
    from core import metrics

    size = metrics.load_classifier().image_size
    if bundle.net.config.height != size:
        return False, (f"The quality measure reads {size}×{size} images; this model draws "
                       f"{bundle.net.config.height}×{bundle.net.config.height}.")
    return True, ""
