"""The Train tab's loss plot: raw and smoothed loss, loss by noise band, the learning rate on a second axis."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QVBoxLayout, QWidget


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
        # No grid: pyqtgraph's grid lines cost more of a repaint here than the rest of the plot together
        self.item.setLabel("bottom", "training step")
        self.item.setLabel("left", "loss (lower is better)")
        # An opaque box above both views: the curves (the learning rate's is in a second view drawn on top)
        # would otherwise run through the labels.
        self.legend = self.item.addLegend(offset=(-10, 10), brush=pg.mkBrush(255, 255, 255, 235),
                                          pen=pg.mkPen(220, 220, 220), labelTextColor=(60, 60, 60))
        self.legend.setZValue(1000)
        self.raw = self._curve(pg.mkPen((150, 170, 210), width=1), "loss (each step)")
        self.smooth = self._curve(pg.mkPen((25, 80, 200), width=2.5), "loss (smoothed)")
        self.bands = [self._curve(pg.mkPen(c, width=1.5), f"loss at {n}")
                      for c, n in zip(self.BAND_COLORS, self.BAND_NAMES)]
        self.lr_box, self.lr_curve = self._lr_axis()
        # Ranges are set by refresh() rather than pyqtgraph's auto-range: auto-ranging two linked views
        # repaints the plot twice per update, by hand once.
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
        """metrics: core.training.StepMetrics (step, loss, lr, band_loss are read)."""
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
