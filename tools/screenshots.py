"""Screenshots of the real app for the README (offscreen Qt; the widgets are grabbed as drawn).

    QT_QPA_PLATFORM=offscreen python tools/screenshots.py            # all of them, into docs/screenshots/

Uses a throw-away data folder, the shipped model and the built-in emoji16 set, as a first launch does.
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
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app, win, mw = open_app()
    OUT.mkdir(parents=True, exist_ok=True)
    app.processEvents()
    win.grab().save(str(OUT / "main_window.png"))  # first launch: Sample & compare with its hint
    panel = win.sample_panel
    panel.run()
    _wait(app, lambda: not panel.is_busy())
    for _ in range(20):
        app.processEvents()
    panel.grab().save(str(OUT / "sample_finished.png"))
    panel.tabs.setCurrentIndex(2)
    app.processEvents()
    panel.grab().save(str(OUT / "sample_schedule.png"))
    win.tabs.setCurrentIndex(mw.TAB_DATA)
    app.processEvents()
    win.grab().save(str(OUT / "data_labels.png"))
    print(f"wrote {OUT}/main_window.png, sample_finished.png, sample_schedule.png, data_labels.png")
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
