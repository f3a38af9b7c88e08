"""The X/Y grid (Sample & compare's "X/Y grid…"): one setting along each axis, every cell from the same noise.

The base settings come from Sample & compare (its first column, seed, the composer's first row and "Guide
with"); the axes override one setting each. Cells fill in as they finish, cheapest first, each with its time
and model calls; the grid exports as one PNG whose text chunks rebuild it (and the CLI's `main.py grid` draws
the same cells).
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QLineEdit,
                               QMessageBox, QProgressBar, QPushButton, QScrollArea, QSpinBox, QVBoxLayout, QWidget)

from core.catalog import SAMPLER_NAMES, SPACINGS
from core.errors import UserError
from core.xy_grid import (AXIS_KINDS, AXIS_NAMES, GUIDE_NO_LABEL, MAX_CELL_IMAGES, Axis, CellSettings, GridSpec,
                          cell_caption, grid_labels, parse_axis)
from desktop import engine, settings, threads
from desktop.jobs import grid as gj
from desktop.widgets.common import HintLabel, ImageGridView, as_grid

NO_AXIS = "(none)"
CELL_TILE = 96  # the side a cell's images get on screen (they scale down to fit the dialog)


def default_values(axis: str, labels: list[str]) -> str:
    """What an axis offers when picked: a useful first comparison the user can edit."""
    return {
        "sampler": "ddim,heun,dpmpp2m,dpmpp3m" if "dpmpp3m" in SAMPLER_NAMES else ",".join(SAMPLER_NAMES[:4]),
        "steps": "5,10,20,40", "spacing": ",".join(SPACINGS), "eta": "0,0.5,1", "guidance": "1,2,3,4",
        "guide": f"{GUIDE_NO_LABEL}," + ",".join(labels[1:3]), "seed": "0,1,2,3",
        "context": ",".join(labels[:4]), "mix": "0,0.25,0.5,0.75,1",
    }.get(axis, "")


class AxisRow(QWidget):
    """One axis: which setting, and its values as text ("5,10,20")."""

    changed = Signal()

    def __init__(self, title: str, optional: bool, parent=None):
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel(title))
        self.name = QComboBox()
        if optional:
            self.name.addItem(NO_AXIS)
        self.name.addItems(list(AXIS_NAMES))
        self.name.setToolTip("The setting that changes along this axis; every other setting stays as in "
                             "Sample & compare")
        self.values = QLineEdit()
        self.values.setToolTip("The values, separated by commas")
        row.addWidget(self.name)
        row.addWidget(self.values, 1)
        self.labels: list[str] = []
        self.name.currentTextChanged.connect(self._on_name)
        self.values.textChanged.connect(self.changed)

    def _on_name(self, name: str) -> None:
        self.values.setEnabled(name != NO_AXIS)
        self.values.setText(default_values(name, self.labels))
        self.values.setPlaceholderText(AXIS_KINDS[name].help if name in AXIS_KINDS else "")
        self.changed.emit()

    def axis(self, flag: str) -> Axis:
        """The axis as typed (GridError naming `flag` when it cannot be read); no values for "(none)"."""
        name = self.name.currentText()
        if name == NO_AXIS:
            return Axis("seed", ())
        return parse_axis(f"{name}={self.values.text()}", flag)

    def set_axis(self, name: str, values: str = "") -> None:
        self.name.setCurrentText(name)
        if values:
            self.values.setText(values)


class GridDialog(QDialog):
    """Non-modal: `base()` gives (CellSettings, guide model path, precision) from Sample & compare."""

    grid_finished = Signal(object, object)  # GridSpec, GridSummary (also after a cancel)

    def __init__(self, state, base: Callable[[], tuple[CellSettings, str, str]], parent=None):
        super().__init__(parent)
        self.state, self._base = state, base
        self.setWindowTitle("X/Y grid")
        self._worker = None
        self.spec: GridSpec | None = None
        self.summary: gj.GridSummary | None = None
        self._cells: dict[tuple[int, int], tuple[ImageGridView, QLabel]] = {}
        self._restored_base: CellSettings | None = None  # a restored grid's own settings off the axes
        self._build()
        state.model_changed.connect(self._on_model_changed)
        self._on_model_changed(state.model)
        self.resize(900, 640)

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        self.x_row, self.y_row = AxisRow("X (columns)", optional=False), AxisRow("Y (rows)", optional=True)
        lay.addWidget(self.x_row)
        lay.addWidget(self.y_row)
        opts = QHBoxLayout()
        opts.addWidget(QLabel("Images per cell"))
        self.per_cell = QSpinBox()
        self.per_cell.setRange(1, MAX_CELL_IMAGES)
        self.per_cell.setValue(8)
        self.per_cell.setToolTip("Every cell draws this many images, from the same starting noise")
        opts.addWidget(self.per_cell)
        self.base_label = HintLabel("")
        self.base_label.setToolTip("Every setting not on an axis: Sample & compare's cheapest column and its seed, "
                                   "the composer's first row and its 'Guide with'")
        opts.addWidget(self.base_label, 1)
        self.run_button, self.cancel_button = QPushButton("Run"), QPushButton("Cancel")
        self.run_button.setDefault(True)
        self.run_button.setToolTip("Sample every cell (the cheapest first) on a background thread")
        self.cancel_button.setToolTip("Stop after the current model call; finished cells are kept")
        self.export_button = QPushButton("Save PNG…")
        self.export_button.setToolTip("The whole grid as one picture; its settings go into the PNG's text")
        for b in (self.run_button, self.cancel_button, self.export_button):
            opts.addWidget(b)
        lay.addLayout(opts)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m cells")
        lay.addWidget(self.progress)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.area = QWidget()
        self.grid = QGridLayout(self.area)
        self.scroll.setWidget(self.area)
        lay.addWidget(self.scroll, 1)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.clicked.connect(self.ask_export)
        self.x_row.set_axis("sampler")
        self.y_row.set_axis("steps")
        self._update_buttons()

    # ============================================================================ state
    def _on_model_changed(self, bundle) -> None:
        labels = list(bundle.label_names) if bundle is not None else []
        for row in (self.x_row, self.y_row):
            row.labels = labels
        self._update_buttons()
        self.refresh_base()

    def base(self) -> tuple[CellSettings, str, str]:
        base, guide_model, precision = self._base()
        return (self._restored_base or base), guide_model, precision

    def set_spec(self, spec: GridSpec) -> None:
        """Show a restored grid: its axes, images per cell and its own settings off the axes."""
        self._restored_base = spec.base
        self.x_row.set_axis(spec.x.name, spec.x.text.partition("=")[2])
        if spec.y.values:
            self.y_row.set_axis(spec.y.name, spec.y.text.partition("=")[2])
        else:
            self.y_row.set_axis(NO_AXIS)
        self.per_cell.setValue(spec.per_cell)
        self.refresh_base()

    def use_panel_settings(self) -> None:
        """Back to Sample & compare's settings off the axes (after a restored grid)."""
        self._restored_base = None
        self.refresh_base()

    def refresh_base(self) -> None:
        base, guide_model, _ = self.base()
        g = f", guidance {base.guidance:g}{base.guidance_text()}" if base.guidance != 1 else ""
        source = "the restored grid" if self._restored_base is not None else "Sample & compare"
        self.base_label.setText(f"Others (from {source}): {base.sampler} {base.steps} steps, {base.spacing}{g}, seed {base.seed}, "
                                f"context {base.context}" + (", guided by a model" if guide_model else ""))

    def is_busy(self) -> bool:
        return self._worker is not None

    def _update_buttons(self) -> None:
        busy, has_model = self.is_busy(), self.state.model is not None
        self.run_button.setEnabled(has_model and not busy)
        self.run_button.setToolTip("Sample every cell (the cheapest first) on a background thread" if has_model
                                   else "Load or train a model first")
        self.cancel_button.setEnabled(busy)
        self.export_button.setEnabled(bool(self.summary and self.summary.cells) and not busy)
        for w in (self.x_row, self.y_row, self.per_cell):
            w.setEnabled(not busy)

    def make_spec(self) -> tuple[GridSpec, str, str]:
        """(the grid, guide model path, precision) as set; UserError naming the axis when it cannot be drawn."""
        base, guide_model, precision = self.base()
        spec = GridSpec(base, self.x_row.axis("X"), self.y_row.axis("Y"), self.per_cell.value())
        bundle = self.state.model
        spec.check(list(bundle.label_names), T=bundle.schedule_config.T, has_guide_model=bool(guide_model))
        return spec, guide_model, precision

    # ============================================================================ running
    def run(self) -> None:
        if self.state.model is None or self.is_busy():
            return
        self.refresh_base()
        try:
            spec, guide_model, precision = self.make_spec()
        except UserError as e:
            QMessageBox.warning(self, "X/Y grid", str(e))
            return
        self.spec, self.summary = spec, gj.GridSummary()
        self._lay_out(spec)
        self._worker = threads.GeneratorWorker(gj.run_grid_job, self.state.model, spec, precision, guide_model,
                                               control=True)
        threads.start(self._worker, on_progress=self._on_item, on_result=self._on_finished,
                      on_failed=self._on_failed, on_finished=self._on_thread_finished)
        self.note.setText("Warming up…")
        self._update_buttons()

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.request_stop()
            self.cancel_button.setEnabled(False)

    def _lay_out(self, spec: GridSpec) -> None:
        while self.grid.count():
            w = self.grid.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self._cells.clear()
        cols, rows = grid_labels(spec)
        n_rows, n_cols = spec.shape
        for c, text in enumerate(cols):
            self.grid.addWidget(QLabel(f"<b>{text}</b>"), 0, c + 1, alignment=Qt.AlignmentFlag.AlignHCenter)
        per_row = min(spec.per_cell, 4)
        tiles_high = -(-spec.per_cell // per_row)
        for r, text in enumerate(rows):
            self.grid.addWidget(QLabel(f"<b>{text}</b>"), 2 * r + 1, 0, alignment=Qt.AlignmentFlag.AlignRight)
            for c in range(n_cols):
                view = ImageGridView(placeholder="waiting")
                view.setMinimumSize(per_row * CELL_TILE // 2, tiles_high * CELL_TILE // 2)
                caption = QLabel("")
                caption.setStyleSheet("color: gray")
                self.grid.addWidget(view, 2 * r + 1, c + 1)
                self.grid.addWidget(caption, 2 * r + 2, c + 1, alignment=Qt.AlignmentFlag.AlignHCenter)
                self._cells[r, c] = (view, caption)
        self.progress.setRange(0, n_rows * n_cols)
        self.progress.setValue(0)

    def _on_item(self, item) -> None:
        if isinstance(item, gj.GridStarted):
            self.note.setText(f"Sampling on {item.runtime_label}, the cheapest cells first…")
            return
        view, caption = self._cells[item.row, item.col]
        view.set_grid(as_grid(item.images, columns=min(len(item.images), 4)))
        caption.setText(cell_caption(item.seconds, item.nfe))
        caption.setToolTip("Sampling time of this cell alone (after an untimed warm-up call) and its model calls "
                           "per image (guidance counts two)")
        self.summary.cells[item.row, item.col] = item
        self.progress.setValue(len(self.summary.cells))

    def _on_finished(self, summary: gj.GridSummary) -> None:
        self.summary = summary
        total = sum(c.seconds for c in summary.cells.values())
        done = f"{len(summary.cells)} of {self.progress.maximum()} cells"
        self.note.setText(("Cancelled: " if summary.cancelled else "") + f"{done} in {total:.2f} s of sampling "
                          f"({summary.seconds:.1f} s with loading and warm-up) on {summary.runtime_label}.")
        self.state.status_message.emit(f"X/Y grid: {done}.")
        self.grid_finished.emit(self.spec, summary)

    def _on_failed(self, error: BaseException) -> None:
        self.note.setText("Stopped by an error.")
        QMessageBox.warning(self, "X/Y grid stopped", f"The grid stopped: {engine.user_message(error)[:300]}")

    def _on_thread_finished(self) -> None:
        self._worker = None
        self._update_buttons()

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.request_stop()

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    # ============================================================================ export
    def ask_export(self) -> None:
        if not (self.summary and self.summary.cells):
            return
        name = f"grid_{self.spec.x.name}_{self.spec.y.name if self.spec.y.values else 'only'}.png"
        path, _ = QFileDialog.getSaveFileName(self, "Save grid", str(settings.export_dir() / name), "PNG image (*.png)")
        if path:
            settings.remember_export_dir(path)
            self.export(path)

    def export(self, path: str) -> None:
        def failed(message):
            QMessageBox.warning(self, "Could not save", f"{path}: {message}")

        threads.run_in_background(gj.export_grid, path, self.spec, self.summary,
                                  on_done=lambda p: self.state.status_message.emit(f"Saved {p}"), on_error=failed)
