"""The Train tab's data set box: which images training uses, and what they are."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QGroupBox, QMessageBox, QVBoxLayout

from desktop import engine
from desktop.widgets.common import HintLabel, narrow_combo


class DatasetBox(QGroupBox):
    """The built-in sets, the current (edited or imported) set, and "Open another data set…"."""

    dataset_requested = Signal(str)  # a built-in name the user picked
    open_dataset_requested = Signal()  # "Open another data set..." picked

    def __init__(self, state, parent=None):
        super().__init__("Data set", parent)
        self.state = state
        lay = QVBoxLayout(self)
        self.combo = narrow_combo(QComboBox())
        self.combo.setToolTip("The images the model learns to draw. The built-in emoji set is a good "
                              "start; open your own images from the File menu or the Data & labels tab.")
        for name in engine.builtin_names():
            self.combo.addItem(f"Built-in: {name}", name)
        self.combo.addItem("Open another data set…", "__open__")
        self.combo.activated.connect(self.activated)
        self.info = HintLabel("Loading the built-in data set…")
        lay.addWidget(self.combo)
        lay.addWidget(self.info)

    def activated(self, index: int) -> None:
        """The user picked item `index`: ask for a built-in set or for another file (after a question)."""
        key = self.combo.itemData(index)
        ds = self.state.dataset
        if key == "__open__":
            self._sync_combo()  # stay on the current set until another one is opened
            self.open_dataset_requested.emit()
        elif key in engine.builtin_names() and (ds is None or ds.source != f"builtin:{key}"):
            if ds is not None and not self._confirm_leave(ds, key):
                self._sync_combo()
                return
            self.dataset_requested.emit(key)

    def _confirm_leave(self, ds, key: str) -> bool:
        """Going back to a pristine built-in set drops the current one from training: ask first."""
        answer = QMessageBox.question(
            self, "Use the original data set?",
            f"Train on the original {key} instead of the current set “{ds.name}” ({ds.n_labels} labels)?\n\n"
            "The current set stays saved; reopen it from File → Recent.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _sync_combo(self) -> None:
        ds = self.state.dataset
        combo = self.combo
        combo.blockSignals(True)
        i = combo.findData("__current__")
        if i >= 0:
            combo.removeItem(i)
        if ds is None:
            combo.setCurrentIndex(0)
        elif ds.source == f"builtin:{ds.name}" and combo.findData(ds.name) >= 0:
            combo.setCurrentIndex(combo.findData(ds.name))
        else:  # an edited or imported set is what training uses: offer it first, named as such
            edited = " — edited" if ds.source.startswith("builtin:") or "edited" in ds.name else ""
            combo.insertItem(0, f"Current: {ds.name} ({ds.n_labels} labels{edited})", "__current__")
            combo.setCurrentIndex(0)
        combo.blockSignals(False)

    def refresh(self) -> None:
        """The combo and the summary from state.dataset."""
        self._sync_combo()
        ds = self.state.dataset
        if ds is None:
            self.info.setText("No data set loaded.")
            return
        names = ", ".join(ds.label_names) if ds.label_names else "none (the model will be unconditional)"
        self.info.setText(f"{ds.n:,} images, {ds.size}×{ds.size} pixels.\n"
                                  f"{ds.n_labels} labels: {names}")
