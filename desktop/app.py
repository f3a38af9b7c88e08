"""Start the desktop app: `run_app()` makes the QApplication, shows the main window, then loads.

Nothing imported here pulls in torch: the window is on screen first, and the engine (torch, the
built-in data set, the default model) is loaded by a background job right after.
"""
from __future__ import annotations

import sys

from PySide6.QtCore import QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QIcon, QLinearGradient, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import QApplication

from desktop.settings import APP_NAME, ORG_NAME


def draw_app_icon(size: int = 256) -> QPixmap:
    """The app icon: a tile whose noise (top left) clears into a smiling emoji (bottom right)."""
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    grad = QLinearGradient(0, 0, size, size)
    grad.setColorAt(0.0, QColor(110, 110, 122))
    grad.setColorAt(1.0, QColor(30, 90, 200))
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(grad))
    tile = QPainterPath()
    tile.addRoundedRect(QRectF(size * 0.04, size * 0.04, size * 0.92, size * 0.92), size * 0.18, size * 0.18)
    p.drawPath(tile)
    p.setClipPath(tile)  # speckles stay inside the rounded corners
    _draw_noise(p, size)
    _draw_smiley(p, size, QPointF(size * 0.62, size * 0.62), size * 0.22)
    p.end()
    return pm


def _draw_noise(p: QPainter, size: int) -> None:
    """Speckles whose density fades from the top-left corner: the noise being removed."""
    seed, cells = 12345, 20
    cell = size * 0.84 / cells
    for i in range(cells):
        for j in range(cells):
            seed = (seed * 1103515245 + 12345) % 2**31  # a fixed LCG: the same icon every time
            fade = 1.0 - (i + j) / (1.3 * cells)
            if seed / 2**31 < fade * 0.75:
                shade = 150 + (seed >> 8) % 106
                p.setBrush(QColor(shade, shade, shade + 10 if shade < 246 else shade, 210))
                p.drawRect(QRectF(size * 0.08 + i * cell, size * 0.08 + j * cell, cell * 0.8, cell * 0.8))


def _draw_smiley(p: QPainter, size: int, c: QPointF, r: float) -> None:
    p.setBrush(QColor(255, 205, 50))
    p.setPen(QPen(QColor(255, 255, 255), size * 0.025))
    p.drawEllipse(c, r, r)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor(90, 60, 20))
    for dx in (-0.36, 0.36):
        p.drawEllipse(QPointF(c.x() + dx * r, c.y() - 0.22 * r), 0.12 * r, 0.17 * r)
    p.setPen(QPen(QColor(90, 60, 20), r * 0.12, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawArc(QRectF(c.x() - 0.5 * r, c.y() - 0.35 * r, r, 0.85 * r), 200 * 16, 140 * 16)


def app_icon() -> QIcon:
    from desktop.engine import resource_path

    path = resource_path("icons", "app_icon.png")
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


# PySide6 6.12.0 drops a reference to None / True on every signal emit and every Python paint override
# (None's refcount was seen falling steadily while the loss plot redraws), so the app crashes with
# "Fatal Python error: none_dealloc" within a minute of training on Python < 3.12. 6.11.3 is clean.
BROKEN_PYSIDE = {"6.12.0"}


def qt_binding_problem() -> str | None:
    """A one-line warning when the installed PySide6 is a release known to crash this app."""
    import PySide6

    if PySide6.__version__ in BROKEN_PYSIDE and sys.version_info < (3, 12):
        return (f"warning: PySide6 {PySide6.__version__} has a reference-counting bug that crashes this app after "
                "about a minute of training; install PySide6-Essentials 6.11.3 (pip install "
                "'PySide6-Essentials==6.11.3').")
    return None


def run_app(argv: list[str] | None = None) -> int:
    """Create the app and the main window, show it, load in the background, run the event loop."""
    problem = qt_binding_problem()
    if problem:
        print(problem, file=sys.stderr)
    app = make_application(argv)
    from desktop.main_window import MainWindow

    window = MainWindow()
    window.show()
    QTimer.singleShot(0, window.start_loading)  # after the first paint: the window appears at once
    return app.exec()
