"""The Data & labels tab's imports: the preview of what an import produced, the sprite-sheet options,
and the loaders the panel runs in the background."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QPlainTextEdit, QSpinBox,
                               QVBoxLayout)

from desktop import engine
from desktop.widgets.common import HintLabel, ImageGridView, as_grid


class ImportPreviewDialog(QDialog):
    """Shows what an import produced (a sample of the images, the labels) and the skipped files."""

    def __init__(self, ds, parent=None):
        super().__init__(parent)
        self.ds = ds
        self.setWindowTitle(f"Import {ds.name}")
        lay = QVBoxLayout(self)
        counts = ds.label_counts() if ds.n_labels else []
        label_text = ", ".join(f"{n} ({c:,})" for n, c in zip(ds.label_names, counts)) or "none"
        self.summary = QLabel(f"<b>{ds.n:,} images</b>, {ds.size}×{ds.size} pixels.<br>Labels: {label_text}")
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        grid = ImageGridView()
        idx = np.linspace(0, ds.n - 1, min(ds.n, 48)).astype(int)
        grid.set_grid(as_grid(ds.images[idx], columns=12))
        grid.setMinimumSize(520, 200)
        lay.addWidget(grid, 1)
        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        self.report.setPlainText(self._report_text(ds))
        self.report.setMaximumHeight(140)
        lay.addWidget(QLabel(f"Skipped files: {len(ds.skipped)}"))
        lay.addWidget(self.report)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Use this data set")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.resize(640, 520)

    @staticmethod
    def _report_text(ds) -> str:
        if not ds.skipped:
            return "Every file was used."
        return "\n".join(f"{name}: {reason}" for name, reason in ds.skipped)


class SheetOptionsDialog(QDialog):
    """Cell size, margin, spacing and output size for cutting a sprite sheet."""

    def __init__(self, path: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Cut a sprite sheet")
        form = QFormLayout(self)
        form.addRow(HintLabel(f"{Path(path).name}: the image is cut into cells on a grid, row by row. "
                              "Blank cells are dropped."))
        self.cell, self.margin, self.spacing = self._spin(1, 1024, 16), self._spin(0, 512, 0), self._spin(0, 512, 0)
        self.cell.setToolTip("Width and height of one sprite in the sheet, in pixels.")
        self.margin.setToolTip("Empty border around the whole grid, in pixels.")
        self.spacing.setToolTip("Gap between neighbouring cells, in pixels.")
        self.size = QComboBox()
        self.size.addItems(["16", "32"])
        self.size.setToolTip("Size the sprites are stored at (the course uses 16×16).")
        form.addRow("Cell size (px)", self.cell)
        form.addRow("Margin (px)", self.margin)
        form.addRow("Spacing (px)", self.spacing)
        form.addRow("Store at (px)", self.size)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    @staticmethod
    def _spin(lo: int, hi: int, value: int) -> QSpinBox:
        s = QSpinBox()
        s.setRange(lo, hi)
        s.setValue(value)
        return s

    def options(self) -> dict:
        return {"cell": self.cell.value(), "margin": self.margin.value(), "spacing": self.spacing.value(),
                "size": int(self.size.currentText())}


def load_folder(path: str, size: int):
    return engine.load_dataset(path, size=size)


def load_sheet(path: str, options: dict):
    return engine.load_sprite_sheet(path, **options)


def unique_path(path: Path) -> Path:
    """path, or path-2, path-3, ... if a file is already there (imports never overwrite each other)."""
    out, k = path, 2
    while out.exists():
        out, k = path.with_name(f"{path.stem}-{k}{path.suffix}"), k + 1
    return out
