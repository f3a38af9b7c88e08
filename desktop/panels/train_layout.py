"""The Train tab's layout: the data set and settings column, the run controls, the progress, loss plot and
previews (TrainLayout, a mixin of desktop.panels.train_panel.TrainPanel)."""
from __future__ import annotations


from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea,
                               QSplitter, QVBoxLayout, QWidget)

from core.progress import TimeLeft
from desktop.panels.multi_gpu import MultiGpuOption
from desktop.panels.train_dataset_box import DatasetBox
from desktop.panels.train_settings import TrainSettingsBox
from desktop.widgets.loss_plot import LossPlot
from desktop.widgets.label_progress import LabelProgressView
from desktop.widgets.preview_strip import PreviewStrip


class TrainLayout:
    """Mixed into the panel: builds its widgets (the panel keeps the behaviour)."""

    # --- layout -------------------------------------------------------------------------------------------
    def _build(self) -> None:
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self._build_left())
        splitter.addWidget(self._build_right())
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([360, 900])
        self.splitter = splitter
        lay = QVBoxLayout(self)
        lay.addWidget(splitter)

    def _build_left(self) -> QWidget:
        inner = QWidget()
        col = QVBoxLayout(inner)
        self.dataset_box = DatasetBox(self.state)
        self.dataset_box.dataset_requested.connect(self.dataset_requested)
        self.dataset_box.open_dataset_requested.connect(self.open_dataset_requested)
        self.dataset_combo, self.dataset_info = self.dataset_box.combo, self.dataset_box.info
        col.addWidget(self.dataset_box)
        self.settings_box = TrainSettingsBox()
        # the settings box's widgets, under the names the panel has always had
        self.preset_combo, self.start_from = self.settings_box.preset_combo, self.settings_box.start_from
        self.form, self.preview_every = self.settings_box.form, self.settings_box.preview_every
        col.addWidget(self.settings_box)
        col.addWidget(self._build_controls())
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(330)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        return scroll

    def _build_controls(self) -> QGroupBox:
        box = QGroupBox("Run")
        lay = QVBoxLayout(box)
        row = QHBoxLayout()
        self.start_btn = QPushButton("Start")
        self.start_btn.setToolTip("Start a new training run with these settings. It is saved in its own folder "
                                  "and checkpointed automatically.")
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setToolTip("Pause between two steps. The model stays in memory and is loaded into "
                                  "Sample & compare, so you can try it and come back.")
        self.resume_btn = QPushButton("Resume")
        self.resume_btn.setToolTip("Continue a paused run, or continue the last stopped run from its checkpoint.")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setToolTip("Stop training and save a checkpoint. You can resume it later.")
        for b in (self.start_btn, self.pause_btn, self.resume_btn, self.stop_btn):
            row.addWidget(b)
        lay.addLayout(row)
        self.resume_folder_btn = QPushButton("Resume a run from its folder…")
        self.resume_folder_btn.setToolTip("Continue a stopped or crashed run: choose its folder under runs/ in "
                                          "your data folder. It continues from the last checkpoint.")
        lay.addWidget(self.resume_folder_btn)
        self.multi_gpu = MultiGpuOption()  # visible with more than one CUDA device
        lay.addWidget(self.multi_gpu)
        self.start_btn.clicked.connect(self.start)
        self.pause_btn.clicked.connect(self.pause)
        self.resume_btn.clicked.connect(self.resume)
        self.stop_btn.clicked.connect(self.stop)
        self.resume_folder_btn.clicked.connect(self._on_resume_folder_clicked)
        return box

    def _build_right(self) -> QWidget:
        right = QWidget()
        col = QVBoxLayout(right)
        self.progress = QProgressBar()
        self.progress.setFormat("Not started")
        self.progress.setValue(0)
        self.status = QLabel("Choose a preset and press Start. The loss curve and sample previews appear here.")
        self.status.setWordWrap(True)
        self.status.setMinimumHeight(self.status.fontMetrics().lineSpacing() * 2 + 6)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        col.addWidget(self.progress)
        col.addWidget(self.status)
        self.use_model_btn = QPushButton("Use this model for sampling")
        self.use_model_btn.setToolTip("Load the model this run ended with into Sample & compare. After a short run "
                                      "the model you were sampling with is kept until you press this.")
        self.use_model_btn.setVisible(False)
        self.use_model_btn.clicked.connect(self._on_use_run_model)
        col.addWidget(self.use_model_btn, 0, Qt.AlignmentFlag.AlignLeft)
        self._ended_bundle = None
        self._time_left = TimeLeft()  # the time-left figure, from the recent pace
        col.addLayout(self._build_plot_options())
        split = QSplitter(Qt.Orientation.Vertical)
        self.loss_plot = LossPlot()
        split.addWidget(self.loss_plot)
        self.label_progress = LabelProgressView()  # shown for a fine-tune that teaches new labels
        split.addWidget(self.label_progress)
        self.preview_strip = PreviewStrip()
        self.previews, self.preview_view = self.preview_strip.previews, self.preview_strip.view
        split.addWidget(self.preview_strip)
        split.setSizes([400, 200, 360])
        col.addWidget(split, 1)
        return right

    def _build_plot_options(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.log_check = QCheckBox("Log scale")
        self.log_check.setToolTip("Show the loss on a logarithmic axis: the late, slow improvements become visible.")
        self.log_check.toggled.connect(lambda on: self.loss_plot.set_log_scale(on))
        self.bands_check = QCheckBox("Loss by noise level")
        self.bands_check.setToolTip("Split the loss by how noisy the training images were: low noise (fine "
                                    "detail), mid, high noise (overall shape). Each is smoothed.")
        self.bands_check.toggled.connect(lambda on: self.loss_plot.set_bands_visible(on))
        self.lr_check = QCheckBox("Learning rate")
        self.lr_check.setChecked(True)
        self.lr_check.setToolTip("Show the learning rate (dashed, right axis).")
        self.lr_check.toggled.connect(lambda on: self.loss_plot.set_lr_visible(on))
        for w in (self.log_check, self.bands_check, self.lr_check):
            row.addWidget(w)
        row.addStretch(1)
        return row
