"""Sample & compare's "make it fast" tools (its lab menu):

TuneStepsDialog  "Tune the steps…": search the timesteps a sampler should visit at a few model calls for the
                 loaded model; the result becomes a spacing of that model (tuned-5) in every spacing menu, and
                 can be saved with the model to a new file.
ShortcutDialog   "Teach a shortcut…": distil the loaded model into a student that draws in 1-4 calls, with
                 progress, a live loss curve and the teacher's and the student's images from the same noise;
                 stop saves, Resume continues; the student lands in the model menu.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QMessageBox, QProgressBar, QVBoxLayout)

from core.catalog import DISTILL_ACCURATE_TEACHER, DISTILL_TEACHER_CALLS, distill_teacher_spacing, sampler_choice
from core.progress import TimeLeft
from desktop import engine, settings, threads
from desktop.jobs import shortcuts as sj
from desktop.widgets.common import HintLabel, ImageGridView, eta_text, format_duration, push_button, spin_box
from desktop.widgets.loss_plot import LossPlot

TUNABLE = ("dpmpp3m", "ipndm", "dpmpp2m", "ddim", "heun")  # core.step_search.TUNABLE_SAMPLERS, best first
SECOND_ROUND_TIP = ("Tip: for 1 or 2 calls a 4-call student is the better teacher: teach a 4-call student first, "
                    "load it (Load the student) and let it teach the 2-call one, a second round.")
MAX_STUDENT_CALLS = 4  # the dialog offers 1-4 calls (the core allows up to 8); a student teaches fewer than its own


class _JobDialog(QDialog):
    """What both dialogs share: one background job at a time, a row of buttons kept in step with it and the model."""

    def __init__(self, state, title: str, parent=None):
        super().__init__(parent)
        self.state = state
        self.setWindowTitle(title)
        self._worker = None
        self._time_left = TimeLeft()

    def _button_row(self, lay: QVBoxLayout, *buttons) -> None:
        row = QHBoxLayout()
        for b in buttons:
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        self.state.model_changed.connect(lambda _b: self._update_buttons())
        self._update_buttons()

    def _update_buttons(self) -> None:
        raise NotImplementedError

    def is_busy(self) -> bool:
        return self._worker is not None

    def _start(self, fn, *args) -> None:
        self._time_left.clear()  # each sitting times itself afresh
        self._worker = threads.GeneratorWorker(fn, *args, control=True)
        threads.start(self._worker, on_progress=self._on_item, on_result=self._on_result, on_failed=self._on_failed,
                      on_finished=self._on_finished)
        self._update_buttons()

    def _on_failed(self, error) -> None:
        self.note.setText("Stopped by an error.")
        QMessageBox.warning(self, self.windowTitle(), f"It stopped: {engine.user_message(error)[:300]}")

    def _on_finished(self) -> None:
        self._worker = None
        self._update_buttons()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.request_stop()

    def shutdown(self) -> None:
        self.stop()


class TuneStepsDialog(_JobDialog):
    """Search, show the result against the built-in spacings, add it to the model, save it (see module)."""

    def __init__(self, state, parent=None):
        super().__init__(state, "Tune the steps", parent)
        self.result: sj.TuneResult | None = None
        self._tuned: dict = {}  # name -> what the search found, saved into the model's file with it
        lay = QVBoxLayout(self)
        lay.addWidget(HintLabel(
            "Few model calls lose quality mostly because the steps land in the wrong places. This searches, for "
            "the loaded model, where the steps should go (one to four minutes on a laptop CPU). The result is a "
            "new spacing of this model, e.g. tuned-5, in every column's spacing menu; check it in the Quality "
            "tab."))
        form = QFormLayout()
        self.method_box = QComboBox()
        self.method_box.addItem("images like the training images (ramp search)", "ramp")
        self.method_box.addItem("closest to the exact solution (GITS)", "gits")
        self.method_box.setItemData(0, "Tries 27 step ramps and keeps the one whose images are closest to the data "
                                    "set's images, as the Quality tab measures it.\nBest at 4 to 6 calls; needs the "
                                    "model's training data set loaded (Data & labels).", Qt.ItemDataRole.ToolTipRole)
        self.method_box.setItemData(1, "The timesteps whose images land closest to a 100-step solution of the same "
                                    "noise.\nBest at 2 and 3 calls; closest is not always best looking.",
                                    Qt.ItemDataRole.ToolTipRole)
        self.method_box.setToolTip("What the search aims for (each choice has its own tip)")
        form.addRow("Search for", self.method_box)
        self.sampler_box = QComboBox()
        for name in TUNABLE:
            self.sampler_box.addItem(sampler_choice(name).label, name)
        self.sampler_box.setToolTip("The sampler the timesteps are tuned for (they work with the others too)")
        self.calls_spin = spin_box(2, 20, 5, "Model calls per image: 3 to 6 is where tuning pays most")
        form.addRow("Sampler", self.sampler_box)
        form.addRow("Model calls", self.calls_spin)
        lay.addLayout(form)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        lay.addWidget(self.progress)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self.run_button = push_button("Search", "Search the timesteps for the loaded model", self.run)
        self.stop_button = push_button("Stop", "Stop the search (nothing changes)", self.stop)
        self.save_button = push_button("Save model with it…", "Write the model with its tuned spacings to a new "
                                       "file, so they are there next time (the CLI's tune-steps does the same)",
                                       self.ask_save)
        self._button_row(lay, self.run_button, self.stop_button, self.save_button)

    def _update_buttons(self) -> None:
        has = self.state.model is not None
        self.run_button.setEnabled(has and not self.is_busy())
        self.stop_button.setEnabled(self.is_busy())
        self.save_button.setEnabled(has and not self.is_busy() and bool(self._tuned))

    def run(self) -> None:
        if self.state.model is None or self.is_busy():
            return
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        method = self.method_box.currentData()
        self.note.setText("Trying the ramps…" if method == "ramp" else "Solving the reference trajectories…")
        self._start(sj.tune_steps, self.state.model, self.sampler_box.currentData(), self.calls_spin.value(), method,
                    self.state.dataset if method == "ramp" else None)

    def _on_item(self, item) -> None:
        if isinstance(item, sj.Progress):
            self.progress.setRange(0, max(item.total, 1))
            self.progress.setValue(item.done)

    def _on_result(self, res) -> None:
        if res is None:
            self.note.setText("Stopped; the model is unchanged.")
            return
        self.result = res
        bundle = self.state.model
        if bundle is None:
            return
        self._tuned[res.name] = {"sampler": res.sampler, "calls": res.calls, "timesteps": res.timesteps,
                                 "error": round(res.error, 5), "seconds": round(res.seconds, 1),
                                 "distance": res.distance, **res.ramp}
        best_name, best = min(res.baselines.items(), key=lambda kv: kv[1])
        ts = ", ".join(f"{t:.0f}" for t in res.timesteps)
        what = ("Feature distance to the training images" if res.distance == "data"
                else "Distance to the 100-step images")
        kept = (f"No ramp beat the built-in spacing {res.ramp['built_in']}: it is kept under this name.<br>"
                if "built_in" in res.ramp else "")
        self.note.setText(
            f"<b>{res.name}</b> for {sampler_choice(res.sampler).label} at {res.calls} calls: timesteps {ts}.<br>"
            f"{kept}{what} {res.error:.3f}; the best built-in spacing ({best_name}) {best:.3f} "
            f"({100 * (1 - res.error / best):+.0f}% closer). {res.seconds:.0f} s.<br>"
            f"It is now in every column's spacing menu for this model; save the model with it to keep it. "
            f"Compare it in the Quality tab.")
        self.state.set_model(sj.with_spacing(bundle, res.name, res.timesteps))
        self.state.status_message.emit(f"Tuned spacing {res.name} added to the model")

    def _on_finished(self) -> None:
        super()._on_finished()
        self.progress.setValue(self.progress.maximum())

    def ask_save(self) -> None:
        bundle = self.state.model
        if bundle is None or not self._tuned:
            return
        stem = bundle.path.name.split(".")[0] if bundle.path else "model"
        start = str(settings.export_dir() / f"{stem}.tuned.safetensors")
        path, _ = QFileDialog.getSaveFileName(self, "Save the model with its tuned spacings", start,
                                              "Model (*.safetensors)", options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.save(path)

    def save(self, path: str) -> None:
        if Path(path).exists():
            QMessageBox.warning(self, "Not saved", f"{path}: the file exists; choose a new name (nothing is replaced)")
            return
        threads.run_in_background(sj.save_with_spacings, self.state.model, path, dict(self._tuned),
                                  on_done=lambda p: self.state.status_message.emit(f"Saved {p}"),
                                  on_error=lambda m: QMessageBox.warning(self, "Could not save", f"{path}: {m}"))

    def closeEvent(self, event) -> None:
        self.stop()
        super().closeEvent(event)


class ShortcutDialog(_JobDialog):
    """Distil the loaded model into a student (see module docstring)."""

    student_saved = Signal(str)  # the student's model file, after a run ends or stops (the model menu lists it)
    load_requested = Signal(str)  # "Load the student"

    def __init__(self, state, parent=None):
        super().__init__(state, "Teach a shortcut", parent)
        self.summary: sj.DistillSummary | None = None
        self._run_dir: str | None = None  # the last run, for Resume
        self._teacher_path: str | None = None
        lay = QVBoxLayout(self)
        lay.addWidget(HintLabel(
            "The model teaches a copy of itself (the student) to jump, in one step, as far as its own solver goes "
            "in several (its accurate solver, or a tuned few-step one: Learn from): the student then draws in 1 "
            "to 4 model calls. It learns from a few thousand "
            "of the model's own solutions, made first. A student can teach a student of fewer calls in turn (a "
            "second round). Stop saves; Resume continues exactly."))
        form = QFormLayout()
        self.calls_spin = spin_box(1, MAX_STUDENT_CALLS, MAX_STUDENT_CALLS, "The student's model calls per image")
        self.guidance_spin = spin_box(1.0, 5.0, 1.0, "Classifier-free guidance built into the student: it then draws "
                                      "guided images at no extra cost (1 = none)", cls=QDoubleSpinBox, step=0.5)
        self.steps_spin = spin_box(100, 20000, 1200, "Training steps: about a second each on a laptop CPU", step=100)
        self.pool_spin = spin_box(256, 16384, 4096, "How many of the model's solutions the student learns from",
                                  step=256)
        self.teacher_box = QComboBox()
        self.teacher_box.setToolTip(
            "What the student learns to draw. The model's accurate solver (about 24 calls) is the safe choice; a "
            "tuned few-step spacing of the model (Tune the steps) can draw images closer to the training images "
            "than the accurate solution, and the student then learns those")
        self._teacher_picked = False  # until the user picks one, "Learn from" follows the model and the calls
        self.teacher_box.activated.connect(lambda _i: setattr(self, "_teacher_picked", True))
        self.calls_spin.valueChanged.connect(lambda _v: self._refresh_teachers())
        form.addRow("Student's model calls", self.calls_spin)
        form.addRow("Learn from", self.teacher_box)
        form.addRow("Guidance built in", self.guidance_spin)
        form.addRow("Training steps", self.steps_spin)
        form.addRow("Teacher's solutions", self.pool_spin)
        lay.addLayout(form)
        self.progress = QProgressBar()
        self.progress.setFormat("%p%")
        lay.addWidget(self.progress)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        pics = QFormLayout()
        self.teacher_view = ImageGridView(placeholder="the teacher's images appear here")
        self.student_view = ImageGridView(placeholder="the student's images appear here")
        for v in (self.teacher_view, self.student_view):
            v.setMinimumHeight(56)
        self.student_label = QLabel("Student")
        self.teacher_label = QLabel("Teacher")
        pics.addRow(self.teacher_label, self.teacher_view)
        pics.addRow(self.student_label, self.student_view)
        lay.addLayout(pics)
        self.loss_plot = LossPlot()
        self.loss_plot.setMinimumHeight(160)
        lay.addWidget(self.loss_plot, 1)
        self.start_button = push_button("Start", "Start a new student from the loaded model", self.start)
        self.stop_button = push_button("Stop", "Stop and save; Resume continues exactly", self.stop)
        self.resume_button = push_button("Resume", "Continue the last stopped student", self.resume)
        self.load_button = push_button("Load the student", "Sample with the student in Sample & compare",
                                       self.load_student)
        self._button_row(lay, self.start_button, self.stop_button, self.resume_button, self.load_button)

    def _refresh_teachers(self) -> None:
        """"Learn from": the accurate solver, and each tuned spacing of the model with more steps than the student
        has calls (the student's timesteps are then some of its); until the user picks, core's default choice
        (the best-scored ramp-tuned spacing, see core.catalog.distill_teacher_spacing)."""
        bundle = self.state.model
        student = engine.distilled_info(bundle)
        own_calls = student.get("calls") if student else None
        # a student teaches a student of fewer calls what its own steps draw (a second round), its guidance built in
        self.calls_spin.setMaximum(max(1, own_calls - 1) if isinstance(own_calls, int) else MAX_STUDENT_CALLS)
        calls = self.calls_spin.value()
        if student is not None:  # (_update_buttons greys the guidance box)
            self.guidance_spin.setValue(1.0)
            self.teacher_box.blockSignals(True)
            self.teacher_box.clear()
            if isinstance(own_calls, int):
                self.teacher_box.addItem(f"what it draws in its own {own_calls} calls (distilled-{own_calls})",
                                         f"distilled-{own_calls}")
            self.teacher_box.blockSignals(False)
            return
        if self.summary is None and not self.is_busy():  # nothing run yet: the note is free for a tip
            self.note.setText(SECOND_ROUND_TIP if bundle is not None and calls <= 2 else "")
        spacings = [] if bundle is None else [(n, len(ts) - 1) for n, ts in bundle.schedule_config.spacings
                                               if n.startswith("tuned-") and len(ts) - 1 > calls]
        if self._teacher_picked:
            keep = self.teacher_box.currentData()
        else:
            tuned = ((bundle.meta or {}).get("extra") or {}).get("tuned") if bundle is not None else None
            keep = distill_teacher_spacing(bundle.schedule_config.spacings, tuned, calls) if bundle is not None \
                else DISTILL_ACCURATE_TEACHER
        self.teacher_box.blockSignals(True)
        self.teacher_box.clear()
        self.teacher_box.addItem(f"its accurate solver (~{DISTILL_TEACHER_CALLS} calls)", DISTILL_ACCURATE_TEACHER)
        for name, steps in sorted(spacings, key=lambda item: item[1]):
            self.teacher_box.addItem(f"what it draws in {steps} calls ({name})", name)
        self.teacher_box.setCurrentIndex(max(0, self.teacher_box.findData(keep)))
        self.teacher_box.blockSignals(False)

    def _update_buttons(self) -> None:
        if not self.is_busy():
            self._refresh_teachers()
        bundle = self.state.model
        student = engine.distilled_info(bundle)
        ok = bundle is not None and bundle.path is not None and (student is None or student.get("calls", 1) > 1)
        busy = self.is_busy()
        self.start_button.setEnabled(ok and not busy)
        self.start_button.setToolTip("Start a new student from the loaded model" if ok else
                                     "Load a saved model (or a student of 2 or more calls) first")
        self.stop_button.setEnabled(busy)
        stopped = self.summary is not None and self.summary.stopped
        self.resume_button.setEnabled(not busy and stopped and self._teacher_path is not None)
        self.load_button.setEnabled(not busy and self.summary is not None)
        for w in (self.calls_spin, self.teacher_box, self.steps_spin, self.pool_spin):
            w.setEnabled(not busy)
        self.guidance_spin.setEnabled(not busy and student is None)

    def config(self) -> dict:
        return {"calls": self.calls_spin.value(), "guidance": float(self.guidance_spin.value()),
                "steps": self.steps_spin.value(), "trajectories": self.pool_spin.value(),
                "teacher_spacing": self.teacher_box.currentData() or DISTILL_ACCURATE_TEACHER}

    def start(self) -> None:
        bundle = self.state.model
        if bundle is None or bundle.path is None or self.is_busy():
            return
        self._teacher_path = str(bundle.path)
        self._run_dir = str(sj.new_run_folder(settings.runs_dir(), self.calls_spin.value()))
        self._config = self.config()
        self.loss_plot.clear()
        self._launch(resume=False)

    def resume(self) -> None:
        if self._run_dir is None or self._teacher_path is None or self.is_busy():
            return
        self._launch(resume=True)

    def _launch(self, resume: bool) -> None:
        self.summary = None
        self.note.setText("Resuming…" if resume else "Making the teacher's solutions…")
        self.student_label.setText(f"Student ({self._config['calls']} calls)")
        spacing = self._config.get("teacher_spacing", DISTILL_ACCURATE_TEACHER)
        self.teacher_label.setText(f"Teacher\n(its solver,\n~{DISTILL_TEACHER_CALLS} calls)"
                                   if spacing == DISTILL_ACCURATE_TEACHER else f"Teacher\n({spacing})")
        self._start(sj.distill, self._teacher_path, self._config, self._run_dir, resume)

    def stop(self) -> None:
        if self._worker is not None:
            super().stop()
            self.note.setText("Stopping after this step and saving…")

    def _on_item(self, item) -> None:
        if isinstance(item, sj.Progress):
            self.progress.setRange(0, max(item.total, 1))
            self.progress.setValue(item.done)
            self.note.setText(f"Making the teacher's solutions: {item.done} of {item.total}")
        elif isinstance(item, sj.TeacherImages):
            self.teacher_view.set_grid(item.images[None])
            names = ", ".join(self.state.model.label_names) if self.state.model is not None else ""
            for view in (self.teacher_view, self.student_view):
                view.setToolTip(f"One image per label ({names}); the teacher and the student start from the same "
                                "noise, so the same picture should appear twice")
        elif isinstance(item, sj.StudentImages):
            self.student_view.set_grid(item.images[None])
            self.student_label.setText(f"Student ({self._config['calls']} calls)\nstep {item.step}")
        elif isinstance(item, sj.DistillSteps) and item.metrics:
            m = item.metrics[-1]
            self._time_left.add(m.elapsed, m.step)
            self.loss_plot.append(item.metrics)
            self.loss_plot.refresh()
            self.progress.setRange(0, m.total_steps)
            self.progress.setValue(m.step)
            self.note.setText(f"Step {m.step} of {m.total_steps}, loss {m.loss:.4f}, "
                              f"{format_duration(m.elapsed)} so far, {eta_text(self._time_left, m.total_steps)}")

    def _on_result(self, summary) -> None:
        if summary is None:
            self.note.setText("Stopped before the teacher's solutions were made; nothing was saved.")
            return
        self.summary = summary
        what = "Stopped and saved" if summary.stopped else "Done"
        self.note.setText(f"{what}: step {summary.step} of {summary.total}, {format_duration(summary.seconds)}. "
                          f"The student is {summary.model_path} (in the model menu as a shortcut)."
                          + (" Resume continues it." if summary.stopped else ""))
        self.student_saved.emit(summary.model_path)

    def load_student(self) -> None:
        if self.summary is not None:
            self.load_requested.emit(self.summary.model_path)

