"""Schedule view: alpha_bar and log-SNR against t with each column's timesteps, and forward noising.

This is the picture behind "DDIM skips steps": DDPM visits every t, DDIM-25 every 20th, DPM-Solver++
ten of them. The forward-noising slider shows what the model is asked to undo at each t.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QPushButton, QSlider, QSpinBox, QSplitter, QVBoxLayout, QWidget)

from core.catalog import T_DEFAULT
from desktop.widgets.common import HintLabel, ImageGridView, heading

SYMBOLS = ("o", "t", "s", "d")
MAX_COLUMNS = len(SYMBOLS)
STRIP_STEPS = 10  # the forward-noising strip shows t = 0, T/10, ..., T


def noised(image: np.ndarray, noise: np.ndarray, alpha_bar: float) -> np.ndarray:
    """x_t = sqrt(ab) x0 + sqrt(1 - ab) eps for one (H, W, 3) uint8 image, back to uint8 for display."""
    x0 = image.astype(np.float32) / 127.5 - 1
    xt = np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * noise
    return ((np.clip(xt, -1, 1) + 1) * 127.5).round().astype(np.uint8)


class ScheduleView(QWidget):
    """Left: the noise schedule and the timesteps each column visits. Right: forward noising of a real image."""

    t_changed = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._curves: dict | None = None
        self._columns: list[tuple[str, str, list[int]]] = []
        self._images: np.ndarray | None = None
        self._build()
        self._refresh_forward()

    # --- construction ------------------------------------------------------------------------------
    def _build(self) -> None:
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._build_plots())
        split.addWidget(self._build_forward())
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)

    def _build_plots(self) -> QWidget:
        self._glw = pg.GraphicsLayoutWidget()
        self._glw.setBackground("w")
        self._glw.setToolTip("ᾱ (alpha-bar) is how much of the clean image is left at noise level t; log-SNR is the "
                             "same on a log scale.\nDots mark the noise levels each sampler visits: fewer dots, "
                             "fewer model calls, bigger jumps.")
        self._p_ab = self._glw.addPlot(row=0, col=0, title="ᾱ: share of the clean image left")
        self._p_snr = self._glw.addPlot(row=0, col=1, title="log signal-to-noise ratio")
        self._p_steps = self._glw.addPlot(row=1, col=0, colspan=2, title="noise levels each sampler visits "
                                                                          "(one tick = one model call)")
        self._glw.ci.layout.setRowStretchFactor(0, 3)
        self._glw.ci.layout.setRowStretchFactor(1, 2)
        for p in (self._p_ab, self._p_snr, self._p_steps):
            p.showGrid(x=True, y=True, alpha=0.25)
            p.setMouseEnabled(x=False, y=False)
            p.hideButtons()
            p.setMenuEnabled(False)
        self._p_ab.setLabel("bottom", "t")
        self._p_snr.setLabel("bottom", "t")
        self._p_steps.setLabel("bottom", "noise level t (0 = clean image)")
        self._ab_curve = self._p_ab.plot(pen=pg.mkPen("#333", width=2))
        self._snr_curve = self._p_snr.plot(pen=pg.mkPen("#333", width=2))
        self._t_lines = [pg.InfiniteLine(angle=90, pen=pg.mkPen("#c00", width=1, style=Qt.PenStyle.DashLine))
                         for _ in range(3)]
        for p, line in zip((self._p_ab, self._p_snr, self._p_steps), self._t_lines):
            p.addItem(line)
        # One set of marker items per possible column, created once and refilled with setData.
        self._marker_items = [self._make_markers(i) for i in range(MAX_COLUMNS)]
        self._ab_curve.setZValue(10)
        self._snr_curve.setZValue(10)
        return self._glw

    def _build_forward(self) -> QWidget:
        box = QWidget()
        lay = QVBoxLayout(box)
        lay.addWidget(heading("What the model sees at noise level t"))
        lay.addWidget(HintLabel("Training mixes a real image with noise: x_t = √ᾱ·image + √(1−ᾱ)·noise. "
                                "Sampling runs this backwards, from pure noise at t = T to an image at t = 0."))
        pick = QHBoxLayout()
        pick.addWidget(QLabel("Image"))
        self.image_spin = QSpinBox()
        self.image_spin.setToolTip("Which image of the loaded data set to noise")
        self.image_spin.valueChanged.connect(self._refresh_forward)
        self._another = QPushButton("Another image")
        self._another.setToolTip("Pick a random image of the data set")
        self._another.clicked.connect(self._on_another)
        pick.addWidget(self.image_spin)
        pick.addWidget(self._another)
        pick.addStretch(1)
        lay.addLayout(pick)
        slide = QHBoxLayout()
        slide.addWidget(QLabel("t"))
        self.t_slider = QSlider(Qt.Orientation.Horizontal)
        self.t_slider.setRange(0, T_DEFAULT)
        self.t_slider.setValue(250)
        self.t_slider.setToolTip("Drag to add more (right) or less (left) noise")
        self.t_slider.valueChanged.connect(self._on_t_changed)
        slide.addWidget(self.t_slider, 1)
        lay.addLayout(slide)
        self._t_text = QLabel()
        self._t_text.setWordWrap(True)
        lay.addWidget(self._t_text)
        self._pair = ImageGridView(placeholder="Load a data set to see forward noising")
        self._pair.setToolTip("Left: the clean image. Right: the same image at noise level t.")
        lay.addWidget(self._pair, 3)
        self._strip = ImageGridView(placeholder="")
        self._strip.setToolTip("The same image from t = 0 (left) to t = T (right) in ten even steps")
        self._strip.setMinimumHeight(36)
        lay.addWidget(self._strip, 1)
        return box

    # --- inputs ------------------------------------------------------------------------------------
    def set_curves(self, curves: dict | None) -> None:
        """{'T', 't', 'alpha_bar', 'log_snr'} from engine.schedule_curves, or None without a model."""
        self._curves = curves
        if curves is None:
            self._ab_curve.setData([], [])
            self._snr_curve.setData([], [])
        else:
            t, ab = curves["t"], curves["alpha_bar"]
            self._ab_curve.setData(t, ab)
            self._snr_curve.setData(t[1:], curves["log_snr"][1:])  # log-SNR is +inf at t = 0
            self.t_slider.setMaximum(curves["T"])
            for p in (self._p_ab, self._p_snr, self._p_steps):  # not x-linked: pyqtgraph links by screen position
                p.setXRange(0, curves["T"], padding=0.02)
        self._draw_markers()
        self._refresh_forward()

    def set_columns(self, columns: list[tuple[str, str, list[int]]]) -> None:
        """(title, colour, timesteps visited) per sampler column."""
        self._columns = list(columns)
        self._draw_markers()

    def set_dataset(self, dataset) -> None:
        self._images = None if dataset is None else np.asarray(dataset.images)
        n = 0 if self._images is None else len(self._images)
        self.image_spin.blockSignals(True)
        self.image_spin.setRange(0, max(0, n - 1))
        self.image_spin.blockSignals(False)
        self.image_spin.setEnabled(n > 0)
        self._another.setEnabled(n > 0)
        self._refresh_forward()

    # --- drawing -----------------------------------------------------------------------------------
    def _make_markers(self, i: int) -> tuple[pg.ScatterPlotItem, pg.ScatterPlotItem, pg.ScatterPlotItem]:
        items = (pg.ScatterPlotItem(symbol=SYMBOLS[i], pen=None), pg.ScatterPlotItem(symbol=SYMBOLS[i], pen=None),
                 pg.ScatterPlotItem(symbol="|", size=12, brush=None))
        for p, item in zip((self._p_ab, self._p_snr, self._p_steps), items):
            p.addItem(item)
        return items

    @property
    def marker_counts(self) -> list[int]:
        """Noise levels marked per column (model-call steps; t = 0 is the result, not a call)."""
        return [len(items[2].data) for items in self._marker_items[: len(self._columns)]]

    def _draw_markers(self) -> None:
        columns = self._columns if self._curves is not None else []
        n = len(columns)
        for i, items in enumerate(self._marker_items):
            if i >= n:
                for item in items:
                    item.setData([], [])
                continue
            title, color, ts = columns[i]
            ts = np.asarray(ts, dtype=int)
            visible = ts[ts > 0]
            # Many visits (DDPM's 500) make a solid band: smaller dots keep the curve readable.
            size = 4 if len(visible) > 50 else 8 - i
            brush = pg.mkBrush(color)
            items[0].setData(visible, self._curves["alpha_bar"][visible], size=size, brush=brush)
            items[1].setData(visible, self._curves["log_snr"][visible], size=size, brush=brush)
            items[2].setData(visible, np.full(len(visible), n - i, float), pen=pg.mkPen(color, width=2))
        ticks = [(n - i, f"{title.split(',')[0]} ({int(np.count_nonzero(np.asarray(ts) > 0))})")
                 for i, (title, _, ts) in enumerate(columns)]
        self._p_steps.getAxis("left").setTicks([ticks])
        self._p_steps.setYRange(0.4, max(n, 1) + 0.6, padding=0)

    @Slot(int)
    def _on_t_changed(self, t: int) -> None:
        self._refresh_forward()
        self.t_changed.emit(t)

    @Slot()
    def _on_another(self) -> None:
        if self._images is not None and len(self._images):
            self.image_spin.setValue(int(np.random.default_rng().integers(len(self._images))))

    @Slot()
    def _refresh_forward(self) -> None:
        t = self.t_slider.value()
        for line in self._t_lines:
            line.setValue(t)
        if self._curves is None:
            self._t_text.setText("Load a model to see its noise schedule.")
            self._pair.set_grid(None)
            self._strip.set_grid(None)
            return
        ab = float(self._curves["alpha_bar"][t])
        self._t_text.setText(
            f"<b>t = {t}</b> of {self._curves['T']}: ᾱ = {ab:.3f}. Of the picture's variance, {ab:.0%} is the "
            f"image and {1 - ab:.0%} noise" + (f" (signal-to-noise ratio {ab / (1 - ab):.3g})." if ab < 1 else "."))
        if self._images is None or not len(self._images):
            self._pair.set_grid(None)
            self._strip.set_grid(None)
            return
        idx = self.image_spin.value()
        image = self._images[idx]
        noise = np.random.default_rng(idx).standard_normal(image.shape).astype(np.float32)
        self._pair.set_grid(np.stack([image, noised(image, noise, ab)])[None])
        T = self._curves["T"]
        strip = [noised(image, noise, float(self._curves["alpha_bar"][round(k * T / STRIP_STEPS)]))
                 for k in range(STRIP_STEPS + 1)]
        self._strip.set_grid(np.stack(strip)[None])
