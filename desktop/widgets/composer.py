"""The context composer: rows of context vectors (a slider per label) and the guidance scale.

What it builds is an `state.Composition`, handed to the Sample & compare tab through
`AppState.set_composition`. Labels follow the loaded model (or the data set it was trained on,
so renaming a label on the Data & labels tab renames it here too).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFrame, QGridLayout, QGroupBox, QHBoxLayout, QLabel,
                               QPushButton, QScrollArea, QSlider, QToolButton, QVBoxLayout, QWidget)

from core.catalog import COURSE_LABEL_NAMES
from desktop.state import Composition, ContextRow
from desktop.widgets.common import HintLabel

GUIDE_FILE = "<file>"  # the "Guide with" item that opens a file dialog

MAX_ROWS = 16
SLIDER_STEPS = 100  # a weight slider moves in steps of 0.01

COURSE_LABELS = list(COURSE_LABEL_NAMES)
# The lessons' mixed contexts, as (label, weight) pairs.
COURSE_MIXES = [[("hero", 1.0), ("food", 0.6)], [("food", 0.6), ("spell", 0.4)],
                [("hero", 1.0), ("side-facing", 1.0)], [("non-hero", 1.0), ("food", 0.6)]]


def row_title(weights, names: list[str]) -> str:
    """'face', 'hero + food 0.6', or 'no label (unconditional)' from a weight vector."""
    parts = [(w, n) for w, n in zip(weights, names) if w > 0]
    if not parts:
        return "no label (unconditional)"
    parts.sort(key=lambda p: -p[0])
    return " + ".join(n if abs(w - 1) < 1e-6 else f"{n} {w:.2g}" for w, n in parts)


def preset_list(names: list[str]) -> list[tuple[str, list[list[float]]]]:
    """(title, rows of weights) presets for these labels: all labels, mixes, single labels, none."""
    L = len(names)
    eye = np.eye(L).tolist()
    presets = [("One row per label", eye)] if L else []
    mixes = _mixes(names)
    if mixes:
        presets.append(("Label mixes" + (" (as in the course)" if names == COURSE_LABELS else ""), mixes))
    presets += [(f"Only '{n}'", [eye[i]]) for i, n in enumerate(names)]
    presets.append(("No label (unconditional)", [[0.0] * L]))
    return presets


def _mixes(names: list[str]) -> list[list[float]]:
    index = {n: i for i, n in enumerate(names)}
    if names == COURSE_LABELS:
        pairs = COURSE_MIXES
    else:  # neighbouring labels, the second at 0.6: e.g. "face + person 0.6"
        pairs = [[(names[i], 1.0), (names[i + 1], 0.6)] for i in range(min(len(names) - 1, 4))]
    rows = []
    for pair in pairs:
        w = [0.0] * len(names)
        for n, v in pair:
            w[index[n]] = v
        rows.append(w)
    return rows


class ContextRowWidget(QFrame):
    """One context vector: a title, a slider per label and a remove button."""

    changed = Signal()
    remove_requested = Signal(object)

    def __init__(self, names: list[str], weights: list[float], parent=None, extra: dict | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.names = list(names)
        # Weights of labels the current model does not know, by name: kept so the row comes back intact when
        # a model that knows them is loaded again. A row asking for any of them is hidden and not sampled.
        self.extra = {k: float(v) for k, v in (extra or {}).items()}
        self.sliders: list[QSlider] = []
        self.values: list[QLabel] = []
        grid = QGridLayout(self)
        grid.setContentsMargins(8, 6, 8, 6)
        self.title = QLabel()
        f = self.title.font()
        f.setBold(True)
        self.title.setFont(f)
        self.remove_btn = QToolButton(text="✕")
        self.remove_btn.setAutoRaise(True)
        self.remove_btn.setToolTip("Remove this row")
        self.remove_btn.clicked.connect(lambda: self.remove_requested.emit(self))
        grid.addWidget(self.title, 0, 0, 1, 2)
        grid.addWidget(self.remove_btn, 0, 2, Qt.AlignmentFlag.AlignRight)
        for i, name in enumerate(self.names):
            self._add_slider(grid, i + 1, name, weights[i] if i < len(weights) else 0.0)
        grid.setColumnStretch(1, 1)
        self._update_title()

    def _add_slider(self, grid: QGridLayout, row: int, name: str, value: float) -> None:
        label = QLabel(name)
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(0, SLIDER_STEPS)
        slider.setValue(round(value * SLIDER_STEPS))
        slider.setToolTip(f"How much of '{name}' this context asks for: 0 = none, 1 = fully. Mixing labels "
                          "(e.g. 1.0 and 0.6) asks the model for something in between.")
        shown = QLabel(f"{value:.2f}")
        shown.setMinimumWidth(32)
        slider.valueChanged.connect(self._on_slider)
        grid.addWidget(label, row, 0)
        grid.addWidget(slider, row, 1)
        grid.addWidget(shown, row, 2)
        self.sliders.append(slider)
        self.values.append(shown)

    def _on_slider(self, _v: int) -> None:
        for s, lab in zip(self.sliders, self.values):
            lab.setText(f"{s.value() / SLIDER_STEPS:.2f}")
        self._update_title()
        self.changed.emit()

    def weights(self) -> list[float]:
        return [s.value() / SLIDER_STEPS for s in self.sliders]

    def set_weights(self, weights: list[float]) -> None:
        for s, w in zip(self.sliders, weights):
            s.setValue(round(w * SLIDER_STEPS))

    def _update_title(self) -> None:
        self.title.setText(row_title(self.weights(), self.names))


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
        if not model_switched:
            full = [{k: v for k, v in d.items() if k in names} for d in full]
        if self._restore is not None and names and not self.rows:  # the last session's rows, by label name
            saved = self._restore
            self._restore = None
            full = [dict(zip(saved["names"], w)) for w in saved["rows"]][:MAX_ROWS]
        seen = {k for d in full for k in d}
        new_labels = [n for n in names if n not in seen] if full and model_switched else []
        if not full and names:
            full = [dict(zip(names, row)) for row in np.eye(len(names)).tolist()]
        full += [{n: 1.0} for n in new_labels][:max(0, MAX_ROWS - len(full))]
        self.names = names
        self._clear_rows()
        for d in full:
            self.add_row([d.get(n, 0.0) for n in names], publish=False,
                         extra={k: v for k, v in d.items() if k not in names})
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
    def add_row(self, weights: list[float], publish: bool = True, extra: dict | None = None) -> ContextRowWidget | None:
        if len(self.rows) >= MAX_ROWS:
            return None
        row = ContextRowWidget(self.names, weights, extra=extra)
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
        rows = [ContextRow(row_title(r.weights(), self.names), r.weights()) for r in self.sampled_rows()]
        return Composition(rows, float(self.guidance_spin.value()), self.guide_with())

    def sampled_rows(self) -> list["ContextRowWidget"]:
        """The rows the loaded model can draw (not those waiting for a label it lacks)."""
        return [r for r in self.rows if not any(v > 0 for v in r.extra.values())]

    def saved_state(self) -> dict:
        """The rows (weights by label name) and the guidance, for the next session."""
        return {"names": list(self.names), "rows": [r.weights() for r in self.sampled_rows()],
                "guidance": float(self.guidance_spin.value()), "guide_with": self.guide_with()}

    def restore_state(self, saved: dict) -> None:
        """The last session's composition: guidance now, rows when the labels arrive (mapped by name)."""
        try:
            names, rows, g = list(saved["names"]), [list(map(float, r)) for r in saved["rows"]], float(saved["guidance"])
        except (KeyError, TypeError, ValueError):
            return  # an unreadable entry costs only the last session's rows
        self.guidance_spin.setValue(g)
        guide = saved.get("guide_with", "")
        if isinstance(guide, str) and guide.startswith("model:") and Path(guide[6:]).is_file():
            self._guide_file = guide[6:]
        self._fill_guide_combo(guide if isinstance(guide, str) else "")
        self._restore = {"names": names, "rows": [r for r in rows if len(r) == len(names)]}
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
