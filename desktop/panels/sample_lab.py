"""Sample & compare's lab: the X/Y grid, sketch / inpaint, variations, the history of runs and settings read back
from exported PNGs (SampleLab, owned by the panel). The dialogs are made on first use and stay (non-modal, one of
each)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QTimer, Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox

from core.context import spec_from_context
from core.xy_grid import GUIDE_MODEL, GUIDE_NO_LABEL, CellSettings, GridSpec
from desktop import settings, threads
from desktop.jobs import history as hj
from desktop.widgets.column_strip import column_settings


class SampleLab(QObject):
    """The lab tools of `panel` (a SamplePanel); PNGs dropped on the panel restore their settings."""

    restore_composition_requested = Signal(dict)  # the composer's saved state (rows by label name, guidance)

    def __init__(self, panel):
        super().__init__(panel)
        self.panel = panel
        self.grid_dialog = None
        self.history_dialog = None
        self.sketch_dialog = None
        self.variations_dialog = None
        self.tune_dialog = None
        self.shortcut_dialog = None
        self.last_entry: dict | None = None  # the last run as the history keeps it (exports carry it too)
        self._pending_sketch: dict | None = None  # a restored sketch's settings, waiting for its model to load
        self._switching = False  # the last restore asked for another model
        panel.state.model_changed.connect(self._apply_pending_sketch)
        panel.setAcceptDrops(True)
        panel.installEventFilter(self)
        c = panel.controls
        c.grid_action.triggered.connect(self.open_grid)
        c.sketch_action.triggered.connect(self.open_sketch)
        c.tune_action.triggered.connect(self.open_tune)
        c.shortcut_action.triggered.connect(self.open_shortcut)
        c.history_action.triggered.connect(self.open_history)
        c.png_action.triggered.connect(self.ask_png)

    # ============================================================================ X/Y grid
    def grid_base(self) -> tuple[CellSettings, str, str]:
        """(the settings off the axes, guide model path, precision) from the panel's cheapest column (a grid of
        DDPM's 500 calls per cell would take minutes), its seed, the composer's first row and "Guide with"."""
        p = self.panel
        spec = min((c.spec() for c in p.columns), key=lambda s: s.calls)
        bundle = p.state.model
        names = list(bundle.label_names) if bundle is not None else []
        ctx, _, _ = p._contexts()
        kind, _, value = p.state.composition.guide_with.partition(":")
        guide = value if kind == "label" and value else GUIDE_MODEL if kind == "model" and value else GUIDE_NO_LABEL
        base = CellSettings(sampler=spec.sampler, steps=spec.steps, spacing=spec.spacing, eta=spec.eta,
                            guidance=spec.guidance, guide=guide, seed=p.seed_spin.value(),
                            guidance_interval=tuple(spec.guidance_interval), guidance_rescale=spec.guidance_rescale,
                            context=spec_from_context(ctx[0], names) if len(ctx) else "none")
        return base, value if kind == "model" else "", p.model_bar.precision()

    def open_grid(self, spec: GridSpec | None = None):
        from desktop.panels.grid_dialog import GridDialog

        if self.grid_dialog is None:
            self.grid_dialog = GridDialog(self.panel.state, self.grid_base, self.panel)
            self.grid_dialog.grid_finished.connect(self._record_grid)
        if spec is not None:
            self.grid_dialog.set_spec(spec)
        elif not self.grid_dialog.isVisible():
            self.grid_dialog.use_panel_settings()
        self.grid_dialog.refresh_base()
        self.grid_dialog.show()
        self.grid_dialog.raise_()
        return self.grid_dialog

    def _record_grid(self, spec: GridSpec, summary) -> None:
        if summary.cells:
            threads.run_in_background(hj.record, hj.grid_entry(spec, summary), hj.grid_thumbnail(spec, summary))

    # ============================================================================ make it fast
    def open_tune(self):
        from desktop.panels.shortcut_dialogs import TuneStepsDialog

        if self.tune_dialog is None:
            self.tune_dialog = TuneStepsDialog(self.panel.state, self.panel)
        self.tune_dialog.show()
        self.tune_dialog.raise_()
        return self.tune_dialog

    def open_shortcut(self):
        from desktop.panels.shortcut_dialogs import ShortcutDialog

        if self.shortcut_dialog is None:
            self.shortcut_dialog = ShortcutDialog(self.panel.state, self.panel)
            self.shortcut_dialog.load_requested.connect(self.panel.model_requested)
            self.shortcut_dialog.student_saved.connect(self._refresh_models)
        self.shortcut_dialog.show()
        self.shortcut_dialog.raise_()
        return self.shortcut_dialog

    def _refresh_models(self, _path: str = "") -> None:
        from desktop import engine

        threads.run_in_background(engine.model_choices, on_done=self.panel.refresh_model_choices)

    # ============================================================================ sketch
    def open_sketch(self, image=None):
        """The sketch / inpaint dialog; `image` (H, W, 3) uint8 is put on its canvas."""
        from desktop.panels.sketch_dialog import SketchDialog

        if self.sketch_dialog is None:
            self.sketch_dialog = SketchDialog(self.panel.state, self.panel)
            self.sketch_dialog.run_finished.connect(self._record_sketch)
        if image is not None:
            self.sketch_dialog.load_image(image)
        self.sketch_dialog.show()
        self.sketch_dialog.raise_()
        return self.sketch_dialog

    def _record_sketch(self, job, result) -> None:
        dialog, bundle = self.sketch_dialog, self.panel.state.model
        if result.images is None or bundle is None:
            return
        entry = hj.sketch_entry(job, result, bundle, dialog.mode(), dialog.runtime_label)
        dialog.last_entry = entry
        source = dialog._run_source

        def written(kept):
            if dialog.last_entry is not None and kept.get("time") == dialog.last_entry.get("time"):
                dialog.last_entry = kept  # now with the model's sha256
            self._history_changed()

        threads.run_in_background(hj.record, entry, hj.sketch_thumbnail(source, result), on_done=written)

    def _apply_pending_sketch(self, *_):
        """After the model a restored sketch asked for has loaded (the dialog's own model slot runs first)."""
        if self._pending_sketch is not None:
            d, self._pending_sketch = self._pending_sketch, None
            QTimer.singleShot(0, lambda: self.open_sketch().apply_settings(d))

    # ============================================================================ variations
    def open_variations(self, col, index: int):
        """Variations of image `index` of column `col`'s last result (right-click or double-click on it)."""
        from desktop.panels.variations_dialog import VariationsDialog

        p = self.panel
        result = next((r for r in p.summary.results if r.index == col.index), None) if p.summary else None
        if result is None or getattr(p, "_job", None) is None or p._sampled_model is None:
            return None
        if self.variations_dialog is None:
            self.variations_dialog = VariationsDialog(p.state, p)
            self.variations_dialog.seed_chosen.connect(p.seed_spin.setValue)  # "Use this seed"
        self.variations_dialog.open_for(p._sampled_model, p._job, result.spec, index, p._run_row_names,
                                        result.images[index])
        return self.variations_dialog

    # ============================================================================ history
    def record_compare(self, summary, job) -> None:
        """Keep a finished Sample & compare run in the history (written on a worker: never blocks the GUI)."""
        p = self.panel
        if not summary.results or p.state.model is None:
            return
        entry = hj.compare_entry(summary, job, p.state.model, p._run_row_names, p.state.composition,
                                 [column_settings(c) for c in p.columns])
        self.last_entry = entry
        threads.run_in_background(hj.record, entry, hj.compare_thumbnail(summary), on_done=self._history_changed)

    def _history_changed(self, entry: dict | None = None) -> None:
        if entry is not None and self.last_entry is not None and entry.get("time") == self.last_entry.get("time"):
            self.last_entry = entry  # now with the model's sha256
        if self.history_dialog is not None and self.history_dialog.isVisible():
            self.history_dialog.reload()

    def open_history(self):
        from desktop.panels.history_dialog import HistoryDialog

        if self.history_dialog is None:
            self.history_dialog = HistoryDialog(self.panel)
            self.history_dialog.restore_requested.connect(self.restore)
        self.history_dialog.reload()
        self.history_dialog.show()
        self.history_dialog.raise_()
        return self.history_dialog

    def restore(self, entry: dict) -> None:
        """Put a history entry's (or an exported PNG's) settings back: the model, columns, seed, images per row,
        the composer's rows and guidance; a grid reopens in the grid dialog."""
        p = self.panel
        try:
            r = hj.restorable(entry)
        except ValueError as e:
            QMessageBox.warning(p, "Cannot restore", str(e))
            return
        note = self._restore_model(r.model_path, r.model_hash)
        if r.sketch is not None and not self._switching:
            self.open_sketch().apply_settings(r.sketch)
        elif r.sketch is not None:
            self._pending_sketch = r.sketch  # applied once the model it asked for is loaded
        elif r.grid is not None:
            self.open_grid(r.grid)
        else:
            self.apply_settings(r.columns, r.seed, r.per_row, r.precision)
            if r.composer is not None:
                self.restore_composition_requested.emit(r.composer)
        p.state.status_message.emit("Restored the settings of " + r.title + (f"; {note}" if note else "") +
                                    ". Press Run to draw it again.")

    def apply_settings(self, columns: list[dict], seed: int, per_row: int, precision: str) -> None:
        """The panel's columns, seed, images per row and precision as given (columns already checked)."""
        p = self.panel
        while len(p.columns) > len(columns):
            p._remove_column(p.columns[-1])
        while len(p.columns) < len(columns):
            p._add_column(columns[len(p.columns)]["sampler"], columns[len(p.columns)]["steps"])
        for col, d in zip(p.columns, columns):
            col.set_spec(d["sampler"], d["steps"], d["eta"], d["guidance"], d["spacing"], d["interval"], d["rescale"])
        p.seed_spin.setValue(seed)
        p.per_row_spin.setValue(per_row)
        p.model_bar.set_precision(precision)

    def _restore_model(self, path: str, digest: str) -> str:
        """Ask for the entry's model when another is loaded (self._switching says whether it did); the note says
        what differs from the run kept."""
        p = self.panel
        self._switching = False
        bundle = p.state.model
        current = str(bundle.path) if bundle is not None and bundle.path is not None else ""
        if not path:
            return "its model was never saved, so it is drawn with the loaded one"
        if not (current and hj.same_file(current, path)):
            if not hj.exists(path):
                return f"its model {path} is gone, so it is drawn with the loaded one"
            self._switching = True
            p.model_requested.emit(path)
        self._check_digest(path, digest)
        return ""

    def _check_digest(self, path: str, digest: str) -> None:
        """Hash the model file on a worker (never on the GUI thread); say so when it is not the one recorded."""
        def said(same: bool) -> None:
            if not same:
                self.panel.state.status_message.emit(f"The model file {Path(path).name} has changed since that run, "
                                                     "so Run may draw other pictures.")

        threads.run_in_background(hj.digest_matches, path, digest, on_done=said)

    # ============================================================================ PNG info
    def ask_png(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.panel, "Settings from an exported PNG", str(settings.export_dir()),
                                              "PNG image (*.png)")
        if path:
            self.restore_png(path)

    def restore_png(self, path: str) -> None:
        def failed(message):
            QMessageBox.warning(self.panel, "No settings in this picture", f"{path}: {message}")

        threads.run_in_background(hj.read_png_entry, path, on_done=self.restore, on_error=failed)

    def eventFilter(self, obj, event) -> bool:
        """A PNG dragged onto Sample & compare: its settings are restored (as "Settings from a PNG…")."""
        if obj is self.panel and event.type() in (QEvent.Type.DragEnter, QEvent.Type.Drop):
            urls = [u.toLocalFile() for u in event.mimeData().urls()] if event.mimeData().hasUrls() else []
            pngs = [u for u in urls if u.lower().endswith(".png")]
            if not pngs:
                return False
            event.acceptProposedAction()
            if event.type() == QEvent.Type.Drop:
                self.restore_png(pngs[0])
            return True
        return super().eventFilter(obj, event)

    def shutdown(self) -> None:
        for dialog in (self.grid_dialog, self.sketch_dialog, self.variations_dialog, self.tune_dialog,
                       self.shortcut_dialog):
            if dialog is not None:
                dialog.shutdown()
