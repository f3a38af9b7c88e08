"""Small shared widgets: an image grid drawn from a uint8 array, pixmap helpers, form helpers."""
from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                               QSizePolicy, QSpinBox, QTableWidget, QToolButton, QWidget)

GAP = 2  # pixels between tiles, in image pixels before scaling


def qimage_from_rgb(rgb: np.ndarray) -> QImage:
    """(H, W, 3) uint8 -> an independent QImage (the numpy buffer may go away afterwards)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def pixmap_from_rgb(rgb: np.ndarray, scale: int = 1) -> QPixmap:
    """(H, W, 3) uint8 -> QPixmap enlarged by an integer factor with hard pixel edges."""
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return QPixmap.fromImage(qimage_from_rgb(rgb))


def tile_grid(grid: np.ndarray, gap: int = GAP, background: int = 255) -> np.ndarray:
    """(R, C, H, W, 3) uint8 -> one (R*H + gaps, C*W + gaps, 3) image."""
    r, c, h, w, _ = grid.shape
    out = np.full((r * h + (r - 1) * gap, c * w + (c - 1) * gap, 3), background, np.uint8)
    for i in range(r):
        for j in range(c):
            y, x = i * (h + gap), j * (w + gap)
            out[y:y + h, x:x + w] = grid[i, j]
    return out


def as_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """(N, H, W, 3) -> (R, columns, H, W, 3), padding the last row with white."""
    n, h, w, _ = images.shape
    rows = max(1, -(-n // columns))
    pad = np.full((rows * columns - n, h, w, 3), 255, np.uint8)
    return np.concatenate([images, pad]).reshape(rows, columns, h, w, 3)


class ImageGridView(QWidget):
    """Shows a grid of small images (R, C, H, W, 3) uint8, scaled by a whole factor to fit, with
    optional row labels on the left. Pixel art stays crisp (nearest-neighbour scaling)."""

    def __init__(self, parent=None, *, placeholder: str = "", min_scale: int = 1):
        super().__init__(parent)
        self._pixmap: QPixmap | None = None
        self._grid_shape: tuple[int, int, int, int] | None = None
        self._row_labels: list[str] = []
        self._placeholder = placeholder
        self._min_scale = min_scale
        self._hint = QSize(360, 300)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(120, 80)

    def set_grid(self, grid: np.ndarray | None, row_labels: list[str] | None = None) -> None:
        if grid is None or grid.size == 0:
            self._pixmap, self._grid_shape = None, None
        else:
            grid = np.asarray(grid, np.uint8)
            if grid.ndim == 4:
                grid = as_grid(grid, columns=min(len(grid), 8))
            self._grid_shape = grid.shape[:4]
            self._pixmap = QPixmap.fromImage(qimage_from_rgb(tile_grid(grid)))
        self._row_labels = list(row_labels or [])
        self.update()

    def has_image(self) -> bool:
        return self._pixmap is not None

    def sizeHint(self) -> QSize:
        return self._hint

    def set_size_hint(self, hint: QSize) -> None:
        """The size asked for; the grid scales to whatever it gets. In a word-wrapping layout (whose height
        follows its width) this is the height it will claim, so a small hint lets it shrink to fit."""
        self._hint = QSize(hint)
        self.updateGeometry()

    def _label_width(self) -> int:
        if not self._row_labels:
            return 0
        fm = self.fontMetrics()
        return min(160, max(fm.horizontalAdvance(t) for t in self._row_labels) + 10)

    def paintEvent(self, event):
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().base())
        if self._pixmap is None:
            p.setPen(self.palette().placeholderText().color())
            p.drawText(self.rect().adjusted(8, 8, -8, -8), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                       self._placeholder)
            return
        x0, y0, w, h, scale = self._placement()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        p.drawPixmap(QRect(x0, y0, w, h), self._pixmap)
        self._draw_row_labels(p, x0, y0, scale)

    def _placement(self) -> tuple[int, int, int, int, float]:
        """(x, y, width, height, scale) of the drawn grid in the widget (a pixmap must be set)."""
        lw = self._label_width()
        pw, ph = self._pixmap.width(), self._pixmap.height()
        scale = min((self.width() - lw - 8) / pw, (self.height() - 8) / ph)
        # Whole-number zoom keeps every image pixel the same size; below 4x that would waste too much
        # room, so small views use the exact fit (still nearest-neighbour, never blurred).
        scale = max(float(self._min_scale), math.floor(scale) if scale >= 4 else scale, 0.25)
        w, h = round(pw * scale), round(ph * scale)
        return lw + max(4, (self.width() - lw - w) // 2), max(4, (self.height() - h) // 2), w, h, scale

    def cell_at(self, pos) -> int | None:
        """Reading-order index of the image under widget point `pos`, or None (no grid, a margin or a gap)."""
        if self._pixmap is None or self._grid_shape is None:
            return None
        rows, cols, th, tw = self._grid_shape
        x0, y0, w, h, _ = self._placement()
        x = (pos.x() + 0.5 - x0) * self._pixmap.width() / w  # the image pixel under the pointer's centre
        y = (pos.y() + 0.5 - y0) * self._pixmap.height() / h
        r, c = int(y // (th + GAP)), int(x // (tw + GAP))
        inside = x >= 0 and y >= 0 and r < rows and c < cols and x % (tw + GAP) < tw and y % (th + GAP) < th
        return r * cols + c if inside else None

    def _draw_row_labels(self, p: QPainter, x0: int, y0: int, scale: float) -> None:
        if not self._row_labels or self._grid_shape is None:
            return
        rows, _, tile_h, _ = self._grid_shape
        p.setPen(self.palette().text().color())
        for i, text in enumerate(self._row_labels[:rows]):
            top = round(y0 + i * (tile_h + GAP) * scale)
            rect = QRect(0, top, x0 - 6, round(tile_h * scale))
            elided = self.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, rect.width())
            p.drawText(rect, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, elided)


def narrow_combo(combo, chars: int = 18):
    """A combo box that does not ask for its longest item's width (the item shows elided, the list in full),
    so a narrow column of settings is never clipped by one long name."""
    combo.setSizeAdjustPolicy(combo.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)
    return combo


def push_button(text: str, tip: str, slot) -> QPushButton:
    """A push button with its tooltip, clicked -> slot."""
    b = QPushButton(text)
    b.setToolTip(tip)
    b.clicked.connect(slot)
    return b


def spin_box(lo, hi, value, tip: str, cls=QSpinBox, step=1):
    """A QSpinBox (or `cls`, e.g. QDoubleSpinBox) with its range, step, value and tooltip."""
    s = cls()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(value)
    s.setToolTip(tip)
    return s


class OutputButtons(QWidget):
    """A row of checkable picture buttons, one per image (the count follows `set_images`); `picked(i)` on a click.
    One is always picked, and the pick survives a redraw with the same count."""

    picked = Signal(int)

    def __init__(self, tip: str = "Output {n}", parent=None):
        super().__init__(parent)
        self._tip, self._row, self.group = tip, QHBoxLayout(self), QButtonGroup(self)
        self._row.setContentsMargins(0, 0, 0, 0)
        self._row.addStretch(1)
        self.group.idClicked.connect(self.picked)

    def set_images(self, images: np.ndarray) -> None:
        """(n, H, W, 3) uint8, each magnified to about 64 px."""
        if len(self.group.buttons()) != len(images):
            for b in self.group.buttons():
                self.group.removeButton(b)
                b.deleteLater()
            for i in range(len(images)):
                b = QToolButton()
                b.setCheckable(True)
                b.setToolTip(self._tip.format(n=i + 1, i=i))
                b.setIconSize(QSize(64, 64))
                self.group.addButton(b, i)
                self._row.insertWidget(i, b)
            self.group.button(0).setChecked(True)
        scale = max(1, 64 // images.shape[1])  # 16 px emoji -> 64 px buttons
        for i, b in enumerate(self.group.buttons()):
            b.setIcon(QIcon(pixmap_from_rgb(images[i], scale)))

    def selected(self) -> int:
        return max(0, self.group.checkedId())

    def buttons(self) -> list[QToolButton]:
        return self.group.buttons()

    def button(self, i: int) -> QToolButton | None:
        return self.group.button(i)


class HintLabel(QLabel):
    """Grey, word-wrapped explanatory text under a heading."""

    def __init__(self, text: str = "", parent=None):
        super().__init__(text, parent)
        self.setWordWrap(True)
        pal = self.palette()
        pal.setColor(self.foregroundRole(), QColor(100, 100, 100))
        self.setPalette(pal)


def heading(text: str) -> QLabel:
    label = QLabel(text)
    f = QFont(label.font())
    f.setBold(True)
    f.setPointSizeF(f.pointSizeF() * 1.1)
    label.setFont(f)
    return label


def format_duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'."""
    if seconds != seconds or seconds < 0:  # NaN
        return "--"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def eta_text(time_left, total: int) -> str:
    """'about 3 min left' from a core.progress.TimeLeft; 'estimating…' while it is warming up."""
    seconds = time_left.seconds(total)
    return "estimating time left…" if seconds is None else f"about {format_duration(seconds)} left"


def split_details(message: str) -> tuple[str, str]:
    """'file: what is wrong (library text)' -> ('file: what is wrong', 'library text'), for dialogs that keep
    the library's words out of the headline; messages without a trailing parenthesis stay whole."""
    text = message.strip()
    if text.endswith(")") and " (" in text:
        head, _, detail = text.rpartition(" (")
        if head and detail[:-1]:
            return head, detail[:-1]
    return text, ""


def error_text(message: str) -> str:
    """A dialog's text: the plain-words headline, then the library's own words under 'Details'."""
    head, detail = split_details(message)
    return f"{head}\n\nDetails: {detail}" if detail else head


def results_table(headers: list[str]) -> QTableWidget:
    """A read-only table of results: no selection, the first column stretches."""
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.verticalHeader().setVisible(False)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    return t
