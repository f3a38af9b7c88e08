"""The Data & labels tab's label column: the label table and its buttons, the class balance chart."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QGroupBox, QHBoxLayout, QHeaderView, QPushButton, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from desktop.widgets.common import HintLabel


class LabelsBox(QWidget):
    """The widgets only; the panel connects the buttons and the table and does the edits."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        box = QGroupBox("Labels")
        bl = QVBoxLayout(box)
        bl.addWidget(HintLabel("The labels are what the model learns to tell apart (its context). Double-click "
                               "a name to rename it."))
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Label", "Images"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        bl.addWidget(self.table, 1)
        bl.addLayout(self._build_buttons())
        lay.addWidget(box, 3)
        chart_box = QGroupBox("Class balance (images per label)")
        cl = QVBoxLayout(chart_box)
        self.chart = pg.PlotWidget(background="w")
        self.chart.setMouseEnabled(False, False)
        self.chart.hideButtons()
        self.chart.setMenuEnabled(False)
        self.chart.getPlotItem().getViewBox().invertY(True)
        self.bars = pg.BarGraphItem(x0=[], y=[], height=0.7, width=[], brush=(70, 120, 210))
        self.chart.addItem(self.bars)
        self.chart.setMinimumHeight(150)
        self.chart.setToolTip("How many images carry each label. Very uneven counts make the rare labels "
                              "harder to learn.")
        cl.addWidget(self.chart)
        lay.addWidget(chart_box, 2)
        self.save_info = HintLabel("")
        lay.addWidget(self.save_info)

    def _build_buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        specs = [("add_btn", "Add", "Add a new, empty label. Then select images and assign it."),
                 ("rename_btn", "Rename", "Rename the selected label (or double-click its name)."),
                 ("delete_btn", "Delete", "Delete the selected label. The images stay; they just lose this label."),
                 ("up_btn", "▲", "Move the selected label up."),
                 ("down_btn", "▼", "Move the selected label down.")]
        for attr, text, tip in specs:
            b = QPushButton(text)
            b.setToolTip(tip)
            if text in ("▲", "▼"):
                b.setMaximumWidth(34)
            setattr(self, attr, b)
            row.addWidget(b)
        self.teach_btn = QPushButton("Teach the model these labels")
        self.teach_btn.setToolTip("Fine-tune the shipped model on this data set for a few minutes: it keeps what "
                                  "it can draw and learns your new or renamed labels. Watch the previews on the "
                                  "Train tab; the result is then loaded in Sample & compare.")
        row.addStretch(1)
        row.addWidget(self.teach_btn)
        return row

    def fill(self, names: list[str], counts) -> None:
        """The table and the chart: one row and one bar per label."""
        self._fill_table(names, counts)
        self._fill_chart(names, counts)

    def _fill_table(self, names, counts) -> None:
        self.table.blockSignals(True)
        sel = self.table.currentRow()
        self.table.setRowCount(len(names))
        for i, (n, c) in enumerate(zip(names, counts)):
            item = QTableWidgetItem(n)
            item.setToolTip("Double-click to rename")
            count = QTableWidgetItem(f"{int(c):,}")
            count.setFlags(count.flags() & ~Qt.ItemFlag.ItemIsEditable)
            count.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(i, 0, item)
            self.table.setItem(i, 1, count)
        if 0 <= sel < len(names):
            self.table.setCurrentCell(sel, 0)
        self.table.blockSignals(False)

    def _fill_chart(self, names, counts) -> None:
        y = np.arange(len(names))
        self.bars.setOpts(x0=np.zeros(len(names)), y=y, height=0.7, width=np.asarray(counts, float))
        axis = self.chart.getPlotItem().getAxis("left")
        axis.setTicks([[(float(i), n) for i, n in enumerate(names)]])
        self.chart.getPlotItem().setXRange(0, max(1.0, float(np.max(counts)) if len(counts) else 1.0) * 1.05)
        self.chart.getPlotItem().setYRange(-0.6, max(len(names) - 0.4, 0.6), padding=0)
