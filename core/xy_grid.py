"""X/Y grids: one setting along each axis (sampler × steps, guidance × seed, label × mix weight ...), every cell
sampled from the same starting noise, so a row or a column shows what that one setting changes.

The axis parsing and the cell settings are torch-free (the app and the CLI check what was typed before a model
loads); `run_cell` and `run_grid` sample. A cell is exactly a single `generate` run with its settings, so
`main.py sample` with the same flags draws the same pixels.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterator, Sequence

import numpy as np

from .catalog import GUIDANCE_EVERYWHERE, NAMED_SPACING, SAMPLER_NAMES, SPACINGS, model_calls, sampler_choice
from .context import context_from_spec
from .errors import UserError

MAX_AXIS_VALUES = 16
MAX_CELL_IMAGES = 64
GUIDE_NO_LABEL = "nolabel"  # the guide axis' value for plain classifier-free guidance
GUIDE_MODEL = "model"  # ... for autoguidance with the guide model given beside the grid


class GridError(UserError):
    """An axis or a setting of a grid that cannot be drawn: one line naming it."""


@dataclass(frozen=True)
class CellSettings:
    """Everything one cell's sampling depends on besides the model: what `main.py sample` takes as flags."""

    sampler: str = "dpmpp3m"
    steps: int = 10
    spacing: str = "karras"
    eta: float = 0.0
    guidance: float = 1.0
    guide: str = GUIDE_NO_LABEL  # what guidance pushes away from: no label, the guide model, or a label's name
    seed: int = 0
    context: str = "none"  # a context as the CLI's --context reads it: "fruit", "hero+food:0.6", "none"
    mix_with: str = ""  # the label the mix axis blends towards
    mix: float = 0.0  # weight of mix_with: context = (1 - mix) * context + mix * mix_with
    guidance_interval: tuple = GUIDANCE_EVERYWHERE  # t/T where guidance acts; one plain call per step outside
    guidance_rescale: float = 0.0  # CFG rescale phi (core.denoiser); 0 = off

    def calls(self, zero_terminal: bool = False) -> int:
        """Model calls per image; with a guidance interval short of 0-1 the most it can be (the exact count
        depends on which timesteps fall inside, and the cell's result says it)."""
        guided = self.guidance != 1.0
        return model_calls(self.sampler, self.steps, guided=guided, zero_terminal=zero_terminal)

    def guidance_kwargs(self) -> dict:
        """The guidance interval and rescale as `generate` takes them, checked (the settings may come from a PNG)."""
        try:
            lo, hi = (float(v) for v in self.guidance_interval)
        except (TypeError, ValueError):
            raise GridError(f"guidance interval {self.guidance_interval!r}: expected two numbers LO, HI") from None
        if not (0 <= lo <= hi <= 1):  # NaN fails every comparison
            raise GridError(f"guidance interval {lo:g}-{hi:g}: need 0 <= LO <= HI <= 1 (fractions of T)")
        rescale = self.guidance_rescale
        if isinstance(rescale, bool) or not isinstance(rescale, (int, float)) or not 0 <= rescale <= 1:
            raise GridError(f"guidance rescale {rescale!r}: must be from 0 (off) to 1")
        return {"guidance_interval": (lo, hi), "guidance_rescale": float(rescale)}

    def guidance_text(self) -> str:
        """', guided at t/T 0.1-0.8, rescale 0.5' where they differ from the defaults, else ''."""
        if self.guidance == 1.0:
            return ""
        kw = self.guidance_kwargs()
        lo, hi = kw["guidance_interval"]
        text = f", guided at t/T {lo:g}-{hi:g}" if (lo, hi) != GUIDANCE_EVERYWHERE else ""
        return text + (f", rescale {kw['guidance_rescale']:g}" if kw["guidance_rescale"] > 0 else "")

    def context_vector(self, label_names: Sequence[str]) -> np.ndarray:
        """(L,) float32 context of this cell for a model with these labels."""
        try:
            vec = context_from_spec(self.context, label_names)
            if self.mix > 0:
                if not self.mix_with:
                    raise GridError("the mix axis needs a label to blend towards (mix with)")
                vec = (1 - self.mix) * vec + self.mix * context_from_spec(self.mix_with, label_names)
        except UserError as e:
            raise GridError(str(e)) from None
        return vec.astype(np.float32)

    def negative_vector(self, label_names: Sequence[str]) -> np.ndarray | None:
        """(L,) context guidance pushes away from, or None (no label, or the guide model)."""
        if self.guide in (GUIDE_NO_LABEL, GUIDE_MODEL, ""):
            return None
        try:
            return context_from_spec(self.guide, label_names)
        except UserError as e:
            raise GridError(f"guide {self.guide}: {e}") from None

    def describe(self, axis: str) -> str:
        """The cell's value on `axis`, as an axis label shows it."""
        value = getattr(self, axis)
        if axis == "guidance":
            return f"g={value:g}"
        if axis == "mix":
            return f"{value:g} {self.mix_with}"
        if axis in ("steps", "seed"):
            return f"{axis} {value}"
        if axis == "eta":
            return f"eta {value:g}"
        if axis == "guide":
            return {GUIDE_NO_LABEL: "vs no label", GUIDE_MODEL: "vs guide model"}.get(value, f"not {value}")
        return str(value)


def _int_in(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a whole number") from None
        if not lo <= v <= hi:
            raise ValueError(f"{v} is not from {lo} to {hi}")
        return v
    return parse


def _float_in(lo: float, hi: float):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a number") from None
        if not (math.isfinite(v) and lo <= v <= hi):
            raise ValueError(f"{text} is not from {lo:g} to {hi:g}")
        return v
    return parse


def _one_of(choices: Sequence[str]):
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"'{text}' is not one of {', '.join(choices)}")
        return text
    return parse


def _spacing(text: str) -> str:
    """A built-in spacing or a model's named one (checked against the model when the cell is drawn)."""
    if text not in SPACINGS and not NAMED_SPACING.fullmatch(text):
        raise ValueError(f"'{text}' is not one of {', '.join(SPACINGS)} nor a named spacing such as tuned-5")
    return text


def _label(text: str) -> str:
    if not text:
        raise ValueError("an empty label")
    return text


@dataclass(frozen=True)
class AxisKind:
    name: str
    parse: Callable[[str], object]
    help: str


AXIS_KINDS = {a.name: a for a in (
    AxisKind("sampler", _one_of(SAMPLER_NAMES), "sampler names, e.g. ddim,heun,dpmpp3m"),
    AxisKind("steps", _int_in(1, 1000), "steps per image, e.g. 5,10,20"),
    AxisKind("spacing", _spacing, "which timesteps the steps visit: " + ", ".join(SPACINGS)
             + ", or a spacing the model holds (tuned-5, distilled-4)"),
    AxisKind("eta", _float_in(0, 1), "DDIM's noise, 0 to 1 (other samplers have none)"),
    AxisKind("guidance", _float_in(0, 50), "guidance scales, 1 = off, e.g. 1,2,3"),
    AxisKind("guide", _label, f"what guidance pushes away from: {GUIDE_NO_LABEL}, {GUIDE_MODEL} (the guide "
                              "model), or a label name"),
    AxisKind("seed", _int_in(0, 2**63 - 1), "starting-noise seeds, e.g. 0,1,2"),
    AxisKind("context", _label, "labels or mixes, e.g. face,animal or hero+food:0.6"),
    AxisKind("mix", _float_in(0, 1), "weight of the mix-with label, 0 to 1, e.g. 0,0.25,0.5,0.75,1"),
)}
AXIS_NAMES = tuple(AXIS_KINDS)
AXIS_ALIASES = {"label": "context", "step": "steps", "cfg": "guidance", "scale": "guidance"}


@dataclass(frozen=True)
class Axis:
    name: str  # one of AXIS_NAMES
    values: tuple = ()

    @property
    def text(self) -> str:
        return f"{self.name}=" + ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in self.values)


def parse_axis(text: str, flag: str = "axis") -> Axis:
    """'sampler=ddim,heun' -> Axis('sampler', ('ddim', 'heun')); a GridError naming `flag` when it cannot."""
    name, sep, values = text.partition("=")
    name = AXIS_ALIASES.get(name.strip().lower(), name.strip().lower())
    if not sep or name not in AXIS_KINDS:
        raise GridError(f"{flag} '{text}': write NAME=V1,V2,... with NAME one of {', '.join(AXIS_NAMES)}")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not items:
        raise GridError(f"{flag} '{text}': no values after '='")
    if len(items) > MAX_AXIS_VALUES:
        raise GridError(f"{flag} '{text}': {len(items)} values; at most {MAX_AXIS_VALUES} per axis")
    try:
        parsed = tuple(AXIS_KINDS[name].parse(v) for v in items)
    except ValueError as e:
        raise GridError(f"{flag} '{text}': {e} ({AXIS_KINDS[name].help})") from None
    return Axis(name, parsed)


@dataclass(frozen=True)
class GridSpec:
    """The grid: base settings, the axis along x (columns) and y (rows), images per cell."""

    base: CellSettings
    x: Axis
    y: Axis = field(default_factory=lambda: Axis("seed", ()))
    per_cell: int = 8

    def __post_init__(self):
        if self.y.values and self.x.name == self.y.name:
            raise GridError(f"both axes are '{self.x.name}'; pick two different settings")
        if not 1 <= self.per_cell <= MAX_CELL_IMAGES:
            raise GridError(f"images per cell {self.per_cell}: must be from 1 to {MAX_CELL_IMAGES}")

    @property
    def shape(self) -> tuple[int, int]:
        return max(1, len(self.y.values)), len(self.x.values)

    def cell(self, row: int, col: int) -> CellSettings:
        s = replace(self.base, **{self.x.name: self.x.values[col]})
        if self.y.values:
            s = replace(s, **{self.y.name: self.y.values[row]})
        return s

    def cells(self) -> list[tuple[int, int, CellSettings]]:
        rows, cols = self.shape
        return [(r, c, self.cell(r, c)) for r in range(rows) for c in range(cols)]

    def order(self, zero_terminal: bool = False) -> list[tuple[int, int, CellSettings]]:
        """Cheapest cells first, so most of the grid shows while the slow ones run (ties: row by row)."""
        return sorted(self.cells(), key=lambda rc: rc[2].calls(zero_terminal))

    def check(self, label_names: Sequence[str], *, T: int, has_guide_model: bool) -> None:
        """Every cell can be drawn by this model: labels known, steps within its T, eta only where it counts."""
        for _, _, s in self.cells():
            s.context_vector(label_names)
            s.negative_vector(label_names)
            s.guidance_kwargs()
            if s.steps > T:
                raise GridError(f"steps {s.steps}: this model has {T} noise levels; use 1 to {T}")
            if s.guide == GUIDE_MODEL and not has_guide_model:
                raise GridError("guide=model needs a guide model (a weaker checkpoint of the same run)")
            if s.eta and not sampler_choice(s.sampler).has_eta and self._on_axis("eta"):
                raise GridError(f"the eta axis: the {s.sampler} sampler has no eta setting (only ddim has), so "
                                "its cells would all be the same; put ddim on the other axis or as the sampler")

    def _on_axis(self, name: str) -> bool:
        return name in (self.x.name, self.y.name if self.y.values else None)

    def to_dict(self) -> dict:
        return {"base": asdict(self.base), "x": [self.x.name, list(self.x.values)],
                "y": [self.y.name, list(self.y.values)], "per_cell": self.per_cell}

    @staticmethod
    def from_dict(d: dict) -> "GridSpec":
        """The inverse of to_dict, every value checked again (the dict may come from a PNG someone sent)."""
        try:
            base = CellSettings(**{k: d["base"][k] for k in asdict(CellSettings()) if k in d["base"]})
            if isinstance(base.guidance_interval, list):  # JSON has no tuples
                base = replace(base, guidance_interval=tuple(base.guidance_interval))
            base.guidance_kwargs()
            axes = [parse_axis(f"{name}=" + ",".join(map(str, values))) if values else Axis(name, ())
                    for name, values in (d["x"], d["y"])]
            return GridSpec(base, axes[0], axes[1], int(d["per_cell"]))
        except (KeyError, TypeError, ValueError) as e:
            raise GridError(f"these grid settings are incomplete or malformed ({e})") from None


@dataclass
class CellResult:
    row: int
    col: int
    settings: CellSettings
    images: np.ndarray  # (per_cell, H, W, 3) uint8
    seconds: float
    nfe: int
    finite: bool = True


def run_cell(net, schedule, settings: CellSettings, n: int, label_names: Sequence[str], *, precision: str = "fp32",
             guide_net=None, cancel=None, callback=None):
    """One cell: exactly `generate` with these settings (a core.samplers.SampleResult)."""
    from .samplers import generate

    ctx = np.repeat(settings.context_vector(label_names)[None, :], n, axis=0)
    neg = settings.negative_vector(label_names)
    guided = settings.guidance != 1.0
    return generate(net, schedule, sampler=settings.sampler, steps=settings.steps, n=n, context=ctx,
                    guidance=settings.guidance, eta=settings.eta, seed=settings.seed, precision=precision,
                    spacing=settings.spacing, cancel=cancel, callback=callback, **settings.guidance_kwargs(),
                    negative_context=None if neg is None or not guided else np.repeat(neg[None, :], n, axis=0),
                    guide_net=guide_net if settings.guide == GUIDE_MODEL and guided else None)


def run_grid(net, schedule, spec: GridSpec, label_names: Sequence[str], *, precision: str = "fp32",
             guide_net=None, cancel=None, zero_terminal: bool = False) -> Iterator[CellResult]:
    """Sample every cell, cheapest first; yields each CellResult as it finishes."""
    spec.check(label_names, T=schedule.T, has_guide_model=guide_net is not None)
    _warm_up(net, spec, precision, guide_net)
    for row, col, s in spec.order(zero_terminal):
        res = run_cell(net, schedule, s, spec.per_cell, label_names, precision=precision, guide_net=guide_net,
                       cancel=cancel)
        yield CellResult(row, col, s, res.images, res.seconds, res.nfe, res.finite)


def _warm_up(net, spec: GridSpec, precision: str, guide_net=None) -> None:
    """One untimed model call per batch size the grid uses (kernels are built on first use), so the first
    cell's time is its own."""
    import torch

    from .device import autocast

    cfg, device = net.config, next(net.parameters()).device
    guided = any(s.guidance != 1.0 for _, _, s in spec.cells())
    sizes = {spec.per_cell} | ({2 * spec.per_cell} if guided else set())
    with torch.inference_mode(), autocast(device, precision):
        for b in sorted(sizes):
            x = torch.zeros((b, cfg.in_channels, cfg.height, cfg.height), device=device)
            net(x, torch.full((1,), 0.5, device=device), torch.zeros((b, cfg.n_cfeat), device=device))
            if guide_net is not None:
                guide_net(x, torch.full((1,), 0.5, device=device), torch.zeros((b, cfg.n_cfeat), device=device))


def grid_labels(spec: GridSpec) -> tuple[list[str], list[str]]:
    """(column labels, row labels) as the axes show them."""
    cols = [spec.cell(0, c).describe(spec.x.name) for c in range(spec.shape[1])]
    rows = [spec.cell(r, 0).describe(spec.y.name) for r in range(spec.shape[0])] if spec.y.values else [""]
    return cols, rows


def cell_caption(seconds: float, nfe: int) -> str:
    return f"{seconds:.2f} s, {nfe} calls"


def grid_text(spec: GridSpec, model: str, model_hash: str = "") -> dict[str, str]:
    """PNG text chunks of an exported grid: enough to draw it again."""
    return {"software": "Diffusion Desk", "kind": "xy-grid", "model": model, "model_sha256": model_hash,
            "x": spec.x.text, "y": spec.y.text if spec.y.values else "",
            "settings": json.dumps({"grid": spec.to_dict(), "model": model, "model_sha256": model_hash})}


def compose_grid(cells: dict[tuple[int, int], CellResult], spec: GridSpec, *, scale: int = 3, title: str = ""):
    """One PIL image: x labels across the top, y labels down the left, each cell's images with its time and
    model calls under them. Missing cells (cancelled) stay blank."""
    from PIL import Image, ImageDraw, ImageFont

    rows, cols = spec.shape
    any_cell = next(iter(cells.values()), None)
    h = any_cell.images.shape[1] if any_cell is not None else 16
    per = spec.per_cell
    ncols = math.ceil(math.sqrt(per * 2)) if per > 2 else per  # cells a little wider than tall
    ncols = min(ncols, per)
    nrows = math.ceil(per / ncols)
    tile, pad, gap = h * scale, 1, 10
    cell_w, cell_h = ncols * (tile + pad), nrows * (tile + pad)
    font = ImageFont.load_default()
    col_labels, row_labels = grid_labels(spec)
    left = 8 + max(int(font.getlength(t)) for t in row_labels)
    head = 18 + (16 if title else 0)
    canvas = Image.new("RGB", (left + cols * (cell_w + gap) + gap, head + rows * (cell_h + 16 + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((left, 2), title, fill=(30, 30, 30), font=font)
    for c, text in enumerate(col_labels):
        draw.text((left + gap + c * (cell_w + gap), head - 14), text, fill=(30, 30, 30), font=font)
    for r, text in enumerate(row_labels):
        y0 = head + r * (cell_h + 16 + gap)
        draw.text((4, y0 + cell_h // 2 - 6), text, fill=(30, 30, 30), font=font)
        for c in range(cols):
            x0 = left + gap + c * (cell_w + gap)
            cell = cells.get((r, c))
            if cell is None:
                draw.rectangle((x0, y0, x0 + cell_w - 2, y0 + cell_h - 2), outline=(200, 200, 200))
                continue
            for i, img in enumerate(cell.images):
                rr, cc = divmod(i, ncols)
                canvas.paste(Image.fromarray(img).resize((tile, tile), Image.NEAREST),
                             (x0 + cc * (tile + pad), y0 + rr * (tile + pad)))
            draw.text((x0, y0 + cell_h + 1), cell_caption(cell.seconds, cell.nfe), fill=(90, 90, 90), font=font)
    return canvas
