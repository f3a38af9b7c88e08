"""Screenshots of the real app for the README (offscreen Qt; the widgets are grabbed as drawn).

    QT_QPA_PLATFORM=offscreen python tools/screenshots.py            # all of them, into docs/screenshots/
    QT_QPA_PLATFORM=offscreen python tools/screenshots.py --only-train   # train_running.png alone

Uses a throw-away data folder, the shipped model and the built-in emoji16 set, as a first launch does.
Writes main_window.png (the first launch), sample_finished.png (the default comparison), sample_quality.png
(its Quality tab, measured), sample_schedule.png, data_labels.png and train_running.png (the Quick demo
preset from scratch, a few minutes in, loss by noise level shown; the run is stopped after the shot).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"


def _wait(app, cond, timeout=900.0):
    end = time.monotonic() + timeout
    while not cond():
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() > end:
            raise TimeoutError("the app did not get there in time")


def _settle(app, seconds: float = 1.0) -> None:
    """Let queued signals and the layouts they request run before a grab."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def open_app(width: int = 1400, height: int = 950):
    """The app as on a first launch (a throw-away data folder, the shipped model, emoji16): (app, window, mw)."""
    os.environ["DIFFUSION_DESK_HOME"] = tempfile.mkdtemp(prefix="dd-shots-")
    from PySide6.QtWidgets import QApplication

    from desktop import main_window as mw

    app = QApplication.instance() or QApplication([])
    win = mw.MainWindow()
    win.resize(width, height)
    win.show()
    win.start_loading()
    _wait(app, lambda: win.loaded and win.state.model is not None and win.state.dataset is not None)
    return app, win, mw


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-steps", type=int, default=400, help="Quick-demo steps before train_running.png")
    ap.add_argument("--only-train", action="store_true", help="train_running.png alone (after a preset change)")
    args = ap.parse_args()
    train_steps = args.train_steps
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app, win, mw = open_app()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.only_train:
        _train_running(app, win, mw, steps_before_shot=train_steps)
        print(f"wrote {OUT}/train_running.png")
        win.close()
        return 0
    _settle(app)  # the model menu's entries arrive from a background job; its width follows a moment later
    win.grab().save(str(OUT / "main_window.png"))  # first launch: Sample & compare with its hint
    panel = win.sample_panel
    panel.run()
    _wait(app, lambda: not panel.is_busy())
    for _ in range(20):
        app.processEvents()
    panel.grab().save(str(OUT / "sample_finished.png"))
    panel.tabs.setCurrentIndex(1)  # Quality: feature-FID and label accuracy of each column
    panel.measure_quality()
    _wait(app, lambda: not panel.is_busy())
    for _ in range(20):
        app.processEvents()
    panel.grab().save(str(OUT / "sample_quality.png"))
    panel.tabs.setCurrentIndex(2)
    app.processEvents()
    panel.grab().save(str(OUT / "sample_schedule.png"))
    win.tabs.setCurrentIndex(mw.TAB_DATA)
    app.processEvents()
    win.grab().save(str(OUT / "data_labels.png"))
    _train_running(app, win, mw, steps_before_shot=train_steps)
    print(f"wrote {OUT}/main_window.png, sample_finished.png, sample_quality.png, sample_schedule.png, "
          "data_labels.png, train_running.png")
    win.close()
    return 0


def _train_running(app, win, mw, *, steps_before_shot: int) -> None:
    """The Train tab during a Quick-demo run from scratch: live loss (with the noise bands), previews."""
    win.tabs.setCurrentIndex(mw.TAB_TRAIN)
    tp = win.train_panel
    tp.preset_combo.setCurrentIndex(tp.preset_combo.findData("quick"))
    tp.start_from.setCurrentIndex(0)  # from scratch
    tp.preview_every.setValue(max(1, steps_before_shot // 4))
    tp.bands_check.setChecked(True)
    assert tp.start(), "the Quick demo did not start"
    _wait(app, lambda: tp._latest is not None and tp._latest.step >= steps_before_shot, timeout=1800.0)
    for _ in range(30):  # the last progress tick and the preview drawn
        app.processEvents()
        time.sleep(0.02)
    win.grab().save(str(OUT / "train_running.png"))
    tp.stop()
    _wait(app, lambda: tp.run_state == "idle", timeout=300.0)


if __name__ == "__main__":
    sys.exit(main())
