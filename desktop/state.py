"""Shared, observable app state: the loaded data set, model, label names and context composition.

Panels read it and listen to its signals; nothing here imports torch (data sets and model bundles
are passed around as opaque objects made by the service layer), so the window can open before
torch has loaded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QObject, Signal


MAX_ROWS, MAX_NAME = 256, 200  # more rows, or a longer label name, than the composer ever saves


def composer_state(d) -> dict | None:
    """The composer's saved state ({"names", "rows", "guidance", "guide_with"}: the settings file, a history entry
    or a PNG's text, all the user's) when every part is sound, else None: names are short strings, each row one
    finite weight per name, guidance finite in [0, 50]."""
    if not isinstance(d, dict) or not isinstance(d.get("names"), list) or not isinstance(d.get("rows"), list):
        return None
    names, rows, g = d["names"], d["rows"], d.get("guidance", 1.0)
    if len(names) > MAX_ROWS or len(rows) > MAX_ROWS or not all(isinstance(n, str) and len(n) <= MAX_NAME
                                                                 for n in names):
        return None
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    if not all(isinstance(r, list) and len(r) == len(names) and all(map(number, r)) for r in rows):
        return None
    if not number(g) or not 0 <= g <= 50:
        return None
    guide = d.get("guide_with", "")
    negs = d.get("negatives")  # each row's own "not" label ("" = the composer's "Guide with"); optional
    if not (isinstance(negs, list) and len(negs) == len(rows) and all(isinstance(n, str) and len(n) <= MAX_NAME
                                                                      for n in negs)):
        negs = [""] * len(rows)
    return {"names": list(names), "rows": [[float(v) for v in r] for r in rows], "guidance": float(g),
            "guide_with": guide if isinstance(guide, str) and len(guide) <= 4096 else "", "negatives": negs}


@dataclass
class ContextRow:
    """One context vector for sampling: a name for people and one weight (0..1) per label."""

    name: str
    weights: list[float]
    # This row's own "not" label: guidance pushes this row away from that label ("fruit, not food") instead of
    # what the composer's "Guide with" says; "" = as "Guide with".
    negative: str = ""


@dataclass
class Composition:
    """What the context composer hands to the sampler: rows of context vectors + the guidance scale."""

    rows: list[ContextRow] = field(default_factory=list)
    guidance: float = 1.0
    # What guidance pushes away from: "" = no label (classifier-free guidance), "label:NAME" = another label
    # ("fruit, not food"), "model:PATH" = a weaker model of the same kind (autoguidance, Karras et al. 2024).
    guide_with: str = ""

    def guide_for(self, label_names: list[str]) -> tuple[np.ndarray | None, str, str]:
        """(negative context (L,) or None, guide model path or "", a note) for a model with these labels.
        A negative label the model does not know falls back to "no label", and the note says so."""
        kind, _, value = self.guide_with.partition(":")
        if kind == "model" and value:
            return None, value, f"guided against the model {value}"
        if kind == "label" and value:
            lowered = [n.strip().lower() for n in label_names]
            if value.strip().lower() in lowered:
                neg = np.zeros(len(label_names), np.float32)
                neg[lowered.index(value.strip().lower())] = 1.0
                return neg, "", f"guided away from {value}"
            return None, "", f"this model has no label {value}: guided against no label"
        return None, "", ""

    def row_negatives(self, label_names: list[str], context: np.ndarray) -> np.ndarray | None:
        """(R, L) what guidance pushes each row of `context` away from, when some composer row has its own "not"
        label the model knows and `context` is the composer's rows; else None (every row as "Guide with"). Rows
        without their own take "Guide with"'s label, or "no label" (zeros: classifier-free guidance)."""
        lowered = [n.strip().lower() for n in label_names]
        own = [r.negative.strip().lower() for r in self.rows]
        if not any(n and n in lowered for n in own) or len(context) != len(self.rows):
            return None
        if not np.array_equal(np.asarray(context, np.float32), self.matrix(len(label_names))):
            return None  # the rows sampled are not the composer's (e.g. one per label for another model)
        base, _, _ = self.guide_for(label_names)
        out = np.zeros((len(self.rows), len(label_names)), np.float32)
        for i, name in enumerate(own):
            if name in lowered:
                out[i, lowered.index(name)] = 1.0
            elif base is not None:
                out[i] = base
        return out

    def matrix(self, n_labels: int) -> np.ndarray:
        """(R, n_labels) float32; an empty composition is one all-zero (unconditional) row."""
        if not self.rows:
            return np.zeros((1, n_labels), np.float32)
        m = np.zeros((len(self.rows), n_labels), np.float32)
        for i, row in enumerate(self.rows):
            w = np.asarray(row.weights[:n_labels], np.float32)
            m[i, : len(w)] = w
        return m

    def contexts_for(self, label_names: list[str], n_labels: int | None = None) -> tuple[np.ndarray, list[str], str]:
        """(R, L) context rows for a model with these labels (n_labels None: no model yet), their names, a note.

        These rows when they fit the model's labels; otherwise (no composition, or one made for a data set
        with other labels, e.g. a course model over the emoji set) one row per label of the model.
        """
        names, known = list(label_names), n_labels is not None
        n_labels = n_labels if known else max(1, len(names))
        if self.rows and (not known or max(len(r.weights) for r in self.rows) == n_labels):
            note = f"{len(self.rows)} rows from the context composer"
            return self.matrix(n_labels), [r.name for r in self.rows], note
        if not names:
            return np.zeros((1, n_labels), np.float32), ["no label"], "1 row without a label"
        note = "one row per label of the model"
        if self.rows:
            note += (f" (the composer's rows are for {max(len(r.weights) for r in self.rows)} labels, "
                     f"the model knows {n_labels})")
        return Composition.one_per_label(names).matrix(n_labels), names, note

    @staticmethod
    def one_per_label(label_names: list[str]) -> "Composition":
        eye = np.eye(len(label_names), dtype=np.float32)
        return Composition([ContextRow(name, eye[i].tolist()) for i, name in enumerate(label_names)])


class AppState(QObject):
    """Single source of truth shared by the panels. Setters emit; panels never poke each other."""

    dataset_changed = Signal(object)  # core.data.ImageDataset
    model_changed = Signal(object)  # core.checkpoint.ModelBundle (or None)
    label_names_changed = Signal(list)  # list[str] of the current data set
    composition_changed = Signal(object)  # Composition
    runtime_changed = Signal(str)  # e.g. "CPU (2 threads), bf16"
    status_message = Signal(str)  # short text for the status bar
    dataset_edited = Signal(object)  # the same images with edited labels (state.dataset replaced, no reload)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.dataset = None
        self.model = None
        self.composition = Composition()
        self.runtime_label = ""

    def set_dataset(self, dataset) -> None:
        self.dataset = dataset
        self.dataset_changed.emit(dataset)
        self.label_names_changed.emit(list(dataset.label_names))

    def set_model(self, bundle) -> None:
        self.model = bundle
        self.model_changed.emit(bundle)

    def set_label_names(self, names: list[str]) -> None:
        """Rename/add/delete/reorder labels of the current data set (the dataset object is replaced by the caller)."""
        self.label_names_changed.emit(list(names))

    def set_composition(self, composition: Composition) -> None:
        self.composition = composition
        self.composition_changed.emit(composition)

    def set_runtime(self, label: str) -> None:
        self.runtime_label = label
        self.runtime_changed.emit(label)
