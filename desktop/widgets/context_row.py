"""One row of the context composer (a weight slider per label) and the ready-made rows it offers: the
course's label mixes, one row per label, no label."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFrame, QGridLayout, QLabel,
                               QSlider, QToolButton)

from core.catalog import COURSE_LABEL_NAMES

SLIDER_STEPS = 100  # a weight slider moves in steps of 0.01

COURSE_LABELS = list(COURSE_LABEL_NAMES)
# The lessons' mixed contexts, as (label, weight) pairs.
COURSE_MIXES = [[("hero", 1.0), ("food", 0.6)], [("food", 0.6), ("spell", 0.4)],
                [("hero", 1.0), ("side-facing", 1.0)], [("non-hero", 1.0), ("food", 0.6)]]


def row_title(weights, names: list[str]) -> str:
    """'face', 'hero + food 0.6', or 'no label (unconditional)' from a weight vector."""
    parts = [(w, n) for w, n in zip(weights, names) if w > 0]
    if not parts:
        return "no label (unconditional)"
    parts.sort(key=lambda p: -p[0])
    return " + ".join(n if abs(w - 1) < 1e-6 else f"{n} {w:.2g}" for w, n in parts)


def preset_list(names: list[str]) -> list[tuple[str, list[list[float]]]]:
    """(title, rows of weights) presets for these labels: all labels, mixes, single labels, none."""
    L = len(names)
    eye = np.eye(L).tolist()
    presets = [("One row per label", eye)] if L else []
    mixes = _mixes(names)
    if mixes:
        presets.append(("Label mixes" + (" (as in the course)" if names == COURSE_LABELS else ""), mixes))
    presets += [(f"Only '{n}'", [eye[i]]) for i, n in enumerate(names)]
    presets.append(("No label (unconditional)", [[0.0] * L]))
    return presets


def _mixes(names: list[str]) -> list[list[float]]:
    index = {n: i for i, n in enumerate(names)}
    if names == COURSE_LABELS:
        pairs = COURSE_MIXES
    else:  # neighbouring labels, the second at 0.6: e.g. "face + person 0.6"
        pairs = [[(names[i], 1.0), (names[i + 1], 0.6)] for i in range(min(len(names) - 1, 4))]
    rows = []
    for pair in pairs:
        w = [0.0] * len(names)
        for n, v in pair:
            w[index[n]] = v
        rows.append(w)
    return rows


class ContextRowWidget(QFrame):
    """One context vector: a title, a slider per label and a remove button."""

    changed = Signal()
    remove_requested = Signal(object)

    def __init__(self, names: list[str], weights: list[float], parent=None, extra: dict | None = None,
                 negative: str = ""):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.names = list(names)
        # Weights of labels the current model does not know, by name: kept so the row comes back intact when
        # a model that knows them is loaded again. A row asking for any of them is hidden and not sampled.
        self.extra = {k: float(v) for k, v in (extra or {}).items()}
        self.sliders: list[QSlider] = []
        self.values: list[QLabel] = []
        grid = QGridLayout(self)
        grid.setContentsMargins(8, 6, 8, 6)
        self.title = QLabel()
        f = self.title.font()
        f.setBold(True)
        self.title.setFont(f)
        self.remove_btn = QToolButton(text="✕")
        self.remove_btn.setAutoRaise(True)
        self.remove_btn.setToolTip("Remove this row")
        self.remove_btn.clicked.connect(lambda: self.remove_requested.emit(self))
        grid.addWidget(self.title, 0, 0, 1, 2)
        grid.addWidget(self.remove_btn, 0, 2, Qt.AlignmentFlag.AlignRight)
        for i, name in enumerate(self.names):
            self._add_slider(grid, i + 1, name, weights[i] if i < len(weights) else 0.0)
        self._add_not(grid, len(self.names) + 1, negative)
        grid.setColumnStretch(1, 1)
        self._update_title()

    def _add_not(self, grid: QGridLayout, row: int, negative: str) -> None:
        """The row's own "not" label: guidance pushes this row away from it ("fruit, not food")."""
        tip = ("What guidance (a scale above 1) pushes this row away from. As 'Guide with': the choice under the "
               "rows, usually no label. Not <label>: away from that label, e.g. 'fruit, not food' for a newly "
               "taught label that started as food.")
        label = QLabel("Not")
        label.setToolTip(tip)
        self.not_combo = QComboBox()
        self.not_combo.setToolTip(tip)
        self.not_combo.addItem("as 'Guide with'", "")
        for name in self.names:
            self.not_combo.addItem(name, name)
        # A label this model lacks is kept (not shown) so the row is whole again when a model knowing it returns.
        self._kept_negative = negative
        i = self.not_combo.findData(negative) if negative else 0
        self.not_combo.setCurrentIndex(max(i, 0))
        self.not_combo.currentIndexChanged.connect(self._on_not)
        grid.addWidget(label, row, 0)
        grid.addWidget(self.not_combo, row, 1, 1, 2)

    def _on_not(self, _i: int) -> None:
        self._kept_negative = self.negative()
        self._update_title()
        self.changed.emit()

    def negative(self) -> str:
        """The row's own "not" label, "" when it follows "Guide with"."""
        return str(self.not_combo.currentData() or "")

    def kept_negative(self) -> str:
        """negative(), or the label this model lacks that the row asked for (kept for a model that knows it)."""
        return self.negative() or self._kept_negative

    def set_negative(self, name: str) -> None:
        i = self.not_combo.findData(name) if name else 0
        self.not_combo.setCurrentIndex(max(i, 0))

    def title_text(self) -> str:
        """'fruit', or 'fruit, not food' with the row's own "not" label."""
        base = row_title(self.weights(), self.names)
        return f"{base}, not {self.negative()}" if self.negative() else base

    def _add_slider(self, grid: QGridLayout, row: int, name: str, value: float) -> None:
        label = QLabel(name)
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(0, SLIDER_STEPS)
        slider.setValue(round(value * SLIDER_STEPS))
        slider.setToolTip(f"How much of '{name}' this context asks for: 0 = none, 1 = fully. Mixing labels "
                          "(e.g. 1.0 and 0.6) asks the model for something in between.")
        shown = QLabel(f"{value:.2f}")
        shown.setMinimumWidth(32)
        slider.valueChanged.connect(self._on_slider)
        grid.addWidget(label, row, 0)
        grid.addWidget(slider, row, 1)
        grid.addWidget(shown, row, 2)
        self.sliders.append(slider)
        self.values.append(shown)

    def _on_slider(self, _v: int) -> None:
        for s, lab in zip(self.sliders, self.values):
            lab.setText(f"{s.value() / SLIDER_STEPS:.2f}")
        self._update_title()
        self.changed.emit()

    def weights(self) -> list[float]:
        return [s.value() / SLIDER_STEPS for s in self.sliders]

    def set_weights(self, weights: list[float]) -> None:
        for s, w in zip(self.sliders, weights):
            s.setValue(round(w * SLIDER_STEPS))

    def _update_title(self) -> None:
        self.title.setText(self.title_text())
