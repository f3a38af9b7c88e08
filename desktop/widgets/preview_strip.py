"""The Train tab's sample previews: every grid made during a run, and a slider to look back through them."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout

from desktop.widgets.common import ImageGridView


class PreviewStrip(QGroupBox):
    """`previews`: (step, (rows, per_label, H, W, 3) uint8 grid) in the order they came."""

    def __init__(self, parent=None):
        super().__init__("Sample previews (same noise every time, one row per label)", parent)
        self.previews: list[tuple[int, np.ndarray]] = []
        self.labels: list[str] = []  # the run's label names, one per grid row
        lay = QVBoxLayout(self)
        self.view = ImageGridView(placeholder="Previews appear here every few hundred steps while training.")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setEnabled(False)
        self.slider.setToolTip("Drag to look back at earlier previews and see how the samples sharpened.")
        self.slider.valueChanged.connect(self._show)
        self.caption = QLabel("")
        row = QHBoxLayout()
        row.addWidget(QLabel("Earlier"))
        row.addWidget(self.slider, 1)
        row.addWidget(QLabel("Latest"))
        lay.addWidget(self.view, 1)
        lay.addLayout(row)
        lay.addWidget(self.caption)

    def add(self, step: int, grid: np.ndarray) -> None:
        """A new preview; shown at once when the slider was on the latest one."""
        follow = self.slider.value() == self.slider.maximum()
        self.previews.append((step, grid))
        self.slider.setEnabled(len(self.previews) > 1)
        self.slider.setMaximum(len(self.previews) - 1)
        if follow or len(self.previews) == 1:
            self.slider.setValue(len(self.previews) - 1)
        self._show(self.slider.value())

    def _show(self, index: int) -> None:
        if not (0 <= index < len(self.previews)):
            return
        step, grid = self.previews[index]
        self.view.set_grid(grid, self.labels)
        self.caption.setText(f"Preview at step {step:,} ({index + 1} of {len(self.previews)})")

    def keep_until(self, step: int) -> None:
        """Drop previews made after `step` (a run resumed from an earlier checkpoint redoes those steps)."""
        kept = [p for p in self.previews if p[0] <= step]
        self.clear()
        for s, grid in kept:
            self.add(s, grid)

    def clear(self) -> None:
        self.previews.clear()
        self.slider.setMaximum(0)
        self.slider.setEnabled(False)
        self.view.set_grid(None)
        self.caption.setText("")
