"""The main window: fast start, background loading, menus and help, settings, clean close during training."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def window(qtbot, user_home, dialogs):
    from desktop.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    w.start_loading()
    qtbot.waitUntil(lambda: w.loaded, timeout=30000)
    w.train_panel.train_threads = 1
    w.dialogs = dialogs
    yield w
    if w.train_panel.is_busy():
        w.train_panel.stop()
        qtbot.waitUntil(lambda: not w.train_panel.is_busy(), timeout=20000)


def test_window_is_built_without_importing_torch(user_home):
    code = ("import sys; from desktop.app import make_application; app = make_application([]);"
            "from desktop.main_window import MainWindow; w = MainWindow(); w.show(); app.processEvents();"
            "assert w.tabs.count() == 3; print('torch' in sys.modules)")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", DIFFUSION_DESK_HOME=str(user_home))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_startup_loads_builtin_data_presets_and_device(qtbot, window):
    assert [window.tabs.tabText(i) for i in range(3)] == ["Data && labels", "Train", "Sample && compare"]
    assert window.state.dataset.name == "emoji16" and window.state.dataset.n == 3812
    assert window.device_label.text().startswith("Device: CPU") or "CUDA" in window.device_label.text()
    assert "emoji16" in window.data_label.text() and "3,812 images" in window.data_label.text()
    tp = window.train_panel
    assert tp.start_btn.isEnabled() and tp.preset_combo.currentData() == "quick"
    assert window.composer.names == list(window.state.dataset.label_names)
    qtbot.waitUntil(lambda: len(window.state.composition.rows) == 6, timeout=3000)  # one row per label


def test_help_and_licences_open(window):
    dlg = window.show_help()
    assert "noise" in dlg.findChild(__import__("PySide6.QtWidgets", fromlist=["QTextBrowser"]).QTextBrowser).toPlainText()
    dlg.close()
    dlg = window.show_licences()
    text = dlg.findChild(__import__("PySide6.QtWidgets", fromlist=["QTextBrowser"]).QTextBrowser).toPlainText()
    assert "licen" in text.lower() and len(text) > 200
    dlg.close()


def test_open_checkpoint_updates_model_and_recents(qtbot, window, tiny_config, tmp_path):
    from desktop import settings

    tp = window.train_panel
    tp.apply_config(tiny_config | {"steps": 10})
    tp.preview_every.setValue(0)
    tp.start()
    qtbot.waitUntil(lambda: tp.run_state == "idle", timeout=30000)
    path = str(window.state.model.path)
    window.state.set_model(None)
    assert window.model_label.text() == "No model"
    window.open_checkpoint(path)
    qtbot.waitUntil(lambda: window.state.model is not None, timeout=10000)
    assert "step 10" in window.model_label.text()
    assert settings.recent_items()[0].spec == path
    other = tmp_path / "other.safetensors"  # another model: the switch is said, short enough for the status bar
    other.write_bytes(Path(path).read_bytes())
    from core.checkpoint import load_checkpoint

    window.state.set_model(load_checkpoint(other))  # as a finished training run publishes its model
    assert "other.safetensors" in window.model_label.text()
    assert window.statusBar().currentMessage() == f"Sampling now uses other.safetensors (was {Path(path).name})."
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    window.open_checkpoint(str(bad))
    qtbot.waitUntil(lambda: bool(window.dialogs), timeout=10000)
    kind, title, text = window.dialogs[-1]
    assert "bad.safetensors" in text and "Traceback" not in text


def test_layout_and_choices_are_remembered(qtbot, window, user_home):
    from desktop.main_window import MainWindow

    window.tabs.setCurrentIndex(0)
    window.train_panel.preset_combo.setCurrentIndex(window.train_panel.preset_combo.findData("course"))
    window.train_panel.settings_box.save_choices()
    window.close()
    assert (user_home / "settings.ini").is_file()
    again = MainWindow()
    qtbot.addWidget(again)
    again.start_loading()
    qtbot.waitUntil(lambda: again.loaded, timeout=30000)
    assert again.tabs.currentIndex() == 0
    assert again.train_panel.preset_combo.currentData() == "course"


def test_closing_during_training_asks_stops_saves_and_exits(qtbot, window, qtlog):
    from core.checkpoint import read_metadata

    tp = window.train_panel
    tp.apply_config({"n_feat": 8, "steps": 5000, "batch_size": 16, "checkpoint_every": 1000})
    tp.preview_every.setValue(0)
    tp.start()
    qtbot.waitUntil(lambda: tp.loss_plot.n_points >= 3, timeout=20000)
    window.dialogs.answer = window.dialogs.answer.No
    assert not window.close()  # "No": keep training
    assert tp.is_busy() and window.isVisible()
    from PySide6.QtWidgets import QMessageBox
    window.dialogs.answer = QMessageBox.StandardButton.Yes
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=20000)
    assert not tp.is_busy()
    assert [d[0] for d in window.dialogs] == ["question", "question"]
    run = Path(tp._last_run_dir)
    step = read_metadata(run / "model.safetensors")["step"]
    assert step >= 3 and step == tp.loss_plot.n_points
    assert not [r for r in qtlog.records if "Destroyed while thread" in r.message]


@pytest.mark.slow
def test_quitting_the_app_mid_run_exits_cleanly(user_home):
    """A real process: start training, close the window, and the process exits 0 with no Qt thread warning."""
    code = """
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QMessageBox
from desktop.app import make_application
from desktop.main_window import MainWindow
app = make_application([])
QMessageBox.question = staticmethod(lambda *a, **k: QMessageBox.StandardButton.Yes)
w = MainWindow(); w.show(); w.start_loading()
def go():
    if not w.loaded:
        return QTimer.singleShot(50, go)
    tp = w.train_panel
    tp.train_threads = 1
    tp.apply_config({"n_feat": 8, "steps": 5000, "batch_size": 16})
    tp.preview_every.setValue(0)
    tp.start()
    QTimer.singleShot(1500, w.close)
go()
sys.exit(app.exec())
"""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", DIFFUSION_DESK_HOME=str(user_home))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert "Destroyed while thread" not in out.stderr
    runs = list((user_home / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "model.safetensors").is_file()


def test_first_launch_opens_on_sample_and_the_window_fits_the_screen(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QApplication

    from desktop import main_window as mw

    win = mw.MainWindow()
    qtbot.addWidget(win)
    assert win.tabs.currentIndex() == mw.TAB_SAMPLE
    avail = QApplication.primaryScreen().availableGeometry()
    win.resize(avail.width() + 900, avail.height() + 500)  # as a saved geometry from a bigger screen
    win._clamp_to_screen()
    assert win.width() <= avail.width() and win.height() <= avail.height()
    panel = win.sample_panel
    before = win.sizeHint().width()
    panel._add_column("ddim", 10)  # a fourth sampler scrolls; it does not widen the window
    assert len(panel.columns) == 4 and win.sizeHint().width() <= max(before, 1280) + 20
    win.close()


def test_model_menu_lists_the_shipped_model_runs_and_open_file(qtbot):
    from desktop.state import AppState
    from desktop.panels.model_bar import OPEN_FILE
    from desktop.panels.sample_panel import SamplePanel

    panel = SamplePanel(AppState())  # alone: the main window would really open the files
    qtbot.addWidget(panel)
    panel.refresh_model_choices([("Shipped default model", "/x/default.safetensors"),
                                 ("Run a (step 10, today)", "/runs/a/model.safetensors")])
    items = [panel.model_picker.itemData(i) for i in range(panel.model_picker.count())]
    assert items == ["/x/default.safetensors", "/runs/a/model.safetensors", OPEN_FILE]
    with qtbot.waitSignal(panel.model_requested, timeout=1000) as sig:
        panel.model_bar.picked(1)
    assert sig.args == ["/runs/a/model.safetensors"]
    with qtbot.waitSignal(panel.open_model_requested, timeout=1000):
        panel.model_bar.picked(2)
    panel.shutdown()


def test_load_errors_keep_the_library_text_out_of_the_headline():
    from desktop.widgets.common import error_text, split_details

    msg = "/x/model.safetensors: not a readable .safetensors file (header too large)"
    assert split_details(msg) == ("/x/model.safetensors: not a readable .safetensors file", "header too large")
    assert error_text(msg).splitlines()[0] == "/x/model.safetensors: not a readable .safetensors file"
    assert error_text(msg).endswith("Details: header too large")
    assert error_text("plain words only") == "plain words only"


def test_a_small_screen_shows_every_row_and_scrolls_below_the_minimum(qtbot, user_home):
    """At 1280x720 each sampler column's grid fits in the strip (all rows visible, nothing cut), the timings
    below may collapse, and a window smaller than the content scrolls instead of squashing it."""
    from desktop.main_window import MIN_CONTENT_HEIGHT, MIN_CONTENT_WIDTH, MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(1280, 720)
    window.show()
    window.tabs.setCurrentIndex(2)
    qtbot.waitExposed(window)
    panel = window.sample_panel
    qtbot.waitUntil(lambda: panel.column_strip.viewport().height() > 0)
    strip = panel.column_strip
    for col in strip.columns:
        assert col.height() <= strip.viewport().height(), (col.height(), strip.viewport().height())
    split = panel._split
    assert not split.isCollapsible(0) and split.isCollapsible(1)
    assert split.sizes()[0] > 2 * split.sizes()[1]  # the grids get the room
    assert window.tabs.minimumSize().width() == MIN_CONTENT_WIDTH
    window.resize(640, 480)
    qtbot.waitUntil(lambda: window.centralWidget().horizontalScrollBar().isVisible())
    assert window.tabs.width() >= MIN_CONTENT_WIDTH and window.tabs.height() >= MIN_CONTENT_HEIGHT
