"""The Train tab: data set, presets and a form bound to core.train.TrainConfig, start / pause / resume /
stop, a live loss plot, progress, and sample previews made during training.

Training runs as `desktop.jobs.training.TrainingJob` on a `threads.GeneratorWorker`. Its progress
items only fill buffers here; a 10 Hz QTimer redraws, so the GUI thread's cost does not grow with the step rate.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QInputDialog, QLabel, QMessageBox, QProgressBar, QPushButton,
                               QScrollArea, QSlider, QSpinBox, QSplitter, QToolButton, QVBoxLayout, QWidget)

from core.catalog import LOSS_WEIGHTINGS, PREDICTIONS, SCHEDULE_KINDS
from desktop import engine, settings, threads
from desktop.jobs import training as jobs
from desktop.widgets import HintLabel, ImageGridView, error_text, format_duration

# --------------------------------------------------------------------------------------------
# The form: one row per TrainConfig field
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    key: str  # the TrainConfig field name
    label: str
    kind: str  # "int", "float", "choice", "bool"
    tip: str
    lo: float = 0
    hi: float = 0
    step: float = 1
    decimals: int = 0
    choices: tuple = ()
    advanced: bool = False


FIELDS = [
    Field("n_feat", "Network width", "int", "How big the network is. A bigger network can learn finer detail "
          "but every step takes longer: 32 learns fastest on a laptop, 64 is the course's size. It goes up in "
          "steps of 8.", 8, 256, 8),
    Field("steps", "Training steps", "int", "How many optimizer steps to train for. Each step learns from one "
          "batch of images. Quick demo: 2,000 (a few minutes on a CPU); recognisable samples need "
          "several thousand.", 1, 10_000_000, 100),
    Field("batch_size", "Batch size", "int", "Images per step. The course uses 100. Larger batches give "
          "smoother learning but each step takes longer and needs more memory.", 1, 4096, 10),
    Field("lr", "Learning rate", "float", "How big each learning step is. 0.001 (the course's) works well with "
          "Adam. Too high and the loss jumps or becomes NaN; too low and learning crawls.",
          0.00001, 1.0, 0.0001, 5),
    Field("lr_schedule", "Learning-rate decay", "choice", "How the learning rate changes during the run: "
          "'linear' falls to zero at the end (the course's), 'cosine' eases down, 'constant' never changes.",
          choices=("linear", "cosine", "constant"), advanced=True),
    Field("warmup_steps", "Warm-up steps", "int", "Steps at the start during which the learning rate ramps up "
          "from zero. 0 is fine for this small network; a few hundred can help large learning rates.",
          0, 1_000_000, 50, advanced=True),
    Field("optimizer", "Optimizer", "choice", "'adam' is the course's. 'adamw' is Adam with decoupled weight "
          "decay (only differs when weight decay is above 0).", choices=("adam", "adamw"), advanced=True),
    Field("weight_decay", "Weight decay", "float", "Pulls weights gently towards zero to reduce overfitting. "
          "0 (the course's) is fine for these data sets; 0.01 is a common value with adamw.",
          0.0, 1.0, 0.001, 4, advanced=True),
    Field("context_dropout", "Context dropout", "float", "Share of training images shown without their label. "
          "This teaches the model to also draw without a label, which classifier-free guidance needs. "
          "0.1 (10%) is the usual value.", 0.0, 0.95, 0.05, 2, advanced=True),
    Field("ema_decay", "EMA decay", "float", "The saved model is a slow-moving average of the trained weights "
          "(an exponential moving average), which samples more cleanly. 0.999 is typical; it is warmed up "
          "automatically so short runs are not held back.", 0.0, 0.9999, 0.001, 4, advanced=True),
    Field("grad_clip", "Gradient clipping", "float", "Caps the size of each update (the gradient norm) to keep "
          "training stable. 1.0 is a safe value; 0 turns clipping off.", 0.0, 100.0, 0.1, 2, advanced=True),
    Field("precision", "Precision", "choice", "Number format for the network's arithmetic. 'auto' picks bf16 "
          "where the CPU or GPU runs it fast (about twice the speed of fp32) and fp32 otherwise. Choose "
          "fp32 if the loss becomes NaN.", choices=("auto", "fp32", "bf16", "fp16"), advanced=True),
    Field("hflip", "Mirror images", "bool", "Randomly flip images left-right while training: doubles the "
          "variety of the data for free. Turn off for images with text or a meaningful direction.",
          advanced=True),
    Field("prediction", "Model predicts", "choice", "What the network learns to output from a noisy image. "
          "'eps' (the course's): the noise that was added. 'v': a blend of noise and picture that stays "
          "well-behaved at every noise level, which helps the fast samplers. 'x0': the clean picture itself.",
          choices=PREDICTIONS, advanced=True),
    Field("loss_weighting", "Loss weighting", "choice", "How much each noise level counts while learning. "
          "'uniform' (the course's) counts them as they come; 'min_snr' stops the almost-clean images from "
          "dominating, which makes training converge several times faster.",
          choices=LOSS_WEIGHTINGS, advanced=True),
    Field("schedule", "Noise schedule", "choice", "How noise is added over the 500 timesteps. 'linear' is the "
          "course's schedule; 'cosine' spreads the noise levels more evenly; 'linear_zsnr' is the course's "
          "made to end in pure noise, as sampling starts (needs 'Model predicts' v or x0).",
          choices=SCHEDULE_KINDS, advanced=True),
    Field("seed", "Random seed", "int", "Same seed, same data set and same settings give the same run. Change "
          "it to get a different model from the same settings.", 0, 2**31 - 1, 1, advanced=True),
    Field("checkpoint_every", "Save every (steps)", "int", "How often the model is saved to the run folder "
          "automatically. A crash or power cut loses at most this many steps.", 1, 1_000_000, 100,
          advanced=True),
]
FIELD_KEYS = [f.key for f in FIELDS]
START_SHIPPED, START_FILE = "<shipped>", "<file>"

PRESETS = [("quick", "Quick demo (minutes on a laptop CPU)"),
           ("finetune", "Teach the shipped model these labels (fine-tune, minutes)"),
           ("course", "Course recipe (n_feat 64, eps, as in the lessons)"),
           ("custom", "Custom")]


class ConfigForm(QWidget):
    """Widgets for the TrainConfig fields; `values()` gives a dict for TrainConfig(**values)."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.widgets: dict[str, QWidget] = {}
        self._extra: dict = {}  # TrainConfig fields without a widget (e.g. log_every), kept as loaded
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        basic, advanced = QFormLayout(), QFormLayout()
        for f in FIELDS:
            w = self._make(f)
            self.widgets[f.key] = w
            label = QLabel(f.label)
            label.setToolTip(f.tip)
            (advanced if f.advanced else basic).addRow(label, w)
        outer.addLayout(basic)
        self.advanced_toggle = QToolButton(text="Advanced settings")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_toggle.setAutoRaise(True)
        self.advanced_toggle.setToolTip("Show the less common settings. The presets fill them sensibly.")
        self.advanced_box = QWidget()
        self.advanced_box.setLayout(advanced)
        self.advanced_box.setVisible(False)
        self.advanced_toggle.toggled.connect(self._on_advanced_toggled)
        outer.addWidget(self.advanced_toggle)
        outer.addWidget(self.advanced_box)

    def _make(self, f: Field) -> QWidget:
        if f.kind == "int":
            w = QSpinBox()
            w.setRange(int(f.lo), int(f.hi))
            w.setSingleStep(int(f.step))
            w.setGroupSeparatorShown(True)
            w.valueChanged.connect(self.changed)
        elif f.kind == "float":
            w = QDoubleSpinBox()
            w.setDecimals(f.decimals)
            w.setRange(f.lo, f.hi)
            w.setSingleStep(f.step)
            w.valueChanged.connect(self.changed)
        elif f.kind == "choice":
            w = QComboBox()
            w.addItems(list(f.choices))
            w.currentIndexChanged.connect(self.changed)
        else:
            w = QCheckBox()
            w.toggled.connect(self.changed)
        w.setToolTip(f.tip)
        return w

    def _on_advanced_toggled(self, on: bool) -> None:
        self.advanced_box.setVisible(on)
        self.advanced_toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    def set_values(self, values: dict) -> None:
        """Fill the widgets without emitting `changed` once per field."""
        self.blockSignals(True)
        try:
            for f in FIELDS:
                if f.key in values:
                    self._set(self.widgets[f.key], f, values[f.key])
            self._extra = {k: v for k, v in values.items() if k not in FIELD_KEYS}
        finally:
            self.blockSignals(False)
        self.changed.emit()

    @staticmethod
    def _set(w: QWidget, f: Field, value) -> None:
        w.blockSignals(True)
        if f.kind == "int":
            w.setValue(int(value))
        elif f.kind == "float":
            w.setValue(float(value))
        elif f.kind == "choice":
            i = w.findText(str(value))
            w.setCurrentIndex(max(i, 0))
        else:
            w.setChecked(bool(value))
        w.blockSignals(False)

    def values(self) -> dict:
        out = dict(self._extra)
        for f in FIELDS:
            w = self.widgets[f.key]
            if f.kind in ("int", "float"):
                out[f.key] = w.value()
            elif f.kind == "choice":
                out[f.key] = w.currentText()
            else:
                out[f.key] = w.isChecked()
        return out


# --------------------------------------------------------------------------------------------
# The loss plot
# --------------------------------------------------------------------------------------------


class _Series:
    """A growing float64 buffer (amortised doubling), so appends never copy the whole history."""

    def __init__(self, capacity: int = 4096):
        self.data = np.empty(capacity, np.float64)
        self.n = 0

    def extend(self, values) -> None:
        values = np.asarray(values, np.float64)
        need = self.n + len(values)
        if need > len(self.data):
            grown = np.empty(max(need, 2 * len(self.data)), np.float64)
            grown[:self.n] = self.data[:self.n]
            self.data = grown
        self.data[self.n:need] = values
        self.n = need

    def view(self) -> np.ndarray:
        return self.data[:self.n]

    def clear(self) -> None:
        self.n = 0


def ema_smooth(values: np.ndarray, state: list, beta: float = 0.98) -> np.ndarray:
    """Bias-corrected exponential moving average, continued from `state` = [avg, count] (NaN skipped)."""
    out = np.empty(len(values), np.float64)
    avg, count = state
    for i, v in enumerate(values):
        if math.isfinite(v):
            avg = beta * avg + (1 - beta) * v
            count += 1
        out[i] = avg / (1 - beta ** count) if count else math.nan
    state[0], state[1] = avg, count
    return out


class LossPlot(QWidget):
    """Raw + smoothed loss, optional loss by noise band, learning rate on a second axis.

    Items are created once; `refresh()` (called by the panel's timer) does setData when something
    arrived. Peak downsampling and clip-to-view keep hours of history smooth.
    """

    BAND_NAMES = ("low noise", "mid noise", "high noise")
    BAND_COLORS = ((46, 160, 67), (230, 140, 20), (200, 50, 50))

    def __init__(self, parent=None):
        super().__init__(parent)
        self.plot = pg.PlotWidget(background="w")
        self.item = self.plot.getPlotItem()
        # No grid: pyqtgraph's grid lines cost ~20 ms a repaint here (measured), more than the rest together
        self.item.setLabel("bottom", "training step")
        self.item.setLabel("left", "loss (lower is better)")
        self.legend = self.item.addLegend(offset=(-10, 10))
        self.raw = self._curve(pg.mkPen((150, 170, 210), width=1), "loss (each step)")
        self.smooth = self._curve(pg.mkPen((25, 80, 200), width=2.5), "loss (smoothed)")
        self.bands = [self._curve(pg.mkPen(c, width=1.5), f"loss at {n}")
                      for c, n in zip(self.BAND_COLORS, self.BAND_NAMES)]
        self.lr_box, self.lr_curve = self._lr_axis()
        # Ranges are set by refresh() rather than pyqtgraph's auto-range: auto-ranging two linked views
        # repaints the plot twice per update (measured: 2 paints, ~9 ms; by hand: 1 paint, ~4 ms).
        # Zooming or panning by hand stops the following until the view is double-clicked.
        self.follow = True
        for vb in (self.item.vb, self.lr_box):
            vb.disableAutoRange()
        self.item.vb.setRange(xRange=(0, 100), yRange=(0, 1.2), padding=0.03)  # until the first points
        self.item.vb.sigRangeChangedManually.connect(self._on_manual_range)
        self.plot.scene().sigMouseClicked.connect(self._on_plot_clicked)
        self.plot.setToolTip("Scroll to zoom, drag to pan; double-click to follow the newest steps again.")
        self.steps, self.loss, self.lr = _Series(), _Series(), _Series()
        self.smooth_y, self.band_y = _Series(), [_Series() for _ in range(3)]
        self._smooth_state, self._band_state = [0.0, 0], [[0.0, 0] for _ in range(3)]
        self._dirty = False
        self.redraws = 0
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot)
        self.set_bands_visible(False)

    def _curve(self, pen, name: str) -> pg.PlotDataItem:
        c = pg.PlotDataItem(pen=pen, name=name, connect="finite")
        c.setDownsampling(auto=True, method="peak")
        c.setClipToView(True)
        self.item.addItem(c)
        return c

    def _lr_axis(self):
        """A second ViewBox sharing the x axis, drawn against the right-hand axis."""
        box = pg.ViewBox()
        self.item.showAxis("right")
        self.item.scene().addItem(box)
        axis = self.item.getAxis("right")
        axis.linkToView(box)
        axis.setLabel("learning rate", color=(130, 60, 160))
        box.setXLink(self.item)
        curve = pg.PlotDataItem(pen=pg.mkPen((130, 60, 160), width=1.5, style=Qt.PenStyle.DashLine))
        curve.setDownsampling(auto=True, method="peak")
        box.addItem(curve)
        self.legend.addItem(curve, "learning rate (right axis)")
        self.item.vb.sigResized.connect(self._sync_lr_box)
        return box, curve

    def _sync_lr_box(self) -> None:
        self.lr_box.setGeometry(self.item.vb.sceneBoundingRect())
        self.lr_box.linkedViewChanged(self.item.vb, self.lr_box.XAxis)

    # --- data ------------------------------------------------------------------------------------------
    def append(self, metrics: list) -> None:
        """metrics: core.train.StepMetrics (step, loss, lr, band_loss are read)."""
        if not metrics:
            return
        a = np.array([(m.step, m.loss, m.lr, *m.band_loss) for m in metrics], np.float64)
        self.steps.extend(a[:, 0])
        self.loss.extend(a[:, 1])
        self.lr.extend(a[:, 2])
        self.smooth_y.extend(ema_smooth(a[:, 1], self._smooth_state))
        for k in range(3):
            self.band_y[k].extend(ema_smooth(a[:, 3 + k], self._band_state[k]))
        self._dirty = True

    def clear(self) -> None:
        for s in (self.steps, self.loss, self.lr, self.smooth_y, *self.band_y):
            s.clear()
        self._smooth_state, self._band_state = [0.0, 0], [[0.0, 0] for _ in range(3)]
        self.follow = True  # a new run: follow its curve again
        self._dirty = True
        self.refresh()

    @property
    def n_points(self) -> int:
        return self.steps.n

    def refresh(self) -> bool:
        """Push the buffers to the plot items if anything changed; True when it redrew."""
        if not self._dirty:
            return False
        x = self.steps.view()
        self.raw.setData(x, self.loss.view())
        self.smooth.setData(x, self.smooth_y.view())
        for curve, ys in zip(self.bands, self.band_y):
            if curve.isVisible():
                curve.setData(x, ys.view())
        self.lr_curve.setData(x, self.lr.view())
        if self.follow and len(x):
            self._fit_ranges(x)
        self._dirty = False
        self.redraws += 1
        return True

    def _fit_ranges(self, x: np.ndarray) -> None:
        shown = [self.loss.view(), self.smooth_y.view()] + [y.view() for c, y in zip(self.bands, self.band_y)
                                                             if c.isVisible()]
        y = np.concatenate(shown)
        y = y[np.isfinite(y) & (y > 0)] if self.log_y else y[np.isfinite(y)]
        if y.size:
            lo, hi = (np.log10(y.min()), np.log10(y.max())) if self.log_y else (0.0, float(y.max()))
            self.item.vb.setRange(xRange=(0, max(float(x[-1]), 1.0)), yRange=(lo, hi if hi > lo else lo + 1),
                                  padding=0.03)
        lr = self.lr.view()
        lr_max = float(np.nanmax(lr)) if lr.size else 0.0
        self.lr_box.setYRange(0.0, lr_max if lr_max > 0 else 1.0, padding=0.03)

    def _on_manual_range(self, *_):
        self.follow = False

    def _on_plot_clicked(self, event) -> None:
        if event.double():
            self.follow = True
            self._dirty = True
            self.refresh()

    @property
    def log_y(self) -> bool:
        return bool(self.item.ctrl.logYCheck.isChecked())

    # --- view options ------------------------------------------------------------------------------------
    def set_log_scale(self, on: bool) -> None:
        self.item.setLogMode(x=False, y=on)
        self.item.getAxis("right").setLogMode(False, False)  # the learning-rate axis stays linear
        self._dirty = True
        self.refresh()

    def set_bands_visible(self, on: bool) -> None:
        for c, name in zip(self.bands, self.BAND_NAMES):
            c.setVisible(on)
            self.legend.removeItem(c)  # a hidden curve should not take a legend line
            if on:
                self.legend.addItem(c, f"loss at {name}")
        if on:
            self._dirty = True
            self.refresh()

    def set_lr_visible(self, on: bool) -> None:
        self.lr_curve.setVisible(on)
        self.item.getAxis("right").setVisible(on)
        self.legend.removeItem(self.lr_curve)
        if on:
            self.legend.addItem(self.lr_curve, "learning rate (right axis)")


# --------------------------------------------------------------------------------------------
# The panel
# --------------------------------------------------------------------------------------------


class QtTrainPanel(QWidget):
    """Train tab. States: idle, starting, running, paused, stopping."""

    dataset_requested = Signal(str)  # a built-in name the user picked
    open_dataset_requested = Signal()  # "Open another data set..." picked
    run_state_changed = Signal(str)

    REDRAW_MS = 100  # the progress line updates at ~10 Hz
    PLOT_EVERY = 2  # the plot on every 2nd tick (~5 Hz): a repaint costs ~10-15 ms of the GUI thread's CPU

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.run_state = "idle"
        self._job: jobs.TrainingJob | None = None
        self._worker: threads.GeneratorWorker | None = None
        self._presets: dict[str, dict] = {}
        self._last_run_dir: str | None = None
        self._run_labels: list[str] = []
        self._latest = None  # the last core.train.StepMetrics
        self._run_info: jobs.RunStarted | None = None
        self.previews: list[tuple[int, np.ndarray]] = []
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
        self._update_buttons()

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
        col.addWidget(self._build_data_box())
        col.addWidget(self._build_settings_box())
        col.addWidget(self._build_controls())
        col.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(330)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        return scroll

    def _build_data_box(self) -> QGroupBox:
        box = QGroupBox("Data set")
        lay = QVBoxLayout(box)
        self.dataset_combo = QComboBox()
        self.dataset_combo.setToolTip("The images the model learns to draw. The built-in emoji set is a good "
                                      "start; open your own images from the File menu or the Data & labels tab.")
        for name in engine.builtin_names():
            self.dataset_combo.addItem(f"Built-in: {name}", name)
        self.dataset_combo.addItem("Open another data set…", "__open__")
        self.dataset_combo.activated.connect(self._on_dataset_combo_activated)
        self.dataset_info = HintLabel("Loading the built-in data set…")
        lay.addWidget(self.dataset_combo)
        lay.addWidget(self.dataset_info)
        return box

    def _build_settings_box(self) -> QGroupBox:
        box = QGroupBox("Settings")
        lay = QVBoxLayout(box)
        self.preset_combo = QComboBox()
        for key, text in PRESETS:
            self.preset_combo.addItem(text, key)
        self.preset_combo.setToolTip("Ready-made settings. Quick demo trains a small network in minutes on a "
                                     "CPU; Course uses the lessons' network (n_feat 64), slower but closer to the "
                                     "course. Changing any value below switches to Custom.")
        self.preset_combo.currentIndexChanged.connect(self._on_preset_changed)
        self.form = ConfigForm()
        self.form.changed.connect(self._on_form_changed)
        self.preview_every = QSpinBox()
        self.preview_every.setRange(0, 1_000_000)
        self.preview_every.setSingleStep(50)
        self.preview_every.setValue(200)
        self.preview_every.setToolTip("Every this many steps, draw a grid of samples (one row per label) from the "
                                      "same fixed noise, so you can watch them sharpen. 0 turns previews off. "
                                      "Each preview costs about as much as a few training steps.")
        self.start_from = QComboBox()
        self.start_from.addItem("Scratch (a new model)", "")
        self.start_from.addItem("The shipped model (fine-tune)", START_SHIPPED)
        self.start_from.addItem("Another model file…", START_FILE)
        self.start_from.setToolTip("Where training begins. From scratch takes a long time to draw well; starting "
                                   "from the shipped model keeps what it can draw and learns your new or renamed "
                                   "labels in minutes (a new label starts as 'no label').")
        self.start_from.activated.connect(self._on_start_from)
        self._start_file = ""
        row = QFormLayout()
        row.addRow("Preset", self.preset_combo)
        row.addRow("Start from", self.start_from)
        lay.addLayout(row)
        lay.addWidget(self.form)
        prev = QFormLayout()
        prev.addRow("Preview every (steps)", self.preview_every)
        lay.addLayout(prev)
        box.setEnabled(False)  # until the presets (which need torch) have arrived
        self.settings_box = box
        return box

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
        col.addLayout(self._build_plot_options())
        split = QSplitter(Qt.Orientation.Vertical)
        self.loss_plot = LossPlot()
        split.addWidget(self.loss_plot)
        split.addWidget(self._build_preview_box())
        split.setSizes([400, 360])
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

    def _build_preview_box(self) -> QWidget:
        box = QGroupBox("Sample previews (same noise every time, one row per label)")
        lay = QVBoxLayout(box)
        self.preview_view = ImageGridView(placeholder="Previews appear here every few hundred steps while training.")
        self.preview_slider = QSlider(Qt.Orientation.Horizontal)
        self.preview_slider.setEnabled(False)
        self.preview_slider.setToolTip("Drag to look back at earlier previews and see how the samples sharpened.")
        self.preview_slider.valueChanged.connect(self._show_preview)
        self.preview_caption = QLabel("")
        row = QHBoxLayout()
        row.addWidget(QLabel("Earlier"))
        row.addWidget(self.preview_slider, 1)
        row.addWidget(QLabel("Latest"))
        lay.addWidget(self.preview_view, 1)
        lay.addLayout(row)
        lay.addWidget(self.preview_caption)
        return box

    # --- presets and the form ----------------------------------------------------------------------------
    def set_presets(self, presets: dict[str, dict]) -> None:
        """Called once torch has loaded: {'quick': TrainConfig dict, 'course': ..., ...}."""
        self._presets = presets
        self.settings_box.setEnabled(True)
        saved = self._saved_choices()
        if saved and saved.get("preset") == "custom" and saved.get("config"):
            self.form.set_values({**presets["quick"], **saved["config"]})
            self._select_preset("custom")
        else:
            self._select_preset(saved.get("preset", "quick") if saved else "quick", apply=True)
        if saved and "preview_every" in saved:
            self.preview_every.setValue(int(saved["preview_every"]))
        last_run = settings.qsettings().value("train/last_run", "")
        if last_run and (Path(last_run) / "resume.safetensors").is_file():
            self._last_run_dir = last_run
        self._update_buttons()

    def _select_preset(self, key: str, apply: bool = False) -> None:
        i = self.preset_combo.findData(key)
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentIndex(max(i, 0))
        self.preset_combo.blockSignals(False)
        if apply and key in self._presets:
            self.form.set_values(self._presets[key])

    def _on_preset_changed(self, _index: int) -> None:
        key = self.preset_combo.currentData()
        if key in self._presets:
            self.form.set_values(self._presets[key])
        if key == "finetune":
            self.start_from.setCurrentIndex(self.start_from.findData(START_SHIPPED))
        elif key in self._presets and self.start_from.currentData() == START_SHIPPED:
            self.start_from.setCurrentIndex(0)

    def _on_start_from(self, index: int) -> None:
        if self.start_from.itemData(index) != START_FILE:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Start from a model", str(settings.runs_dir()),
                                              "Diffusion Desk models (*.safetensors)")
        if path:
            self._start_file = path
            self.start_from.setItemText(index, f"Model: {Path(path).parent.name}/{Path(path).name}")
        else:
            self.start_from.setCurrentIndex(0)

    def teach(self) -> bool:
        """'Teach the model these labels': the fine-tune preset from the shipped model, started at once."""
        if self.run_state != "idle":
            return False
        self.preset_combo.setCurrentIndex(self.preset_combo.findData("finetune"))
        self.start_from.setCurrentIndex(self.start_from.findData(START_SHIPPED))
        if not self.init_checkpoint():
            self._error("No shipped model", "This installation has no shipped model to start from; train one "
                        "from scratch instead.")
            return False
        return self.start()

    def init_checkpoint(self) -> str:
        """The checkpoint a new run starts from ('' = from scratch)."""
        key = self.start_from.currentData()
        if key == START_SHIPPED:
            return engine.default_checkpoint() or ""
        return self._start_file if key == START_FILE else ""

    def _on_form_changed(self) -> None:
        values = self.form.values()
        match = next((k for k, _ in PRESETS if k in self._presets and self._same(values, self._presets[k])), "custom")
        self._select_preset(match)

    @staticmethod
    def _same(values: dict, preset: dict) -> bool:
        for k in FIELD_KEYS:
            a, b = values.get(k), preset.get(k)
            if isinstance(b, float):
                if not math.isclose(float(a), b, rel_tol=1e-6, abs_tol=1e-9):
                    return False
            elif a != b:
                return False
        return True

    def apply_config(self, values: dict) -> None:
        """Fill the form (tests and resuming use it); the preset follows."""
        base = self._presets.get("quick", {})
        self.form.set_values({**base, **values})

    def _saved_choices(self) -> dict:
        raw = settings.qsettings().value("train/last", "")
        try:
            return json.loads(raw) if raw else {}
        except (TypeError, ValueError):
            return {}

    def _save_choices(self) -> None:
        choice = {"preset": self.preset_combo.currentData(), "config": self.form.values(),
                  "preview_every": self.preview_every.value()}
        settings.qsettings().setValue("train/last", json.dumps(choice))

    # --- data set -----------------------------------------------------------------------------------------
    def _on_dataset_combo_activated(self, index: int) -> None:
        key = self.dataset_combo.itemData(index)
        ds = self.state.dataset
        if key == "__open__":
            self._sync_dataset_combo()  # stay on the current set until another one is opened
            self.open_dataset_requested.emit()
        elif key in engine.builtin_names() and (ds is None or ds.source != f"builtin:{key}"):
            if ds is not None and not self._confirm_leave_dataset(ds, key):
                self._sync_dataset_combo()
                return
            self.dataset_requested.emit(key)

    def _confirm_leave_dataset(self, ds, key: str) -> bool:
        """Going back to a pristine built-in set drops the current one from training: ask first."""
        answer = QMessageBox.question(
            self, "Use the original data set?",
            f"Train on the original {key} instead of the current set “{ds.name}” ({ds.n_labels} labels)?\n\n"
            "The current set stays saved; reopen it from File → Recent.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _sync_dataset_combo(self) -> None:
        ds = self.state.dataset
        combo = self.dataset_combo
        combo.blockSignals(True)
        i = combo.findData("__current__")
        if i >= 0:
            combo.removeItem(i)
        if ds is None:
            combo.setCurrentIndex(0)
        elif ds.source == f"builtin:{ds.name}" and combo.findData(ds.name) >= 0:
            combo.setCurrentIndex(combo.findData(ds.name))
        else:  # an edited or imported set is what training uses: offer it first, named as such
            edited = " — edited" if ds.source.startswith("builtin:") or "edited" in ds.name else ""
            combo.insertItem(0, f"Current: {ds.name} ({ds.n_labels} labels{edited})", "__current__")
            combo.setCurrentIndex(0)
        combo.blockSignals(False)

    def _on_dataset_changed(self, ds) -> None:
        self._sync_dataset_combo()
        self._show_dataset_info()
        self._update_buttons()

    def _on_label_names_changed(self, names: list) -> None:
        self._sync_dataset_combo()  # an edited set is the one training will use: show it as such
        self._show_dataset_info()

    def _show_dataset_info(self) -> None:
        ds = self.state.dataset
        if ds is None:
            self.dataset_info.setText("No data set loaded.")
            return
        names = ", ".join(ds.label_names) if ds.label_names else "none (the model will be unconditional)"
        self.dataset_info.setText(f"{ds.n:,} images, {ds.size}×{ds.size} pixels.\n"
                                  f"{ds.n_labels} labels: {names}")

    # --- commands -------------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start a new run with the form's settings; False (with a dialog) when it cannot."""
        if self.run_state != "idle" or self.state.dataset is None:
            return False
        try:
            config = engine.train_config_class()(**{**self.form.values(), "init": self.init_checkpoint()})
        except (TypeError, ValueError) as e:
            self._error("These settings cannot be used", f"{e}. Fix the value and press Start again.")
            return False
        ds = self.state.dataset
        self._save_choices()
        self.loss_plot.clear()
        self._clear_previews()
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
        total = total_steps or self._ask_total_steps(info)
        if total is None:
            return False
        self.loss_plot.clear()
        self._clear_previews()
        self.loss_plot.append(jobs.logged_metrics(folder))
        self._launch(ds, out_dir=Path(folder), resume=True, total_steps=total)
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
        self._run_labels = list(ds.label_names) or ["(no label)"]
        job = jobs.TrainingJob(ds, preview_every=self.preview_every.value(), threads=self.train_threads, **kwargs)
        worker = threads.GeneratorWorker(job.run, control=True)
        self._job, self._worker = job, worker
        self._end_message, self._threads_text = "", ""
        self._set_state("starting")
        self.status.setText("Preparing the run (building the network, loading the images)…")
        threads.start(worker, on_progress=self._on_item, on_failed=self._on_failed, on_finished=self._on_thread_finished)
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
        self.progress.setValue(int(m.step))
        self.status.setText(f"Step {int(m.step):,} of {total:,}  ·  {m.images_per_s:,.0f} images/s  ·  "
                            f"loss {m.loss:.4f}  ·  {format_duration(m.elapsed)} elapsed  ·  "
                            f"about {format_duration(m.eta)} left"
                            f"{self._threads_text}")

    def _on_threads_changed(self, n: int) -> None:
        self._threads_text = f"  ·  {n} CPU thread{'s' if n > 1 else ''}"

    def _on_preview(self, step: int, grid) -> None:
        follow = self.preview_slider.value() == self.preview_slider.maximum()
        self.previews.append((step, grid))
        self.preview_slider.setEnabled(len(self.previews) > 1)
        self.preview_slider.setMaximum(len(self.previews) - 1)
        if follow or len(self.previews) == 1:
            self.preview_slider.setValue(len(self.previews) - 1)
        self._show_preview(self.preview_slider.value())

    def _show_preview(self, index: int) -> None:
        if not (0 <= index < len(self.previews)):
            return
        step, grid = self.previews[index]
        self.preview_view.set_grid(grid, self._run_labels)
        self.preview_caption.setText(f"Preview at step {step:,} ({index + 1} of {len(self.previews)})")

    def _clear_previews(self) -> None:
        self.previews.clear()
        self.preview_slider.setMaximum(0)
        self.preview_slider.setEnabled(False)
        self.preview_view.set_grid(None)
        self.preview_caption.setText("")

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
        head = "Finished" if how == "finished" else "Stopped"
        self._end_message = (f"{head} after {format_duration(elapsed)} of training.{loss} "
                             f"{getattr(self, '_saved_text', '')} The model is now loaded in Sample & compare.")
        if how == "stopped":
            self._end_message += " Press Resume to continue it later."
        self.state.set_model(bundle)

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
        self.run_state = s
        self._update_buttons()
        self.run_state_changed.emit(s)

    def _update_buttons(self) -> None:
        s = self.run_state
        ready = bool(self._presets) and self.state.dataset is not None
        self.start_btn.setEnabled(s == "idle" and ready)
        self.pause_btn.setEnabled(s == "running")
        self.resume_btn.setEnabled(s == "paused" or (s == "idle" and bool(self._last_run_dir) and ready))
        self.stop_btn.setEnabled(s in ("starting", "running", "pausing", "paused"))
        self.resume_folder_btn.setEnabled(s == "idle" and ready)
        editable = s == "idle" and bool(self._presets)
        self.settings_box.setEnabled(editable)
        self.dataset_combo.setEnabled(s == "idle")

    def _error(self, title: str, text: str) -> None:
        QMessageBox.warning(self, title, error_text(text))
