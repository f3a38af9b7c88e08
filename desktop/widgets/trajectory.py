"""Trajectory scrubber: one slider over the denoising run of every column at once, play/pause, exports.

Columns take different numbers of steps (DDPM 500, DDIM 25, ...), so the slider lines them up either
by noise level t (each column shows the last state it reached at or above t) or by model calls
(each column after that many calls: the fair race at equal cost).
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QSlider, QWidget

BY_T, BY_CALLS = "t", "calls"
PLAY_FPS = 15
PLAY_SECONDS = 5  # a whole run plays in about this long, however many steps it has
GIF_FRAMES = 60


def frame_index(result, position: int, mode: str) -> int:
    """Which stored frame of a ColumnResult to show at slider `position` (0 = start, the noise)."""
    if mode == BY_T:
        t_star = result.frame_t[0] - position
        return int(np.count_nonzero(np.asarray(result.frame_t) >= t_star)) - 1
    return int(np.count_nonzero(np.asarray(result.frame_calls) <= position)) - 1


def slider_max(results, mode: str) -> int:
    if not results:
        return 0
    if mode == BY_T:
        return int(results[0].frame_t[0])
    return int(max(r.frame_calls[-1] for r in results))


def position_text(position: int, maximum: int, mode: str) -> str:
    if mode == BY_T:
        return f"noise level t = {maximum - position}"
    return f"after {position} model calls"


def gif_positions(maximum: int, frames: int = GIF_FRAMES) -> list[int]:
    return sorted({int(round(v)) for v in np.linspace(0, maximum, min(frames, maximum + 1))})


class TrajectoryBar(QWidget):
    """Play/pause, the slider, 'line up by', and the export buttons. The panel does the drawing."""

    position_changed = Signal(int)
    mode_changed = Signal(str)
    export_gif = Signal()
    save_frame = Signal()
    save_grids = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.play_button = QPushButton("▶ Play")
        self.play_button.setToolTip("Play the denoising of all columns together; press again to pause")
        self.play_button.setCheckable(True)
        self.play_button.toggled.connect(self._on_play_toggled)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setToolTip("Scrub through the denoising: left is the starting noise, right the finished images.\n"
                               "Every column shows the noisy image x_t and/or its guess of the clean image x̂₀ at "
                               "this point.")
        self.slider.valueChanged.connect(self._on_slider)
        self.mode_box = QComboBox()
        self.mode_box.addItem("line up by noise level t", BY_T)
        self.mode_box.addItem("line up by model calls", BY_CALLS)
        self.mode_box.setToolTip("Noise level: compare the columns at the same point of the schedule.\n"
                                 "Model calls: compare them after the same amount of work.")
        self.mode_box.currentIndexChanged.connect(lambda _: self.mode_changed.emit(self.mode))
        self.position_label = QLabel()
        self.position_label.setMinimumWidth(150)
        self.gif_button = QPushButton("Save GIF…")
        self.gif_button.setToolTip("Save the denoising of all columns as an animated GIF")
        self.gif_button.clicked.connect(self.export_gif)
        self.frame_button = QPushButton("Save frame…")
        self.frame_button.setToolTip("Save what the columns show at this slider position as a PNG (settings inside)")
        self.frame_button.clicked.connect(self.save_frame)
        self.grids_button = QPushButton("Save final images…")
        self.grids_button.setToolTip("Save every column's finished images side by side as one PNG, with the sampler "
                                     "settings, seed and model written inside the file")
        self.grids_button.clicked.connect(self.save_grids)
        lay.addWidget(self.play_button)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.position_label)
        lay.addWidget(self.mode_box)
        lay.addWidget(self.gif_button)
        lay.addWidget(self.frame_button)
        lay.addWidget(self.grids_button)
        self._timer = QTimer(self)
        self._timer.setInterval(1000 // PLAY_FPS)
        self._timer.timeout.connect(self._advance)
        self.set_available(False)

    @property
    def mode(self) -> str:
        return self.mode_box.currentData()

    def set_available(self, available: bool) -> None:
        if not available:
            self.play_button.setChecked(False)
        for w in (self.play_button, self.slider, self.mode_box, self.gif_button, self.frame_button, self.grids_button):
            w.setEnabled(available)

    def set_maximum(self, maximum: int, *, to_end: bool = True) -> None:
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, maximum))
        if to_end:
            self.slider.setValue(maximum)
        self.slider.blockSignals(False)
        self.slider.setPageStep(max(1, maximum // 10))

    @Slot(int)
    def _on_slider(self, value: int) -> None:
        self.position_changed.emit(value)

    @Slot(bool)
    def _on_play_toggled(self, on: bool) -> None:
        self.play_button.setText("❚❚ Pause" if on else "▶ Play")
        if on:
            if self.slider.value() >= self.slider.maximum():
                self.slider.setValue(0)
            self._timer.start()
        else:
            self._timer.stop()

    @Slot()
    def _advance(self) -> None:
        step = max(1, self.slider.maximum() // (PLAY_FPS * PLAY_SECONDS))
        value = min(self.slider.maximum(), self.slider.value() + step)
        self.slider.setValue(value)
        if value >= self.slider.maximum():
            self.play_button.setChecked(False)
