"""The context composer: rows of context vectors (a slider per label) and the guidance scale.

What it builds is an `state.Composition`, handed to the Sample & compare tab through
`AppState.set_composition`. Labels follow the loaded model (or the data set it was trained on,
so renaming a label on the Data & labels tab renames it here too).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFrame, QGroupBox, QHBoxLayout, QLabel,
                               QPushButton, QScrollArea, QSlider, QVBoxLayout, QWidget)

from desktop.state import Composition, ContextRow, composer_state
from desktop.widgets.common import HintLabel
from desktop.widgets.context_row import ContextRowWidget, preset_list

GUIDE_FILE = "<file>"  # the "Guide with" item that opens a file dialog

MAX_ROWS = 16  # context rows at most


class Composer(QWidget):
    """Rows of context vectors + guidance; publishes `Composition`s to the AppState (debounced)."""

    composition_built = Signal(object)

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.names: list[str] = []
        self.rows: list[ContextRowWidget] = []
        self._restore: dict | None = None  # rows saved by the last session, applied when labels first arrive
        self._last_model = None  # the model the labels last came from: a switch keeps rows, an edit changes them
        self._publish_timer = QTimer(self)
        self._publish_timer.setSingleShot(True)
        self._publish_timer.setInterval(150)
        self._publish_timer.timeout.connect(self.publish)
        self._build()
        state.label_names_changed.connect(self._on_labels_maybe_changed)
        state.model_changed.connect(self._on_labels_maybe_changed)
        state.dataset_changed.connect(self._on_labels_maybe_changed)

    def _build(self) -> None:
        box = QGroupBox("Compose contexts for sampling")
        lay = QVBoxLayout(box)
        lay.addWidget(HintLabel("Each row is one context: the labels the model is asked to draw, with a "
                                "weight each. Sample & compare draws images for every row."))
        self.unknown_note = HintLabel("")
        self.unknown_note.setVisible(False)
        lay.addWidget(self.unknown_note)
        lay.addLayout(self._build_presets())
        self.rows_holder = QWidget()
        self.rows_layout = QVBoxLayout(self.rows_holder)
        self.rows_layout.setContentsMargins(0, 0, 0, 0)
        self.rows_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(self.rows_holder)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        lay.addWidget(scroll, 1)
        self.add_btn = QPushButton("Add a row")
        self.add_btn.setToolTip("Add an empty context row (no label) and set its sliders.")
        self.add_btn.clicked.connect(lambda: self.add_row([0.0] * len(self.names)))
        lay.addWidget(self.add_btn)
        lay.addLayout(self._build_guidance())
        lay.addLayout(self._build_guide_with())
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(box)

    def _build_presets(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.preset_combo = QComboBox()
        self.preset_combo.setToolTip("Ready-made contexts: every label on its own, the course's label mixes "
                                     "(e.g. hero + food 0.6), one label, or no label at all.")
        self.apply_btn = QPushButton("Use")
        self.apply_btn.setToolTip("Replace the rows below with this preset.")
        self.apply_btn.clicked.connect(self._on_apply_preset)
        row.addWidget(QLabel("Preset"))
        row.addWidget(self.preset_combo, 1)
        row.addWidget(self.apply_btn)
        return row

    def _build_guidance(self) -> QHBoxLayout:
        row = QHBoxLayout()
        tip = ("Classifier-free guidance: 1 = the plain labelled model (one model call per step). Higher values "
               "(2-4) follow the labels more strongly, at some cost in variety, and need two model calls per "
               "step. 0 ignores the labels.")
        label = QLabel("Guidance scale")
        label.setToolTip(tip)
        self.guidance_slider = QSlider(Qt.Orientation.Horizontal)
        self.guidance_slider.setRange(0, 80)
        self.guidance_slider.setValue(10)
        self.guidance_slider.setToolTip(tip)
        self.guidance_spin = QDoubleSpinBox()
        self.guidance_spin.setRange(0.0, 8.0)
        self.guidance_spin.setSingleStep(0.1)
        self.guidance_spin.setDecimals(1)
        self.guidance_spin.setValue(1.0)
        self.guidance_spin.setToolTip(tip)
        self.guidance_slider.valueChanged.connect(lambda v: self.guidance_spin.setValue(v / 10))
        self.guidance_spin.valueChanged.connect(self._on_guidance)
        row.addWidget(label)
        row.addWidget(self.guidance_slider, 1)
        row.addWidget(self.guidance_spin)
        return row

    def _build_guide_with(self) -> QHBoxLayout:
        row = QHBoxLayout()
        tip = ("What guidance (scale above 1) pushes the images away from. No label: classifier-free guidance, "
               "the usual choice. Not <label>: away from another label, e.g. fruit, not food. A weaker model: "
               "autoguidance (Karras et al. 2024), away from the mistakes of an earlier or smaller model of the "
               "same kind; it sharpens shapes with less loss of variety than guidance against no label.")
        label = QLabel("Guide with")
        label.setToolTip(tip)
        self.guide_combo = QComboBox()
        self.guide_combo.setToolTip(tip)
        self.guide_combo.activated.connect(self._on_guide_with)
        row.addWidget(label)
        row.addWidget(self.guide_combo, 1)
        self._guide_file = ""
        self._shipped_guide = ""
        self._fill_guide_combo("")
        return row

    def set_shipped_guide(self, path: str) -> None:
        """Offer the shipped model's guide (autoguidance) in "Guide with"; "" when this build has none."""
        self._shipped_guide = path
        self._fill_guide_combo(self.guide_with())

    def _fill_guide_combo(self, keep: str) -> None:
        """No label, "not <label>" per label, the shipped guide model (when there is one), another file."""
        combo = self.guide_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("No label (classifier-free)", "")
        for name in self.names:
            combo.addItem(f"Not {name}", f"label:{name}")
        if self._shipped_guide:
            combo.addItem("A weaker model: the shipped guide", f"model:{self._shipped_guide}")
        if self._guide_file:
            combo.addItem(f"A weaker model: {self._guide_file}", f"model:{self._guide_file}")
        combo.addItem("A weaker model from a file…", GUIDE_FILE)
        i = combo.findData(keep)
        combo.setCurrentIndex(max(i, 0))
        combo.blockSignals(False)

    def _on_guide_with(self, index: int) -> None:
        if self.guide_combo.itemData(index) == GUIDE_FILE:
            from PySide6.QtWidgets import QFileDialog

            path, _ = QFileDialog.getOpenFileName(self, "Guide with a weaker model", "",
                                                  "Diffusion Desk models (*.safetensors)")
            self._guide_file = path or self._guide_file
            self._fill_guide_combo(f"model:{path}" if path else "")
        self._schedule_publish()

    def raise_guidance(self, scale: float) -> bool:
        """Set the guidance to `scale` when it is lower (published at once); True when it changed."""
        if self.guidance_spin.value() >= scale:
            return False
        self.guidance_spin.setValue(scale)
        self.publish()
        return True

    def guide_with(self) -> str:
        return str(self.guide_combo.currentData() or "")

    # --- labels ------------------------------------------------------------------------------------------
    def effective_names(self) -> list[str]:
        """The model's labels; the data set's names when the model was trained on this data set."""
        ds, model = self.state.dataset, self.state.model
        if model is None:
            return list(ds.label_names) if ds is not None else []
        names = list(model.label_names)
        if ds is not None and ds.n_labels == len(names) and model.meta.get("dataset") in (ds.name, _base(ds.name)):
            return list(ds.label_names)
        return names

    def _on_labels_maybe_changed(self, *_):
        new = self.effective_names()
        model_switched = self.state.model is not self._last_model
        self._last_model = self.state.model
        if new != self.names:
            self.set_label_names(new, model_switched=model_switched)
        self._show_unknown_labels()

    def unknown_labels(self) -> list[str]:
        """Labels of the data set that the loaded model was not trained on (it cannot draw them yet)."""
        ds, model = self.state.dataset, self.state.model
        if ds is None or model is None:
            return []
        known = {n.strip().lower() for n in self.effective_names()}
        return [n for n in ds.label_names if n.strip().lower() not in known]

    def _show_unknown_labels(self) -> None:
        unknown = self.unknown_labels()
        if unknown:
            quoted = ", ".join(f"'{n}'" for n in unknown)
            n = len(self.names)
            self.unknown_note.setText(f"This model knows {n} label{'s' if n != 1 else ''}; {quoted} "
                                      f"appear{'s' if len(unknown) == 1 else ''} after you train or fine-tune on "
                                      "the edited set (Train tab: start from the shipped model).")
        self.unknown_note.setVisible(bool(unknown))

    def set_label_names(self, names: list[str], *, model_switched: bool = False) -> None:
        """Re-label the rows: renames keep weights by position, reorders/additions/deletions by name. After a
        model switch a row asking for a label the new model lacks is kept, hidden, until a model that knows
        the label returns, and a label no row has seen yet gets a row of its own (a newly taught label is
        offered at once); after a label edit a deleted label's weights go."""
        old, names = self.names, list(names)
        rename = bool(old) and len(old) == len(names) and set(old) != set(names)
        full = [self._full_weights(r, names if rename else old) for r in self.rows]
        negs = [r.kept_negative() for r in self.rows]
        if rename:  # a renamed label keeps its place as a row's "not" label too
            negs = [names[old.index(n)] if n in old else n for n in negs]
        if not model_switched:
            full = [{k: v for k, v in d.items() if k in names} for d in full]
        if self._restore is not None and names and not self.rows:  # the last session's rows, by label name
            saved = self._restore
            self._restore = None
            full = [dict(zip(saved["names"], w)) for w in saved["rows"]][:MAX_ROWS]
            negs = list(saved.get("negatives") or [""] * len(full))[:MAX_ROWS]
        seen = {k for d in full for k in d}
        new_labels = [n for n in names if n not in seen] if full and model_switched else []
        if not full and names:
            full = [dict(zip(names, row)) for row in np.eye(len(names)).tolist()]
        full += [{n: 1.0} for n in new_labels][:max(0, MAX_ROWS - len(full))]
        negs = (negs + [""] * len(full))[:len(full)]
        if not model_switched:  # a deleted label is no row's "not" label any more
            negs = [n if n in names else "" for n in negs]
        self.names = names
        self._clear_rows()
        for d, neg in zip(full, negs):
            self.add_row([d.get(n, 0.0) for n in names], publish=False,
                         extra={k: v for k, v in d.items() if k not in names}, negative=neg)
        if new_labels and old:
            quoted = ", ".join(f"'{n}'" for n in new_labels)
            self.state.status_message.emit(f"Sampling rows now include {quoted}, new in this model.")
        self._fill_presets()
        self._fill_guide_combo(self.guide_with())  # "not <label>" follows the labels; a gone one falls back
        self._schedule_publish()

    @staticmethod
    def _full_weights(row: "ContextRowWidget", keys: list[str]) -> dict[str, float]:
        """A row's weights by label name, shown and hidden ones; `keys` renames the shown ones by position."""
        return {**row.extra, **dict(zip(keys, row.weights()))}

    def _fill_presets(self) -> None:
        self.preset_combo.clear()
        for title, rows in preset_list(self.names):
            self.preset_combo.addItem(title, rows)

    # --- rows ------------------------------------------------------------------------------------------------
    def add_row(self, weights: list[float], publish: bool = True, extra: dict | None = None,
                negative: str = "") -> ContextRowWidget | None:
        if len(self.rows) >= MAX_ROWS:
            return None
        row = ContextRowWidget(self.names, weights, extra=extra, negative=negative)
        row.changed.connect(self._schedule_publish)
        row.remove_requested.connect(self._remove_row)
        self.rows_layout.insertWidget(self.rows_layout.count() - 1, row)
        if any(v > 0 for v in row.extra.values()):
            row.setVisible(False)  # waits for a model that knows its label
        self.rows.append(row)
        self.add_btn.setEnabled(len(self.rows) < MAX_ROWS)
        if publish:
            self._schedule_publish()
        return row

    def _remove_row(self, row: ContextRowWidget) -> None:
        self.rows.remove(row)
        row.setParent(None)
        row.deleteLater()
        self.add_btn.setEnabled(True)
        self._schedule_publish()

    def _clear_rows(self) -> None:
        for row in self.rows:
            row.setParent(None)
            row.deleteLater()
        self.rows = []

    def _on_apply_preset(self) -> None:
        self.apply_preset(self.preset_combo.currentIndex())

    def apply_preset(self, index: int) -> None:
        rows = self.preset_combo.itemData(index)
        if rows is None:
            return
        self.preset_combo.setCurrentIndex(index)
        self._clear_rows()
        for w in rows:
            self.add_row(list(w), publish=False)
        self._schedule_publish()

    # --- publishing --------------------------------------------------------------------------------------------
    def _on_guidance(self, value: float) -> None:
        self.guidance_slider.blockSignals(True)
        self.guidance_slider.setValue(round(value * 10))
        self.guidance_slider.blockSignals(False)
        self._schedule_publish()

    def _schedule_publish(self) -> None:
        self._publish_timer.start()

    def composition(self) -> Composition:
        rows = [ContextRow(r.title_text(), r.weights(), r.negative()) for r in self.sampled_rows()]
        return Composition(rows, float(self.guidance_spin.value()), self.guide_with())

    def sampled_rows(self) -> list["ContextRowWidget"]:
        """The rows the loaded model can draw (not those waiting for a label it lacks)."""
        return [r for r in self.rows if not any(v > 0 for v in r.extra.values())]

    def saved_state(self) -> dict:
        """The rows (weights by label name) and the guidance, for the next session."""
        rows = self.sampled_rows()
        return {"names": list(self.names), "rows": [r.weights() for r in rows],
                "guidance": float(self.guidance_spin.value()), "guide_with": self.guide_with(),
                "negatives": [r.negative() for r in rows]}

    def restore_state(self, saved: dict) -> None:
        """The last session's composition: guidance now, rows when the labels arrive (mapped by name)."""
        checked = composer_state(saved)
        if checked is None:
            return  # an unreadable entry costs only the last session's rows
        names, rows, guide = checked["names"], checked["rows"], checked["guide_with"]
        self.guidance_spin.setValue(checked["guidance"])
        if guide.startswith("model:") and "\0" not in guide and Path(guide[6:]).is_file():
            self._guide_file = guide[6:]
        self._fill_guide_combo(guide)
        self._restore = {"names": names, "rows": rows, "negatives": checked["negatives"]}
        if self.names:  # labels already here: apply at once
            self._clear_rows()
            self.set_label_names(self.names)

    def publish(self) -> None:
        self._publish_timer.stop()
        comp = self.composition()
        self.state.set_composition(comp)
        self.composition_built.emit(comp)


def _base(name: str) -> str:
    """'emoji16-edited' -> 'emoji16': an edited copy still matches the model trained on the original."""
    return name[: -len("-edited")] if name.endswith("-edited") else name
