"""Sample & compare's exports: the final grids, one column, the frame on show, the denoising GIF.

The pictures are composed and written by desktop.jobs.export on a worker thread; the settings that
made them go in with them (PNG text chunks, the GIF's comment).
"""
from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QFileDialog, QMessageBox

from desktop import settings, threads
from desktop.jobs import export as ex
from desktop.widgets.sampler_column import VIEW_X0, VIEW_XT
from desktop.widgets.trajectory import frame_index, gif_positions, position_text


class SampleExporter:
    """Exports of `panel` (a SamplePanel): its last run's results as the panel's view shows them."""

    def __init__(self, panel):
        self.panel = panel

    def _export_meta(self, results) -> dict:
        summary = self.panel.summary
        return {"columns": [r.spec for r in results], "seed": summary.seed, "model": summary.model,
                "precision": self.panel.summary.precision, "row_names": self.panel._run_row_names,
                "nfe": [r.nfe for r in results], "seconds": [r.seconds for r in results],
                "entry": self.panel.lab.last_entry}

    def _results(self) -> list:
        return sorted(self.panel.summary.results, key=lambda r: r.index) if self.panel.summary else []

    def _grids_at(self, results, position: int | None) -> list[list[np.ndarray]]:
        """Per column, the grid(s) the current view shows, at a scrub position (None: the final images)."""
        view = self.panel.view_box.currentData()
        out = []
        for r in results:
            k = len(r.frame_t) - 1 if position is None else frame_index(r, position, self.panel.trajectory.mode)
            x, x0 = r.frames_x[k], (r.images if position is None else r.frames_x0[k])
            out.append([x] if view == VIEW_XT else [x0] if view == VIEW_X0 else [x, x0])
        return out

    def final_png(self, path: str) -> None:
        results = self._results()
        meta = self._export_meta(results)
        grids = [[r.images] for r in results]
        self._export(ex.export_png, path, grids, [r.spec.title for r in results], self.panel._run_per_row,
                     self.panel._run_row_names, ex.export_text(meta), None)

    def column_png(self, index: int, path: str) -> None:
        results = [r for r in self._results() if r.index == index]
        meta = self._export_meta(results)
        self._export(ex.export_png, path, [[results[0].images]], [results[0].spec.title], self.panel._run_per_row,
                     self.panel._run_row_names, ex.export_text(meta), None)

    def frame_png(self, path: str) -> None:
        results = self._results()
        pos = self.panel.trajectory.slider.value()
        meta = self._export_meta(results)
        meta["position"] = position_text(pos, self.panel.trajectory.slider.maximum(), self.panel.trajectory.mode)
        self._export(ex.export_png, path, self._grids_at(results, pos), [r.spec.title for r in results],
                     self.panel._run_per_row, self.panel._run_row_names, ex.export_text(meta), meta["position"])

    def gif(self, path: str) -> None:
        results = self._results()
        maximum = self.panel.trajectory.slider.maximum()
        positions = gif_positions(maximum)
        frames = [self._grids_at(results, p) for p in positions]
        captions = [position_text(p, maximum, self.panel.trajectory.mode) for p in positions]
        meta = self._export_meta(results)
        self._export(ex.export_gif, path, frames, [r.spec.title for r in results], self.panel._run_per_row,
                     self.panel._run_row_names, ex.export_text(meta)["settings"], captions)

    def _export(self, fn, path: str, *args) -> None:
        def done(p):
            self.panel.state.status_message.emit(f"Saved {p}")
            self.panel.export_finished.emit(str(p))

        def failed(message):
            QMessageBox.warning(self.panel, "Could not save", f"{path}: {message}")
            self.panel.export_failed.emit(message)

        threads.run_in_background(fn, path, *args, on_done=done, on_error=failed)

    def _ask_path(self, title: str, name: str, filt: str) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self.panel, title, str(settings.export_dir() / name), filt)
        if path:
            settings.remember_export_dir(path)
        return path or None

    def ask_final(self) -> None:
        seed = self.panel.summary.seed
        if path := self._ask_path("Save final images", f"compare_seed{seed}.png", "PNG image (*.png)"):
            self.final_png(path)

    def ask_frame(self) -> None:
        if path := self._ask_path("Save this frame", f"frame_seed{self.panel.summary.seed}.png", "PNG image (*.png)"):
            self.frame_png(path)

    def ask_gif(self) -> None:
        seed = self.panel.summary.seed
        if path := self._ask_path("Save animation", f"denoising_seed{seed}.gif", "GIF animation (*.gif)"):
            self.gif(path)

    def ask_column(self, col) -> None:
        name = f"{col.spec().sampler}{col.spec().steps}_seed{self.panel.summary.seed}.png"
        if path := self._ask_path("Save images", name, "PNG image (*.png)"):
            self.column_png(col.index, path)
