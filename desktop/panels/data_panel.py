"""The Data & labels tab: the label table, a virtualised image browser with label filter and
assignment, the class balance chart, imports (with preview and skipped-file report), and the
context composer.

Label edits make a new data set object (`dataset.with_labels`) that replaces `state.dataset`;
name edits are announced with `state.set_label_names`. Edited and imported data sets are saved
as .npz in the per-user data folder (never over the built-in files), a second after the last edit.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QDialog, QFileDialog, QInputDialog, QMessageBox, QTableWidgetItem, QWidget

from core import labels as labels_core
from desktop import engine, settings, threads
from desktop.panels.image_browser import (FILTER_ALL, FILTER_UNLABELLED, ROLE_INDEX, filtered_rows)
from desktop.panels.import_dialogs import (ImportPreviewDialog, SheetOptionsDialog, load_folder, load_sheet,
                                           unique_path)
from desktop.panels.data_layout import DataLayout
from desktop.widgets.composer import Composer


class DataPanel(DataLayout, QWidget):
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
        self.composer = Composer(state)
        self.composer.set_shipped_guide(engine.shipped_guide_model())
        self._build()
        state.dataset_changed.connect(self._on_dataset_changed)
        state.label_names_changed.connect(self._on_label_names_changed)

    # --- refreshing from the state -------------------------------------------------------------------------
    def _on_dataset_changed(self, ds) -> None:
        if self._refreshing:
            return
        self._save_path = None
        if ds is not None and Path(ds.source).parent == settings.datasets_dir():
            self._save_path = Path(ds.source)  # edits of a saved copy go back into it
        self.model.set_dataset(ds, filtered_rows(ds, FILTER_ALL))
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
        self.labels_box.fill(names, counts)
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

    def _apply_filter(self, *_):
        ds = self.state.dataset
        self.model.replace_dataset_labels(ds)
        self.model.set_rows(filtered_rows(ds, self.filter_combo.currentData()))
        self.shown_label.setText(f"{self.model.rowCount():,} shown")
        self._on_selection_changed()

    def _on_selection_changed(self, *_):
        n = len(self.view.selectionModel().selectedIndexes())
        self.selection_label.setText(f"{n:,} selected" if n else "None selected")
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
        labels, names = labels_core.add_label(ds.labels, list(ds.label_names), name or None)
        ok = self._commit(labels, names, names_changed=True)
        if ok:
            self.table.setCurrentCell(ds.n_labels, 0)
        return ok

    def rename_label(self, index: int, name: str) -> bool:
        ds = self.state.dataset
        name = name.strip()
        if ds is None or not (0 <= index < ds.n_labels) or name == ds.label_names[index]:
            return False
        return self._commit(ds.labels, labels_core.rename_label(list(ds.label_names), index, name), names_changed=True)

    def delete_label(self, index: int) -> bool:
        ds = self.state.dataset
        if ds is None or not (0 <= index < ds.n_labels):
            return False
        labels, names = labels_core.delete_label(ds.labels, list(ds.label_names), index)
        return self._commit(labels, names, names_changed=True)

    def move_label(self, index: int, delta: int) -> bool:
        ds = self.state.dataset
        j = index + delta
        if ds is None or not (0 <= index < ds.n_labels and 0 <= j < ds.n_labels):
            return False
        labels, names = labels_core.move_label(ds.labels, list(ds.label_names), index, j)
        ok = self._commit(labels, names, names_changed=True)
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
        labels, changed = labels_core.assign_label(ds.labels, idx, label, on)
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
            self._save_path = unique_path(settings.imported_copy_path(ds))
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
        self._load_import(load_folder, path, size)

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
        try:  # say it now if the file is no image, not after the cell sizes were asked for
            engine.image_size(path)
        except Exception as e:  # noqa: BLE001 - any unreadable file: a dialog naming it
            QMessageBox.warning(self, "Cannot import this sprite sheet",
                                f"{Path(path).name} is not an image this app can read ({engine.user_message(e)}). "
                                "Choose a PNG, GIF, BMP, WebP or JPEG file with the sprites on a grid.")
            return
        if options is None:
            dlg = SheetOptionsDialog(path, self)
            if dlg.exec() != QDialog.DialogCode.Accepted:
                return
            options = dlg.options()
        self._load_import(load_sheet, path, options)

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
        path = unique_path(settings.imported_copy_path(ds))
        self.state.set_dataset(ds)
        self._save_path = path
        self.save_info.setText("Saving a copy of the imported data set…")
        threads.run_in_background(engine.save_dataset, ds, path, on_done=self._on_saved,
                                   on_error=lambda m: self._on_save_failed(m, path))

    # --- layout memory ----------------------------------------------------------------------------------------------
    def save_layout(self, st) -> None:
        st.setValue("data_panel/splitter", self.splitter.saveState())
        st.setValue("composer/state", json.dumps(self.composer.saved_state()))

    def restore_layout(self, st) -> None:
        if (value := settings.read_bytes("data_panel/splitter", st)) is not None:
            self.splitter.restoreState(value)
        saved = settings.load_json("composer/state", st)
        if isinstance(saved, dict):
            self.composer.restore_state(saved)
