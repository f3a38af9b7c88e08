"""The "Sample & compare" tab: samplers side by side from the same noise, timed and scored.

Two to four columns, each a sampler with its settings. Run samples them one after another on a
worker thread (each timed alone, after an untimed warm-up call), from one shared starting noise and
the context composer's rows, so the differences come from the sampler alone. Below: timings, quality,
and the noise schedule with the timesteps each sampler visits; a scrubber replays every column's
denoising together and exports it.
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QFrame, QHBoxLayout, QHeaderView,
                               QLabel, QMessageBox, QPushButton, QScrollArea, QSpinBox, QSplitter, QTableWidget,
                               QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from core.catalog import SAMPLER_CATALOG, T_DEFAULT
from desktop import engine, settings, threads
from desktop.app_state import AppState, Composition
from desktop.qt_sampler_column import VIEW_BOTH, VIEW_X0, VIEW_XT, QtSamplerColumn, column_color
from desktop.qt_schedule_view import QtScheduleView
from desktop.qt_trajectory import (QtTrajectoryBar, frame_index, gif_positions, position_text,
                                   slider_max)
from desktop.jobs import export as ex
from desktop.jobs import sampling as sw
from desktop.widgets import HintLabel

# The course's DDPM (None: all T steps), its DDIM-25, and the best 10-call solver measured on the shipped
# model (docs/benchmarks.md): DPM-Solver++(3M) on the Karras spacing.
DEFAULT_COLUMNS = (("ddpm", None, "trailing"), ("ddim", 25, "trailing"), ("dpmpp3m", 10, "karras"))
MIN_COLUMNS, MAX_COLUMNS = 2, 4
REDRAW_MS = 100  # live grids repaint at most 10 times a second

PRECISION_TEXT = {"auto": "Auto (fastest here)", "fp32": "fp32 (reference)", "bf16": "bf16", "fp16": "fp16"}


OPEN_FILE = "<open file>"


class QtSamplePanel(QWidget):
    """Compare samplers on the loaded model. `shutdown()` stops a run cooperatively (window close)."""

    busy_changed = Signal(bool)
    model_requested = Signal(str)  # a checkpoint path picked in the model menu
    open_model_requested = Signal()  # "Open file…" in the model menu
    export_finished = Signal(str)  # path written
    export_failed = Signal(str)  # one-line reason

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.state = state
        self._catalog = list(SAMPLER_CATALOG)
        self.columns: list[QtSamplerColumn] = []
        self.summary: sw.RunSummary | None = None  # the last run: results of the columns that finished
        self._run_row_names: list[str] = []
        self._run_per_row = 4
        self._worker: threads.GeneratorWorker | None = None
        self._pending: dict[int, sw.Frame] = {}
        self._quality: dict[int, sw.QualityPoint] = {}
        self._quality_ok, self._quality_reason = False, "Load a model first."
        self._T = T_DEFAULT
        self._build()
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setInterval(REDRAW_MS)
        self._redraw_timer.timeout.connect(self._flush_frames)
        for sampler, steps, spacing in DEFAULT_COLUMNS:
            self._add_column(sampler, steps, spacing)
        state.model_changed.connect(self._on_model_changed)
        state.dataset_changed.connect(self._on_dataset_changed)
        state.composition_changed.connect(self._on_composition_changed)
        self._on_model_changed(state.model)
        self._on_dataset_changed(state.dataset)
        self._on_composition_changed(state.composition)

    # ============================================================================ construction
    def _build(self) -> None:
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(6, 6, 6, 0)
        tl.addLayout(self._build_header())
        tl.addLayout(self._build_controls())
        # Columns scroll sideways rather than widen the window: a fourth sampler must not push it off-screen.
        columns = QWidget()
        self._columns_box = QHBoxLayout(columns)
        self._columns_box.setContentsMargins(0, 0, 0, 0)
        self._columns_box.setSpacing(6)
        self._columns_scroll = QScrollArea()
        self._columns_scroll.setWidgetResizable(True)
        self._columns_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self._columns_scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._columns_scroll.setWidget(columns)
        tl.addWidget(self._columns_scroll, 1)
        self.trajectory = QtTrajectoryBar()
        self.trajectory.position_changed.connect(self._on_scrub)
        self.trajectory.mode_changed.connect(self._on_scrub_mode)
        self.trajectory.export_gif.connect(self._ask_export_gif)
        self.trajectory.save_frame.connect(self._ask_export_frame)
        self.trajectory.save_grids.connect(self._ask_export_final)
        tl.addWidget(self.trajectory)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_timing_tab(), "Speed")
        self.tabs.addTab(self._build_quality_tab(), "Quality")
        self.schedule_view = QtScheduleView()
        self.tabs.addTab(self.schedule_view, "Noise schedule")
        self.tabs.setTabToolTip(0, "How long each sampler took and how many model calls it made")
        self.tabs.setTabToolTip(1, "How good each sampler's images are, measured on a larger batch")
        self.tabs.setTabToolTip(2, "The noise schedule, the noise levels each sampler visits, and what noise "
                                   "does to a real image")
        self._split = split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 1)
        split.setSizes([640, 320])
        split.setChildrenCollapsible(False)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)

    def _build_header(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.model_label = QLabel()
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.runtime_label = QLabel()
        self.runtime_label.setToolTip("Where sampling runs and in which number format. Timings are only comparable "
                                      "on the same device and precision.")
        self.precision_box = QComboBox()
        self.precision_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.precision_box.setToolTip("Number format of the model calls. bf16 is about twice as fast where the "
                                      "hardware supports it;\nfp32 is the reference. Images differ very slightly.")
        for p in ("auto", "fp32", "bf16"):
            self.precision_box.addItem(PRECISION_TEXT[p], p)
        self.precision_box.currentIndexChanged.connect(self._on_precision_changed)
        self.model_picker = QComboBox()
        self.model_picker.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model_picker.setToolTip("Which model draws: the shipped one, one of your training runs, or a file.")
        self.model_picker.activated.connect(self._on_model_picked)
        row.addWidget(QLabel("Model"))
        row.addWidget(self.model_picker)
        row.addWidget(self.model_label, 1)
        row.addWidget(self.runtime_label)
        row.addWidget(QLabel("Precision"))
        row.addWidget(self.precision_box)
        return row

    def _build_controls(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(QLabel("Seed"))
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(settings.DEFAULT_SEED)
        self.seed_spin.setToolTip("Picks the starting noise. Every column starts from the same noise, so the "
                                  "differences you see come from the samplers alone.\nThe same seed gives the "
                                  "same pictures again.")
        self.new_seed = QPushButton("New seed")
        self.new_seed.setToolTip("Draw a different starting noise")
        self.new_seed.clicked.connect(lambda: self.seed_spin.setValue(random.randrange(2**31 - 1)))
        row.addWidget(self.seed_spin)
        row.addWidget(self.new_seed)
        row.addSpacing(12)
        row.addWidget(QLabel("Images per row"))
        self.per_row_spin = QSpinBox()
        self.per_row_spin.setRange(1, 16)
        self.per_row_spin.setValue(4)
        self.per_row_spin.setToolTip("How many images to draw for each context row of the context composer")
        self.per_row_spin.valueChanged.connect(self._update_rows_text)
        row.addWidget(self.per_row_spin)
        self.rows_label = QLabel()
        row.addWidget(self.rows_label)
        row.addSpacing(12)
        row.addWidget(QLabel("Show"))
        self.view_box = QComboBox()
        self.view_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.view_box.addItem("the model's guess x̂₀", VIEW_X0)
        self.view_box.addItem("the noisy image x_t", VIEW_XT)
        self.view_box.addItem("both", VIEW_BOTH)
        self.view_box.setToolTip("x_t is what the sampler holds at each step: noise turning into a picture.\n"
                                 "x̂₀ is the model's guess, at that step, of the finished picture.")
        self.view_box.currentIndexChanged.connect(self._on_view_changed)
        row.addWidget(self.view_box)
        row.addStretch(1)
        self.run_hint = HintLabel("Press Run to draw with three samplers from the same noise.")
        row.addWidget(self.run_hint)
        self.add_button = QPushButton("+ Add sampler")
        self.add_button.setToolTip("Compare up to four samplers")
        self.add_button.clicked.connect(lambda: self._add_column("ddim", 50))
        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.run_button.setToolTip("Sample every column, one after another, from the same noise")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current model call; finished columns are kept")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.add_button)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        return row

    def _build_timing_tab(self) -> QWidget:
        box = QWidget()
        lay = QHBoxLayout(box)
        left = QVBoxLayout()
        self.timing_note = HintLabel("Press Run to time the samplers.")
        left.addWidget(self.timing_note)
        self.timing_table = self._table(["Sampler", "Steps", "Model calls", "Wall time", "ms per call", "Speed-up"])
        self.timing_table.horizontalHeaderItem(2).setToolTip("Model evaluations per image (NFE): the cost that "
                                                             "matters. Guidance doubles it.")
        self.timing_table.horizontalHeaderItem(5).setToolTip("How many times faster than the slowest column")
        left.addWidget(self.timing_table, 1)
        lay.addLayout(left, 3)
        self.timing_plot = pg.PlotWidget(background="w")
        self.timing_plot.setTitle("Wall time (seconds)")
        self.timing_plot.setMouseEnabled(x=False, y=False)
        self.timing_plot.hideButtons()
        self.timing_plot.setMenuEnabled(False)
        self.timing_plot.getAxis("left").setStyle(showValues=False)
        self.timing_plot.showGrid(x=True, alpha=0.25)
        self.timing_plot.setXRange(0, 1)
        self._bars = pg.BarGraphItem(x0=[], y=[], height=[], width=[], pen=None)
        self.timing_plot.addItem(self._bars)
        self._bar_texts = [pg.TextItem(anchor=(0, 0.5), color="#222") for _ in range(MAX_COLUMNS)]
        for t in self._bar_texts:
            self.timing_plot.addItem(t)
        lay.addWidget(self.timing_plot, 2)
        return box

    def _build_quality_tab(self) -> QWidget:
        box = QWidget()
        lay = QHBoxLayout(box)
        left = QVBoxLayout()
        ctl = QHBoxLayout()
        ctl.addWidget(QLabel("Images per sampler"))
        self.quality_n = QSpinBox()
        self.quality_n.setRange(60, 2000)
        self.quality_n.setSingleStep(60)
        self.quality_n.setValue(settings.QUALITY_IMAGES)
        self.quality_n.setToolTip("More images give steadier numbers but take longer. Numbers are only comparable "
                                  "at the same count.")
        self.quality_button = QPushButton("Measure quality")
        self.quality_button.clicked.connect(self.measure_quality)
        ctl.addWidget(self.quality_n)
        ctl.addWidget(self.quality_button)
        ctl.addStretch(1)
        left.addLayout(ctl)
        self.quality_note = HintLabel(
            "Feature-FID compares the generated images with the data set through a small image classifier: lower is "
            "better. Label accuracy: how often that classifier recognises the label each image was asked for.")
        left.addWidget(self.quality_note)
        self.quality_table = self._table(["Sampler", "Feature-FID", "Label accuracy", "Seconds", "Images"])
        left.addWidget(self.quality_table, 1)
        lay.addLayout(left, 3)
        self.quality_plot = pg.PlotWidget(background="w")
        self.quality_plot.setTitle("Quality against time")
        self.quality_plot.setLabel("bottom", "seconds (log scale)")
        self.quality_plot.setLabel("left", "feature-FID (lower is better)")
        self.quality_plot.setLogMode(x=True, y=False)
        self.quality_plot.setMouseEnabled(x=False, y=False)
        self.quality_plot.hideButtons()
        self.quality_plot.setMenuEnabled(False)
        self.quality_plot.showGrid(x=True, y=True, alpha=0.25)
        # A PlotDataItem (not a bare ScatterPlotItem): it follows the plot's log-x mode.
        self._quality_points = self.quality_plot.plot([], [], pen=None, symbol="o", symbolSize=12, symbolPen=None)
        self._quality_texts = [pg.TextItem(anchor=(0, 1 - k % 2), color="#222") for k in range(MAX_COLUMNS)]
        for t in self._quality_texts:
            self.quality_plot.addItem(t)
        self._floor_line = pg.InfiniteLine(angle=0, pen=pg.mkPen("#888", style=Qt.PenStyle.DashLine),
                                           label="real vs real", labelOpts={"position": 0.1, "color": "#666"})
        self._floor_line.setVisible(False)
        self.quality_plot.addItem(self._floor_line)
        lay.addWidget(self.quality_plot, 2)
        return box

    @staticmethod
    def _table(headers: list[str]) -> QTableWidget:
        t = QTableWidget(0, len(headers))
        t.setHorizontalHeaderLabels(headers)
        t.verticalHeader().setVisible(False)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        t.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        return t

    # ============================================================================ columns
    def _add_column(self, sampler: str, steps: int | None, spacing: str = "trailing") -> QtSamplerColumn | None:
        if len(self.columns) >= MAX_COLUMNS:
            return None
        col = QtSamplerColumn(self._catalog)
        col.set_T(self._T)
        col.set_index(len(self.columns))
        col.set_spec(sampler, steps if steps is not None else self._T, spacing=spacing)
        col.set_shared_guidance(self.state.composition.guidance)
        col.set_view(self.view_box.currentData())
        col.settings_changed.connect(self._on_column_settings)
        col.remove_requested.connect(self._remove_column)
        col.save_requested.connect(self._ask_export_column)
        self.columns.append(col)
        self._columns_box.addWidget(col, 1)
        self._after_columns_changed()
        return col

    @Slot(object)
    def _remove_column(self, col: QtSamplerColumn) -> None:
        if len(self.columns) <= MIN_COLUMNS or self.is_busy():
            return
        removed = col.index
        self.columns.remove(col)
        self._columns_box.removeWidget(col)
        col.deleteLater()
        for i, c in enumerate(self.columns):
            c.set_index(i)
        if self.summary is not None:  # the other columns keep their results, renumbered
            self.summary.results = [dataclasses.replace(r, index=r.index - (r.index > removed))
                                    for r in self.summary.results if r.index != removed]
            self._quality = {k - (k > removed): dataclasses.replace(p, index=k - (k > removed))
                             for k, p in self._quality.items() if k != removed}
            self._update_timing()
            self._update_quality()
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
    @Slot(object)
    def refresh_model_choices(self, choices: list[tuple[str, str]]) -> None:
        """Fill the model menu (label, path); the loaded model is selected, or listed first when not a choice."""
        current = str(self.state.model.path) if self.state.model is not None and self.state.model.path else ""
        live = self.state.model is not None and self.state.model.meta.get("live")
        self.model_picker.blockSignals(True)
        self.model_picker.clear()
        if live or (current and current not in [p for _, p in choices]):
            self.model_picker.addItem("Paused run (in memory)" if live else Path(current).name, "")
        for label, path in choices:
            self.model_picker.addItem(label, path)
        self.model_picker.addItem("Open file…", OPEN_FILE)
        i = self.model_picker.findData(current) if current and not live else 0
        self.model_picker.setCurrentIndex(max(i, 0))
        self.model_picker.blockSignals(False)

    @Slot(int)
    def _on_model_picked(self, index: int) -> None:
        path = self.model_picker.itemData(index)
        if path == OPEN_FILE:
            self.open_model_requested.emit()
        elif path and (self.state.model is None or str(self.state.model.path) != path
                       or self.state.model.meta.get("live")):
            self.model_requested.emit(path)

    def _on_model_changed(self, bundle) -> None:
        if bundle is None:
            self.model_label.setText("<b>No model loaded.</b> Load one (File menu) or train one first.")
            self.runtime_label.setText("")
            self.schedule_view.set_curves(None)
            self._quality_ok, self._quality_reason = False, "Load a model first."
        else:
            self.model_label.setText(bundle.description)
            self.model_label.setToolTip(str(bundle.path or ""))
            self._T = int(bundle.schedule_config.T)
            for c in self.columns:
                c.set_catalog(self._catalog)  # keeps each column's sampler, clamps its steps to the new T
                c.set_T(self._T)
            self._fill_precisions(bundle)
            self.schedule_view.set_curves(engine.schedule_curves(bundle.schedule_config))
            self._quality_ok, self._quality_reason = self._check_quality(bundle)
        self._update_rows_text()
        self._update_schedule_markers()
        self._update_buttons()

    def _fill_precisions(self, bundle) -> None:
        current = self.precision_box.currentData() or "auto"
        self.precision_box.blockSignals(True)
        self.precision_box.clear()
        for p in engine.precision_choices(bundle):
            self.precision_box.addItem(PRECISION_TEXT[p], p)
        i = self.precision_box.findData(current)
        self.precision_box.setCurrentIndex(max(0, i))
        self.precision_box.blockSignals(False)
        self._on_precision_changed()

    @Slot()
    def _on_precision_changed(self) -> None:
        bundle = self.state.model
        if bundle is None:
            return
        try:
            _, label = engine.runtime_for(bundle, self.precision_box.currentData() or "auto")
        except ValueError as e:
            label = f"cannot run: {e}"
        self.runtime_label.setText(f"<b>Runs on:</b> {label}")

    def _check_quality(self, bundle) -> tuple[bool, str]:
        ok, reason = engine.quality_available()
        if not ok:
            return ok, reason
        return engine.quality_fits(bundle)

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
        """(R, L) context rows for the model, their names, and a note for the user.

        The composer's rows when they fit the model's labels; otherwise (no composition, or one made
        for a data set with other labels, e.g. a course model over the emoji set) one row per label.
        """
        bundle = self.state.model
        comp = self.state.composition
        names = list(bundle.label_names) if bundle is not None else []
        n_labels = bundle.net.config.n_cfeat if bundle is not None else max(1, len(names))
        if comp.rows and (bundle is None or max(len(r.weights) for r in comp.rows) == n_labels):
            return comp.matrix(n_labels), [r.name for r in comp.rows], f"{len(comp.rows)} rows from the context composer"
        if not names:
            return np.zeros((1, n_labels), np.float32), ["no label"], "1 row without a label"
        note = "one row per label of the model"
        if comp.rows:
            note += f" (the composer's rows are for {max(len(r.weights) for r in comp.rows)} labels, the model knows {n_labels})"
        return Composition.one_per_label(names).matrix(n_labels), names, note

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
        q_ok = self._quality_ok and self.state.dataset is not None
        self.quality_button.setEnabled(q_ok and not busy)
        self.quality_button.setToolTip(
            "Sample a larger batch with every column and score it (feature-FID, label accuracy)" if q_ok
            else (self._quality_reason if not self._quality_ok else "Load the data set the model was trained on"))
        self.trajectory.set_available(bool(self.summary and self.summary.results) and not busy)

    # ============================================================================ running
    def is_busy(self) -> bool:
        return self._worker is not None

    def make_job(self) -> sw.SampleJob:
        ctx, names, _ = self._contexts()
        self._run_row_names = names
        self._run_per_row = self.per_row_spin.value()
        return sw.SampleJob(self.specs(), self.seed_spin.value(), ctx, self._run_per_row,
                            self.precision_box.currentData() or "auto")

    @Slot()
    def run(self) -> None:
        """Sample every column from the same noise (button: Run)."""
        bundle = self.state.model
        if bundle is None or self.is_busy():
            return
        job = self.make_job()
        self.run_hint.hide()
        self._forget_results()
        self.summary = sw.RunSummary(seed=job.seed, model=bundle.description)
        for c in self.columns:
            c.set_layout_info(job.per_row, self._run_row_names)
            c.show_frame(None, None)
            c.set_waiting("warming up" if c.index == 0 else "waiting for its turn")
        self.timing_note.setText("Warming up…")
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

    @Slot(str, float)
    def _on_run_started(self, runtime_label: str, warmup: float) -> None:
        self.runtime_label.setText(f"<b>Runs on:</b> {runtime_label}")
        self.summary.runtime_label, self.summary.warmup_seconds = runtime_label, warmup
        self.timing_note.setText(f"Each column runs alone, one after another, on {runtime_label}. A warm-up call "
                                 f"before the first column ({warmup:.2f} s) is not counted.")

    @Slot(object)
    def _on_noise_ready(self, noise: np.ndarray) -> None:
        """Every column waits with the same starting noise on show."""
        for c in self.columns:
            c.show_frame(noise, noise)
            c.set_waiting("starting" if c.index == 0 else "waiting for its turn (same starting noise)")

    @Slot(int)
    def _on_column_started(self, index: int) -> None:
        if index < len(self.columns):
            self.columns[index].set_waiting("starting")

    @Slot(object)
    def _on_progress(self, frame: sw.Frame) -> None:
        self._pending[frame.column] = frame  # drawn by the paced timer, never per signal

    @Slot()
    def _flush_frames(self) -> None:
        pending, self._pending = self._pending, {}
        for i, f in pending.items():
            if i < len(self.columns):
                self.columns[i].show_frame(f.x, f.x0)
                self.columns[i].set_progress(f.step, f.steps, f.t)

    @Slot(object)
    def _on_column_finished(self, result: sw.ColumnResult) -> None:
        self._pending.pop(result.index, None)
        self.summary.results.append(result)
        col = self.columns[result.index]
        col.show_frame(result.frames_x[-1], result.images)
        col.set_result(result)
        self._update_timing()

    @Slot(object)
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
        self.timing_table.setRowCount(len(results))
        slowest = max((r.seconds for r in results), default=0.0)
        for row, r in enumerate(results):
            speedup = slowest / r.seconds if r.seconds > 0 else float("nan")
            cells = [r.spec.title, str(r.spec.steps), str(r.nfe), f"{r.seconds:.2f} s", f"{r.ms_per_call:.1f}",
                     f"{speedup:.1f}×"]
            for k, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if k == 0:
                    item.setForeground(pg.mkColor(column_color(r.index)))
                if k > 0:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.timing_table.setItem(row, k, item)
        ys = [len(self.columns) - r.index for r in results]
        self._bars.setOpts(x0=[0] * len(results), y=ys, height=[0.6] * len(results),
                           width=[r.seconds for r in results],
                           brushes=[pg.mkBrush(column_color(r.index)) for r in results], pen=None)
        for k, t in enumerate(self._bar_texts):
            if k < len(results):
                r = results[k]
                label = "slowest" if r.seconds == slowest else f"{slowest / r.seconds:.1f}× faster"
                t.setText(f" {r.spec.label}: {r.seconds:.2f} s ({label})")
                t.setPos(r.seconds, ys[k])
                t.setVisible(True)
            else:
                t.setVisible(False)
        if results:
            self.timing_plot.setXRange(0, slowest * 1.9, padding=0)
            self.timing_plot.setYRange(0.4, len(self.columns) + 0.6, padding=0)

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
    def measure_quality(self) -> None:
        bundle, dataset = self.state.model, self.state.dataset
        if bundle is None or dataset is None or self.is_busy() or not self._quality_ok:
            return
        ctx, _, _ = self._contexts()
        n = self.quality_n.value()
        job = sw.SampleJob(self.specs(), self.seed_spin.value(), ctx, max(1, -(-n // len(ctx))),
                           self.precision_box.currentData() or "auto")
        self._quality.clear()
        self._update_quality()
        worker = threads.GeneratorWorker(sw.measure_quality, bundle, job, dataset, n=n, control=True)
        self._start(worker, self._on_quality_item, self._on_quality_finished, self._on_quality_error)
        self.tabs.setCurrentIndex(1)

    def _on_quality_item(self, item) -> None:
        """One of measure_quality's progress items (see desktop.jobs.sampling)."""
        if isinstance(item, sw.QualityPoint):
            self._on_quality_point(item)
        elif isinstance(item, sw.ColumnStarted):
            self._on_quality_column(item.index)
        elif isinstance(item, sw.QualityStarted):
            self._on_quality_started(item.info)

    @Slot(dict)
    def _on_quality_started(self, info: dict) -> None:
        floor = info.get("floor")
        self._floor_line.setVisible(floor is not None)
        if floor is not None:
            self._floor_line.setValue(floor)
        parts = [f"{info['n']} images per sampler, {info['mix']}."]
        if floor is not None:
            parts.append(f"Two sets of real images score {floor:.2f} against each other at this count "
                         "(the dashed line): no sampler can do much better.")
        if not info.get("accuracy", True):
            parts.append("Label accuracy needs a model with the classifier's labels "
                         f"({', '.join(info.get('classifier_labels', []))}).")
        self.quality_note.setText(" ".join(parts))

    @Slot(int)
    def _on_quality_column(self, index: int) -> None:
        spec = self.columns[index].spec() if index < len(self.columns) else None
        title = spec.title if spec else f"column {index + 1}"
        self.state.status_message.emit(f"Measuring quality: {title} ({index + 1} of {len(self.columns)})…")
        self.quality_button.setText(f"Measuring {index + 1} of {len(self.columns)}…")

    @Slot(object)
    def _on_quality_point(self, point: sw.QualityPoint) -> None:
        self._quality[point.index] = point
        self._update_quality()

    @Slot(bool)
    def _on_quality_finished(self, cancelled: bool) -> None:
        self.quality_button.setText("Measure quality")
        self.state.status_message.emit("Quality measurement cancelled." if cancelled else "Quality measured.")

    def _on_quality_error(self, error: BaseException) -> None:
        message = f"Measuring quality stopped: {engine.user_message(error)[:300]}"
        self.quality_button.setText("Measure quality")
        QMessageBox.warning(self, "Measuring quality stopped", message)

    def _update_quality(self) -> None:
        points = [self._quality[k] for k in sorted(self._quality)]
        self.quality_table.setRowCount(len(points))
        for row, p in enumerate(points):
            acc = "—" if p.accuracy is None else f"{p.accuracy:.0%}"
            cells = [p.spec.title, f"{p.fid:.2f}", acc, f"{p.seconds:.2f}", str(p.n)]
            for k, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if k == 0:
                    item.setForeground(pg.mkColor(column_color(p.index)))
                self.quality_table.setItem(row, k, item)
        secs = [max(p.seconds, 1e-4) for p in points]
        self._quality_points.setData(secs, [p.fid for p in points],
                                     symbolBrush=[pg.mkBrush(column_color(p.index)) for p in points])
        # Labels alternate above and below their point, so close points stay readable.
        for k, t in enumerate(self._quality_texts):
            t.setVisible(k < len(points))
            if k < len(points):
                p = points[k]
                acc = "" if p.accuracy is None else f", {p.accuracy:.0%} right"
                t.setText(f" {p.spec.label}{acc}")
                t.setPos(np.log10(secs[k]), p.fid)  # in log-x mode the view's x is log10(seconds)
        if points:
            lx = np.log10(secs)
            top = max(max(p.fid for p in points), self._floor_line.value() if self._floor_line.isVisible() else 0)
            lo, hi = lx.min() - 0.3, lx.max() + 0.9
            self.quality_plot.setXRange(lo, hi, padding=0)
            # 1-2-5 ticks per decade: pyqtgraph's own log ticks crowd at this width.
            ticks = [(np.log10(v), f"{v:g}") for e in range(-3, 5) for v in (10.0**e, 2 * 10.0**e, 5 * 10.0**e)
                     if lo <= np.log10(v) <= hi]
            self.quality_plot.getAxis("bottom").setTicks([ticks, []])
            self.quality_plot.setYRange(0, top * 1.2, padding=0)

    # ============================================================================ exports
    def _export_meta(self, results) -> dict:
        return {"columns": [r.spec for r in results], "seed": self.summary.seed, "model": self.summary.model,
                "precision": self.summary.precision, "row_names": self._run_row_names,
                "nfe": [r.nfe for r in results], "seconds": [r.seconds for r in results]}

    def _results(self) -> list:
        return sorted(self.summary.results, key=lambda r: r.index) if self.summary else []

    def _grids_at(self, results, position: int | None) -> list[list[np.ndarray]]:
        """Per column, the grid(s) the current view shows, at a scrub position (None: the final images)."""
        view = self.view_box.currentData()
        out = []
        for r in results:
            k = len(r.frame_t) - 1 if position is None else frame_index(r, position, self.trajectory.mode)
            x, x0 = r.frames_x[k], (r.images if position is None else r.frames_x0[k])
            out.append([x] if view == VIEW_XT else [x0] if view == VIEW_X0 else [x, x0])
        return out

    def export_final_png(self, path: str) -> None:
        results = self._results()
        meta = self._export_meta(results)
        grids = [[r.images] for r in results]
        self._export(ex.export_png, path, grids, [r.spec.title for r in results], self._run_per_row,
                     self._run_row_names, ex.export_text(meta), None)

    def export_column_png(self, index: int, path: str) -> None:
        results = [r for r in self._results() if r.index == index]
        meta = self._export_meta(results)
        self._export(ex.export_png, path, [[results[0].images]], [results[0].spec.title], self._run_per_row,
                     self._run_row_names, ex.export_text(meta), None)

    def export_frame_png(self, path: str) -> None:
        results = self._results()
        pos = self.trajectory.slider.value()
        meta = self._export_meta(results)
        meta["position"] = position_text(pos, self.trajectory.slider.maximum(), self.trajectory.mode)
        self._export(ex.export_png, path, self._grids_at(results, pos), [r.spec.title for r in results],
                     self._run_per_row, self._run_row_names, ex.export_text(meta), meta["position"])

    def export_gif(self, path: str) -> None:
        results = self._results()
        maximum = self.trajectory.slider.maximum()
        positions = gif_positions(maximum)
        frames = [self._grids_at(results, p) for p in positions]
        captions = [position_text(p, maximum, self.trajectory.mode) for p in positions]
        meta = self._export_meta(results)
        self._export(ex.export_gif, path, frames, [r.spec.title for r in results], self._run_per_row,
                     self._run_row_names, ex.export_text(meta)["settings"], captions)

    def _export(self, fn, path: str, *args) -> None:
        def done(p):
            self.state.status_message.emit(f"Saved {p}")
            self.export_finished.emit(str(p))

        def failed(message):
            QMessageBox.warning(self, "Could not save", f"{path}: {message}")
            self.export_failed.emit(message)

        threads.run_in_background(fn, path, *args, on_done=done, on_error=failed)

    def _ask_path(self, title: str, name: str, filt: str) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self, title, str(settings.export_dir() / name), filt)
        if path:
            settings.remember_export_dir(path)
        return path or None

    @Slot()
    def _ask_export_final(self) -> None:
        if path := self._ask_path("Save final images", f"compare_seed{self.summary.seed}.png", "PNG image (*.png)"):
            self.export_final_png(path)

    @Slot()
    def _ask_export_frame(self) -> None:
        if path := self._ask_path("Save this frame", f"frame_seed{self.summary.seed}.png", "PNG image (*.png)"):
            self.export_frame_png(path)

    @Slot()
    def _ask_export_gif(self) -> None:
        if path := self._ask_path("Save animation", f"denoising_seed{self.summary.seed}.gif", "GIF animation (*.gif)"):
            self.export_gif(path)

    @Slot(object)
    def _ask_export_column(self, col: QtSamplerColumn) -> None:
        name = f"{col.spec().sampler}{col.spec().steps}_seed{self.summary.seed}.png"
        if path := self._ask_path("Save images", name, "PNG image (*.png)"):
            self.export_column_png(col.index, path)
