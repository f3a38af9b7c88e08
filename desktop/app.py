"""Start the desktop app: `run_app()` makes the QApplication, shows the main window, then loads.

Nothing imported here pulls in torch: the window is on screen first, and the engine (torch, the
built-in data set, the default model) is loaded by a background job right after.
"""
from __future__ import annotations

import sys

from PySide6.QtCore import QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QIcon, QLinearGradient, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QApplication

from desktop.services import APP_NAME, ORG_NAME


def draw_app_icon(size: int = 256) -> QPixmap:
    """The app icon: a rounded tile fading from noise-grey to a clean blue, with a bright dot."""
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    grad = QLinearGradient(0, 0, size, size)
    grad.setColorAt(0.0, QColor(120, 120, 130))
    grad.setColorAt(1.0, QColor(30, 90, 200))
    rect = QRectF(size * 0.04, size * 0.04, size * 0.92, size * 0.92)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(grad))
    p.drawRoundedRect(rect, size * 0.18, size * 0.18)
    _draw_noise_dots(p, size)
    p.setBrush(QColor(255, 210, 60))
    p.setPen(QPen(QColor(255, 255, 255), size * 0.03))
    p.drawEllipse(QPointF(size * 0.62, size * 0.60), size * 0.2, size * 0.2)
    p.end()
    return pm


def _draw_noise_dots(p: QPainter, size: int) -> None:
    """A fixed scatter of small squares in the upper-left half: the 'noise' being removed."""
    p.setBrush(QColor(235, 235, 240, 200))
    cell = size / 16
    for i in range(16):
        for j in range(16):
            if i + j < 13 and (i * 7 + j * 11 + i * j) % 5 == 0:
                p.drawRect(QRectF(size * 0.1 + i * cell * 0.8, size * 0.1 + j * cell * 0.8, cell * 0.5, cell * 0.5))


def app_icon() -> QIcon:
    from core.paths import resource_path  # no torch: core.paths only knows folders

    path = resource_path("icons", "app.png")
    return QIcon(str(path)) if path.is_file() else QIcon(draw_app_icon())


def make_application(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        args = [sys.argv[0] if sys.argv else "diffusion-desk"] + list(argv or [])
        app = QApplication(args)
    app.setOrganizationName(ORG_NAME)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName("Diffusion Desk")
    app.setWindowIcon(app_icon())
    return app


def run_app(argv: list[str] | None = None) -> int:
    """Create the app and the main window, show it, load in the background, run the event loop."""
    app = make_application(argv)
    from desktop.main_window import MainWindow

    window = MainWindow()
    window.show()
    QTimer.singleShot(0, window.start_loading)  # after the first paint: the window appears at once
    return app.exec()
