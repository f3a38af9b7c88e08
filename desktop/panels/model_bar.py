"""Sample & compare's model bar: which model draws, where it runs, and in which number format."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget

from core.catalog import PRECISIONS
from desktop import engine

PRECISION_TEXT = {"auto": "Auto (fastest here)", "fp32": "fp32 (reference)", "bf16": "bf16", "fp16": "fp16"}
OPEN_FILE = "<open file>"


class ModelBar(QWidget):
    """The model menu (shipped model, training runs, a file), the model's description, the runtime, precision."""

    model_requested = Signal(str)  # a checkpoint path picked in the model menu
    open_model_requested = Signal()  # "Open file…" in the model menu

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.model_label = QLabel()
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.runtime_label = QLabel()
        self.runtime_label.setToolTip("Where sampling runs and in which number format. Timings are only comparable "
                                      "on the same device and precision.")
        self.precision_box = QComboBox()
        self.precision_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.precision_box.setToolTip("Number format of the model calls. bf16 is about twice as fast where the "
                                      "hardware supports it;\nfp32 is the reference. Images differ very slightly.")
        for p in PRECISIONS:
            if p != "fp16":  # fp16 only once a model on a CUDA device is loaded (show_model)
                self.precision_box.addItem(PRECISION_TEXT[p], p)
        self.precision_box.currentIndexChanged.connect(self._on_precision_changed)
        self.model_picker = QComboBox()
        self.model_picker.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model_picker.setToolTip("Which model draws: the shipped one, one of your training runs, or a file.")
        self.model_picker.activated.connect(self.picked)
        row.addWidget(QLabel("Model"))
        row.addWidget(self.model_picker)
        row.addWidget(self.model_label, 1)
        row.addWidget(self.runtime_label)
        row.addWidget(QLabel("Precision"))
        row.addWidget(self.precision_box)

    def precision(self) -> str:
        return self.precision_box.currentData() or "auto"

    def set_precision(self, precision: str) -> None:
        """Pick `precision` when this model offers it (a restored run's); otherwise keep the current choice."""
        i = self.precision_box.findData(precision)
        if i >= 0:
            self.precision_box.setCurrentIndex(i)

    def refresh_model_choices(self, choices: list[tuple[str, str]]) -> None:
        """Fill the model menu (label, path); the loaded model is selected, or listed first when not a choice."""
        current = str(self.state.model.path) if self.state.model is not None and self.state.model.path else ""
        live = self.state.model is not None and self.state.model.meta.get("live")
        self.model_picker.blockSignals(True)
        self.model_picker.clear()
        if live or (current and current not in [p for _, p in choices]):
            self.model_picker.addItem("Paused run (in memory)" if live else Path(current).name, "")
        for label, path in choices:
            self.model_picker.addItem(label, path)
        self.model_picker.addItem("Open file…", OPEN_FILE)
        i = self.model_picker.findData(current) if current and not live else 0
        self.model_picker.setCurrentIndex(max(i, 0))
        self.model_picker.blockSignals(False)

    def picked(self, index: int) -> None:
        """Item `index` of the model menu was chosen: ask for that model (or for a file)."""
        path = self.model_picker.itemData(index)
        if path == OPEN_FILE:
            self.open_model_requested.emit()
        elif path and (self.state.model is None or str(self.state.model.path) != path
                       or self.state.model.meta.get("live")):
            self.model_requested.emit(path)

    def show_model(self, bundle) -> None:
        if bundle is None:
            self.model_label.setText("<b>No model loaded.</b> Load one (File menu) or train one first.")
            self.runtime_label.setText("")
            return
        self.model_label.setText(bundle.description)
        self.model_label.setToolTip(str(bundle.path or ""))
        current = self.precision()
        self.precision_box.blockSignals(True)
        self.precision_box.clear()
        for p in engine.precision_choices(bundle):
            self.precision_box.addItem(PRECISION_TEXT[p], p)
        i = self.precision_box.findData(current)
        self.precision_box.setCurrentIndex(max(0, i))
        self.precision_box.blockSignals(False)
        self._on_precision_changed()

    def show_runtime(self, label: str) -> None:
        self.runtime_label.setText(f"<b>Runs on:</b> {label}")

    def _on_precision_changed(self) -> None:
        bundle = self.state.model
        if bundle is None:
            return
        try:
            _, label = engine.runtime_for(bundle, self.precision())
        except ValueError as e:
            label = f"cannot run: {e}"
        self.show_runtime(label)
