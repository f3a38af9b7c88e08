"""The history gallery (Sample & compare's Lab → History…): every run, newest first, filtered by model, sampler
or label; one click restores a run's settings into Sample & compare (a grid's into the X/Y grid)."""
from __future__ import annotations

import time

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (QComboBox, QDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMessageBox,
                               QPushButton, QVBoxLayout)

from desktop import threads
from desktop.jobs import history as hj

ALL = "all"
ICON = QSize(160, 96)


def _load_with_images() -> list[tuple[dict, QImage]]:
    """On a worker: the entries and their thumbnails as QImages (QPixmaps are made on the GUI thread)."""
    return [(e, QImage(e["thumbnail"]) if e["thumbnail"] else QImage()) for e in hj.load_entries()]


def entry_text(entry: dict) -> str:
    when = time.strftime("%d %b %H:%M:%S", time.localtime(entry.get("time", 0)))
    samplers = ", ".join(f"{r.get('sampler')} {r.get('steps')}" for r in entry.get("results", [])[:4])
    samplers = samplers if len(samplers) <= 40 else samplers[:38] + "…"
    kind = {"grid": "grid", "sketch": f"sketch, seed {entry.get('seed')}"}.get(entry.get("kind"),
                                                                              f"seed {entry.get('seed')}")
    return f"{when} · {kind}\n{samplers}"


def entry_details(entry: dict) -> str:
    model = entry.get("model", {})
    rows = ", ".join(map(str, entry.get("row_names", [])))[:200]
    results = "; ".join(f"{r.get('title')}: {r.get('nfe')} calls, {r.get('seconds')} s"
                        for r in entry.get("results", [])[:16])
    digest = str(model.get("sha256", ""))[:12]
    return (f"<b>{model.get('name', '?')}</b> (sha256 {digest or 'unknown'}) on {entry.get('runtime', '?')}<br>"
            f"Rows: {rows or '—'}<br>{results}" + ("<br><i>cancelled before the end</i>" if entry.get("cancelled")
                                                    else ""))


class HistoryDialog(QDialog):
    restore_requested = Signal(dict)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("History")
        self.entries: list[dict] = []
        self._images: dict[str, QImage] = {}
        lay = QVBoxLayout(self)
        filters = QHBoxLayout()
        self.model_filter, self.sampler_filter, self.label_filter = QComboBox(), QComboBox(), QComboBox()
        for title, box in (("Model", self.model_filter), ("Sampler", self.sampler_filter),
                           ("Label", self.label_filter)):
            filters.addWidget(QLabel(title))
            box.currentIndexChanged.connect(self._fill)
            filters.addWidget(box)
        filters.addStretch(1)
        lay.addLayout(filters)
        self.list = QListWidget()
        self.list.setViewMode(QListWidget.ViewMode.IconMode)
        self.list.setIconSize(ICON)
        self.list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.list.setMovement(QListWidget.Movement.Static)
        self.list.setSpacing(6)
        self.list.setWordWrap(True)
        self.list.setUniformItemSizes(True)
        self.list.setGridSize(QSize(ICON.width() + 24, ICON.height() + 64))
        self.list.itemDoubleClicked.connect(lambda _: self.restore_selected())
        self.list.currentItemChanged.connect(self._on_selected)
        lay.addWidget(self.list, 1)
        self.details = QLabel("Every run of Sample & compare and every X/Y grid appears here.")
        self.details.setWordWrap(True)
        lay.addWidget(self.details)
        buttons = QHBoxLayout()
        self.restore_button = QPushButton("Restore")
        self.restore_button.setToolTip("Put this run's model, samplers, seed, rows and guidance back into Sample "
                                       "& compare; Run then draws the same pictures (double-click works too)")
        self.delete_button = QPushButton("Delete")
        self.clear_button = QPushButton("Clear all…")
        self.clear_button.setToolTip(f"Remove every entry (the history keeps the newest {hj.MAX_ENTRIES} by itself)")
        close = QPushButton("Close")
        for b in (self.restore_button, self.delete_button, self.clear_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(close)
        lay.addLayout(buttons)
        self.restore_button.clicked.connect(self.restore_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.clear_button.clicked.connect(self.ask_clear)
        close.clicked.connect(self.close)
        self.resize(820, 560)
        self._update_buttons()

    # ============================================================================ loading
    def reload(self) -> None:
        """Read the history on a worker; the list fills when it is read."""
        threads.run_in_background(_load_with_images, on_done=self._loaded)

    def _loaded(self, items: list[tuple[dict, QImage]]) -> None:
        self.entries = [e for e, _ in items]
        self._images = {e["id"]: img for e, img in items}
        models = sorted({e.get("model", {}).get("name", "?") for e in self.entries})
        samplers = sorted({r.get("sampler", "?") for e in self.entries for r in e.get("results", [])})
        labels = sorted({str(n) for e in self.entries for n in e.get("row_names", [])})
        for box, values in ((self.model_filter, models), (self.sampler_filter, samplers), (self.label_filter, labels)):
            keep = box.currentText()
            box.blockSignals(True)
            box.clear()
            box.addItems([ALL, *values])
            box.setCurrentText(keep if keep in values else ALL)
            box.blockSignals(False)
        self._fill()

    def visible_entries(self) -> list[dict]:
        model, sampler, label = (b.currentText() for b in (self.model_filter, self.sampler_filter, self.label_filter))
        out = []
        for e in self.entries:
            if model not in ("", ALL) and e.get("model", {}).get("name") != model:
                continue
            if sampler not in ("", ALL) and sampler not in {r.get("sampler") for r in e.get("results", [])}:
                continue
            if label not in ("", ALL) and label not in map(str, e.get("row_names", [])):
                continue
            out.append(e)
        return out

    def _fill(self) -> None:
        self.list.clear()
        for e in self.visible_entries():
            item = QListWidgetItem(entry_text(e))
            img = self._images.get(e["id"])
            if img is not None and not img.isNull():
                pix = QPixmap.fromImage(img).scaled(ICON, Qt.AspectRatioMode.KeepAspectRatio,
                                                   Qt.TransformationMode.FastTransformation)
                item.setIcon(QIcon(pix))
            item.setData(Qt.ItemDataRole.UserRole, e["id"])
            item.setToolTip(entry_details(e).replace("<br>", "\n").replace("<b>", "").replace("</b>", ""))
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)
        else:
            self.details.setText("No runs yet: every run of Sample & compare, every X/Y grid and every sketch "
                                 "or inpainting appears here."
                                 if not self.entries else "No run matches these filters.")
        self._update_buttons()

    # ============================================================================ actions
    def selected(self) -> dict | None:
        item = self.list.currentItem()
        if item is None:
            return None
        entry_id = item.data(Qt.ItemDataRole.UserRole)
        return next((e for e in self.entries if e["id"] == entry_id), None)

    def _on_selected(self, *_):
        e = self.selected()
        if e is not None:
            self.details.setText(entry_details(e))
        self._update_buttons()

    def _update_buttons(self) -> None:
        has = self.selected() is not None
        self.restore_button.setEnabled(has)
        self.delete_button.setEnabled(has)
        self.clear_button.setEnabled(bool(self.entries))

    def restore_selected(self) -> None:
        e = self.selected()
        if e is not None:
            self.restore_requested.emit(e)

    def delete_selected(self) -> None:
        e = self.selected()
        if e is not None:
            threads.run_in_background(hj.delete, e["id"], on_done=lambda _: self.reload())

    def ask_clear(self) -> None:
        answer = QMessageBox.question(self, "Clear the history", f"Remove all {len(self.entries)} runs from the "
                                      "history? The pictures you saved yourself are not touched.")
        if answer == QMessageBox.StandardButton.Yes:
            threads.run_in_background(hj.clear, on_done=lambda _: self.reload())
