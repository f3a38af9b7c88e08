"""The Train tab's "how well has it learnt?" for a fine-tune that teaches new labels: the share of the model's
samples of each new label that a judge knowing the user's labels calls that label, over the steps, against the
share of the label's own real images it calls so (the ceiling, dashed). Shown only for such a run."""
from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QGroupBox, QHBoxLayout, QLabel, QVBoxLayout

COLOURS = ((200, 60, 40), (30, 120, 60), (120, 60, 170), (20, 110, 170), (190, 120, 10))


class LabelProgressView(QGroupBox):
    """`ready(labels, ceiling, counts, how)` when the judge is fitted, `add(step, called)` per measurement;
    `stop_at_ceiling_changed(bool)` when the user ticks "stop once learnt"."""

    stop_at_ceiling_changed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__("How well has it learnt the new labels?", parent)
        self.labels: list[str] = []
        self.ceiling: dict[str, float] = {}
        self.points: dict[str, list[tuple[int, float]]] = {}
        lay = QVBoxLayout(self)
        self.text = QLabel("")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setMinimumHeight(110)
        self.plot.setMouseEnabled(False, False)
        self.plot.setMenuEnabled(False)
        item = self.plot.getPlotItem()
        item.setLabel("left", "called it, %")
        item.setLabel("bottom", "step")
        item.showGrid(x=True, y=True, alpha=0.25)
        item.setYRange(0, 100, padding=0.02)
        self.legend = item.addLegend(offset=(-10, 5), labelTextColor=(60, 60, 60))
        self.stop_check = QCheckBox("Stop once learnt")
        self.stop_check.setToolTip("End the fine-tune (and save) as soon as the samples of every new label are called "
                                   "that label as often as its own real images are: more steps rarely help then, and "
                                   "the old labels drift less")
        self.stop_check.toggled.connect(self.stop_at_ceiling_changed)
        row = QHBoxLayout()
        row.addWidget(self.text, 1)
        row.addWidget(self.stop_check, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(row)
        lay.addWidget(self.plot, 1)
        self._curves: dict[str, pg.PlotDataItem] = {}
        self.how = ""
        self.setVisible(False)

    def clear(self) -> None:
        self.labels, self.ceiling, self.points, self.how = [], {}, {}, ""
        self.plot.getPlotItem().clear()
        self.legend.clear()
        self._curves = {}
        self.text.setText("")
        self.setVisible(False)

    def ready(self, labels: list[str], ceiling: dict[str, float], counts: dict[str, int], how: str) -> None:
        self.clear()
        self.labels, self.ceiling, self.how = list(labels), dict(ceiling), how
        self.counts = dict(counts)
        item = self.plot.getPlotItem()
        for i, name in enumerate(self.labels):
            colour = COLOURS[i % len(COLOURS)]
            self._curves[name] = item.plot([], [], pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=5,
                                           symbolBrush=colour, name=f"{name}: samples")
            if not math.isnan(self.ceiling.get(name, math.nan)):
                line = pg.InfiniteLine(pos=100 * self.ceiling[name], angle=0,
                                       pen=pg.mkPen(colour, width=1, style=Qt.PenStyle.DashLine))
                item.addItem(line)
            self.points[name] = []
        self.plot.setToolTip(f"Judged on {how}, from the same noise each time, by a linear probe on the evaluation "
                             "classifier's features fitted on this data set's own images (a second or two when the "
                             "run starts). Dashed: how often it calls the label's real images by that label, each "
                             "left out of its fitting: the ceiling.")
        self.setVisible(True)
        self._update_text()

    def add(self, step: int, called: dict[str, float]) -> None:
        for name, share in called.items():
            if name in self.points:
                self.points[name].append((step, share))
                xs, ys = zip(*self.points[name])
                self._curves[name].setData(list(xs), [100 * y for y in ys])
        self._update_text()

    def latest(self, name: str) -> float | None:
        pts = self.points.get(name)
        return pts[-1][1] if pts else None

    def _update_text(self) -> None:
        parts = []
        for name in self.labels:
            now, ceil = self.latest(name), self.ceiling.get(name, math.nan)
            now_text = "measuring…" if now is None else f"<b>{100 * now:.0f}%</b>"
            real = f"{100 * ceil:.0f}%" if not math.isnan(ceil) else "too few images to tell"
            parts.append(f"called {name}: {now_text} (real {name} images: {real})")
        self.text.setText(" · ".join(parts))
