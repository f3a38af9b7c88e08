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

    def show_results(self, results: list, n_columns: int, calibrated: dict[int, float] | None = None) -> None:
        """One row and one bar per finished column (jobs.sampling.ColumnResult, in column order). With
        `calibrated` (ms per model call of each column, timed alternately after the run) the ms per call and the
        speed-up come from it: speed-up = model calls x calibrated ms of the slowest column over this one's."""
        self.timing_table.setRowCount(len(results))
        slowest = max((r.seconds for r in results), default=0.0)
        cal = calibrated if calibrated and all(r.index in calibrated for r in results) else None
        cost = {r.index: r.nfe * (cal[r.index] if cal else r.ms_per_call) for r in results}  # ms per image set
        dearest = max(cost.values(), default=0.0)
        ms_head = self.timing_table.horizontalHeaderItem(4)
        ms_head.setText("ms per call" + (" (calibrated)" if cal else ""))
        ms_head.setToolTip("Milliseconds per model call, " + (
            "timed after the run: one call per column, in turn, over several rounds (the median), so every column "
            "is measured on the same machine state" if cal else "the column's wall time over its calls"))
        self.timing_table.horizontalHeaderItem(5).setToolTip(
            "How many times faster than the slowest column: " + (
                "its model calls times the calibrated ms per call, against this column's (the wall times can be "
                "skewed by load that came and went)" if cal else "wall time against wall time"))
        for row, r in enumerate(results):
            speedup = dearest / cost[r.index] if cost[r.index] > 0 else float("nan")
            ms = cal[r.index] if cal else r.ms_per_call
            cells = [r.spec.title, str(r.spec.steps), str(r.nfe), f"{r.seconds:.2f} s", f"{ms:.1f}",
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
                label = "slowest" if cost[r.index] == dearest else f"{dearest / cost[r.index]:.1f}× faster"
                t.setText(f" {r.spec.short_name}: {r.seconds:.2f} s ({label})")
                t.setPos(r.seconds, ys[k])
                t.setVisible(True)
            else:
                t.setVisible(False)
        if results:
            self.timing_plot.setXRange(0, slowest * 1.9, padding=0)
            self.timing_plot.setYRange(0.4, n_columns + 0.6, padding=0)
