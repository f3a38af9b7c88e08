"""The row of sampler columns (ColumnStrip) and a column's settings as plain data, for the next session and
the history (column_settings, valid_column_settings)."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QScrollArea, QWidget

from core.catalog import GUIDANCE_EVERYWHERE, SPACINGS
from core.schema import is_finite_number
from desktop.widgets.sampler_column import MAX_COLUMNS, MIN_COLUMNS, SamplerColumn


class ColumnStrip(QScrollArea):
    """The sampler columns side by side. They scroll sideways rather than widen the window: a fourth
    sampler must not push it off-screen. `columns` is the list, in order; each knows its index."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.columns: list[SamplerColumn] = []
        inner = QWidget()
        self._box = QHBoxLayout(inner)
        self._box.setContentsMargins(0, 0, 0, 0)
        self._box.setSpacing(6)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(inner)

    def add(self, col: SamplerColumn) -> None:
        col.set_index(len(self.columns))
        self.columns.append(col)
        self._box.addWidget(col, 1)

    def remove(self, col: SamplerColumn) -> None:
        """Take `col` out (deleted later); the columns after it move up one index."""
        self.columns.remove(col)
        self._box.removeWidget(col)
        col.deleteLater()
        for i, c in enumerate(self.columns):
            c.set_index(i)


def column_settings(col: SamplerColumn) -> dict:
    """A column's settings as plain data, for the next session (guidance None: it follows the composer)."""
    spec = col.spec()
    return {"sampler": spec.sampler, "steps": spec.steps, "eta": spec.eta, "spacing": spec.spacing,
            "guidance": spec.guidance if col.own_guidance.isChecked() else None,
            "interval": list(spec.guidance_interval), "rescale": spec.guidance_rescale}


def _interval(v) -> list[float]:
    """A saved guidance interval [lo, hi] in t/T, 0 <= lo < hi <= 1; anything else guides everywhere."""
    if isinstance(v, list) and len(v) == 2 and all(is_finite_number(x) for x in v) and 0 <= v[0] < v[1] <= 1:
        return [float(v[0]), float(v[1])]
    return list(GUIDANCE_EVERYWHERE)


def valid_column_settings(saved, names: set[str]) -> list[dict]:
    """The saved columns that still make sense (the settings file is the user's, so anything may be in it):
    known samplers, whole step counts, numbers in range; MIN_COLUMNS..MAX_COLUMNS of them, else []."""
    if not isinstance(saved, list):
        return []
    out = []
    for d in saved[:MAX_COLUMNS]:
        if not (isinstance(d, dict) and d.get("sampler") in names and isinstance(d.get("steps"), int)
                and not isinstance(d.get("steps"), bool) and 1 <= d["steps"] <= 1000):
            return []
        eta, g = d.get("eta", 0.0), d.get("guidance")
        if not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            return []
        if g is not None and (not isinstance(g, (int, float)) or not 0 <= g <= 20):
            return []
        rescale = d.get("rescale", 0.0)
        out.append({"sampler": d["sampler"], "steps": d["steps"], "eta": float(eta), "guidance": g,
                    "spacing": d.get("spacing") if d.get("spacing") in SPACINGS else "trailing",
                    # added later than the others: missing or damaged, they fall back to plain guidance
                    "interval": _interval(d.get("interval")),
                    "rescale": float(rescale) if is_finite_number(rescale) and 0 <= rescale <= 1 else 0.0})
    return out if len(out) >= MIN_COLUMNS else []

