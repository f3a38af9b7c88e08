"""Untrusted JSON, checked before use: one small declarative validator for every file kind we read.

Files lie. A run lock, a checkpoint's header, a resume file, a --config file or a benchmark result can hold
anything a JSON parser accepts, and a few thousand opening brackets are enough to make Python's json module
raise RecursionError. `load_json_text` refuses text that is too large or nested too deep *before* json
parses it; `check` compares the parsed value with a schema made of the classes below (types, ranges,
required and optional keys, lengths) and raises the caller's error type with one line that names the file
and the field:

    run.lock: field 'pid' must be an integer between 1 and 4194304, got 'abc'

The type rules are the ones every config dataclass uses too (core.catalog.check_field_types): bool is not
a number, floats must be finite. No torch, no numpy: the lock and the settings are read before torch loads.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError, one_line

# The unrolled form of "a JSON string": linear on any input, so the depth scan below stays cheap.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def is_int(v) -> bool:
    """A whole number and not a bool (True is an int to Python, never to a file format of ours)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_finite_number(v) -> bool:
    """An int or a finite float, not a bool. Ints are never converted to float: 10**400 would overflow."""
    return is_int(v) or (isinstance(v, float) and math.isfinite(v))


class _Bad(Exception):
    """One field that breaks its schema: where, and what was expected instead."""

    def __init__(self, path: str, problem: str):
        super().__init__(path, problem)
        self.path, self.problem = path, problem


def shown(v) -> str:
    """A value for a message: short, one line, and never the whole of a huge list or string."""
    if isinstance(v, str):
        return repr(v[:40] + "...") if len(v) > 40 else repr(v)
    if isinstance(v, list):
        return f"a list of {len(v)} item(s)"
    if isinstance(v, dict):
        return "an object"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    text = repr(v)
    return text if len(text) <= 40 else text[:20] + f"... ({len(text)} digits)"


def _wrong(path: str, spec, v):
    raise _Bad(path, f"must be {spec.describe()}, got {shown(v)}")


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


# --- the schema classes -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Int:
    lo: int
    hi: int

    def describe(self) -> str:
        return f"an integer between {self.lo} and {self.hi}"

    def validate(self, v, path: str) -> None:
        if not is_int(v) or not self.lo <= v <= self.hi:
            _wrong(path, self, v)


@dataclass(frozen=True)
class IntText:
    """A whole number written as text (safetensors headers hold strings only), e.g. a step "20000"."""
    lo: int
    hi: int

    def describe(self) -> str:
        return f"a whole number between {self.lo} and {self.hi} (as text)"

    def validate(self, v, path: str) -> None:
        if not (isinstance(v, str) and re.fullmatch(r"-?[0-9]{1,20}", v) and self.lo <= int(v) <= self.hi):
            _wrong(path, self, v)


@dataclass(frozen=True)
class Float:
    lo: float = -math.inf
    hi: float = math.inf
    above: bool = False  # lo itself excluded

    def describe(self) -> str:
        low = f"above {_num(self.lo)}" if self.above else f"of at least {_num(self.lo)}"
        if self.lo == -math.inf:
            return "a finite number" + (f" of at most {_num(self.hi)}" if self.hi < math.inf else "")
        if self.hi == math.inf:
            return f"a finite number {low}"
        if self.above:
            return f"a finite number above {_num(self.lo)} and at most {_num(self.hi)}"
        return f"a finite number between {_num(self.lo)} and {_num(self.hi)}"

    def validate(self, v, path: str) -> None:
        if not is_finite_number(v) or v > self.hi or v < self.lo or (self.above and v == self.lo):
            _wrong(path, self, v)


@dataclass(frozen=True)
class Str:
    max_len: int = 1000
    min_len: int = 0
    choices: tuple = ()
    pattern: str = ""  # a regular expression the whole text must match
    words: str = ""  # what the pattern means, for messages ("'<index>.<name>', e.g. '0.step'")

    def describe(self) -> str:
        if self.words:
            return self.words
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.min_len:
            return f"text of {self.min_len} to {self.max_len} characters"
        return f"text of at most {self.max_len} characters"

    def validate(self, v, path: str) -> None:
        if not isinstance(v, str) or not self.min_len <= len(v) <= self.max_len:
            _wrong(path, self, v)
        if (self.choices and v not in self.choices) or (self.pattern and not re.fullmatch(self.pattern, v)):
            _wrong(path, self, v)


@dataclass(frozen=True)
class Bool:
    def describe(self) -> str:
        return "true or false"

    def validate(self, v, path: str) -> None:
        if not isinstance(v, bool):
            _wrong(path, self, v)


@dataclass(frozen=True)
class Null:
    def describe(self) -> str:
        return "null"

    def validate(self, v, path: str) -> None:
        if v is not None:
            _wrong(path, self, v)


@dataclass(frozen=True)
class AnyValue:
    """Any JSON value (its size and depth were bounded when it was read)."""

    def describe(self) -> str:
        return "any value"

    def validate(self, v, path: str) -> None:
        return None


class Either:
    """The first of `options` the value fits; the message lists them all."""

    def __init__(self, *options):
        self.options = options

    def describe(self) -> str:
        return " or ".join(o.describe() for o in self.options)

    def validate(self, v, path: str) -> None:
        for o in self.options:
            try:
                o.validate(v, path)
                return
            except _Bad:
                continue
        _wrong(path, self, v)


@dataclass(frozen=True)
class List:
    item: Any
    max_len: int
    min_len: int = 0

    def describe(self) -> str:
        if self.min_len == self.max_len:
            return f"a list of {self.max_len} item(s)"
        return f"a list of {self.min_len} to {self.max_len} items"

    def validate(self, v, path: str) -> None:
        if not isinstance(v, list) or not self.min_len <= len(v) <= self.max_len:
            _wrong(path, self, v)
        for i, x in enumerate(v):
            self.item.validate(x, f"{path}[{i}]")


@dataclass(frozen=True)
class Obj:
    """A JSON object. `fields`: the known keys and their schemas; `optional`: those that may be left out;
    `extra`: the schema of any other key's value (None: other keys are refused); `max_keys`, `key`: limits
    on every key (an object keyed by index, as an optimizer's state)."""
    fields: dict = field(default_factory=dict)
    optional: tuple = ()
    extra: Any = AnyValue()
    max_keys: int = 10_000
    key: Str = Str(max_len=200)

    def describe(self) -> str:
        return "a JSON object"

    def validate(self, v, path: str) -> None:
        if not isinstance(v, dict):
            _wrong(path, self, v)
        if len(v) > self.max_keys:
            raise _Bad(path, f"must have at most {self.max_keys} fields, has {len(v)}")
        for k, spec in self.fields.items():
            if k not in v and k not in self.optional:
                raise _Bad(_join(path, k), "is missing")
        for k, x in v.items():
            where = _join(path, k)
            spec = self.fields.get(k)
            if spec is None:
                if self.extra is None:
                    raise _Bad(where, "is not a field this file has")
                try:
                    self.key.validate(k, where)
                except _Bad:
                    raise _Bad(where, f"is not a valid key here (keys must be {self.key.describe()})") from None
                spec = self.extra
            spec.validate(x, where)


def _join(path: str, key: str) -> str:
    key = key if len(key) <= 40 else key[:40] + "..."
    return f"{path}.{key}" if path else key


# --- reading and checking -----------------------------------------------------------------------------

def check(obj, schema, source: str, *, error: type[Exception] = UserError):
    """`obj` when it fits `schema`; else error("<source>: field '<path>' must be ..., got ...")."""
    try:
        schema.validate(obj, "")
    except _Bad as bad:
        where = f"field '{bad.path}' " if bad.path else ""
        raise error(f"{source}: {where}{bad.problem}") from None
    return obj


def nesting_depth(text: str, limit: int) -> int:
    """How deeply brackets nest in JSON text, outside strings; stops counting once past `limit`."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def load_json_text(text: str | bytes, *, source: str, max_bytes: int, max_depth: int,
                   error: type[Exception] = UserError, allow_nan: bool = True):
    """Parse untrusted JSON: at most `max_bytes` long and `max_depth` levels deep (both checked before the
    parser runs), UTF-8 and valid, or error("<source>: ...") in one line."""
    if len(text) > max_bytes:
        unit = "bytes" if isinstance(text, bytes) else "characters"
        raise error(f"{source}: {len(text):,} {unit} of JSON, more than the {max_bytes:,} this file can hold; it "
                    "is not one of ours or it is damaged")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise error(f"{source}: not UTF-8 text (byte {e.start} is not); it is not a JSON file or it is "
                        "damaged") from None
    depth = nesting_depth(text, max_depth)
    if depth > max_depth:
        raise error(f"{source}: JSON nested more than {max_depth} levels deep; it is not one of ours or it is "
                    "damaged")

    def refuse_constant(name):
        raise ValueError(f"{name} is not a number JSON allows")
    try:
        return json.loads(text, **({} if allow_nan else {"parse_constant": refuse_constant}))
    except (ValueError, RecursionError) as e:
        raise error(f"{source}: not valid JSON ({one_line(e, limit=120)})") from None


def read_json_file(path: str | Path, *, max_bytes: int, max_depth: int, error: type[Exception] = UserError,
                   source: str | None = None, schema=None, allow_nan: bool = True):
    """A JSON file through load_json_text (its size checked before it is read) and, with `schema`, check.
    OSError (missing, unreadable) is left to the caller, who knows what a missing file means."""
    path = Path(path)
    source = source or str(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{source}: {size:,} bytes, more than the {max_bytes:,} this file can hold; it is not one of "
                    "ours or it is damaged")
    value = load_json_text(path.read_bytes(), source=source, max_bytes=max_bytes, max_depth=max_depth, error=error,
                           allow_nan=allow_nan)
    return value if schema is None else check(value, schema, source, error=error)
