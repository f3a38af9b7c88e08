"""The training settings form: one row per core.train.TrainConfig field, basic and advanced.

No torch: the choices come from core.catalog, the values are a plain dict for TrainConfig(**values).
"""
from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QSpinBox, QToolButton,
                               QVBoxLayout, QWidget)

from core.catalog import (NETWORKS, LOSS_WEIGHTINGS, LR_SCHEDULES, OPTIMIZERS, PRECISIONS, PREDICTIONS, SCHEDULE_KINDS,
                          T_DEFAULT)


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
    Field("network", "Network", "choice", "Which U-Net learns. 'course': the lessons' ContextUnet, where the "
          "label only multiplies two decoder layers. 'desk': a U-Net built for labels, where the label steers "
          "every block and attention lets the whole picture agree on what it shows; about as fast per step, "
          "draws its labels more faithfully.", choices=NETWORKS),
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
          choices=LR_SCHEDULES, advanced=True),
    Field("warmup_steps", "Warm-up steps", "int", "Steps at the start during which the learning rate ramps up "
          "from zero. 0 is fine for this small network; a few hundred can help large learning rates.",
          0, 1_000_000, 50, advanced=True),
    Field("optimizer", "Optimizer", "choice", "'adam' is the course's. 'adamw' is Adam with decoupled weight "
          "decay (only differs when weight decay is above 0).", choices=OPTIMIZERS, advanced=True),
    Field("weight_decay", "Weight decay", "float", "Pulls weights gently towards zero to reduce overfitting. "
          "0 (the course's) is fine for these data sets; 0.01 is a common value with adamw.",
          0.0, 1.0, 0.001, 4, advanced=True),
    Field("dropout", "Dropout (desk network)", "float", "Share of the desk network's inner signals switched off "
          "at random while training, so it cannot lean on any one of them. 0 suits short runs; 0.1 can help long "
          "runs on few images. The course network ignores it.", 0.0, 0.9, 0.05, 2, advanced=True),
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
          "fp32 if the loss becomes NaN.", choices=PRECISIONS, advanced=True),
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
    Field("schedule", "Noise schedule", "choice", f"How noise is added over the {T_DEFAULT} timesteps. "
          "'linear' is the "
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
