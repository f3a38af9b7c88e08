"""Sample & compare's layout: the model bar, run controls, the sampler columns, the trajectory bar and the
Speed / Quality / Noise schedule tabs under a splitter (SampleLayout, a mixin of SamplePanel)."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSplitter, QTabWidget, QVBoxLayout, QWidget

from desktop.panels.model_bar import ModelBar
from desktop.panels.quality_tab import QualityTab
from desktop.panels.run_controls import RunControls
from desktop.panels.sample_exports import SampleExporter
from desktop.panels.speed_tab import SpeedTab
from desktop.widgets.column_strip import ColumnStrip
from desktop.widgets.schedule_view import ScheduleView
from desktop.widgets.trajectory import TrajectoryBar

class SampleLayout:
    """Mixed into the panel: builds its widgets (the panel keeps the behaviour)."""

    # ============================================================================ construction
    def _build(self) -> None:
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(6, 6, 6, 0)
        self.model_bar = ModelBar(self.state)
        self.model_bar.model_requested.connect(self.model_requested)
        self.model_bar.open_model_requested.connect(self.open_model_requested)
        # the bar's widgets, under the names the panel has always had
        self.model_picker, self.model_label = self.model_bar.model_picker, self.model_bar.model_label
        self.precision_box = self.model_bar.precision_box
        tl.addWidget(self.model_bar)
        self.controls = RunControls()
        c = self.controls  # its widgets, under the names the panel has always had
        self.seed_spin, self.new_seed, self.per_row_spin = c.seed_spin, c.new_seed, c.per_row_spin
        self.rows_label = c.rows_label
        self.view_box, self.run_hint = c.view_box, c.run_hint
        self.add_button, self.run_button, self.cancel_button = c.add_button, c.run_button, c.cancel_button
        self.per_row_spin.valueChanged.connect(self._update_rows_text)
        self.view_box.currentIndexChanged.connect(self._on_view_changed)
        self.add_button.clicked.connect(lambda: self._add_column("ddim", 50))
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        tl.addWidget(self.controls)
        from desktop.panels.sample_lab import SampleLab  # here: it needs the controls above

        self.lab = SampleLab(self)
        self.column_strip = ColumnStrip()
        self.columns = self.column_strip.columns
        tl.addWidget(self.column_strip, 1)
        self.trajectory = TrajectoryBar()
        self.trajectory.position_changed.connect(self._on_scrub)
        self.trajectory.mode_changed.connect(self._on_scrub_mode)
        self.exports = SampleExporter(self)
        self.trajectory.export_gif.connect(self.exports.ask_gif)
        self.trajectory.save_frame.connect(self.exports.ask_frame)
        self.trajectory.save_grids.connect(self.exports.ask_final)
        tl.addWidget(self.trajectory)
        self.tabs = QTabWidget()
        self.speed_tab, self.quality_tab = SpeedTab(), QualityTab(self.state)
        self.timing_table = self.speed_tab.timing_table
        self.quality_n, self.quality_button = self.quality_tab.quality_n, self.quality_tab.quality_button
        self.quality_table = self.quality_tab.quality_table
        self.quality_button.clicked.connect(lambda: self.measure_quality())
        self.quality_tab.curves_button.clicked.connect(self.measure_curves)
        self.tabs.addTab(self.speed_tab, "Speed")
        self.tabs.addTab(self.quality_tab, "Quality")
        self.schedule_view = ScheduleView()
        self.tabs.addTab(self.schedule_view, "Noise schedule")
        self.tabs.setTabToolTip(0, "How long each sampler took and how many model calls it made")
        self.tabs.setTabToolTip(1, "How good each sampler's images are, measured on a larger batch")
        self.tabs.setTabToolTip(2, "The noise schedule, the noise levels each sampler visits, and what noise "
                                   "does to a real image")
        self._split = split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([720, 240])
        # The grids never collapse; the timings and charts below may, by dragging the handle down, so a
        # small screen can give every row of images the room.
        split.setCollapsible(0, False)
        split.setCollapsible(1, True)
        self.tabs.setMinimumHeight(self.tabs.tabBar().sizeHint().height() + 8)  # the tab bar stays in reach
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)
