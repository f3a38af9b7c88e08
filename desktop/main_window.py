"""The main window: three tabs (Data & labels, Train, Sample & compare), menus, status bar.

It opens before torch has loaded: the built-in data set, the training presets and the default model
are loaded by one background job right after the window is shown (`start_loading`).
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QApplication, QDialog, QDialogButtonBox, QFileDialog, QFrame, QLabel, QMainWindow,
                               QMessageBox, QScrollArea, QTabWidget, QTextBrowser, QVBoxLayout, QWidget)

from core.catalog import TAUGHT_GUIDANCE
from core.config import preset_dicts
from desktop import engine, settings, threads
from desktop.startup import _worth_remembering, startup_job
from desktop.state import AppState
from desktop.help import ABOUT, HOW_IT_WORKS
from desktop.panels.data_panel import DataPanel
from desktop.panels.train_panel import TrainPanel
from desktop.widgets.common import error_text

TAB_DATA, TAB_TRAIN, TAB_SAMPLE = 0, 1, 2


def _make_sample_panel(state: AppState) -> QWidget:
    """The Sample & compare tab (another module); a short note when it is not installed."""
    try:
        from desktop.panels.sample_panel import SamplePanel
    except ImportError:
        note = QLabel("Sampling and sampler comparison are not available in this build.")
        note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        return note
    return SamplePanel(state)


# The smallest content the tabs are laid out for (a 1024x768 screen less its panels); below it, scroll bars.
MIN_CONTENT_WIDTH, MIN_CONTENT_HEIGHT = 1000, 560
class MainWindow(QMainWindow):
    """`state` (AppState) and `tabs` (QTabWidget) are public for the self-test and for tests."""

    def __init__(self, state: AppState | None = None, parent=None):
        super().__init__(parent)
        self.state = state or AppState()
        self.setWindowTitle("Diffusion Desk")
        self.loaded = False  # True once the startup job has finished
        self._close_after_stop = False
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.data_panel = DataPanel(self.state)
        self.composer = self.data_panel.composer
        self.train_panel = TrainPanel(self.state)
        self.sample_panel = _make_sample_panel(self.state)
        self.tabs.addTab(self.data_panel, "Data && labels")
        self.tabs.addTab(self.train_panel, "Train")
        self.tabs.addTab(self.sample_panel, "Sample && compare")
        self.tabs.setTabToolTip(TAB_DATA, "Look through the images, edit labels, import your own images, "
                                          "and compose the label mix used for sampling.")
        self.tabs.setTabToolTip(TAB_TRAIN, "Train a model and watch the loss fall and the previews sharpen.")
        self.tabs.setTabToolTip(TAB_SAMPLE, "Draw new images with different samplers and compare them.")
        # Below the size the tabs need, the window scrolls instead of squashing buttons and grids to nothing.
        self.tabs.setMinimumSize(MIN_CONTENT_WIDTH, MIN_CONTENT_HEIGHT)
        scroller = QScrollArea()
        scroller.setWidget(self.tabs)
        scroller.setWidgetResizable(True)
        scroller.setFrameShape(QFrame.Shape.NoFrame)
        self.setCentralWidget(scroller)
        self._build_status_bar()
        self._build_menus()
        self._connect_state()
        self.train_panel.dataset_requested.connect(self.open_dataset_spec)
        self.train_panel.open_dataset_requested.connect(self._on_open_dataset)
        self.train_panel.run_state_changed.connect(self._on_run_state_changed)
        self.data_panel.teach_requested.connect(self._on_teach)
        if hasattr(self.sample_panel, "model_requested"):
            self.sample_panel.model_requested.connect(self.open_checkpoint)
            self.sample_panel.open_model_requested.connect(self._on_open_checkpoint)
            # a restored run's rows and guidance go back into the composer, which publishes them as usual
            self.sample_panel.lab.restore_composition_requested.connect(
                lambda saved: (self.composer.restore_state(saved), self.composer.publish()))
        self._poll_close_timer = QTimer(self)
        self._poll_close_timer.setInterval(50)
        self._poll_close_timer.timeout.connect(self._retry_close)
        self.resize(1280, 820)
        self._restore_layout()

    # --- building ------------------------------------------------------------------------------------
    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.device_label = QLabel("Starting the engine…")
        self.device_label.setToolTip("Where the network runs (CPU threads or the GPU's name) and its number "
                                     "format (bf16 is about twice as fast as fp32 where supported).")
        self.data_label = QLabel("No data set")
        self.model_label = QLabel("No model")
        for w in (self.device_label, self.data_label, self.model_label):
            w.setContentsMargins(6, 0, 6, 0)
            bar.addPermanentWidget(w)

    def _build_menus(self) -> None:
        m = self.menuBar().addMenu("&File")
        self._action(m, "Open data set (.npz)…", self._on_open_dataset, QKeySequence.StandardKey.Open,
                     tip="Open a data set saved by Diffusion Desk.")
        self._action(m, "Import image folder…", lambda: self._import("folder"),
                     tip="A folder of images; each sub-folder becomes a label.")
        self._action(m, "Import course files (.npy)…", lambda: self._import("course"),
                     tip="The course's sprites_*.npy with its sprite_labels_nc_*.npy beside it.")
        self._action(m, "Import sprite sheet…", lambda: self._import("sheet"),
                     tip="One image holding many sprites on a grid.")
        m.addSeparator()
        self._action(m, "Open checkpoint…", self._on_open_checkpoint,
                     tip="A model trained here (.safetensors) or the course's weights (.pth).")
        self.recent_menu = m.addMenu("Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        m.addSeparator()
        self._action(m, "Open data folder", self._on_show_data_folder,
                     tip="Where your runs and imported data sets are kept.")
        m.addSeparator()
        self._action(m, "Quit", self.close, QKeySequence.StandardKey.Quit)
        h = self.menuBar().addMenu("&Help")
        self._action(h, "How diffusion works here", self.show_help, QKeySequence.StandardKey.HelpContents)
        self._action(h, "Data licences", self.show_licences)
        self._action(h, "About Diffusion Desk", self._show_about)

    def _action(self, menu, text, slot, shortcut=None, tip: str = "") -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            act.setShortcut(shortcut)
        if tip:
            act.setStatusTip(tip)
            act.setToolTip(tip)
        act.triggered.connect(slot)
        menu.addAction(act)
        return act

    def _connect_state(self) -> None:
        s = self.state
        s.runtime_changed.connect(self._on_runtime_changed)
        s.dataset_changed.connect(self._on_dataset_changed)
        s.label_names_changed.connect(lambda _names: self._on_dataset_changed(s.dataset))
        s.model_changed.connect(self._on_model_changed)
        s.status_message.connect(lambda text: self.statusBar().showMessage(text, 8000))

    # --- startup ---------------------------------------------------------------------------------------
    def start_loading(self) -> None:
        """Load the runtime, presets, last (or built-in) data set and last (or default) model off-thread."""
        st = settings.qsettings()
        spec = settings.read_str("data/last", st=st) or None
        ckpt = settings.read_str("model/last", st=st) or None
        if ckpt and not Path(ckpt).is_file():
            ckpt = None
        ckpt = ckpt or engine.default_checkpoint()
        self.statusBar().showMessage("Loading the engine and the built-in data set…")
        threads.run_in_background(startup_job, spec, ckpt, on_done=self._on_startup_done,
                                   on_error=self._on_startup_failed)

    def _on_startup_done(self, out: dict) -> None:
        self.state.set_runtime(out["runtime"])
        self.train_panel.set_presets(preset_dicts())
        if out["dataset"] is not None:
            self.state.set_dataset(out["dataset"])
        self.loaded = True
        if out["model"] is not None:
            self.state.set_model(out["model"])
        threads.run_in_background(engine.warm_up_training)
        if out["errors"]:
            self.statusBar().showMessage(" ".join(out["errors"]), 15000)
        else:
            self.statusBar().showMessage("Ready.", 4000)

    def _on_startup_failed(self, message: str) -> None:
        self.loaded = True
        self.device_label.setText("Engine not available")
        QMessageBox.critical(self, "Diffusion Desk could not start its engine",
                             f"{message}\n\nThe PyTorch installation may be incomplete; reinstall the app.")

    # --- opening things -----------------------------------------------------------------------------------
    @Slot()
    def _on_open_dataset(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a data set", str(settings.datasets_dir()),
                                              "Diffusion Desk data sets (*.npz);;All files (*)")
        if path:
            self.open_dataset_spec(path)

    @Slot(str)
    def open_dataset_spec(self, spec: str) -> None:
        self.statusBar().showMessage(f"Loading {spec}…")
        threads.run_in_background(engine.load_dataset, spec,
                                   on_done=lambda ds: self._use_dataset(ds, spec),
                                   on_error=lambda msg: self._error("Could not open the data set", msg))

    def _use_dataset(self, ds, spec: str) -> None:
        self.state.set_dataset(ds)
        settings.add_recent("dataset", spec)
        settings.qsettings().setValue("data/last", spec)
        self.statusBar().showMessage(f"Opened {ds.name}.", 5000)

    def _import(self, kind: str) -> None:
        self.tabs.setCurrentIndex(TAB_DATA)
        {"folder": self.data_panel.import_folder, "course": self.data_panel.import_course,
         "sheet": self.data_panel.import_sprite_sheet}[kind]()

    @Slot()
    def _on_open_checkpoint(self) -> None:
        start = str(settings.runs_dir()) if settings.runs_dir().is_dir() else str(settings.user_data_dir())
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a model checkpoint", start,
            "Models (*.safetensors *.pth *.pt);;Diffusion Desk models (*.safetensors);;Course weights (*.pth)")
        if path:
            self.open_checkpoint(path)

    def open_checkpoint(self, path: str) -> None:
        self.statusBar().showMessage(f"Loading the model {path}…")
        threads.run_in_background(engine.load_checkpoint, path,
                                   on_done=lambda b: self._use_model(b, path),
                                   on_error=lambda msg: self._error("Could not open the model", msg))

    def _use_model(self, bundle, path: str) -> None:
        self.state.set_model(bundle)
        settings.add_recent("checkpoint", path)
        self.statusBar().showMessage(f"Loaded the model {Path(path).name}.", 5000)

    def _fill_recent_menu(self) -> None:
        menu = self.recent_menu
        menu.clear()
        items = settings.recent_items()
        if not items:
            menu.addAction("(nothing yet)").setEnabled(False)
            return
        for it in items:
            act = menu.addAction(it.title)
            if it.kind == "dataset":
                act.triggered.connect(lambda _=False, s=it.spec: self.open_dataset_spec(s))
            else:
                act.triggered.connect(lambda _=False, s=it.spec: self.open_checkpoint(s))
        menu.addSeparator()
        menu.addAction("Clear the list").triggered.connect(settings.clear_recent)

    def _on_show_data_folder(self) -> None:
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices

        folder = settings.user_data_dir()
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            QMessageBox.information(self, "Your data folder", f"Runs and imported data sets are kept in:\n{folder}")

    # --- state -> status bar ---------------------------------------------------------------------------------
    def _on_runtime_changed(self, label: str) -> None:
        self.device_label.setText(f"Device: {label}")

    def _on_dataset_changed(self, ds) -> None:
        if ds is None:
            self.data_label.setText("No data set")
            return
        self.data_label.setText(f"Data: {ds.name} ({ds.n:,} images, {ds.size} px, {ds.n_labels} labels)")

    def _on_model_changed(self, bundle) -> None:
        if bundle is None:
            self.model_label.setText("No model")
            return
        live = bundle.meta.get("live")
        text = bundle.description + (" — a snapshot of the training run" if live else "")
        before, before_name = getattr(self, "_model_text", None), getattr(self, "_model_name", None)
        name = (Path(bundle.path).name if bundle.path is not None else "the new model") + (
            " (a snapshot of the training run)" if live else "")
        self._model_text, self._model_name = text, name
        self.model_label.setText(f"Model: {text}")
        self.model_label.setToolTip(f"Model: {text}")
        if before is not None and before != text:  # never swap the sampling model silently
            # Names only: the full description is in the permanent label beside it (the message shares the bar).
            was = before_name if before_name != name else before
            self.statusBar().showMessage(f"Sampling now uses {name} (was {was}).", 12000)
        if hasattr(self.sample_panel, "refresh_model_choices") and self.loaded:
            threads.run_in_background(engine.model_choices, on_done=self.sample_panel.refresh_model_choices)
        if bundle.path is not None and not live and Path(bundle.path).is_file() and _worth_remembering(bundle):
            settings.qsettings().setValue("model/last", str(bundle.path))

    def _on_teach(self) -> None:
        self.tabs.setCurrentIndex(TAB_TRAIN)  # the loss and the previews of the new labels show there
        before = self.composer.guidance_spin.value()
        # Before the run starts: its live "called <label>" figure samples at the composer's guidance.
        raised = self.composer.raise_guidance(TAUGHT_GUIDANCE)
        if self.train_panel.teach():
            guidance = (f" Guidance is now {TAUGHT_GUIDANCE:g} (was {before:g}): a label learnt in minutes is drawn "
                        "recognisably only with guidance." if raised else "")
            self.statusBar().showMessage("Teaching the shipped model your labels: a few minutes. The result opens "
                                         f"in Sample & compare when it is done.{guidance}", 15000)
        elif raised:
            self.composer.guidance_spin.setValue(before)  # nothing was started: leave the composer as it was
            self.composer.publish()

    def _on_run_state_changed(self, run_state: str) -> None:
        if run_state == "idle" and self._close_after_stop:
            QTimer.singleShot(0, self.close)

    # --- help -----------------------------------------------------------------------------------------------
    def show_help(self) -> QDialog:
        return self._text_dialog("How diffusion works here", HOW_IT_WORKS)

    def show_licences(self) -> QDialog:
        return self._text_dialog("Data licences", engine.licences_text(), markdown=True)

    def _show_about(self) -> None:
        QMessageBox.about(self, "About Diffusion Desk", ABOUT)

    def _text_dialog(self, title: str, text: str, markdown: bool = False) -> QDialog:
        dlg = QDialog(self)
        dlg.setWindowTitle(title)
        browser = QTextBrowser()
        browser.setOpenExternalLinks(True)
        browser.setMarkdown(text) if markdown else browser.setHtml(text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(dlg.reject)
        lay = QVBoxLayout(dlg)
        lay.addWidget(browser)
        lay.addWidget(buttons)
        dlg.resize(640, 560)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        return dlg

    def _error(self, title: str, message: str) -> None:
        self.statusBar().clearMessage()
        QMessageBox.warning(self, title, error_text(message))

    # --- layout memory and closing ----------------------------------------------------------------------------
    def _restore_layout(self) -> None:
        st = settings.qsettings()
        if (geom := settings.read_bytes("window/geometry", st)) is not None:
            self.restoreGeometry(geom)
        if (state := settings.read_bytes("window/state", st)) is not None:
            self.restoreState(state)
        # First launch opens on Sample & compare: the shipped model draws at once (Train invites a long run).
        self.tabs.setCurrentIndex(settings.read_int("window/tab", TAB_SAMPLE, 0, self.tabs.count() - 1, st))
        self._clamp_to_screen()
        self.data_panel.restore_layout(st)

    def _clamp_to_screen(self) -> None:
        """A saved geometry from a bigger screen (or a window that once grew) never exceeds this one."""
        screen = self.screen() or QApplication.primaryScreen()
        if screen is None:
            return
        avail = screen.availableGeometry()
        w, h = min(self.width(), avail.width()), min(self.height(), avail.height())
        if (w, h) != (self.width(), self.height()):
            self.resize(w, h)
        x = min(max(self.x(), avail.left()), avail.right() - w + 1)
        y = min(max(self.y(), avail.top()), avail.bottom() - h + 1)
        if (x, y) != (self.x(), self.y()):
            self.move(x, y)

    def _save_layout(self) -> None:
        st = settings.qsettings()
        st.setValue("window/geometry", self.saveGeometry())
        st.setValue("window/state", self.saveState())
        st.setValue("window/tab", self.tabs.currentIndex())
        self.data_panel.save_layout(st)
        st.sync()

    def closeEvent(self, event) -> None:
        if self.train_panel.is_busy():
            event.ignore()
            if not self._close_after_stop and self._confirm_stop_training():
                self._close_after_stop = True
                self.train_panel.stop()
                self.statusBar().showMessage("Saving the training run before quitting…")
            return
        if self._sampling_busy():
            # Cancel cooperatively and close when the sampler's thread has ended: a blocking
            # QThread.wait() here would keep the GIL from the worker (see threads.retire_thread).
            event.ignore()
            self._close_after_stop = True
            self.sample_panel.cancel()
            self._poll_close_timer.start()
            return
        self._close_after_stop = False
        shutdown = getattr(self.sample_panel, "shutdown", None)
        if callable(shutdown):
            shutdown()
        self.data_panel.flush_pending_save()
        self._save_layout()
        threads.wait_for_background()
        event.accept()

    def _sampling_busy(self) -> bool:
        busy = getattr(self.sample_panel, "is_busy", None)
        return bool(callable(busy) and busy())

    def _retry_close(self) -> None:
        if not self._sampling_busy():
            self._poll_close_timer.stop()
            self.close()

    def _confirm_stop_training(self) -> bool:
        answer = QMessageBox.question(
            self, "Training is running",
            "A training run is in progress. Stop it, save a checkpoint and quit?\n\n"
            "You can resume it later from the Train tab.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes
