"""Sketch → emoji (SDEdit, Meng et al. 2022) and inpainting (RePaint, Lugmayr et al. 2022): a non-modal dialog
opened from Sample & compare. Draw (or import) a picture at the model's size; Sketch → emoji noises it to
t0 = strength x T and lets the model denoise it under a label, n times from different noise; Inpaint redraws the
masked part and keeps the rest. The work runs on a worker thread (desktop.jobs.editing); the dialog shows live
frames, then the outputs and, for the one selected, its trajectory from the noised start to the result."""
from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QDialog, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLabel, QMessageBox, QProgressBar, QRadioButton, QSlider, QVBoxLayout, QWidget)

from core.catalog import SAMPLER_CATALOG, T_DEFAULT, sampler_choice
from desktop import engine, settings, threads
from desktop.jobs import editing as ej
from desktop.state import AppState
from desktop.widgets.common import HintLabel, ImageGridView, error_text, OutputButtons, push_button, spin_box
from desktop.widgets.paint_canvas import PaintCanvas

SKETCH, INPAINT = "sketch", "inpaint"
DEFAULT_SAMPLER, DEFAULT_STRENGTH = "dpmpp3m", 0.6  # the shipped model's best 10-call solver; the CLI's strength
NO_LABEL, IMAGE_FILTER = "no label", "Images (*.png *.jpg *.jpeg *.gif *.bmp *.webp)"


class SketchDialog(QDialog):
    """`SketchDialog(state, parent)`; `load_image(arr)` preloads the canvas; `shutdown()` stops a run."""

    busy_changed = Signal(bool)
    saved = Signal(str)  # path written
    run_finished = Signal(object, object)  # (the job, its EditResult): kept in the history

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)  # non-modal: show(), never exec()
        self.state = state
        self.result: ej.EditResult | None = None  # the last finished run
        self.precision = "auto"  # as Sample & compare's default
        self.seconds_to_screen = 0.0  # Run pressed -> outputs drawn, of the last run
        self._worker: threads.GeneratorWorker | None = None
        self._pressed, self._note, self._run_source, self._run_mask, self._job = 0.0, "", None, None, None
        self.last_entry: dict | None = None  # the last run as the history keeps it: a saved PNG carries it
        self.runtime_label = ""  # where the last run ran ("CPU (2 threads), fp32")
        self._T, self._alpha_bar, self._n_cfeat = T_DEFAULT, None, 0
        self._build()
        state.model_changed.connect(self._on_model_changed)
        self._on_model_changed(state.model)
        self._on_mode()

    # ============================================================================ construction
    def _build(self) -> None:
        self.canvas = PaintCanvas(16)
        self.canvas.import_requested.connect(self.ask_import)
        side, lay = QVBoxLayout(), QHBoxLayout(self)
        results = self._results_box()
        for part in (self._mode_row(), self._settings_box(), self._run_row(), results):
            side.addLayout(part) if isinstance(part, QHBoxLayout) else side.addWidget(part, int(part is results))
        lay.addWidget(self.canvas, 1)
        lay.addLayout(side, 1)

    def _mode_row(self) -> QHBoxLayout:
        row, self._modes = QHBoxLayout(), QButtonGroup(self)
        self.sketch_mode, self.inpaint_mode = QRadioButton("Sketch → emoji"), QRadioButton("Inpaint")
        self.sketch_mode.setToolTip("SDEdit: noise the picture part-way, then let the model finish it under a label")
        self.inpaint_mode.setToolTip("RePaint: redraw only the masked part (mask brush) and keep the rest exactly")
        for b in (self.sketch_mode, self.inpaint_mode):
            self._modes.addButton(b)
            row.addWidget(b)
        self.sketch_mode.setChecked(True)
        self._modes.buttonToggled.connect(lambda _b, on: on and self._on_mode())
        row.addStretch(1)
        return row

    def _settings_box(self) -> QWidget:
        self.label_box = QComboBox()
        self.label_box.setToolTip("The label the model draws towards; 'no label' lets it choose")
        self.strength_slider = QSlider(Qt.Orientation.Horizontal)
        self.strength_slider.setRange(0, 100)
        self.strength_slider.setValue(round(100 * DEFAULT_STRENGTH))
        self.strength_slider.setToolTip("How much noise buries the sketch before the model redraws it: 0 keeps it, "
                                        "1 starts from pure noise. Higher: freer, less like the sketch")
        self.strength_value, self.strength_row = QLabel(), QWidget()
        row = QHBoxLayout(self.strength_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.strength_slider, 1)
        row.addWidget(self.strength_value)
        self.strength_hint, self.calls_label = HintLabel(), HintLabel()
        self.sampler_box = QComboBox()
        for c in SAMPLER_CATALOG:
            self.sampler_box.addItem(c.label, c.name)
            self.sampler_box.setItemData(self.sampler_box.count() - 1, c.summary, Qt.ItemDataRole.ToolTipRole)
        self.sampler_box.setCurrentIndex(self.sampler_box.findData(DEFAULT_SAMPLER))
        self.sampler_box.setToolTip("The sampler that denoises from t0 to the clean image")
        self.steps_spin = spin_box(1, 1000, 10, "Denoising steps from t0 to 0: model calls per image (twice "
                                     "that with guidance; Heun makes two per step)")
        self.resample_spin = spin_box(1, 20, 4, "RePaint's r: each block of steps is walked this many times, "
                                        "noised back in between, so the redrawn part blends with the kept part")
        self.jump_spin = spin_box(1, 100, 5, "RePaint's jump length j: steps per block walked before jumping "
                                    "back up; 1 redoes every step on its own")
        self.guidance_spin = spin_box(0.0, 10.0, 1.0, "Classifier-free guidance: 1 is the plain model (one call "
                                        "per step); 2-3 follows the label more closely at two calls per step. "
                                        "Does nothing without a label", QDoubleSpinBox, 0.5)
        self.seed_spin = spin_box(0, 2**31 - 1, settings.DEFAULT_SEED, "The same seed, settings and picture give "
                                    "the same outputs")
        self.n_spin = spin_box(1, 8, 4, "Outputs per run, each from its own noise")
        box = QWidget()
        self._form = form = QFormLayout(box)
        for name, w in (("Label", self.label_box), ("Strength", self.strength_row), ("", self.strength_hint),
                        ("Sampler", self.sampler_box), ("Steps", self.steps_spin), ("Resample", self.resample_spin),
                        ("Jump length", self.jump_spin), ("Guidance", self.guidance_spin), ("Seed", self.seed_spin),
                        ("Outputs", self.n_spin), ("", self.calls_label)):
            form.addRow(name, w) if name else form.addRow(w)
        self.strength_slider.valueChanged.connect(self._update_texts)
        self.sampler_box.currentIndexChanged.connect(self._on_sampler)
        for w in (self.steps_spin, self.resample_spin, self.guidance_spin, self.n_spin):
            w.valueChanged.connect(self._update_texts)
        self.label_box.currentIndexChanged.connect(self._update_texts)
        return box

    def _run_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.run_button = push_button("Run", "", self.run)
        self.run_button.setDefault(True)
        self.cancel_button = push_button("Cancel", "Stop within one model call", self.cancel)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m")
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        row.addWidget(self.progress, 1)
        return row

    def _results_box(self) -> QWidget:
        box, self.outputs = QWidget(), OutputButtons("Output {n} (row {i} of the seed's noise): click to replay it")
        lay = QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        self.outputs.picked.connect(lambda _: self._show_frame())
        lay.addWidget(self.outputs)
        self.view = ImageGridView(placeholder="Draw a sketch and press Run", min_scale=1)
        self.view.setToolTip("The selected output at the scrubber's frame: x_t (left) and the model's guess of "
                             "the clean image, x̂0 (right)")
        lay.addWidget(self.view, 1)
        self.scrubber = QSlider(Qt.Orientation.Horizontal)
        self.scrubber.setToolTip("Replay the selected output: the noised start, then x_t and x̂0 after each step")
        self.scrubber.valueChanged.connect(self._show_frame)
        self.frame_label, row, self.status = QLabel(), QHBoxLayout(), HintLabel()
        lay.addWidget(self.scrubber)
        lay.addWidget(self.frame_label)
        self.use_button = push_button("Use as sketch", "Copy the selected output onto the canvas (undoable), to "
                                     "refine it further", self.use_selected)
        self.save_button = push_button("Save PNG…", "The input and every output in one PNG, the settings in its "
                                      "text chunks", self.ask_save)
        row.addWidget(self.use_button)
        row.addWidget(self.save_button)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addWidget(self.status)
        return box

    # ============================================================================ state
    def mode(self) -> str:
        return INPAINT if self.inpaint_mode.isChecked() else SKETCH

    def _on_mode(self, *_) -> None:
        sketch = self.mode() == SKETCH
        for w in (self.strength_row, self.strength_hint, self.sampler_box):
            self._form.setRowVisible(w, sketch)
        for w in (self.resample_spin, self.jump_spin):
            self._form.setRowVisible(w, not sketch)
        self.steps_spin.setValue(10 if sketch else 25)  # the solver's few steps; RePaint's ancestral ones
        self.canvas.set_mask_mode(not sketch)
        self.setWindowTitle("Sketch → emoji" if sketch else "Inpaint")
        self._update_texts()

    def _on_model_changed(self, bundle) -> None:
        self.label_box.blockSignals(True)  # refilled in one go: texts update once, below
        self.label_box.clear()
        self.label_box.addItem(NO_LABEL, -1)
        if bundle is not None:
            self._T, self._n_cfeat = int(bundle.schedule_config.T), int(bundle.net.config.n_cfeat)
            for i, name in enumerate(bundle.label_names[: self._n_cfeat]):
                self.label_box.addItem(name, i)
            self.label_box.setCurrentIndex(1 if self.label_box.count() > 1 else 0)
            self._alpha_bar = engine.schedule_curves(bundle.schedule_config)["alpha_bar"]
            if (size := int(bundle.net.config.height)) != self.canvas.canvas.side:
                self.canvas.reset(size)  # a picture of another size means nothing to this model
        self.label_box.blockSignals(False)
        self._update_texts()
        self._update_buttons()

    @Slot()
    def _on_sampler(self) -> None:
        self.steps_spin.setValue(sampler_choice(self.sampler_box.currentData()).default_steps or self._T)
        self._update_texts()

    @Slot()
    def _update_texts(self) -> None:
        s = self.strength_slider.value() / 100
        self.strength_value.setText(f"{s:.2f} (t0 = {s * self._T:.0f})")
        self.strength_hint.setText(ej.strength_text(s, self._T, self._alpha_bar))
        job = self.make_job()
        self.calls_label.setText(f"{job.calls} model calls per output, {job.calls * job.n} in all")

    def _update_buttons(self) -> None:
        busy, has_model = self.is_busy(), self.state.model is not None
        self.run_button.setEnabled(has_model and not busy)
        self.run_button.setToolTip("Run on the loaded model" if has_model else "Load or train a model first")
        self.cancel_button.setEnabled(busy)
        done = self.result is not None and self.result.images is not None
        for w in (self.use_button, self.save_button, self.scrubber):
            w.setEnabled(done and not busy)

    def apply_settings(self, d: dict) -> None:
        """A kept run's settings (desktop.jobs.history.sketch_settings, checked) back into the dialog. A picture
        of another size than the loaded model's is resized (its mask cannot be, so it is left off)."""
        (self.inpaint_mode if d["mode"] == INPAINT else self.sketch_mode).setChecked(True)
        notes = []
        if d["image"].shape[0] == self.canvas.canvas.side:
            self.canvas.set_image(d["image"])
            if d["mask"] is not None:
                self.canvas.set_mask(d["mask"])
        else:
            self.load_image(d["image"])
            notes.append(f"the picture was {d['image'].shape[0]} px and is resized to this model's "
                         f"{self.canvas.canvas.side} px" + (", without its mask" if d["mask"] is not None else ""))
        label = self.label_box.findText(d["label"])
        if label < 0:
            notes.append(f"this model has no label \"{d['label']}\", so none is set")
        self.label_box.setCurrentIndex(max(0, label))
        self.strength_slider.setValue(round(100 * d["strength"]))
        self.sampler_box.setCurrentIndex(max(0, self.sampler_box.findData(d["sampler"])))
        for spin, key in ((self.steps_spin, "steps"), (self.resample_spin, "resample"), (self.jump_spin, "jump"),
                          (self.guidance_spin, "guidance"), (self.seed_spin, "seed"), (self.n_spin, "n")):
            spin.setValue(d[key])
        self.precision = d["precision"]
        self.status.setText("Settings restored" + (f" ({'; '.join(notes)})" if notes else "") +
                            ". Press Run to draw it again.")

    def is_busy(self) -> bool:
        return self._worker is not None

    def make_job(self):
        """The job of the current mode from the canvas and the settings."""
        k = self.label_box.currentData()
        ctx = None if k is None or k < 0 else np.eye(self._n_cfeat, dtype=np.float32)[k]
        common = dict(context=ctx, guidance=self.guidance_spin.value(), seed=self.seed_spin.value(),
                      n=self.n_spin.value(), label=self.label_box.currentText() or NO_LABEL, precision=self.precision)
        if self.mode() == SKETCH:
            return ej.SketchJob(self.canvas.image(), self.strength_slider.value() / 100,
                                self.sampler_box.currentData(), self.steps_spin.value(), **common)
        return ej.InpaintJob(self.canvas.image(), self.canvas.mask(), self.steps_spin.value(),
                             self.resample_spin.value(), self.jump_spin.value(), **common)

    @Slot()
    def run(self) -> None:
        bundle = self.state.model
        if bundle is None or self.is_busy():
            return
        self._pressed = time.perf_counter()
        self._job = job = self.make_job()
        self._run_source = job.sketch if isinstance(job, ej.SketchJob) else job.image
        self._run_mask = job.mask if isinstance(job, ej.InpaintJob) else None
        fn = ej.run_sdedit if isinstance(job, ej.SketchJob) else ej.run_inpaint
        empty = self._run_mask is not None and not self._run_mask.any()
        self._note = "The mask is empty: the picture comes back unchanged (paint with the mask brush). " if empty else ""
        self.status.setText(self._note + "Starting…")
        self.result = None
        self._set_outputs(np.repeat(self._run_source[None], job.n, axis=0))
        self._worker = threads.GeneratorWorker(fn, bundle, job, control=True)
        threads.start(self._worker, on_progress=self._on_item, on_result=self._on_result, on_failed=self._on_failed,
                      on_finished=self._on_finished)
        self._update_buttons()
        self.busy_changed.emit(True)

    @Slot()
    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.request_stop()
            self.cancel_button.setEnabled(False)
            self.status.setText("Stopping after the current model call…")

    def shutdown(self) -> None:
        """Stop a run cooperatively (threads.py keeps the worker until its thread has ended)."""
        if self._worker is not None:
            self._worker.request_stop()

    def reject(self) -> None:  # Esc and the window's close button both end here: a hidden dialog runs nothing
        self.shutdown()
        super().reject()

    def _on_item(self, item) -> None:
        if isinstance(item, ej.EditStarted):
            self.runtime_label = item.runtime_label
            self.progress.setRange(0, max(1, item.total))
            self.progress.setValue(0)
            self.status.setText(f"Denoising from t0 = {item.t0:.0f} on {item.runtime_label}…")
        elif isinstance(item, ej.EditFrame):
            self.progress.setValue(item.done)
            self._set_outputs(item.x0)
            k = self.selected()
            self.view.set_grid(np.stack([item.x[k], item.x0[k]])[None])
            self.frame_label.setText(f"live: t = {item.t:.4g}")

    def _on_result(self, result: ej.EditResult) -> None:
        if result.cancelled:
            self.status.setText("Cancelled.")
            return
        self.result = result
        self._set_outputs(result.images)
        self.scrubber.setRange(0, result.n_frames - 1)
        self.scrubber.setValue(result.n_frames - 1)
        self._show_frame()
        self.seconds_to_screen = time.perf_counter() - self._pressed
        self.progress.setValue(self.progress.maximum())
        self.status.setText(self._note + f"{len(result.images)} outputs in {self.seconds_to_screen:.2f} s from Run "
                            f"(denoising {result.seconds:.2f} s, {result.nfe} model calls each).")
        self.run_finished.emit(self._job, result)

    def _on_failed(self, error: BaseException) -> None:
        self.status.setText("Stopped by an error.")
        QMessageBox.warning(self, "Stopped", error_text(engine.user_message(error)[:300]))

    def _on_finished(self) -> None:
        self._worker = None
        self._update_buttons()
        self.busy_changed.emit(False)

    # ============================================================================ results
    def _set_outputs(self, images: np.ndarray) -> None:
        self.outputs.set_images(images)

    def selected(self) -> int:
        return self.outputs.selected()

    @Slot()
    def _show_frame(self) -> None:
        if (r := self.result) is None or r.images is None:
            return
        k, i = min(self.scrubber.value(), r.n_frames - 1), self.selected()
        self.view.set_grid(np.stack([r.frames_x[k][i], r.frames_x0[k][i]])[None])
        self.frame_label.setText(r.frame_caption(k))

    @Slot()
    def use_selected(self) -> None:
        if self.result is not None and self.result.images is not None:
            self._loaded(self.result.images[self.selected()])

    # ============================================================================ files
    def load_image(self, image: np.ndarray) -> None:
        """Preload the canvas with a picture (H, W, 3) uint8; another size is resized off the GUI thread."""
        arr, side = np.asarray(image, np.uint8)[..., :3], self.canvas.canvas.side
        if arr.shape[:2] == (side, side):
            self.canvas.set_image(arr)
        else:
            threads.run_in_background(ej.fit_image, arr, side, on_done=self._loaded, on_error=self._import_failed)

    @Slot()
    def ask_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a picture", str(settings.export_dir()), IMAGE_FILTER)
        if path:
            self.import_image(path)

    def import_image(self, path: str) -> None:
        """Load a picture file onto the canvas, off the GUI thread; a bad file is a message, never a traceback."""
        threads.run_in_background(ej.load_sketch, path, self.canvas.canvas.side, on_done=self._loaded,
                                  on_error=self._import_failed)

    def _loaded(self, image: np.ndarray) -> None:
        if image.shape[:2] != (self.canvas.canvas.side,) * 2:  # the model changed size meanwhile
            self._import_failed(f"This picture is {image.shape[1]}x{image.shape[0]} pixels; the model now draws "
                                f"{self.canvas.canvas.side}x{self.canvas.canvas.side}. Import it again.")
        else:
            self.canvas.set_image(image)

    def _import_failed(self, message: str) -> None:
        QMessageBox.warning(self, "Could not import the picture", error_text(message))

    @Slot()
    def ask_save(self) -> None:
        if self.result is None or self.result.images is None:
            return
        name = f"{'sketch' if self.result.mode == 'sdedit' else 'inpaint'}_seed{self.result.seed}.png"
        path, _ = QFileDialog.getSaveFileName(self, "Save outputs", str(settings.export_dir() / name),
                                              "PNG image (*.png)")  # Qt's dialog asks before replacing a file
        if path:
            settings.remember_export_dir(path)
            self.save_png(path)

    def save_png(self, path: str) -> None:
        """Write the input and the outputs (see jobs.editing.save_result_png) on a worker thread."""
        def done(p):
            self.status.setText(f"Saved {p}")
            self.state.status_message.emit(f"Saved {p}")
            self.saved.emit(str(p))

        threads.run_in_background(ej.save_result_png, path, self.result, self._run_source, self._run_mask,
                                  self.last_entry, on_done=done,
                                  on_error=lambda m: QMessageBox.warning(self, "Could not save", f"{path}: {m}"))
