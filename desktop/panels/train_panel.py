"""The Train tab: data set, presets and a form bound to core.config.TrainConfig, start / pause / resume /
stop, a live loss plot, progress, and sample previews made during training.

Training runs as `desktop.jobs.training.TrainingJob` on a `threads.GeneratorWorker`. Its progress
items only fill buffers here; a 10 Hz QTimer redraws, so the GUI thread's cost does not grow with the step rate.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox, QWidget

from core.config import TrainConfig
from desktop import engine, settings, threads
from desktop.jobs import training as jobs
from desktop.panels.multi_gpu import ChildRun
from desktop.panels.train_layout import TrainLayout
from desktop.widgets.common import error_text, eta_text, format_duration


JUDGE_EVERY = 50  # steps between two "called <new label>" measurements of a fine-tune (32 samples a label)


def replaces_sampling_model(how: str, run_bundle, current) -> bool:
    """Whether a run that ended becomes the sampling model by itself: when it finished (or a fine-tune stopped
    because its new labels were learnt), when nothing is loaded, or when it has trained at least as many steps
    as the loaded model (a stopped 99-step demo must not replace a good model; the user can still choose it)."""
    if how in ("finished", "ceiling") or current is None:
        return True
    step, current_step = run_bundle.meta.get("step") or 0, current.meta.get("step")
    return current_step is None or current_step <= step


class TrainPanel(TrainLayout, QWidget):
    """Train tab. States: idle, starting, running, paused, stopping."""

    dataset_requested = Signal(str)  # a built-in name the user picked
    open_dataset_requested = Signal()  # "Open another data set..." picked
    run_state_changed = Signal(str)

    REDRAW_MS = 100  # the progress line updates at ~10 Hz
    PLOT_EVERY = 2  # the plot on every 2nd tick (5 Hz): a repaint is the GUI thread's dearest work

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.run_state = "idle"
        self._job: jobs.TrainingJob | None = None
        self._worker: threads.GeneratorWorker | None = None
        self._last_run_dir: str | None = None
        self._latest = None  # the last core.training.StepMetrics
        self._run_info: jobs.RunStarted | None = None
        self._progress_dirty = False
        self._ticks = 0
        self._threads_text = ""
        self.train_threads: int | None = None  # torch CPU threads for runs; None = one per core
        self._build()
        self._timer = QTimer(self)
        self._timer.setInterval(self.REDRAW_MS)
        self._timer.timeout.connect(self._on_redraw_timer)
        state.dataset_changed.connect(self._on_dataset_changed)
        state.label_names_changed.connect(self._on_label_names_changed)
        state.dataset_edited.connect(lambda _ds: self._on_label_names_changed([]))
        self.label_progress.stop_at_ceiling_changed.connect(
            lambda on: self._job is not None and self._job.set_stop_at_ceiling(on))
        self._update_buttons()

    # --- presets and the form ----------------------------------------------------------------------------
    def set_presets(self, presets: dict[str, dict]) -> None:
        """Called once torch has loaded: {'quick': TrainConfig dict, 'course': ..., ...}."""
        self.settings_box.set_presets(presets)
        self.multi_gpu.set_device_count(engine.cuda_device_count())  # torch has loaded: this is cheap now
        last_run = settings.read_str("train/last_run")
        if last_run and engine.can_resume(last_run):
            self._last_run_dir = last_run
        self._update_buttons()

    def apply_config(self, values: dict) -> None:
        """Fill the form (tests and resuming use it); the preset follows."""
        self.settings_box.apply_config(values)

    def init_checkpoint(self) -> str:
        """The checkpoint a new run starts from ('' = from scratch)."""
        return self.settings_box.init_checkpoint()

    def teach(self) -> bool:
        """'Teach the model these labels': the fine-tune preset from the shipped model, started at once."""
        if self.run_state != "idle":
            return False
        self.settings_box.choose_fine_tune()
        if not self.init_checkpoint():
            self._error("No shipped model", "This installation has no shipped model to start from; train one "
                        "from scratch instead.")
            return False
        return self.start()

    # --- data set -----------------------------------------------------------------------------------------
    def _on_dataset_changed(self, ds) -> None:
        self.dataset_box.refresh()
        self._update_buttons()

    def _on_label_names_changed(self, names: list) -> None:
        self.dataset_box.refresh()  # an edited set is the one training will use: show it as such

    # --- commands -------------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start a new run with the form's settings; False (with a dialog) when it cannot."""
        if self.run_state != "idle" or self.state.dataset is None:
            return False
        try:
            config = TrainConfig(**{**self.form.values(), "init": self.init_checkpoint()})
        except (TypeError, ValueError) as e:
            self._error("These settings cannot be used", f"{e}. Fix the value and press Start again.")
            return False
        ds = self.state.dataset
        self.settings_box.save_choices()
        self.loss_plot.clear()
        self.preview_strip.clear()
        self.label_progress.clear()
        if self.multi_gpu.wanted():
            self._child = ChildRun(self, self.multi_gpu.n_gpus)  # kept: its methods receive the run's signals
            self._child.start(ds, settings.new_run_dir(ds.name), config=config)
        else:
            self._launch(ds, config=config, out_dir=settings.new_run_dir(ds.name), resume=False)
        return True

    def pause(self) -> None:
        if self.run_state == "running" and self._job is not None:
            self._job.request_pause()
            self._set_state("pausing")
            self.status.setText("Pausing after the current step…")

    def resume(self) -> None:
        if self.run_state == "paused" and self._job is not None:
            self._job.request_resume()
            self._set_state("running")
        elif self.run_state == "idle" and self._last_run_dir:
            self.resume_from_folder(self._last_run_dir)

    def stop(self) -> None:
        if self._worker is not None and self.run_state in ("starting", "running", "pausing", "paused"):
            self._worker.request_stop()
            self._set_state("stopping")
            self.status.setText("Stopping: saving a checkpoint…")

    def is_busy(self) -> bool:
        return self._worker is not None

    def _on_resume_folder_clicked(self) -> None:
        start = str(settings.runs_dir()) if settings.runs_dir().is_dir() else str(settings.user_data_dir())
        folder = QFileDialog.getExistingDirectory(self, "Choose the folder of the run to resume", start)
        if folder:
            self.resume_from_folder(folder)

    def resume_from_folder(self, folder: str, total_steps: int | None = None) -> bool:
        """Continue a stopped or crashed run from its last checkpoint (asks for more steps when it had finished)."""
        if self.run_state != "idle":
            return False
        try:
            info = engine.read_run_info(folder)
        except Exception as e:  # noqa: BLE001 - CheckpointError and friends: say it in a dialog
            self._error("Cannot resume this run", engine.user_message(e))
            return False
        ds = self.state.dataset
        if ds is None or ds.fingerprint() != info["dataset_fingerprint"]:
            self._error("Open the run's data set first",
                        f"This run was trained on the data set '{info['dataset']}', which is not the one loaded now. "
                        "Open that data set (File menu), then resume the run.")
            return False
        force = False
        if info.get("diverged"):
            answer = QMessageBox.question(
                self, "This run diverged",
                f"This run stopped because it diverged ({info['diverged']}). Resuming trains through the same "
                "place again; a new run started from its model with a lower learning rate usually works "
                "better.\n\nResume it anyway?")
            if answer != QMessageBox.StandardButton.Yes:
                return False
            force = True
        total = total_steps or self._ask_total_steps(info)
        if total is None:
            return False
        self.loss_plot.clear()
        self.label_progress.clear()
        if self._last_run_dir and Path(folder).resolve() == Path(self._last_run_dir).resolve():
            self.preview_strip.keep_until(info["step"])  # the same run: its earlier previews stay
        else:
            self.preview_strip.clear()
        self.loss_plot.append(jobs.logged_metrics(folder))
        if self.multi_gpu.wanted():
            self._child = ChildRun(self, self.multi_gpu.n_gpus)
            self._child.start(ds, folder, info=info, total_steps=total, force=force)
        else:
            self._launch(ds, out_dir=Path(folder), resume=True, total_steps=total, force=force)
        return True

    def _ask_total_steps(self, info: dict) -> int | None:
        planned = int(info["train_config"].get("steps", info["step"]))
        if info["step"] < planned:
            return planned
        value, ok = QInputDialog.getInt(
            self, "Train further", f"This run already finished its {planned:,} steps.\nTrain on until step:",
            planned * 2, planned + 1, 100_000_000, 100)
        return value if ok else None

    # --- the worker -------------------------------------------------------------------------------------------
    def _launch(self, ds, **kwargs) -> None:
        self.preview_strip.labels = list(ds.label_names) or ["(no label)"]
        job = jobs.TrainingJob(ds, preview_every=self.preview_every.value(), threads=self.train_threads,
                               judge_every=JUDGE_EVERY, judge_guidance=self.state.composition.guidance,
                               stop_at_ceiling=self.label_progress.stop_check.isChecked(), **kwargs)
        worker = threads.GeneratorWorker(job.run, control=True)
        self._job, self._worker = job, worker
        self._end_message, self._threads_text = "", ""
        self._set_state("starting")
        self.status.setText("Preparing the run (building the network, loading the images)…")
        threads.start(worker, on_progress=self._on_item, on_failed=self._on_failed,
                      on_finished=self._on_thread_finished)
        self._timer.start()

    def _on_item(self, item) -> None:
        """One of the job's progress items (see desktop.jobs.training)."""
        if isinstance(item, list):
            self._on_progress(item)
        elif isinstance(item, jobs.RunStarted):
            self._on_started(item)
        elif isinstance(item, jobs.Preview):
            self._on_preview(item.step, item.grid)
        elif isinstance(item, jobs.Paused):
            self._on_paused(item.bundle)
        elif isinstance(item, jobs.Resumed):
            self._on_resumed()
        elif isinstance(item, jobs.Saved):
            self._on_saved(item.step, item.path)
        elif isinstance(item, jobs.JudgeReady):
            self.label_progress.ready(item.labels, item.ceiling, item.counts, item.how)
        elif isinstance(item, jobs.LabelProgress):
            self.label_progress.add(item.step, item.called)
        elif isinstance(item, jobs.ThreadsChosen):
            self._on_threads_changed(item.threads)
        elif isinstance(item, jobs.RunEnded):
            self._on_run_ended(item.how, item.bundle)

    def _on_started(self, info: jobs.RunStarted) -> None:
        self._run_info = info
        self._last_run_dir = info.out_dir
        self.form.set_values(info.config)  # show what is running (a resumed run brings its own settings)
        settings.qsettings().setValue("train/last_run", info.out_dir)  # Resume works after a crash too
        self.progress.setFormat("step %v of %m")
        self.progress.setMaximum(info.total_steps)
        self.progress.setValue(info.step)
        if self.run_state == "starting":
            self._set_state("running")
        verb = "Resumed" if info.resumed else "Started"
        self.status.setText(f"{verb} at step {info.step:,} on {info.device} ({info.precision}). "
                            f"Run folder: {info.out_dir}")
        self.state.status_message.emit(f"Training in {info.out_dir}")

    def _on_progress(self, metrics: list) -> None:
        self.loss_plot.append(metrics)
        self._latest = metrics[-1]
        self._progress_dirty = True

    def _on_redraw_timer(self) -> None:
        self._ticks += 1
        if self._ticks % self.PLOT_EVERY == 0 or self.run_state not in ("running", "pausing"):
            self.loss_plot.refresh()
        if self._progress_dirty and self._latest is not None and self.run_state in ("running", "pausing"):
            self._show_progress()
        self._progress_dirty = False

    def _show_progress(self) -> None:
        m = self._latest
        total = self._run_info.total_steps if self._run_info is not None else self.progress.maximum()
        self._time_left.add(float(m.elapsed), int(m.step))
        self.progress.setValue(int(m.step))
        self.status.setText(f"Step {int(m.step):,} of {total:,}  ·  {m.images_per_s:,.0f} images/s  ·  "
                            f"loss {m.loss:.4f}  ·  {format_duration(m.elapsed)} elapsed  ·  "
                            f"{eta_text(self._time_left, total)}"
                            f"{self._threads_text}")

    def _on_threads_changed(self, n: int) -> None:
        self._threads_text = f"  ·  {n} CPU thread{'s' if n > 1 else ''}"

    def _on_preview(self, step: int, grid) -> None:
        self.preview_strip.add(step, grid)

    def _on_paused(self, bundle) -> None:
        self._set_state("paused")
        self._on_redraw_timer()  # the last steps' progress first, so the bar and the text agree on the step
        step = bundle.meta.get("step", 0)
        self.status.setText(f"Paused at step {step:,}. The model is loaded in Sample & compare; "
                            "press Resume to continue training.")
        self.state.set_model(bundle)

    def _on_resumed(self) -> None:
        if self.run_state in ("paused", "running"):
            self._set_state("running")

    def _on_saved(self, step: int, path: str) -> None:
        self._saved_text = f"Saved at step {step:,} to {path}."

    def _on_run_ended(self, how: str, bundle) -> None:
        elapsed = self._latest.elapsed if self._latest else 0.0
        loss = f" Final loss {self._latest.loss:.4f} (smoothed {self.loss_plot.smooth_y.view()[-1]:.4f})." \
            if self._latest and self.loss_plot.n_points else ""
        head = {"finished": "Finished", "ceiling": "Learnt: stopped"}.get(how, "Stopped")
        switch = replaces_sampling_model(how, bundle, self.state.model)
        where = ("The model is now loaded in Sample & compare." if switch else
                 "Sample & compare keeps the model it had (this run is shorter); press 'Use this model for "
                 "sampling' to compare this one.")
        self._end_message = (f"{head} after {format_duration(elapsed)} of training.{loss} "
                             f"{getattr(self, '_saved_text', '')} {where}")
        if how == "stopped":
            self._end_message += " Press Resume to continue it later."
        bundle.meta["auto"] = True  # switched to by the app, not chosen: main_window remembers it only if trained
        self._ended_bundle = None if switch else bundle
        self.use_model_btn.setVisible(not switch)
        if switch:
            self.state.set_model(bundle)

    def _on_use_run_model(self) -> None:
        if self._ended_bundle is not None:
            self._ended_bundle.meta.pop("auto", None)  # chosen now: it may become the remembered model
            self.state.set_model(self._ended_bundle)
        self._ended_bundle = None
        self.use_model_btn.setVisible(False)

    def _on_failed(self, error: BaseException) -> None:
        message = self._job.failure_message(error)
        self._end_message = f"Training stopped with an error. {message}"
        self._error("Training stopped", message)

    def _on_thread_finished(self) -> None:
        self._job, self._worker = None, None  # threads.py keeps the worker until its thread has ended
        self._timer.stop()
        self._on_redraw_timer()
        self.loss_plot.refresh()
        if self._latest is not None:
            self.progress.setValue(int(self._latest.step))
        self.status.setText(self._end_message or "Ready.")
        self._set_state("idle")

    # --- helpers -----------------------------------------------------------------------------------------------
    def _set_state(self, s: str) -> None:
        if s == "starting":
            self._time_left.clear()  # every run (in this process or under torchrun) times itself afresh
        self.run_state = s
        self._update_buttons()
        self.run_state_changed.emit(s)

    def _update_buttons(self) -> None:
        s = self.run_state
        ready = bool(self.settings_box.presets) and self.state.dataset is not None
        self.start_btn.setEnabled(s == "idle" and ready)
        self.pause_btn.setEnabled(s == "running")
        self.resume_btn.setEnabled(s == "paused" or (s == "idle" and bool(self._last_run_dir) and ready))
        self.stop_btn.setEnabled(s in ("starting", "running", "pausing", "paused"))
        self.resume_folder_btn.setEnabled(s == "idle" and ready)
        editable = s == "idle" and bool(self.settings_box.presets)
        self.settings_box.setEnabled(editable)
        self.dataset_combo.setEnabled(s == "idle")

    def _error(self, title: str, text: str) -> None:
        QMessageBox.warning(self, title, error_text(text))
