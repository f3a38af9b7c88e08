"""What the window does at start-up, off the GUI thread, and which model it reopens next launch."""
from __future__ import annotations

from desktop import engine


def startup_job(dataset_spec: str | None, checkpoint: str | None) -> dict:
    """Runs on a worker thread: torch and the trainer import, runtime, the data set and the model."""
    out: dict = {"runtime": engine.runtime_label(), "errors": []}
    engine.load_trainer()
    out["dataset"], out["dataset_spec"] = None, None
    for spec in [s for s in (dataset_spec, engine.builtin_names()[0]) if s]:
        try:
            out["dataset"], out["dataset_spec"] = engine.load_dataset(spec), spec
            break
        except Exception as e:  # noqa: BLE001 - a vanished last data set falls back to the built-in one
            out["errors"].append(f"Could not reopen the last data set: {engine.user_message(e)}")
    out["model"] = None
    if checkpoint:
        try:
            out["model"] = engine.load_checkpoint(checkpoint)
        except Exception as e:  # noqa: BLE001
            out["errors"].append(f"Could not load the model {checkpoint}: {engine.user_message(e)}")
    return out


MIN_REMEMBERED_STEPS = 1000  # a run's model switched to by the app is reopened next launch only past this


def _worth_remembering(bundle) -> bool:
    """A model the user chose is reopened next launch; one the app switched to after a run only when trained
    for a while (a stopped few-step demo draws noise)."""
    return not bundle.meta.get("auto") or (bundle.meta.get("step") or 0) >= MIN_REMEMBERED_STEPS
