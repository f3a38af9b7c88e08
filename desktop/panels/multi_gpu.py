"""The Train tab's "Use all N GPUs" option: the same run in child processes under torchrun.

Shown only when torch sees more than one CUDA device (and the app can start its own interpreter: not in
a frozen build). The run goes through `desktop.jobs.torchrun.TorchrunRun`, which follows the run folder;
this controller feeds what it reads into the Train panel's own handlers, so the loss plot, progress
line, previews (made here from each new checkpoint), Stop and Resume look as for a run in the app.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QCheckBox

from desktop import engine, threads
from desktop.jobs import torchrun
from desktop.jobs.training import RunStarted

DATASET_FILE = "dataset.npz"  # the data set as the child processes load it


class MultiGpuOption(QCheckBox):
    """The check box; hidden with one GPU or none."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.n_gpus = 0
        self.setVisible(False)

    def set_device_count(self, n: int) -> None:
        self.n_gpus = n
        self.setText(f"Use all {n} GPUs")
        self.setToolTip(f"Train with {n} processes, one per GPU (PyTorch's torchrun with DistributedDataParallel). "
                        "The batch is split among them. Stop saves a checkpoint; pausing is not available.")
        self.setVisible(n > 1 and torchrun.multi_process_supported())

    def wanted(self) -> bool:
        return self.n_gpus > 1 and torchrun.multi_process_supported() and self.isChecked()


class ChildRun:
    """Starts one torchrun child run for `panel` and routes its events to the panel's handlers."""

    def __init__(self, panel, n_gpus: int):
        self.panel, self.n_gpus = panel, n_gpus

    def start(self, ds, out_dir, *, config=None, info: dict | None = None, total_steps: int | None = None,
              force: bool = False) -> None:
        """A new run (config) or a resumed one (info: engine.read_run_info of out_dir)."""
        p, out_dir = self.panel, Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        data = str(engine.save_dataset(ds, out_dir / DATASET_FILE))
        cfg = config.to_dict() if config is not None else dict(info["train_config"])
        total = total_steps or cfg["steps"]
        cmd = torchrun.torchrun_command(self.n_gpus, out_dir, data, config=cfg if config is not None else None,
                                        total_steps=total_steps, force=force)
        run = torchrun.TorchrunRun(cmd, out_dir, total, parent=p)
        self.run = run
        p._job = p._worker = run  # the panel's Stop, Pause and error text reach the child run through these
        run.progress.connect(self._on_item)
        run.result.connect(self._on_ended)
        run.failed.connect(p._on_failed)
        run.finished.connect(p._on_thread_finished)
        run.finished.connect(run.deleteLater)
        p._end_message, p._threads_text = "", ""
        p._set_state("starting")
        run.start()
        p._timer.start()
        p._on_started(RunStarted(str(out_dir), info["step"] if info else 0, total, f"{self.n_gpus} GPUs (torchrun)",
                                 cfg.get("precision", "auto"), info is not None, {**cfg, "steps": total}))

    def _on_item(self, item) -> None:
        if isinstance(item, list):
            self.panel._on_progress(item)
        elif isinstance(item, torchrun.Checkpointed):
            threads.run_in_background(engine.checkpoint_preview, item.path,
                                      on_done=lambda r: self.panel._on_preview(*r))

    def _on_ended(self, ended: torchrun.ChildRunEnded) -> None:
        p = self.panel
        head = "Finished" if ended.how == "finished" else "Stopped (a checkpoint was saved; Resume continues it)"
        p._end_message = f"{head}. Run folder: {ended.out_dir}. Loading the model into Sample & compare…"
        threads.run_in_background(engine.load_checkpoint, str(Path(ended.out_dir) / torchrun.MODEL_NAME),
                                  on_done=p.state.set_model)
