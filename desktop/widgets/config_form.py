"""The training settings form: one row per field of core.config.TRAIN_FIELDS that has a label, basic and
advanced; the rows, ranges, help and choices all come from that list.

No torch: core.config loads none; the values are a plain dict for TrainConfig(**values).
"""
from __future__ import annotations

import math

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QSpinBox, QToolButton,
                               QVBoxLayout, QWidget)

from core.config import TRAIN_FIELDS, ConfigField, form_fields


FIELDS: list[ConfigField] = form_fields(TRAIN_FIELDS)
FIELD_KEYS = [f.key for f in FIELDS]


def acceptable(f: ConfigField, value) -> bool:
    """True when `value` has the field's type (an int where a float is asked is fine) and keeps its rule."""
    if f.type is bool:
        ok = isinstance(value, bool)
    elif f.type is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif f.type is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, str)
    return ok and f.check(value) is None


class ConfigForm(QWidget):
    """Widgets for the TrainConfig fields; `values()` gives a dict for TrainConfig(**values)."""

    changed = Signal()

    def __init__(self, parent=None, fields: list[ConfigField] | None = None):
        super().__init__(parent)
        self.fields = FIELDS if fields is None else fields
        self.keys = [f.key for f in self.fields]
        self.widgets: dict[str, QWidget] = {}
        self._extra: dict = {}  # TrainConfig fields without a widget (e.g. log_every), kept as loaded
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        basic, advanced = QFormLayout(), QFormLayout()
        for f in self.fields:
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

    def _make(self, f: ConfigField) -> QWidget:
        if f.choices:
            w = QComboBox()
            w.addItems(list(f.choices))
            w.currentIndexChanged.connect(self.changed)
        elif f.type is int:
            lo, hi, step = f.widget
            w = QSpinBox()
            w.setRange(int(lo), int(hi))
            w.setSingleStep(int(step))
            w.setGroupSeparatorShown(True)
            w.valueChanged.connect(self.changed)
        elif f.type is float:
            lo, hi, step, decimals = f.widget
            w = QDoubleSpinBox()
            w.setDecimals(decimals)
            w.setRange(lo, hi)
            w.setSingleStep(step)
            w.valueChanged.connect(self.changed)
        else:  # bool
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
            for f in self.fields:
                if f.key in values:  # a value the field cannot hold (a damaged settings file) leaves its default
                    value = values[f.key]
                    self._set(self.widgets[f.key], f, value if acceptable(f, value) else f.default)
            self._extra = {k: v for k, v in values.items() if k not in self.keys}
        finally:
            self.blockSignals(False)
        self.changed.emit()

    @staticmethod
    def _set(w: QWidget, f: ConfigField, value) -> None:
        w.blockSignals(True)
        if f.choices:
            i = w.findText(str(value))
            w.setCurrentIndex(max(i, 0))
        elif f.type is int:
            w.setValue(int(value))
        elif f.type is float:
            w.setValue(float(value))
        else:
            w.setChecked(bool(value))
        w.blockSignals(False)

    def values(self) -> dict:
        out = dict(self._extra)
        for f in self.fields:
            w = self.widgets[f.key]
            if f.choices:
                out[f.key] = w.currentText()
            elif f.type in (int, float):
                out[f.key] = w.value()
            else:
                out[f.key] = w.isChecked()
        return out
