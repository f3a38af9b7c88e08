"""The "Sample & compare" tab: samplers side by side from the same noise, timed and scored.

Two to four columns, each a sampler with its settings. Run samples them one after another on a
worker thread (each timed alone, after an untimed warm-up call), from one shared starting noise and
the context composer's rows, so the differences come from the sampler alone. Below: timings, quality,
and the noise schedule with the timesteps each sampler visits; a scrubber replays every column's
denoising together and exports it.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from PySide6.QtCore import QTimer, Signal, Slot
from PySide6.QtWidgets import QMessageBox, QWidget

from core.catalog import SAMPLER_CATALOG, SIGMA_T_BEYOND_RAMP, T_DEFAULT
from desktop import engine, settings, threads
from desktop.jobs import quality as qj
from desktop.jobs import sampling as sw
from desktop.panels.sample_layout import SampleLayout
from desktop.state import AppState, Composition
from desktop.widgets.column_strip import column_settings, valid_column_settings
from desktop.widgets.sampler_column import MAX_COLUMNS, MIN_COLUMNS, SamplerColumn
from desktop.widgets.trajectory import frame_index, position_text, slider_max

# The course's DDPM (None: all T steps), its DDIM-25, and the best 10-call solver measured on the shipped
# model (docs/benchmarks.md): DPM-Solver++(3M) on the Karras spacing.
DEFAULT_COLUMNS = (("ddpm", None, "trailing"), ("ddim", 25, "trailing"), ("dpmpp3m", 10, "karras"))
REDRAW_MS = 100  # live grids repaint at most 10 times a second


class SamplePanel(SampleLayout, QWidget):
    """Compare samplers on the loaded model. `shutdown()` stops a run cooperatively (window close)."""

    busy_changed = Signal(bool)
    model_requested = Signal(str)  # a checkpoint path picked in the model menu
    open_model_requested = Signal()  # "Open file…" in the model menu
    export_finished = Signal(str)  # path written
    export_failed = Signal(str)  # one-line reason

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self.summary: sw.RunSummary | None = None  # the last run: results of the columns that finished
        self._sampled_model = None  # the model the shown results were drawn with
        self._run_row_names: list[str] = []
        self._run_per_row = 4
        self._worker: threads.GeneratorWorker | None = None
        self._pending: dict[int, sw.Frame] = {}
        self._T = T_DEFAULT
        self._zero_terminal = False  # the loaded model's schedule ends in pure noise
        self._build()
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setInterval(REDRAW_MS)
        self._redraw_timer.timeout.connect(self._flush_frames)
        saved = valid_column_settings(settings.load_json("sample/columns"), {c.name for c in SAMPLER_CATALOG})
        for d in saved or [dict(sampler=a, steps=b, spacing=c) for a, b, c in DEFAULT_COLUMNS]:
            col = self._add_column(d["sampler"], d["steps"], d.get("spacing", "trailing"))
            if col is not None and "eta" in d:
                col.set_spec(d["sampler"], d["steps"], d["eta"], d["guidance"], d["spacing"], d["interval"], d["rescale"])
        state.model_changed.connect(self._on_model_changed)
        state.dataset_changed.connect(self._on_dataset_changed)
        state.composition_changed.connect(self._on_composition_changed)
        self._on_model_changed(state.model)
        self._on_dataset_changed(state.dataset)
        self._on_composition_changed(state.composition)

    # ============================================================================ columns
    def _add_column(self, sampler: str, steps: int | None, spacing: str = "trailing") -> SamplerColumn | None:
        if len(self.columns) >= MAX_COLUMNS:
            return None
        col = SamplerColumn(list(SAMPLER_CATALOG))
        col.set_T(self._T, self._zero_terminal)
        col.set_model_spacings(engine.named_spacings(self.state.model))
        col.set_spec(sampler, steps if steps is not None else self._T, spacing=spacing)
        col.set_shared_guidance(self.state.composition.guidance)
        col.set_view(self.view_box.currentData())
        col.settings_changed.connect(self._on_column_settings)
        col.remove_requested.connect(self._remove_column)
        col.save_requested.connect(self.exports.ask_column)
        col.variations_requested.connect(self.lab.open_variations)
        self.column_strip.add(col)
        self._after_columns_changed()
        return col

    @Slot(object)
    def _remove_column(self, col: SamplerColumn) -> None:
        if len(self.columns) <= MIN_COLUMNS or self.is_busy():
            return
        removed = col.index
        self.column_strip.remove(col)
        if self.summary is not None:  # the other columns keep their results, renumbered
            self.summary.results = [dataclasses.replace(r, index=r.index - (r.index > removed))
                                    for r in self.summary.results if r.index != removed]
            self.quality_tab.remove_column(removed)
            self._update_timing()
            self._setup_scrubber()
        self._after_columns_changed()

    def _after_columns_changed(self) -> None:
        for c in self.columns:
            c.set_removable(len(self.columns) > MIN_COLUMNS)
        self.add_button.setEnabled(len(self.columns) < MAX_COLUMNS and not self.is_busy())
        self._update_rows_text()
        self._update_schedule_markers()

    @Slot()
    def _on_column_settings(self) -> None:
        self._update_schedule_markers()

    def specs(self) -> list[sw.ColumnSpec]:
        return [c.spec() for c in self.columns]

    # ============================================================================ app state
    def refresh_model_choices(self, choices: list[tuple[str, str]]) -> None:
        """Fill the model menu (label, path); the loaded model is selected, or listed first when not a choice."""
        self.model_bar.refresh_model_choices(choices)

    def _on_model_changed(self, bundle) -> None:
        if self.summary is not None and bundle is not self._sampled_model:
            for c in self.columns:
                c.mark_model_changed()  # the pictures are kept, marked as from the previous model
        self.model_bar.show_model(bundle)
        self.quality_tab.set_model(bundle)
        if bundle is None:
            self.schedule_view.set_curves(None)
        else:
            self._T = int(bundle.schedule_config.T)
            self._zero_terminal = bundle.schedule_config.kind in SIGMA_T_BEYOND_RAMP  # Heun: one call fewer
            named = engine.named_spacings(bundle)
            for c in self.columns:
                c.set_T(self._T, self._zero_terminal)
                c.set_model_spacings(named)
            self._offer_student_sampler(bundle, named)
            self.schedule_view.set_curves(engine.schedule_curves(bundle.schedule_config))
        self._update_rows_text()
        self._update_schedule_markers()
        self._update_buttons()

    def _offer_student_sampler(self, bundle, named: dict[str, int]) -> None:
        """A distilled student samples with DDIM over the steps it learnt, at guidance 1 (any guidance it has is
        built in): the first column becomes that ("distilled, 4 calls") unless a column already is."""
        info = engine.distilled_info(bundle)
        spacing = f"distilled-{info['calls']}" if info else None
        if spacing not in named or any(c.spec().spacing == spacing for c in self.columns):
            return
        self.columns[0].set_spec("ddim", named[spacing], 0.0, 1.0, spacing)

    @Slot(object)
    def _on_dataset_changed(self, dataset) -> None:
        self.schedule_view.set_dataset(dataset)
        self._update_buttons()

    @Slot(object)
    def _on_composition_changed(self, comp: Composition) -> None:
        for c in self.columns:
            c.set_shared_guidance(comp.guidance)
        self._update_rows_text()

    def _contexts(self) -> tuple[np.ndarray, list[str], str]:
        """(R, L) context rows for the loaded model, their names, and a note (see Composition.contexts_for)."""
        bundle = self.state.model
        if bundle is None:
            return self.state.composition.contexts_for([])
        return self.state.composition.contexts_for(list(bundle.label_names), bundle.net.config.n_cfeat)

    @Slot()
    def _update_rows_text(self) -> None:
        ctx, _, note = self._contexts()
        n = len(ctx) * self.per_row_spin.value()
        rows = f"{len(ctx)} row" + ("s" if len(ctx) != 1 else "")
        self.rows_label.setText(f"× {rows} = {n} images")
        self.rows_label.setToolTip(f"{note}: {n} images per sampler. The rows come from the context composer "
                                   "(Data & labels tab): one row of images per context.")

    def _update_schedule_markers(self) -> None:
        if self.state.model is None:
            self.schedule_view.set_columns([])
            return
        sched = self.state.model.schedule_config
        cols = [(c.spec().title, c.color, engine.timesteps_for(c.spec(), sched)) for c in self.columns]
        self.schedule_view.set_columns(cols)

    def _update_buttons(self) -> None:
        busy = self.is_busy()
        has_model = self.state.model is not None
        self.run_button.setEnabled(has_model and not busy)
        self.run_button.setToolTip("Sample every column, one after another, from the same noise" if has_model
                                   else "Load or train a model first")
        self.cancel_button.setEnabled(busy)
        self.add_button.setEnabled(len(self.columns) < MAX_COLUMNS and not busy)
        for w in (self.seed_spin, self.new_seed, self.per_row_spin, self.quality_n):
            w.setEnabled(not busy)
        self.precision_box.setEnabled(has_model and not busy)
        for c in self.columns:
            c.set_running(busy)
            c.set_removable(len(self.columns) > MIN_COLUMNS and not busy)
        self.quality_tab.update_button(busy)
        self.trajectory.set_available(bool(self.summary and self.summary.results) and not busy)

    # ============================================================================ running
    def is_busy(self) -> bool:
        return self._worker is not None

    def make_job(self) -> sw.SampleJob:
        ctx, names, _ = self._contexts()
        self._run_row_names = names
        self._run_per_row = self.per_row_spin.value()
        negative, guide_model, rows = self._guide(ctx)
        return sw.SampleJob(self.specs(), self.seed_spin.value(), ctx, self._run_per_row,
                            self.model_bar.precision(), negative, guide_model, rows)

    def _guide(self, ctx: np.ndarray) -> tuple:
        """(negative context or None, guide model path or "", per-row negatives or None) for these context rows:
        the composer's "Guide with" and each row's own "Not" label, for this model."""
        bundle = self.state.model
        names = list(bundle.label_names) if bundle is not None else []
        composition = self.state.composition
        negative, guide_model, note = composition.guide_for(names)
        if note and "no label" in note:
            self.state.status_message.emit(note[0].upper() + note[1:] + ".")
        return negative, guide_model, composition.row_negatives(names, ctx)

    @Slot()
    def run(self) -> None:
        """Sample every column from the same noise (button: Run)."""
        bundle = self.state.model
        if bundle is None or self.is_busy():
            return
        job = self._job = self.make_job()
        self.run_hint.hide()
        self._forget_results()
        self.summary = sw.RunSummary(seed=job.seed, model=bundle.description)
        self._sampled_model = bundle
        for c in self.columns:
            c.set_layout_info(job.per_row, self._run_row_names)
            c.show_frame(None, None)
            c.set_waiting("warming up" if c.index == 0 else "waiting for its turn")
        self.speed_tab.timing_note.setText("Warming up…")
        self._start(threads.GeneratorWorker(sw.run_columns, bundle, job, control=True), self._on_run_item,
                    self._on_run_finished, self._on_run_error)
        self._redraw_timer.start()

    def _start(self, worker, on_item, on_result, on_failed) -> None:
        self._worker = worker
        threads.start(worker, on_progress=on_item, on_result=on_result, on_failed=on_failed,
                      on_finished=self._on_thread_finished)
        self._update_buttons()
        self.busy_changed.emit(True)

    @Slot()
    def cancel(self) -> None:
        """Stop within one model call (button: Cancel); finished columns are kept."""
        if self.is_busy():
            self._worker.request_stop()
            self.cancel_button.setEnabled(False)
            self.state.status_message.emit("Stopping after the current model call…")

    def shutdown(self) -> None:
        """Window closing: cancel a run cooperatively; threads.py keeps the worker until its thread has ended
        (never QThread.wait() on the GUI thread: PySide's wait() keeps the GIL the ending worker needs)."""
        if self._worker is not None:
            self._worker.request_stop()
        self._redraw_timer.stop()
        self.lab.shutdown()
        settings.save_json("sample/columns", [column_settings(c) for c in self.columns])  # for the next session

    def _on_thread_finished(self) -> None:
        self._worker = None
        self._redraw_timer.stop()
        self._flush_frames()
        self._update_buttons()
        self.busy_changed.emit(False)

    def _on_run_item(self, item) -> None:
        """One of run_columns' progress items (see desktop.jobs.sampling)."""
        if isinstance(item, sw.Frame):
            self._on_progress(item)
        elif isinstance(item, sw.ColumnResult):
            self._on_column_finished(item)
        elif isinstance(item, sw.ColumnStarted):
            self._on_column_started(item.index)
        elif isinstance(item, sw.NoiseReady):
            self._on_noise_ready(item.noise)
        elif isinstance(item, sw.RunStarted):
            self._on_run_started(item.runtime_label, item.warmup_seconds)
        elif isinstance(item, sw.Calibrated):
            self.summary.calibrated_ms = dict(item.ms_per_call)
            self._update_timing()

    def _on_run_started(self, runtime_label: str, warmup: float) -> None:
        self.model_bar.show_runtime(runtime_label)
        self.state.set_runtime(runtime_label)  # the status bar says what this run uses too, not the start-up's
        self.summary.runtime_label, self.summary.warmup_seconds = runtime_label, warmup
        self.speed_tab.timing_note.setText(f"Each column runs alone, one after another, on {runtime_label}. "
                                           f"A warm-up call before the first column ({warmup:.2f} s) is not counted.")

    def _on_noise_ready(self, noise: np.ndarray) -> None:
        """Every column waits with the same starting noise on show."""
        for c in self.columns:
            c.show_frame(noise, noise)
            c.set_waiting("starting" if c.index == 0 else "waiting for its turn (same starting noise)")

    def _on_column_started(self, index: int) -> None:
        if index < len(self.columns):
            self.columns[index].set_waiting("starting")

    def _on_progress(self, frame: sw.Frame) -> None:
        self._pending[frame.column] = frame  # drawn by the paced timer, never per signal

    @Slot()
    def _flush_frames(self) -> None:
        pending, self._pending = self._pending, {}
        for i, f in pending.items():
            if i < len(self.columns):
                self.columns[i].show_frame(f.x, f.x0)
                self.columns[i].set_progress(f.step, f.steps, f.t)

    def _on_column_finished(self, result: sw.ColumnResult) -> None:
        self._pending.pop(result.index, None)
        self.summary.results.append(result)
        self.summary.results.sort(key=lambda r: r.index)  # they arrive cheapest first; kept in column order
        col = self.columns[result.index]
        col.show_frame(result.frames_x[-1], result.images)
        col.set_result(result)
        self._update_timing()

    def _on_run_finished(self, summary: sw.RunSummary) -> None:
        self.summary.cancelled = summary.cancelled
        self.summary.precision = summary.precision
        done = {r.index for r in self.summary.results}
        for c in self.columns:
            if c.index not in done:
                c.set_stopped("cancelled")
        n = len(self.summary.results)
        if summary.cancelled:
            self.state.status_message.emit(f"Sampling cancelled; {n} finished column(s) kept.")
        else:
            self.state.status_message.emit(f"Sampled {n} columns from seed {summary.seed}.")
        self._setup_scrubber()
        self.lab.record_compare(self.summary, self._job)

    def _on_run_error(self, error: BaseException) -> None:
        message = f"Sampling stopped: {engine.user_message(error)[:300]}"
        for c in self.columns:
            if c.index not in {r.index for r in self.summary.results}:
                c.set_stopped("stopped by an error")
        self._setup_scrubber()
        QMessageBox.warning(self, "Sampling stopped", message)

    def _forget_results(self) -> None:
        self.summary = None
        self._pending.clear()
        for c in self.columns:
            c.set_result(None)
        self.trajectory.set_available(False)
        self._update_timing()

    # ============================================================================ timing
    def _update_timing(self) -> None:
        results = sorted(self.summary.results, key=lambda r: r.index) if self.summary else []
        self.speed_tab.show_results(results, len(self.columns), self.summary.calibrated_ms if self.summary else None)

    # ============================================================================ trajectory
    def _setup_scrubber(self) -> None:
        results = self.summary.results if self.summary else []
        self.trajectory.set_maximum(slider_max(results, self.trajectory.mode))
        self._update_buttons()
        self._on_scrub(self.trajectory.slider.value())

    @Slot(str)
    def _on_scrub_mode(self, mode: str) -> None:
        self._setup_scrubber()

    @Slot(int)
    def _on_scrub(self, position: int) -> None:
        if not self.summary or not self.summary.results:
            return
        mode = self.trajectory.mode
        self.trajectory.position_label.setText(position_text(position, self.trajectory.slider.maximum(), mode))
        for r in self.summary.results:
            k = frame_index(r, position, mode)
            col = self.columns[r.index]
            col.show_frame(r.frames_x[k], r.frames_x0[k] if k > 0 else None)
            col.set_progress(r.frame_calls[k], r.spec.steps, r.frame_t[k])

    @Slot()
    def _on_view_changed(self) -> None:
        for c in self.columns:
            c.set_view(self.view_box.currentData())

    # ============================================================================ quality
    @Slot()
    def measure_curves(self) -> None:
        """Every column at 2 to 20 model calls: quality against calls, a curve per column."""
        self.measure_quality(sweep=True)

    @Slot()
    def measure_quality(self, sweep: bool = False) -> None:
        bundle, dataset = self.state.model, self.state.dataset
        if bundle is None or dataset is None or self.is_busy() or not self.quality_tab.available:
            return
        ctx, _, _ = self._contexts()
        n = self.quality_n.value()
        negative, guide_model, rows = self._guide(ctx)
        job = sw.SampleJob(self.specs(), self.seed_spin.value(), ctx, max(1, -(-n // len(ctx))),
                           self.model_bar.precision(), negative, guide_model, rows)
        self.quality_tab.begin([c.spec().title for c in self.columns], sweep=sweep)
        worker = threads.GeneratorWorker(qj.measure_quality, bundle, job, dataset, n=n, sweep=sweep, control=True)
        self._start(worker, self.quality_tab.on_item, self.quality_tab.on_finished, self.quality_tab.on_failed)
        self.tabs.setCurrentIndex(1)
