"""The X/Y grid's work: every cell of a core.xy_grid.GridSpec sampled on a worker, and its PNG export.

`run_grid_job` is a generator run by `threads.GeneratorWorker(..., control=True)`: it yields GridStarted, then
each core.xy_grid.CellResult as it finishes (cheapest first), and returns a GridSummary, also after a cancel
(the finished cells are kept). core and torch are imported inside the functions, on the worker thread.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from desktop.jobs.sampling import _snapshot, load_guide


@dataclass(frozen=True)
class GridStarted:
    runtime_label: str
    shape: tuple[int, int]  # rows, columns


@dataclass
class GridSummary:
    cells: dict = field(default_factory=dict)  # (row, col): core.xy_grid.CellResult
    cancelled: bool = False
    runtime_label: str = ""
    precision: str = ""
    model: str = ""  # the model file's name
    model_path: str = ""
    model_hash: str = ""  # its sha256: the grid's PNG says exactly which model drew it
    seconds: float = 0.0  # wall time of the whole job, warm-up included


def run_grid_job(bundle, spec, precision_pref: str = "auto", guide_model: str = "", *, control):
    """Sample the grid from the model's snapshot (a model still training elsewhere cannot change mid-grid)."""
    from core.paths import file_digest
    from core.samplers import SamplingCancelled
    from core.schedule import Schedule
    from core.xy_grid import run_grid
    from desktop.engine import runtime_for

    start = time.perf_counter()
    summary = GridSummary()
    summary.precision, summary.runtime_label = runtime_for(bundle, precision_pref)
    if bundle.path is not None:
        summary.model, summary.model_path = bundle.path.name, str(bundle.path)
        summary.model_hash = file_digest(bundle.path)
    net = _snapshot(bundle)
    guide_net = load_guide(guide_model, net)
    schedule = Schedule(bundle.schedule_config)
    yield GridStarted(summary.runtime_label, spec.shape)
    try:
        for cell in run_grid(net, schedule, spec, list(bundle.label_names), precision=summary.precision,
                             guide_net=guide_net, cancel=control.stop, zero_terminal=schedule.zero_terminal):
            summary.cells[cell.row, cell.col] = cell
            yield cell
    except SamplingCancelled:
        summary.cancelled = True
    summary.seconds = time.perf_counter() - start
    return summary


def export_grid(path: str, spec, summary: GridSummary) -> str:
    """The grid as one PNG with its settings in text chunks; never replaces a file that is not a PNG, nor a
    model (core.paths.check_output). For threads.run_in_background."""
    from core.export import save_png
    from core.paths import check_output, shipped_models
    from core.xy_grid import compose_grid, grid_text

    check_output("Save grid", path, "png", inputs=[summary.model_path, *(p for _, p in shipped_models())])
    title = f"{summary.model or 'unsaved model'}, {summary.runtime_label}"
    save_png(compose_grid(summary.cells, spec, title=title), path, grid_text(spec, summary.model, summary.model_hash))
    return path
