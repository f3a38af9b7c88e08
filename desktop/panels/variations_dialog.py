"""Variations of one image of Sample & compare ("Variations…" on a column's result grid): the image redrawn,
a strip of neighbours (its noise slerped towards variation seeds S, S+1, ... by the strength) and a strip from
its label A to a label B from the same noise. Drawing runs on a worker (desktop.jobs.variations), one job at a
time: a changed setting stops it and draws again. Non-modal; open_for() may be called again for another image.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSignalBlocker, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QDialog, QFileDialog, QGroupBox, QHBoxLayout, QLabel,
                               QMessageBox, QProgressBar, QSlider, QSpinBox, QToolButton, QVBoxLayout,
                               QWidget)

from desktop import engine, settings, threads
from desktop.jobs import variations as vj
from desktop.jobs.sampling import ColumnSpec, SampleJob
from desktop.widgets.common import HintLabel, pixmap_from_rgb, push_button

RESTART_MS = 300  # a slider drag redraws once it pauses, not at every tick
STRENGTH_TIP = ("Variation strength: how far each neighbour moves away from this image.\n"
                "0 = this very image (its own starting noise); 1 = another image entirely: the one the "
                "variation seed draws in this place of the grid.\nIn between, the two noises are mixed on the "
                "sphere (slerp), so the mix is still noise of the right size: small values nudge the picture, "
                "larger ones change what it shows. The sampler, steps, label and guidance stay the run's.")
VSEED_TIP = ("Neighbour j mixes in the starting noise of seed S + j (what a run with that seed starts from in "
             "this image's place)")
EXACT_NOTE = ("Each picture is drawn inside the original batch of {n} images (only this image's noise or label "
              "changed): on the CPU a batch's size and an image's place in it change the arithmetic slightly, "
              "so this is what makes strength 0 this very image, bit for bit.")


def _tipped(widget, tip: str):
    widget.setToolTip(tip)
    return widget


def _row(row: QHBoxLayout, *items) -> QHBoxLayout:
    """Widgets, (widget, stretch) pairs, or None for a stretch."""
    for item in items:
        if item is None:
            row.addStretch(1)
        else:
            w, stretch = item if isinstance(item, tuple) else (item, 0)
            row.addWidget(w, stretch)
    return row


class PictureStrip(QWidget):
    """vj.STRIP picture buttons in a row; `picked(slot)` when one is clicked (checkable: it stays picked)."""

    picked = Signal(int)

    def __init__(self, checkable: bool, parent=None):
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.group = QButtonGroup(self)
        self.group.setExclusive(checkable)
        self.buttons = [QToolButton() for _ in range(vj.STRIP)]
        for i, b in enumerate(self.buttons):
            b.setCheckable(checkable)
            b.setIconSize(QSize(64, 64))
            b.setFixedSize(QSize(74, 74))  # the strip keeps its shape while the pictures come in
            self.group.addButton(b, i)
        _row(row, *self.buttons, None)
        self.group.idClicked.connect(self.picked)
        self.images: dict[int, np.ndarray] = {}
        self.clear()

    def unpick(self) -> None:
        self.group.setExclusive(False)  # an exclusive group keeps one button checked
        for b in self.buttons:
            b.setChecked(False)
        self.group.setExclusive(self.buttons[0].isCheckable())

    def clear(self) -> None:
        self.images.clear()
        for b in self.buttons:
            b.setIcon(QIcon())
            b.setText("…")

    def set_picture(self, slot: int, image: np.ndarray, tip: str) -> None:
        self.images[slot] = image
        self.buttons[slot].setIcon(QIcon(pixmap_from_rgb(image, max(1, 64 // image.shape[0]))))
        self.buttons[slot].setText("")
        self.buttons[slot].setToolTip(tip)

    def complete(self) -> np.ndarray | None:
        """(STRIP, H, W, 3) once every picture is in, else None."""
        return np.stack([self.images[i] for i in range(vj.STRIP)]) if len(self.images) == vj.STRIP else None


class VariationsDialog(QDialog):
    """`open_for(bundle, job, spec, image_index, row_names)` shows image `image_index` of a run: `job` is the
    SampleJob the run was made from, `spec` the column's settings that drew it (its ColumnResult's)."""

    seed_chosen = Signal(int)  # "Use this seed": a seed for Sample & compare that draws the picked neighbour
    busy_changed = Signal(bool)
    strip_finished = Signal(str)  # "original", "variations" or "mix": all its pictures are in
    export_finished = Signal(str)  # path written
    export_failed = Signal(str)  # one-line reason

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.setWindowTitle("Variations")
        self.setModal(False)
        self.bundle, self.source, self.row_names, self._name_a = None, None, [], ""
        self.original = self.redrawn = None  # the image's pixels in the grid (when given), and its redraw
        self._worker: threads.GeneratorWorker | None = None
        self._running: set[str] = set()  # strips the running job has not finished
        self._pending: set[str] = set()  # strips to draw once it has stopped
        self._ignoring = False  # the running job was asked to stop: its late pictures are not shown
        self._restart = QTimer(self, singleShot=True, interval=RESTART_MS)
        self._restart.timeout.connect(lambda: self.request("variations"))
        self._build()
        self.resize(760, 620)

    # ============================================================================ construction
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        self.picture = QLabel()
        self.picture.setFixedSize(132, 132)
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.info = HintLabel("")
        lay.addLayout(_row(QHBoxLayout(), self.picture, (self.info, 1)))
        lay.addWidget(self._build_variations())
        lay.addWidget(self._build_mix())
        self.progress = QProgressBar()
        self.cancel_button = push_button("Cancel", "Stop after the current model call; the pictures drawn so far are "
                                     "kept", self.cancel)
        self.save_png_button = push_button("Save PNG…", "Both strips as one picture; how they were made goes into the "
                                       "PNG's text", lambda: self.ask_save("png"))
        lay.addLayout(_row(QHBoxLayout(), (self.progress, 1), self.cancel_button, self.save_png_button,
                           push_button("Close", "", self.close)))
        self._update_buttons()

    def _build_variations(self) -> QGroupBox:
        box = QGroupBox("Variation seeds")
        lay = QVBoxLayout(box)
        self.vseed = _tipped(QSpinBox(), VSEED_TIP)
        self.vseed.setRange(0, 2**31 - 1 - vj.STRIP)
        self.new_seeds = push_button("New variation seeds", "Eight other neighbours: a random variation seed",
                                 lambda: self.vseed.setValue(random.randrange(self.vseed.maximum())))
        self.strength = _tipped(QSlider(Qt.Orientation.Horizontal), STRENGTH_TIP)
        self.strength.setRange(0, 100)
        self.strength.setValue(20)
        self.strength_label = _tipped(QLabel(), STRENGTH_TIP)
        lay.addLayout(_row(QHBoxLayout(), QLabel("Variation seed"), self.vseed, self.new_seeds,
                           _tipped(QLabel("Strength"), STRENGTH_TIP), (self.strength, 1), self.strength_label))
        self.strip = PictureStrip(checkable=True)
        self.strip.picked.connect(self._update_use_seed)
        lay.addWidget(self.strip)
        self.use_seed = push_button("Use this seed", "", self._use_seed)
        self.use_note = HintLabel("")
        lay.addLayout(_row(QHBoxLayout(), self.use_seed, (self.use_note, 1)))
        self.vseed.valueChanged.connect(self._restart.start)
        self.strength.valueChanged.connect(self._on_strength)
        self.strength_label.setText(f"{self.strength_value():.2f}")
        return box

    def _build_mix(self) -> QGroupBox:
        box = QGroupBox("Label mix")
        lay = QVBoxLayout(box)
        self.label_a = QLabel()
        self.label_b = _tipped(QComboBox(), "The label to morph to: context = (1 − w)·A + w·B, w from 0 to 1 in "
                               "eight steps, all from this image's starting noise")
        self.label_b.currentIndexChanged.connect(lambda: self.request("mix"))
        self.save_gif_button = push_button("Save GIF…", "The morph as a looping animation, A to B and back",
                                       lambda: self.ask_save("gif"))
        lay.addLayout(_row(QHBoxLayout(), self.label_a, QLabel("→"), self.label_b, self.save_gif_button, None))
        self.mix_strip = PictureStrip(checkable=False)
        lay.addWidget(self.mix_strip)
        return box

    # ============================================================================ opening
    def open_for(self, bundle, job: SampleJob, spec: ColumnSpec, image_index: int, row_names: list[str],
                 original: np.ndarray | None = None) -> None:
        """Show image `image_index` of the run `job` (made by `bundle`) as column `spec` drew it; `original`, its
        pixels in the grid, lets the dialog say whether the redraw matches. Starts drawing at once."""
        self._stop(keep_pending=False)
        self.bundle, self.source = bundle, vj.Source(job, spec, int(image_index))
        self.row_names, self.original, self.redrawn = list(row_names), original, None
        row = self.source.row
        name = self.row_names[row] if row < len(self.row_names) else f"row {row + 1}"
        self.info.setText(f"<b>Image {image_index + 1} of {job.n}</b> (row “{name}”), seed {job.seed}<br>"
                          f"{spec.title}, guidance {spec.guidance:g}<br>{EXACT_NOTE.format(n=job.n)}")
        self._name_a = name
        self.label_a.setText(f"A: {name}")
        choices, first = vj.label_choices(self.source, self.row_names, list(getattr(bundle, "label_names", [])))
        with QSignalBlocker(self.label_b):
            self.label_b.clear()
            for label, v in choices:
                self.label_b.addItem(label, v)
            self.label_b.setCurrentIndex(first)
        with QSignalBlocker(self.vseed):  # drawn below, with the rest; neighbour j is seed S + j's image here
            self.vseed.setValue(min(job.seed + 1, self.vseed.maximum()))
        self.strip.unpick()
        self._update_use_seed()
        self.show()
        self.raise_()
        self.request("original", "variations", "mix")

    # ============================================================================ drawing
    def draws(self, strip: str) -> list[vj.Draw]:
        if strip == "original":
            return [vj.Draw("original", 0)]
        if strip == "variations":
            return vj.variation_draws(self.vseed.value(), self.strength_value())
        return vj.mix_draws(self.source.context, self.label_b.currentData())

    def strength_value(self) -> float:
        return self.strength.value() / 100  # the slider's 0..100

    def request(self, *strips: str) -> None:
        """Draw these strips: now, or once the running job has stopped (it is asked to)."""
        if self.source is None or self.bundle is None:
            return
        for s in strips:
            self._clear(s)
        self._pending |= set(strips)
        if self._worker is not None:
            self._pending |= self._running  # what it has not finished yet is drawn again, with the rest
            self._stop(keep_pending=True)
            return
        self._start_pending()

    def _clear(self, strip: str) -> None:
        if strip == "original":
            self.redrawn = None
            self.picture.clear()
        else:
            (self.strip if strip == "variations" else self.mix_strip).clear()
        self._update_buttons()

    def _start_pending(self) -> None:
        order, self._pending = [s for s in ("original", "variations", "mix") if s in self._pending], set()
        if not order:
            return
        draws = [d for s in order for d in self.draws(s)]
        self._running, self._ignoring = set(order), False
        self._worker = threads.GeneratorWorker(vj.draw_pictures, self.bundle, self.source, draws, control=True)
        threads.start(self._worker, on_progress=self._on_item, on_failed=self._on_failed,
                      on_finished=self._on_thread_finished)
        self.progress.setRange(0, len(draws))
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m pictures")
        self._update_buttons()
        self.busy_changed.emit(True)

    def is_busy(self) -> bool:
        return self._worker is not None

    def cancel(self) -> None:
        """Button: stop after the current model call, draw nothing more."""
        self._stop(keep_pending=False)

    shutdown = cancel  # the window closing: threads.py keeps the worker until its thread has ended

    def _stop(self, keep_pending: bool) -> None:
        self._restart.stop()
        if not keep_pending:
            self._pending.clear()
        if self._worker is not None:
            self._ignoring = True  # what it still sends was drawn for the settings being replaced
            self._worker.request_stop()
            self.cancel_button.setEnabled(False)

    def hideEvent(self, event) -> None:
        """Closed (Close, Esc or the window's ✕): nothing more is drawn for a dialog nobody sees."""
        self._stop(keep_pending=False)
        super().hideEvent(event)

    def _on_item(self, item) -> None:
        if self._ignoring:
            return
        if isinstance(item, vj.Picture):
            self._on_picture(item.draw, item.image)
            self.progress.setValue(self.progress.value() + 1)
        elif isinstance(item, vj.Step):
            self.progress.setFormat(f"%v / %m pictures (step {item.step} of {item.steps})")

    def _on_picture(self, d: vj.Draw, image: np.ndarray) -> None:
        if d.strip == "original":
            self.redrawn = image
            self.picture.setPixmap(pixmap_from_rgb(image, max(1, 128 // image.shape[0])))
            if self.original is not None:
                same = "identical to" if np.array_equal(image, self.original) else "<b>not</b> the same as"
                self.info.setText(f"{self.info.text()}<br>Redrawn: {same} the grid's image.")
        elif d.strip == "variations":
            self.strip.set_picture(d.slot, image, f"variation seed {d.variation_seed}, strength {d.strength:g}")
        else:
            self.mix_strip.set_picture(d.slot, image, f"w = {d.weight:.2f}: {1 - d.weight:.0%} A + {d.weight:.0%} B")
        if d.strip == "original" or d.slot == vj.STRIP - 1:  # the pictures come in order: the strip is complete
            self._running.discard(d.strip)
            self.strip_finished.emit(d.strip)

    def _on_failed(self, error: BaseException) -> None:
        self._pending.clear()
        QMessageBox.warning(self, "Variations stopped", f"Drawing stopped: {engine.user_message(error)[:300]}")

    def _on_thread_finished(self) -> None:
        self._worker, self._running = None, set()
        self.progress.setFormat("%v / %m pictures")  # no step is under way any more
        self._update_buttons()
        self.busy_changed.emit(False)
        self._start_pending()

    def _update_buttons(self) -> None:
        busy = self.is_busy()
        self.cancel_button.setEnabled(busy)
        self.save_gif_button.setEnabled(self.mix_strip.complete() is not None and not busy)
        self.save_png_button.setEnabled(self.strip.complete() is not None and not busy)

    # ============================================================================ settings
    def _on_strength(self, value: int) -> None:
        self.strength_label.setText(f"{value / 100:.2f}")
        self._update_use_seed()
        self._restart.start()

    def _panel_seed(self) -> tuple[int | None, str]:
        """(seed, what it does) when Sample & compare can draw the picked neighbour, else (None, why not)."""
        picked = self.strip.group.checkedId()
        if self.source is None or picked < 0:
            return None, "Pick a neighbour in the strip first."
        compat = bool(getattr(self.bundle.net.config, "course_compat", False))
        return vj.seed_for_panel(self.source, self.strength_value(), self.vseed.value() + picked, compat)

    def _update_use_seed(self, *_) -> None:
        seed, note = self._panel_seed()
        self.use_seed.setEnabled(seed is not None)
        self.use_note.setText(note)
        self.use_seed.setToolTip(note)

    def _use_seed(self) -> None:
        seed, _ = self._panel_seed()
        if seed is not None:
            self.seed_chosen.emit(seed)
            self.state.status_message.emit(f"Seed {seed} set in Sample & compare: press Run to draw it.")

    # ============================================================================ exports
    def _info(self) -> dict:
        return vj.export_info(self.vseed.value(), self.strength_value(), self._name_a, self.label_b.currentText(),
                              self.label_b.currentData(), getattr(self.bundle, "description", ""))

    def save_gif(self, path: str) -> bool:
        """The label mix as a GIF, written on a worker. False: nothing started (the mix is not complete, or the
        user kept the file already there)."""
        images, info = self.mix_strip.complete(), self._info()
        return images is not None and self._save(path, vj.save_mix_gif, images, vj.mix_captions(
            info["label_a"], info["label_b"]), vj.export_text(self.source, info)["settings"])

    def save_png(self, path: str) -> bool:
        """Both strips (the mix once complete) as one PNG, their settings in text chunks; False as save_gif."""
        strips = [s for s in (self.strip.complete(), self.mix_strip.complete()) if s is not None]
        info = self._info()
        labels = [f"strength {self.strength_value():g}", f"{info['label_a']} → {info['label_b']}"][:len(strips)]
        return bool(strips) and self._save(path, vj.save_strips_png, strips, labels, vj.export_text(self.source, info))

    def _save(self, path: str, fn, *args) -> bool:
        """Run fn(path, *args, replace) in the background; a file already at `path` only with the user's yes."""
        replace = Path(path).exists()
        if replace and QMessageBox.question(
                self, "Replace the file?", f"{path} already exists. Replace it?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No) != QMessageBox.StandardButton.Yes:
            return False

        def done(p):
            self.state.status_message.emit(f"Saved {p}")
            self.export_finished.emit(str(p))

        def failed(message):
            QMessageBox.warning(self, "Could not save", f"{path}: {message}")
            self.export_failed.emit(message)

        threads.run_in_background(fn, path, *args, replace, on_done=done, on_error=failed)
        return True

    def ask_save(self, kind: str) -> None:
        """Save GIF… ("gif") or Save PNG… ("png"): where to, then save_gif / save_png."""
        title, stem, filt, save = {"gif": ("Save the label mix", "mix", "GIF animation (*.gif)", self.save_gif),
                                   "png": ("Save the strips", "variations", "PNG image (*.png)", self.save_png)}[kind]
        name = f"{stem}_seed{self.source.job.seed}_image{self.source.index + 1}.{kind}"
        # _save asks before replacing a file, not Qt: asked once, not twice, and the same on every platform.
        path, _ = QFileDialog.getSaveFileName(self, title, str(settings.export_dir() / name), filt,
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            settings.remember_export_dir(path)
            save(path)
