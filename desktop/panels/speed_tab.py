"""Sample & compare's Speed tab: wall time, model calls and speed-up of each column."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QTableWidgetItem, QVBoxLayout, QWidget

from desktop.widgets.common import HintLabel, results_table
from desktop.widgets.sampler_column import MAX_COLUMNS, column_color


class SpeedTab(QWidget):
    """`timing_note` says how the columns were timed; `show_results` fills the table and the bar chart."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        left = QVBoxLayout()
        self.timing_note = HintLabel("Press Run to time the samplers.")
        left.addWidget(self.timing_note)
        self.timing_table = results_table(["Sampler", "Steps", "Model calls", "Wall time", "ms per call", "Speed-up"])
        self.timing_table.horizontalHeaderItem(2).setToolTip("Model evaluations per image (NFE): the cost that "
                                                             "matters. Guidance doubles it.")
        self.timing_table.horizontalHeaderItem(5).setToolTip("How many times faster than the slowest column")
        left.addWidget(self.timing_table, 1)
        lay.addLayout(left, 3)
        self.timing_plot = pg.PlotWidget(background="w")
        self.timing_plot.setTitle("Wall time (seconds)")
        self.timing_plot.setMouseEnabled(x=False, y=False)
        self.timing_plot.hideButtons()
        self.timing_plot.setMenuEnabled(False)
        self.timing_plot.getAxis("left").setStyle(showValues=False)
        self.timing_plot.showGrid(x=True, alpha=0.25)
        self.timing_plot.setXRange(0, 1)
        self._bars = pg.BarGraphItem(x0=[], y=[], height=[], width=[], pen=None)
        self.timing_plot.addItem(self._bars)
        self._bar_texts = [pg.TextItem(anchor=(0, 0.5), color="#222") for _ in range(MAX_COLUMNS)]
        for t in self._bar_texts:
            self.timing_plot.addItem(t)
        lay.addWidget(self.timing_plot, 2)

    def show_results(self, results: list, n_columns: int) -> None:
        """One row and one bar per finished column (jobs.sampling.ColumnResult, in column order)."""
        self.timing_table.setRowCount(len(results))
        slowest = max((r.seconds for r in results), default=0.0)
        for row, r in enumerate(results):
            speedup = slowest / r.seconds if r.seconds > 0 else float("nan")
            cells = [r.spec.title, str(r.spec.steps), str(r.nfe), f"{r.seconds:.2f} s", f"{r.ms_per_call:.1f}",
                     f"{speedup:.1f}×"]
            for k, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if k == 0:
                    item.setForeground(pg.mkColor(column_color(r.index)))
                if k > 0:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.timing_table.setItem(row, k, item)
        ys = [n_columns - r.index for r in results]
        self._bars.setOpts(x0=[0] * len(results), y=ys, height=[0.6] * len(results),
                           width=[r.seconds for r in results],
                           brushes=[pg.mkBrush(column_color(r.index)) for r in results], pen=None)
        for k, t in enumerate(self._bar_texts):
            if k < len(results):
                r = results[k]
                label = "slowest" if r.seconds == slowest else f"{slowest / r.seconds:.1f}× faster"
                t.setText(f" {r.spec.label}: {r.seconds:.2f} s ({label})")
                t.setPos(r.seconds, ys[k])
                t.setVisible(True)
            else:
                t.setVisible(False)
        if results:
            self.timing_plot.setXRange(0, slowest * 1.9, padding=0)
            self.timing_plot.setYRange(0.4, n_columns + 0.6, padding=0)
