"""Sample & compare's Quality tab: feature-FID and label accuracy of each column on a larger batch."""
from __future__ import annotations

import dataclasses

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QMessageBox, QPushButton, QSpinBox, QTableWidgetItem,
                               QTabWidget, QVBoxLayout, QWidget)

from desktop import engine, settings
from desktop.jobs import quality as qj
from desktop.jobs import sampling as sw
from desktop.widgets.common import HintLabel, results_table
from desktop.widgets.sampler_column import MAX_COLUMNS, column_color


class QualityTab(QWidget):
    """The count, the button (the panel connects it), the table and the quality-against-time plot."""

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.points: dict = {}  # column index -> jobs.sampling.QualityPoint
        self.titles: list[str] = []
        self.available, self._reason = False, "Load a model first."
        lay = QHBoxLayout(self)
        left = QVBoxLayout()
        ctl = QHBoxLayout()
        ctl.addWidget(QLabel("Images per sampler"))
        self.quality_n = QSpinBox()
        self.quality_n.setRange(60, 2000)
        self.quality_n.setSingleStep(60)
        self.quality_n.setValue(settings.QUALITY_IMAGES)
        self.quality_n.setToolTip("More images give steadier numbers but take longer. Numbers are only comparable "
                                  "at the same count.")
        self.quality_button = QPushButton("Measure quality")
        self.curves_button = QPushButton("Against model calls")
        ctl.addWidget(self.quality_n)
        ctl.addWidget(self.quality_button)
        ctl.addWidget(self.curves_button)
        ctl.addStretch(1)
        left.addLayout(ctl)
        self.quality_note = HintLabel(
            "Feature-FID compares the generated images with the data set through a small image classifier: lower is "
            "better. Label accuracy: how often that classifier recognises the label each image was asked for.")
        left.addWidget(self.quality_note)
        self.quality_table = results_table(["Sampler", "Feature-FID", "Label accuracy", "Seconds", "Images"])
        left.addWidget(self.quality_table, 1)
        lay.addLayout(left, 3)
        self.quality_plot = pg.PlotWidget(background="w")
        self.quality_plot.setTitle("Quality against time")
        self.quality_plot.setLabel("bottom", "seconds (log scale)")
        self.quality_plot.setLabel("left", "feature-FID (lower is better)")
        self.quality_plot.setLogMode(x=True, y=False)
        self.quality_plot.setMouseEnabled(x=False, y=False)
        self.quality_plot.hideButtons()
        self.quality_plot.setMenuEnabled(False)
        self.quality_plot.showGrid(x=True, y=True, alpha=0.25)
        self._empty_ranges()
        # A PlotDataItem (not a bare ScatterPlotItem): it follows the plot's log-x mode.
        self._quality_points = self.quality_plot.plot([], [], pen=None, symbol="o", symbolSize=12, symbolPen=None)
        self._quality_texts = [pg.TextItem(anchor=(0, 1 - k % 2), color="#222") for k in range(MAX_COLUMNS)]
        for t in self._quality_texts:
            self.quality_plot.addItem(t)
        dashed = pg.mkPen("#888", style=Qt.PenStyle.DashLine)
        self._floor_line = pg.InfiniteLine(angle=0, pen=dashed)
        self._floor_line.setVisible(False)
        self.quality_plot.addItem(self._floor_line)
        # The line is named in a legend in the top-right corner (the slow, good samplers sit low on the right,
        # the fast ones high on the left): a label on the line itself ran into the points' labels.
        self.floor_legend = self.quality_plot.addLegend(offset=(-8, 8), labelTextColor="#444")
        self.quality_plot.plot([], [], pen=dashed, name="real vs real")
        self.floor_legend.setVisible(False)
        # Two views of the measurements, one at a time (stacked, both were too small to read): a measurement
        # shows its own.
        self.plot_tabs = QTabWidget()
        self.plot_tabs.addTab(self.quality_plot, "Against time")
        self.plot_tabs.addTab(self._build_curves_plot(), "Against model calls")
        lay.addWidget(self.plot_tabs, 2)

    def _build_curves_plot(self) -> pg.PlotWidget:
        """Quality against model calls: a curve per column, its sampler and spacing at 2 to 20 calls."""
        self.curves: dict[int, list] = {}  # column index -> jobs.quality.CurvePoint, by calls
        plot = self.curves_plot = pg.PlotWidget(background="w")
        plot.setTitle("Quality against model calls")
        plot.setLabel("bottom", "model calls per image (log scale)")
        plot.setLabel("left", "feature-FID (log scale)")
        plot.setLogMode(x=True, y=True)  # few-call FIDs are 50 times the many-call ones
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        plot.setMenuEnabled(False)
        plot.showGrid(x=True, y=True, alpha=0.25)
        ticks = [(np.log10(v), str(v)) for v in qj.SWEEP_CALLS]
        plot.getAxis("bottom").setTicks([ticks, []])
        plot.setXRange(np.log10(1.8), np.log10(22), padding=0)
        plot.setYRange(-1, 2, padding=0)
        # bottom left: the curves fall from the top left, so that corner stays empty
        self.curves_legend = plot.addLegend(offset=(8, -8), labelTextColor="#444")
        self._curve_items = [plot.plot([], [], pen=pg.mkPen(column_color(k), width=2), symbol="o", symbolSize=7,
                                       symbolBrush=column_color(k), symbolPen=None) for k in range(MAX_COLUMNS)]
        return plot

    def set_model(self, bundle) -> None:
        """Whether this installation's quality measure can score `bundle`'s images, and why not."""
        if bundle is None:
            self.available, self._reason = False, "Load a model first."
            return
        self.available, self._reason = engine.quality_available()
        if self.available:
            self.available, self._reason = engine.quality_fits(bundle)

    def update_button(self, busy: bool) -> None:
        ok = self.available and self.state.dataset is not None
        self.quality_button.setEnabled(ok and not busy)
        self.curves_button.setEnabled(ok and not busy)
        self.quality_button.setToolTip(
            "Sample a larger batch with every column and score it (feature-FID, label accuracy)" if ok
            else (self._reason if not self.available else "Load the data set the model was trained on"))
        self.curves_button.setToolTip("Measure every column at 2, 3, 4, 5, 6, 8, 10, 15 and 20 model calls: where "
                                      "each sampler falls off" if ok else self.quality_button.toolTip())

    def begin(self, titles: list[str], sweep: bool = False) -> None:
        """A measurement of the columns titled `titles` starts: forget the old points (or, for a sweep against
        model calls, the old curves)."""
        self.titles = list(titles)
        self._sweep = sweep
        self.plot_tabs.setCurrentIndex(1 if sweep else 0)
        if sweep:
            self.curves.clear()
            self.show_curves()
        else:
            self.points.clear()
            self.show_points()

    def on_item(self, item) -> None:
        """One of measure_quality's progress items (see desktop.jobs.sampling)."""
        if isinstance(item, qj.CurvePoint):
            self.curves.setdefault(item.index, []).append(item)
            self.show_curves()
        elif isinstance(item, qj.QualityPoint):
            self.points[item.index] = item
            self.show_points()
        elif isinstance(item, sw.ColumnStarted):
            self._on_column(item.index)
        elif isinstance(item, qj.QualityStarted):
            self._on_started(item.info)

    def _empty_ranges(self) -> None:
        """Before a measurement: 0.1-100 s and FID 0-10 (an empty view's autorange read '-2e-305')."""
        self.quality_plot.setXRange(-1, 2, padding=0)
        self.quality_plot.setYRange(0, 10, padding=0)

    def _on_started(self, info: dict) -> None:
        floor = info.get("floor")
        self._floor_line.setVisible(floor is not None)
        self.floor_legend.setVisible(floor is not None)
        if floor is not None:
            self._floor_line.setValue(floor)
        parts = [f"{info['n']} images per sampler, {info['mix']}."]
        if floor is not None:
            parts.append(f"Two sets of real images score {floor:.2f} against each other at this count "
                         "(the dashed line): no sampler can do much better.")
        if not info.get("accuracy", True):
            parts.append("Label accuracy needs a model with the classifier's labels "
                         f"({', '.join(info.get('classifier_labels', []))}).")
        self.quality_note.setText(" ".join(parts))

    def _on_column(self, index: int) -> None:
        n = len(self.titles)
        title = self.titles[index] if index < n else f"column {index + 1}"
        self.state.status_message.emit(f"Measuring quality: {title} ({index + 1} of {n})…")
        button = self.curves_button if getattr(self, "_sweep", False) else self.quality_button
        button.setText(f"Measuring {index + 1} of {n}…")

    def remove_column(self, removed: int) -> None:
        """Column `removed` is gone: the others keep their points, renumbered."""
        self.points = {k - (k > removed): dataclasses.replace(p, index=k - (k > removed))
                       for k, p in self.points.items() if k != removed}
        self.curves = {k - (k > removed): [dataclasses.replace(p, index=k - (k > removed)) for p in ps]
                       for k, ps in self.curves.items() if k != removed}
        self.show_points()
        self.show_curves()

    def on_finished(self, cancelled: bool) -> None:
        self.quality_button.setText("Measure quality")
        self.curves_button.setText("Against model calls")
        self.state.status_message.emit("Quality measurement cancelled." if cancelled else "Quality measured.")

    def on_failed(self, error: BaseException) -> None:
        message = f"Measuring quality stopped: {engine.user_message(error)[:300]}"
        self.quality_button.setText("Measure quality")
        self.curves_button.setText("Against model calls")
        QMessageBox.warning(self, "Measuring quality stopped", message)

    def show_curves(self) -> None:
        """A line per column through its points, by model calls; the legend names the columns."""
        self.curves_legend.clear()
        fids = []
        for k, item in enumerate(self._curve_items):
            pts = sorted(self.curves.get(k, []), key=lambda p: p.spec.calls)
            item.setData([p.spec.calls for p in pts], [p.fid for p in pts])
            if pts:
                head = pts[0].spec
                plain = head.spacing == "trailing" or head.spacing.startswith("distilled")
                name = head.short_name + ("" if plain else f", {head.spacing}")
                self.curves_legend.addItem(item, name)
                fids += [max(p.fid, 1e-3) for p in pts]
        if fids:  # in log-y mode the view's y is log10(FID)
            self.curves_plot.setYRange(np.log10(min(fids)) - 0.15, np.log10(max(fids)) + 0.15, padding=0)
        ticks = [(np.log10(v), f"{v:g}") for e in range(-2, 4) for v in (10.0**e, 2 * 10.0**e, 5 * 10.0**e)]
        self.curves_plot.getAxis("left").setTicks([ticks, []])

    def show_points(self) -> None:
        points = [self.points[k] for k in sorted(self.points)]
        self.quality_table.setRowCount(len(points))
        for row, p in enumerate(points):
            acc = "—" if p.accuracy is None else f"{p.accuracy:.0%}"
            cells = [p.spec.title, f"{p.fid:.2f}", acc, f"{p.seconds:.2f}", str(p.n)]
            for k, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if k == 0:
                    item.setForeground(pg.mkColor(column_color(p.index)))
                self.quality_table.setItem(row, k, item)
        secs = [max(p.seconds, 1e-4) for p in points]
        self._quality_points.setData(secs, [p.fid for p in points],
                                     symbolBrush=[pg.mkBrush(column_color(p.index)) for p in points])
        # Labels alternate above and below their point, so close points stay readable.
        for k, t in enumerate(self._quality_texts):
            t.setVisible(k < len(points))
            if k < len(points):
                p = points[k]
                acc = "" if p.accuracy is None else f", {p.accuracy:.0%} right"
                t.setText(f" {p.spec.label}{acc}")
                t.setPos(np.log10(secs[k]), p.fid)  # in log-x mode the view's x is log10(seconds)
        if not points:
            self._empty_ranges()
        if points:
            lx = np.log10(secs)
            top = max(max(p.fid for p in points), self._floor_line.value() if self._floor_line.isVisible() else 0)
            lo, hi = lx.min() - 0.3, lx.max() + 0.9
            self.quality_plot.setXRange(lo, hi, padding=0)
            # 1-2-5 ticks per decade: pyqtgraph's own log ticks crowd at this width.
            ticks = [(np.log10(v), f"{v:g}") for e in range(-3, 5) for v in (10.0**e, 2 * 10.0**e, 5 * 10.0**e)
                     if lo <= np.log10(v) <= hi]
            self.quality_plot.getAxis("bottom").setTicks([ticks, []])
            self.quality_plot.setYRange(0, top * 1.2, padding=0)
