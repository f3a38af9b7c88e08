"""Label edits of the app's label editor: pure numpy on a label matrix (N, L) and its names.

No torch: the Data tab edits labels before torch has loaded.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def free_label_name(names: Sequence[str], base: str = "new label") -> str:
    """'new label', else 'new label 2', 'new label 3', ...: the first not taken (ignoring case)."""
    taken = {n.lower() for n in names}
    return next(c for c in (base if k == 1 else f"{base} {k}" for k in range(1, 10_000)) if c not in taken)


def add_label(labels: np.ndarray, names: Sequence[str], name: str | None = None) -> tuple[np.ndarray, list[str]]:
    """A new, empty label at the end (named `name`, or the first free 'new label ...')."""
    grown = np.concatenate([labels, np.zeros((len(labels), 1), np.float32)], axis=1)
    return grown, [*names, name or free_label_name(names)]


def rename_label(names: Sequence[str], index: int, name: str) -> list[str]:
    out = list(names)
    out[index] = name
    return out


def delete_label(labels: np.ndarray, names: Sequence[str], index: int) -> tuple[np.ndarray, list[str]]:
    """Label `index` gone; its images stay, without it."""
    return np.delete(labels, index, axis=1), [n for i, n in enumerate(names) if i != index]


def move_label(labels: np.ndarray, names: Sequence[str], index: int, to: int) -> tuple[np.ndarray, list[str]]:
    """Labels `index` and `to` swap places (columns and names)."""
    order = list(range(len(names)))
    order[index], order[to] = order[to], order[index]
    return labels[:, order], [names[k] for k in order]


def assign_label(labels: np.ndarray, rows: np.ndarray, label: int, on: bool) -> tuple[np.ndarray, int]:
    """A copy of `labels` where images `rows` carry label `label` (on) or not; and how many changed."""
    out = labels.copy()
    before = out[rows, label].copy()
    out[rows, label] = 1.0 if on else 0.0
    return out, int((before != out[rows, label]).sum())
