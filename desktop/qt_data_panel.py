"""The Data & labels tab: the label table, a virtualised image browser with label filter and
assignment, the class balance chart, imports (with preview and skipped-file report), and the
context composer.

Label edits make a new data set object (`dataset.with_labels`) that replaces `state.dataset`;
name edits are announced with `state.set_label_names`. Edited and imported data sets are saved
as .npz in the per-user data folder (never over the built-in files), a second after the last edit.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QAbstractListModel, QModelIndex, QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QGroupBox, QHBoxLayout, QHeaderView, QInputDialog, QLabel, QListView, QMessageBox,
                               QPlainTextEdit, QPushButton, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from desktop import engine, settings, threads
from desktop.qt_composer import QtComposer
from desktop.widgets import HintLabel, ImageGridView, as_grid, pixmap_from_rgb

FILTER_ALL, FILTER_UNLABELLED = -1, -2
ROLE_INDEX = Qt.ItemDataRole.UserRole + 1  # the image's row in the data set


# --------------------------------------------------------------------------------------------
# The image browser: a list model whose pixmaps are made on demand and cached
# --------------------------------------------------------------------------------------------


class ImageListModel(QAbstractListModel):
    """The (filtered) images of a data set for a QListView in IconMode; 90,000 rows are fine."""

    CACHE_SIZE = 6000

    def __init__(self, parent=None):
        super().__init__(parent)
        self.ds = None
        self.rows = np.zeros(0, np.int64)  # data-set indices shown, in order
        self.scale = 3
        self._cache: OrderedDict[int, object] = OrderedDict()
        self.pixmaps_made = 0

    def set_dataset(self, ds, rows: np.ndarray) -> None:
        self.beginResetModel()
        if ds is None or self.ds is None or ds.images is not self.ds.images:
            self._cache.clear()
        self.ds, self.rows = ds, np.asarray(rows, np.int64)
        self.scale = max(1, 48 // ds.size) if ds is not None else 3
        self.endResetModel()

    def set_rows(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.int64)
        if np.array_equal(rows, self.rows):
            if len(rows):  # same images, new labels: refresh the tooltips only
                self.dataChanged.emit(self.index(0), self.index(len(rows) - 1), [Qt.ItemDataRole.ToolTipRole])
            return
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def replace_dataset_labels(self, ds) -> None:
        """Same images, edited labels: keep the pixmap cache."""
        self.ds = ds

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.ds is None:
            return None
        i = int(self.rows[index.row()])
        if role == Qt.ItemDataRole.DecorationRole:
            return self._pixmap(i)
        if role == Qt.ItemDataRole.ToolTipRole:
            names = [n for n, v in zip(self.ds.label_names, self.ds.labels[i]) if v > 0]
            return f"Image {i + 1:,}\nLabels: {', '.join(names) if names else 'none'}"
        if role == ROLE_INDEX:
            return i
        return None

    def _pixmap(self, i: int):
        pm = self._cache.get(i)
        if pm is None:
            pm = pixmap_from_rgb(self.ds.images[i], self.scale)
            self.pixmaps_made += 1
            self._cache[i] = pm
            if len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(i)
        return pm


def make_image_view(model: ImageListModel) -> QListView:
    view = QListView()
    view.setViewMode(QListView.ViewMode.IconMode)
    view.setUniformItemSizes(True)
    view.setMovement(QListView.Movement.Static)
    view.setResizeMode(QListView.ResizeMode.Adjust)
    view.setLayoutMode(QListView.LayoutMode.Batched)
    view.setBatchSize(4000)
    view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
    view.setIconSize(QSize(48, 48))
    view.setGridSize(QSize(54, 54))
    view.setSpacing(0)
    view.setWordWrap(False)
    view.setModel(model)
    view.setToolTip("")
    return view


# --------------------------------------------------------------------------------------------
# Import dialogs
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The panel
# --------------------------------------------------------------------------------------------


class QtDataPanel(QWidget):
    """Data & labels tab."""

    dataset_saved = Signal(str)  # path of the .npz written after an edit or import
    teach_requested = Signal()  # "Teach the model these labels": fine-tune the shipped model on this set
    import_dialog_shown = Signal(object)  # the ImportPreviewDialog (tests accept it)

    SAVE_DELAY_MS = 1000

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self._save_path: Path | None = None
        self._refreshing = False
        self.last_import_dialog: ImportPreviewDialog | None = None
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(self.SAVE_DELAY_MS)
        self._save_timer.timeout.connect(self._save_now)
        self.composer = QtComposer(state)
        self._build()
        state.dataset_changed.connect(self._on_dataset_changed)
        state.label_names_changed.connect(self._on_label_names_changed)

    # --- layout ---------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self._build_labels_column())
        self.splitter.addWidget(self._build_browser())
        self.splitter.addWidget(self.composer)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([300, 620, 360])
        lay = QVBoxLayout(self)
        lay.addWidget(self.splitter)

    def _build_labels_column(self) -> QWidget:
        col = QWidget()
        lay = QVBoxLayout(col)
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
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.currentCellChanged.connect(lambda *_: self._update_buttons())
        bl.addWidget(self.table, 1)
        bl.addLayout(self._build_label_buttons())
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
        return col

    def _build_label_buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        specs = [("add_btn", "Add", "Add a new, empty label. Then select images and assign it.", self.add_label),
                 ("rename_btn", "Rename", "Rename the selected label (or double-click its name).", self._on_rename),
                 ("delete_btn", "Delete", "Delete the selected label. The images stay; they just lose this label.",
                  self._on_delete),
                 ("up_btn", "▲", "Move the selected label up.", lambda: self._on_move(-1)),
                 ("down_btn", "▼", "Move the selected label down.", lambda: self._on_move(1))]
        for attr, text, tip, slot in specs:
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            if text in ("▲", "▼"):
                b.setMaximumWidth(34)
            setattr(self, attr, b)
            row.addWidget(b)
        self.teach_btn = QPushButton("Teach the model these labels")
        self.teach_btn.setToolTip("Fine-tune the shipped model on this data set for a few minutes: it keeps what "
                                  "it can draw and learns your new or renamed labels. Watch the previews on the "
                                  "Train tab; the result is then loaded in Sample & compare.")
        self.teach_btn.clicked.connect(lambda: self.teach_requested.emit())
        row.addStretch(1)
        row.addWidget(self.teach_btn)
        return row

    def _build_browser(self) -> QWidget:
        box = QGroupBox("Images")
        lay = QVBoxLayout(box)
        top = QHBoxLayout()
        self.filter_combo = QComboBox()
        self.filter_combo.setToolTip("Show only the images with this label (or those with none).")
        self.filter_combo.currentIndexChanged.connect(self._apply_filter)
        self.shown_label = QLabel("")
        top.addWidget(QLabel("Show"))
        top.addWidget(self.filter_combo, 1)
        top.addWidget(self.shown_label)
        lay.addLayout(top)
        self.model = ImageListModel(self)
        self.view = make_image_view(self.model)
        self.view.selectionModel().selectionChanged.connect(self._on_selection_changed)
        lay.addWidget(self.view, 1)
        lay.addLayout(self._build_assign_row())
        lay.addLayout(self._build_import_row())
        return box

    def _build_assign_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.selection_label = QLabel("Nothing selected")
        self.assign_combo = QComboBox()
        self.assign_combo.setToolTip("The label to add to or remove from the selected images.")
        self.assign_btn = QPushButton("Assign")
        self.assign_btn.setToolTip("Give the selected images this label (they keep their other labels). "
                                   "Select with click, Shift-click and Ctrl-click, or Ctrl+A for all shown.")
        self.unassign_btn = QPushButton("Unassign")
        self.unassign_btn.setToolTip("Take this label away from the selected images.")
        self.assign_btn.clicked.connect(lambda: self.assign_selected(self.assign_combo.currentIndex(), True))
        self.unassign_btn.clicked.connect(lambda: self.assign_selected(self.assign_combo.currentIndex(), False))
        row.addWidget(self.selection_label, 1)
        row.addWidget(self.assign_combo)
        row.addWidget(self.assign_btn)
        row.addWidget(self.unassign_btn)
        return row

    def _build_import_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(QLabel("Import:"))
        for text, tip, slot in [
            ("Image folder…", "A folder of PNG/JPEG/GIF/BMP/WebP images; each sub-folder becomes a label.",
             self.import_folder),
            ("Course files…", "The course's sprites_*.npy file (its labels file is found beside it).",
             self.import_course),
            ("Sprite sheet…", "One image holding many sprites on a grid.", self.import_sprite_sheet)]:
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(lambda _=False, s=slot: s())
            row.addWidget(b)
        row.addStretch(1)
        return row

    # --- refreshing from the state -------------------------------------------------------------------------
    def _on_dataset_changed(self, ds) -> None:
        if self._refreshing:
            return
        self._save_path = None
        if ds is not None and Path(ds.source).parent == settings.datasets_dir():
            self._save_path = Path(ds.source)  # edits of a saved copy go back into it
        self.model.set_dataset(ds, self._filtered_rows(ds, FILTER_ALL))
        self.filter_combo.blockSignals(True)
        self.filter_combo.setCurrentIndex(0)  # a new data set starts on "All images", not the old label
        self.filter_combo.blockSignals(False)
        self._refresh_labels()

    def _on_label_names_changed(self, _names) -> None:
        if not self._refreshing:
            self._refresh_labels()

    def _refresh_labels(self) -> None:
        """Table, chart, filter and assign combos from state.dataset (keeping the filter when possible)."""
        ds = self.state.dataset
        names = list(ds.label_names) if ds is not None else []
        counts = ds.label_counts() if ds is not None and ds.n_labels else np.zeros(len(names), int)
        self._fill_table(names, counts)
        self._fill_chart(names, counts)
        keep = self.filter_combo.currentData()
        self.filter_combo.blockSignals(True)
        self.filter_combo.clear()
        self.filter_combo.addItem(f"All images ({ds.n:,})" if ds is not None else "All images", FILTER_ALL)
        if ds is not None:
            self.filter_combo.addItem(f"Unlabelled ({int((ds.labels <= 0).all(axis=1).sum()):,})", FILTER_UNLABELLED)
        for i, (n, c) in enumerate(zip(names, counts)):
            self.filter_combo.addItem(f"{n} ({int(c):,})", i)
        k = self.filter_combo.findData(keep)
        self.filter_combo.setCurrentIndex(k if k >= 0 else 0)
        self.filter_combo.blockSignals(False)
        self.assign_combo.clear()
        self.assign_combo.addItems(names)
        self._apply_filter()
        self._update_buttons()

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

    @staticmethod
    def _filtered_rows(ds, key) -> np.ndarray:
        if ds is None:
            return np.zeros(0, np.int64)
        if key == FILTER_UNLABELLED:
            return np.flatnonzero((ds.labels <= 0).all(axis=1))
        if isinstance(key, int) and 0 <= key < ds.n_labels:
            return np.flatnonzero(ds.labels[:, key] > 0)
        return np.arange(ds.n)

    def _apply_filter(self, *_):
        ds = self.state.dataset
        self.model.replace_dataset_labels(ds)
        self.model.set_rows(self._filtered_rows(ds, self.filter_combo.currentData()))
        self.shown_label.setText(f"{self.model.rowCount():,} shown")
        self._on_selection_changed()

    def _on_selection_changed(self, *_):
        n = len(self.view.selectionModel().selectedIndexes())
        self.selection_label.setText(f"{n:,} selected" if n else "Nothing selected (click, Shift/Ctrl-click)")
        self._update_buttons()

    def _update_buttons(self) -> None:
        ds = self.state.dataset
        has_labels = ds is not None and ds.n_labels > 0
        has_row = has_labels and self.table.currentRow() >= 0
        self.add_btn.setEnabled(ds is not None)
        for b in (self.rename_btn, self.delete_btn, self.up_btn, self.down_btn):
            b.setEnabled(has_row)
        selected = bool(self.view.selectionModel().selectedIndexes())
        self.assign_btn.setEnabled(has_labels and selected)
        self.unassign_btn.setEnabled(has_labels and selected)

    # --- label edits ------------------------------------------------------------------------------------------
    def add_label(self, name: str | None = None) -> bool:
        ds = self.state.dataset
        if ds is None:
            return False
        if not name:
            taken = {n.lower() for n in ds.label_names}
            name = next(f"new label {k}" if k > 1 else "new label" for k in range(1, 10_000)
                        if (f"new label {k}" if k > 1 else "new label") not in taken)
        labels = np.concatenate([ds.labels, np.zeros((ds.n, 1), np.float32)], axis=1)
        ok = self._commit(labels, [*ds.label_names, name], names_changed=True)
        if ok:
            self.table.setCurrentCell(ds.n_labels, 0)
        return ok

    def rename_label(self, index: int, name: str) -> bool:
        ds = self.state.dataset
        name = name.strip()
        if ds is None or not (0 <= index < ds.n_labels) or name == ds.label_names[index]:
            return False
        names = list(ds.label_names)
        names[index] = name
        return self._commit(ds.labels, names, names_changed=True)

    def delete_label(self, index: int) -> bool:
        ds = self.state.dataset
        if ds is None or not (0 <= index < ds.n_labels):
            return False
        labels = np.delete(ds.labels, index, axis=1)
        names = [n for i, n in enumerate(ds.label_names) if i != index]
        return self._commit(labels, names, names_changed=True)

    def move_label(self, index: int, delta: int) -> bool:
        ds = self.state.dataset
        j = index + delta
        if ds is None or not (0 <= index < ds.n_labels and 0 <= j < ds.n_labels):
            return False
        order = list(range(ds.n_labels))
        order[index], order[j] = order[j], order[index]
        ok = self._commit(ds.labels[:, order], [ds.label_names[k] for k in order], names_changed=True)
        if ok:
            self.table.setCurrentCell(j, 0)
        return ok

    def assign_selected(self, label: int, on: bool) -> int:
        """Give (or take away) label `label` to the selected images; returns how many changed."""
        ds = self.state.dataset
        if ds is None or not (0 <= label < ds.n_labels):
            return 0
        idx = np.array(sorted({int(i.data(ROLE_INDEX)) for i in self.view.selectionModel().selectedIndexes()}),
                       np.int64)
        if idx.size == 0:
            return 0
        labels = ds.labels.copy()
        before = labels[idx, label].copy()
        labels[idx, label] = 1.0 if on else 0.0
        changed = int((before != labels[idx, label]).sum())
        if changed:
            self._commit(labels, list(ds.label_names), names_changed=False)
        verb = "Assigned" if on else "Removed"
        self.state.status_message.emit(f"{verb} '{ds.label_names[label]}' "
                                       f"{'to' if on else 'from'} {changed:,} image(s).")
        return changed

    def _commit(self, labels, names: list[str], *, names_changed: bool) -> bool:
        """Replace state.dataset with the edited copy, announce it, and schedule the save."""
        ds = self.state.dataset
        try:
            new = ds.with_labels(labels, names)
        except Exception as e:  # noqa: BLE001 - DataError: empty or repeated names
            QMessageBox.warning(self, "Cannot change the labels", engine.user_message(e).split(": ", 1)[-1])
            self._refresh_labels()
            return False
        if ds.source.startswith("builtin:"):  # never write over the built-in files
            new = dataclasses.replace(new, name=f"{ds.name}-edited", source="")
        self._refreshing = True
        try:
            self.state.dataset = new
            if names_changed:
                self.state.set_label_names(list(names))
        finally:
            self._refreshing = False
        self.state.dataset_edited.emit(new)
        self._refresh_labels()
        self._save_timer.start()
        self.save_info.setText("Unsaved label edits (saved automatically in a moment)…")
        return True

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == 0:
            if not self.rename_label(item.row(), item.text()):
                self._refresh_labels()

    def _on_rename(self) -> None:
        row = self.table.currentRow()
        if row >= 0:
            self.table.editItem(self.table.item(row, 0))

    def _on_delete(self) -> None:
        row, ds = self.table.currentRow(), self.state.dataset
        if row < 0 or ds is None:
            return
        count = int(ds.label_counts()[row])
        if count:
            answer = QMessageBox.question(self, "Delete label",
                                          f"Delete the label '{ds.label_names[row]}'? {count:,} images carry it; "
                                          "they stay in the data set without this label.")
            if answer != QMessageBox.StandardButton.Yes:
                return
        self.delete_label(row)

    def _on_move(self, delta: int) -> None:
        row = self.table.currentRow()
        if row >= 0:
            self.move_label(row, delta)

    # --- saving ---------------------------------------------------------------------------------------------------
    def _target_path(self, ds) -> Path:
        if self._save_path is None:
            self._save_path = _unique(settings.imported_copy_path(ds))
        return self._save_path

    def _save_now(self) -> None:
        ds = self.state.dataset
        if ds is None:
            return
        path = self._target_path(ds)
        self.save_info.setText("Saving the label edits…")
        threads.run_in_background(engine.save_dataset, ds, path, on_done=self._on_saved,
                                   on_error=lambda m: self._on_save_failed(m, path))

    def flush_pending_save(self) -> None:
        """At exit: write pending edits now (synchronously), so closing never loses them."""
        if self._save_timer.isActive() and self.state.dataset is not None:
            self._save_timer.stop()
            try:
                self._on_saved(engine.save_dataset(self.state.dataset, self._target_path(self.state.dataset)))
            except Exception as e:  # noqa: BLE001
                QMessageBox.warning(self, "Could not save the label edits", engine.user_message(e))

    def _on_saved(self, path) -> None:
        path = str(path)
        self.save_info.setText(f"Edits saved to {path}")
        settings.qsettings().setValue("data/last", path)
        settings.add_recent("dataset", path)
        self.dataset_saved.emit(path)

    def _on_save_failed(self, message: str, path: Path) -> None:
        self.save_info.setText("The label edits could not be saved.")
        QMessageBox.warning(self, "Could not save the label edits",
                            f"{message}\n\nThe edits are still in the app; they were not written to {path}.")

    # --- imports ------------------------------------------------------------------------------------------------------
    def import_folder(self, path: str | None = None, size: int | None = None) -> None:
        if path is None:
            path = QFileDialog.getExistingDirectory(self, "Import a folder of images (sub-folders become labels)")
            if not path:
                return
        if size is None:
            choice, ok = QInputDialog.getItem(self, "Image size", "Store the images at (pixels, square):",
                                              ["16", "32"], 0, False)
            if not ok:
                return
            size = int(choice)
        self._load_import(_load_folder, path, size)

    def import_course(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Import the course sprites (sprites_*.npy)", "",
                                                  "Course sprites (*.npy)")
            if not path:
                return
        self._load_import(engine.load_dataset, f"course:{path}")

    def import_sprite_sheet(self, path: str | None = None, options: dict | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Import a sprite sheet", "",
                                                  "Images (*.png *.gif *.bmp *.webp *.jpg *.jpeg)")
            if not path:
                return
        if options is None:
            dlg = SheetOptionsDialog(path, self)
            if dlg.exec() != QDialog.DialogCode.Accepted:
                return
            options = dlg.options()
        self._load_import(_load_sheet, path, options)

    def _load_import(self, fn, *args) -> None:
        self.state.status_message.emit("Reading the files…")
        threads.run_in_background(fn, *args, on_done=self._show_import_preview,
                                   on_error=lambda m: QMessageBox.warning(self, "Could not import", m))

    def _show_import_preview(self, ds) -> None:
        dlg = ImportPreviewDialog(ds, self)
        dlg.accepted.connect(lambda: self._use_import(ds))
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.last_import_dialog = dlg
        dlg.open()
        self.import_dialog_shown.emit(dlg)

    def _use_import(self, ds) -> None:
        self.last_import_dialog = None
        path = _unique(settings.imported_copy_path(ds))
        self.state.set_dataset(ds)
        self._save_path = path
        self.save_info.setText("Saving a copy of the imported data set…")
        threads.run_in_background(engine.save_dataset, ds, path, on_done=self._on_saved,
                                   on_error=lambda m: self._on_save_failed(m, path))

    # --- layout memory ----------------------------------------------------------------------------------------------
    def save_layout(self, st) -> None:
        st.setValue("data_panel/splitter", self.splitter.saveState())

    def restore_layout(self, st) -> None:
        value = st.value("data_panel/splitter")
        if value is not None:
            self.splitter.restoreState(value)


def _load_folder(path: str, size: int):
    return engine.load_dataset(path, size=size)


def _load_sheet(path: str, options: dict):
    return engine.load_sprite_sheet(path, **options)


def _unique(path: Path) -> Path:
    """path, or path-2, path-3, ... if a file is already there (imports never overwrite each other)."""
    out, k = path, 2
    while out.exists():
        out, k = path.with_name(f"{path.stem}-{k}{path.suffix}"), k + 1
    return out
