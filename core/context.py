"""Sampling contexts from text: "hero", "hero+food:0.6", "2", "0.5,0,1,0,0" or "none" -> an (L,) vector.

No torch: the CLI and the app parse what the user typed before any model loads.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from .errors import DataError


def context_from_spec(spec: str, label_names: Sequence[str]) -> np.ndarray:
    """(L,) float32 context from text: "hero", "hero+food:0.6", "hero 1 + food 0.6", "2"
    (a label index), "0.5,0,1,0,0" (the whole vector), or "" / "none" (unconditional)."""
    names = [str(n) for n in label_names]
    text = spec.strip()
    if text.lower() in ("", "none") and "none" not in (n.lower() for n in names):
        return np.zeros(len(names), np.float32)
    if "," in text:
        return _explicit_vector(text, names)
    context = np.zeros(len(names), np.float32)
    for term in text.split("+"):
        index, weight = _parse_term(term, names, spec)
        context[index] += weight
    return context


def _explicit_vector(text: str, names: list[str]) -> np.ndarray:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise DataError(f"context '{text}': a vector must be numbers separated by commas") from None
    if len(values) != len(names) or not all(_weight_ok(v) for v in values):
        raise DataError(f"context '{text}': expected {len(names)} numbers from -{MAX_CONTEXT_WEIGHT:g} to "
                        f"{MAX_CONTEXT_WEIGHT:g} "
                        f"({', '.join(names) or 'no labels'}), got {len(values)}")
    return np.array(values, np.float32)


# "name:0.6", "name=0.6" or "name 0.6": a label name, then a weight after ':' '=' or a space.
_WEIGHTED = re.compile(r"^(?P<name>.*?)\s*(?:[:=]|\s)\s*"
                       r"(?P<w>[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)$", re.IGNORECASE)


def _parse_term(term: str, names: list[str], spec: str) -> tuple[int, float]:
    """(label index, weight) of 'name', 'name:0.6', 'name 0.6' or an index like '2'."""
    term = term.strip()
    index = _resolve_label(term, names)
    if index is not None:
        return index, 1.0
    match = _WEIGHTED.match(term)
    if match:
        index = _resolve_label(match["name"], names)
        if index is not None and _weight_ok(float(match["w"])):
            return index, float(match["w"])
        if index is not None:
            raise DataError(f"context '{spec}': weight {match['w']} for label {names[index]} is out of range "
                            f"(use a number from -{MAX_CONTEXT_WEIGHT:g} to {MAX_CONTEXT_WEIGHT:g})")
    name, sep, weight = term.rpartition(":") if ":" in term else term.rpartition("=")
    if sep and _resolve_label(name, names) is not None:
        raise DataError(f"context '{spec}': bad weight '{weight.strip()}' for label {names[_resolve_label(name, names)]} "
                        "(use a number such as 0.6)")
    valid = ", ".join(names) if names else "none, this data set is unlabelled"
    raise DataError(f"context '{spec}': unknown label '{term}'; valid labels: {valid} "
                    f"(or an index 0..{max(len(names) - 1, 0)})")


MAX_CONTEXT_WEIGHT = 100.0  # far past any useful mix; 1e30 only makes black images


def _weight_ok(w: float) -> bool:
    return math.isfinite(w) and abs(w) <= MAX_CONTEXT_WEIGHT


def _resolve_label(text: str, names: list[str]) -> int | None:
    """Index of a label by case-insensitive name, or by number when the text is an integer."""
    key = text.strip().lower()
    for i, name in enumerate(names):
        if name.strip().lower() == key:
            return i
    if key.isdigit() and int(key) < len(names):
        return int(key)
    return None


def spec_from_context(context: Sequence[float], label_names: Sequence[str]) -> str:
    """The text context_from_spec reads back to this exact vector: a label's name for a single label, "none"
    for no label, else the whole vector ("0.5,0,1,0,0")."""
    vec = [float(v) for v in context]
    names = [str(n) for n in label_names]
    if not any(vec):
        return "none"
    ones = [i for i, v in enumerate(vec) if v != 0]
    if len(ones) == 1 and vec[ones[0]] == 1.0 and ones[0] < len(names):
        name = names[ones[0]]
        if "+" not in name and "," not in name and _resolve_label(name, names) == ones[0]:
            return name
    return ",".join(repr(v) for v in vec)
