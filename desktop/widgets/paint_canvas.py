"""A pixel paint canvas at the model's resolution, shown magnified on a pixel grid: pen, flood fill, eraser,
clear, undo, and a second layer, the mask (what inpainting redraws), drawn as a translucent overlay.

PixelCanvas is the drawing surface; PaintCanvas puts the tools, the palette and the mask buttons around it.
Both expose `image() -> (H, W, 3) uint8`, `mask() -> (H, W) bool` and `set_image(arr)`. No core here: a
picture to import is asked for with `import_requested` and loaded by whoever owns the canvas.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal, Slot
from PySide6.QtGui import QColor, QIcon, QImage, QKeySequence, QPainter, QPen, QPixmap, QShortcut
from PySide6.QtWidgets import (QButtonGroup, QColorDialog, QGridLayout, QHBoxLayout, QLabel, QSizePolicy, QSpinBox,
                               QToolButton, QVBoxLayout, QWidget)

from desktop.widgets.common import qimage_from_rgb

PEN, FILL, ERASER, MASK = "pen", "fill", "eraser", "mask"
WHITE = (255, 255, 255)  # the eraser's colour: the emoji set's background
# Colours the emoji set is mostly drawn in: outline, face yellows, skin, reds, greens, blues, browns, greys.
PALETTE = ((40, 40, 40), (255, 255, 255), (255, 204, 77), (247, 152, 36), (221, 46, 68), (244, 143, 177),
           (163, 103, 58), (120, 177, 89), (46, 125, 50), (85, 172, 238), (33, 84, 178), (170, 142, 214),
           (153, 170, 181))
MASK_RGBA = (230, 30, 90, 120)  # translucent, so the picture under the mask stays readable
UNDO_LIMIT = 100  # strokes kept; each is two tiny arrays


def flood_region(image: np.ndarray, x: int, y: int) -> np.ndarray:
    """(H, W) bool: the 4-connected region of pixels exactly the colour of (x, y), (x, y) included."""
    h, w = image.shape[:2]
    target = image[y, x].copy()
    same = (image == target).all(axis=2)
    region = np.zeros((h, w), bool)
    stack = [(x, y)]
    while stack:
        cx, cy = stack.pop()
        if 0 <= cx < w and 0 <= cy < h and same[cy, cx] and not region[cy, cx]:
            region[cy, cx] = True
            stack += [(cx + 1, cy), (cx - 1, cy), (cx, cy + 1), (cx, cy - 1)]
    return region


def line_pixels(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """Pixels from a to b (Bresenham), so a quick stroke leaves no gaps between mouse events."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x1 > x0 else -1), (1 if y1 > y0 else -1)
    err, out = dx + dy, []
    while True:
        out.append((x0, y0))
        if (x0, y0) == (x1, y1):
            return out
        e2 = 2 * err
        if e2 >= dy:
            err, x0 = err + dy, x0 + sx
        if e2 <= dx:
            err, y0 = err + dx, y0 + sy


class PixelCanvas(QWidget):
    """The drawing surface. Left button: the tool; right button: erase (pen, eraser) or unmask (mask brush)."""

    changed = Signal()

    def __init__(self, size: int = 16, parent=None):
        super().__init__(parent)
        self.tool, self.color, self.brush = PEN, PALETTE[0], 1
        self.show_mask = True
        self._undo: list[tuple[np.ndarray, np.ndarray]] = []
        self._last: tuple[int, int] | None = None
        self._button = Qt.MouseButton.NoButton
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.reset(size)

    # --- the layers --------------------------------------------------------------------------------
    @property
    def side(self) -> int:
        return self._image.shape[0]

    def reset(self, size: int) -> None:
        """A white canvas of size x size with an empty mask (undo history dropped)."""
        self._image = np.full((size, size, 3), 255, np.uint8)
        self._mask = np.zeros((size, size), bool)
        self._undo.clear()
        self.setMinimumSize(size * 8, size * 8)
        self._changed()

    def image(self) -> np.ndarray:
        return self._image.copy()

    def mask(self) -> np.ndarray:
        return self._mask.copy()

    def set_image(self, image: np.ndarray) -> None:
        """Replace the picture (undoable); it must be (side, side, 3) uint8 (resize before: jobs.editing)."""
        arr = np.asarray(image)
        if arr.shape != self._image.shape:
            raise ValueError(f"the canvas is {self.side}x{self.side} pixels; got an image of shape {arr.shape}")
        self._edit(lambda: np.copyto(self._image, arr.astype(np.uint8)))

    def set_mask(self, mask: np.ndarray) -> None:
        arr = np.asarray(mask, bool)
        if arr.shape != self._mask.shape:
            raise ValueError(f"the mask must be {self.side}x{self.side}; got shape {arr.shape}")
        self._edit(lambda: np.copyto(self._mask, arr))

    # --- actions (each one undo step) --------------------------------------------------------------
    def paint_at(self, x: int, y: int, color: tuple[int, int, int] | None = None) -> None:
        self._edit(lambda: self._dab(x, y, self.color if color is None else color))

    def fill(self, x: int, y: int, color: tuple[int, int, int] | None = None) -> None:
        """Flood fill the region of (x, y)'s colour (4-connected) with `color` (default: the pen's)."""
        def change():
            self._image[flood_region(self._image, x, y)] = self.color if color is None else color

        self._edit(change)

    def clear(self) -> None:
        self._edit(lambda: self._image.fill(255))

    def clear_mask(self) -> None:
        self._edit(lambda: self._mask.fill(False))

    def invert_mask(self) -> None:
        self._edit(lambda: np.logical_not(self._mask, out=self._mask))

    def can_undo(self) -> bool:
        return bool(self._undo)

    def undo(self) -> None:
        if self._undo:
            self._image, self._mask = self._undo.pop()
            self._changed()

    def _edit(self, change) -> None:
        self._begin()
        change()
        self._end()

    def _begin(self) -> None:
        self._undo.append((self._image.copy(), self._mask.copy()))
        del self._undo[:-UNDO_LIMIT]

    def _end(self) -> None:
        """Close an undo step; one that changed nothing (a fill on its own colour) is not kept."""
        img, msk = self._undo[-1]
        if np.array_equal(img, self._image) and np.array_equal(msk, self._mask):
            self._undo.pop()
        self._changed()

    def _changed(self) -> None:
        self.update()
        self.changed.emit()

    def _dab(self, x: int, y: int, color, *, mask_value: bool | None = None) -> None:
        """The brush (brush x brush pixels, from (x, y) towards the lower right) on the picture or the mask."""
        ys = slice(max(0, y), max(0, min(self.side, y + self.brush)))
        xs = slice(max(0, x), max(0, min(self.side, x + self.brush)))
        if mask_value is None:
            self._image[ys, xs] = color
        else:
            self._mask[ys, xs] = mask_value

    # --- geometry ------------------------------------------------------------------------------------
    def sizeHint(self) -> QSize:
        return QSize(self.side * 20, self.side * 20)

    def _scale_origin(self) -> tuple[int, int, int]:
        scale = max(1, min(self.width(), self.height()) // self.side)
        return scale, (self.width() - scale * self.side) // 2, (self.height() - scale * self.side) // 2

    def pixel_at(self, pos: QPoint) -> tuple[int, int] | None:
        scale, ox, oy = self._scale_origin()
        x, y = (pos.x() - ox) // scale, (pos.y() - oy) // scale
        return (x, y) if 0 <= x < self.side and 0 <= y < self.side else None

    def pixel_center(self, x: int, y: int) -> QPoint:
        """Widget coordinates of pixel (x, y)'s centre (what a click there hits)."""
        scale, ox, oy = self._scale_origin()
        return QPoint(ox + x * scale + scale // 2, oy + y * scale + scale // 2)

    # --- mouse -----------------------------------------------------------------------------------------
    def mousePressEvent(self, event) -> None:
        px = self.pixel_at(event.position().toPoint())
        if px is None or event.button() not in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            return
        self._button = event.button()
        if self.tool == FILL:
            if self._button == Qt.MouseButton.LeftButton:
                self.fill(*px)
            return
        self._begin()
        self._last = px
        self._stroke(px)

    def mouseMoveEvent(self, event) -> None:
        if self._last is None:
            return
        pos = event.position().toPoint()
        scale, ox, oy = self._scale_origin()
        x = min(max((pos.x() - ox) // scale, 0), self.side - 1)  # clamped: a stroke may leave the canvas
        y = min(max((pos.y() - oy) // scale, 0), self.side - 1)
        for p in line_pixels(self._last, (x, y))[1:]:
            self._stroke(p)
        self._last = (x, y)

    def mouseReleaseEvent(self, event) -> None:
        if self._last is not None:
            self._last = None
            self._end()

    def _stroke(self, px: tuple[int, int]) -> None:
        erase = self._button == Qt.MouseButton.RightButton
        if self.tool == MASK:
            self._dab(*px, None, mask_value=not erase)
        else:
            self._dab(*px, WHITE if erase or self.tool == ERASER else self.color)
        self.update()

    # --- drawing ---------------------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().window())
        scale, ox, oy = self._scale_origin()
        target = QRect(ox, oy, scale * self.side, scale * self.side)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        p.drawImage(target, qimage_from_rgb(self._image))
        if self.show_mask and self._mask.any():
            rgba = np.zeros((self.side, self.side, 4), np.uint8)
            rgba[self._mask] = MASK_RGBA
            overlay = QImage(rgba.data, self.side, self.side, 4 * self.side, QImage.Format.Format_RGBA8888).copy()
            p.drawImage(target, overlay)
        if scale >= 6:  # the pixel grid, once pixels are big enough for it not to hide them
            p.setPen(QPen(QColor(0, 0, 0, 28), 1))
            for i in range(self.side + 1):
                p.drawLine(ox + i * scale, oy, ox + i * scale, oy + self.side * scale)
                p.drawLine(ox, oy + i * scale, ox + self.side * scale, oy + i * scale)
        p.setPen(QPen(QColor(120, 120, 120), 1))
        p.drawRect(target.adjusted(0, 0, -1, -1))


def swatch_icon(rgb, size: int = 16) -> QIcon:
    pm = QPixmap(size, size)
    pm.fill(QColor(*rgb))
    return QIcon(pm)


class PaintCanvas(QWidget):
    """The canvas with its tools: pen + palette + custom colour, fill, eraser, brush size, undo, clear, import,
    and the mask brush with clear / invert (shown when `set_mask_mode(True)`: inpainting)."""

    changed = Signal()
    import_requested = Signal()  # "Import image…": the owner asks for a file and calls set_image

    def __init__(self, size: int = 16, parent=None):
        super().__init__(parent)
        self.canvas = PixelCanvas(size)
        self.canvas.changed.connect(self.changed)
        self.canvas.changed.connect(self._update_buttons)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(self._tool_row())
        lay.addLayout(self._palette_row())
        lay.addWidget(self.canvas, 1)
        lay.addLayout(self._mask_row())
        QShortcut(QKeySequence.StandardKey.Undo, self, self.canvas.undo,
                  context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.set_mask_mode(False)
        self._update_buttons()

    def _button(self, text: str, tip: str, slot=None, *, checkable: bool = False) -> QToolButton:
        b = QToolButton()
        b.setText(text)
        b.setToolTip(tip)
        b.setCheckable(checkable)
        if slot is not None:
            b.clicked.connect(slot)
        return b

    def _tool_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.tools = QButtonGroup(self)
        tips = {PEN: "Pen: paint pixels in the chosen colour (right button: erase)",
                FILL: "Fill: paint the connected area of one colour in the chosen colour",
                ERASER: "Eraser: paint pixels white, the emoji set's background",
                MASK: "Mask brush: mark what inpainting redraws (right button: unmark)"}
        for name, text in ((PEN, "Pen"), (FILL, "Fill"), (ERASER, "Eraser"), (MASK, "Mask brush")):
            b = self._button(text, tips[name], checkable=True)
            b.setProperty("tool", name)
            self.tools.addButton(b)
            row.addWidget(b)
            if name == MASK:
                self.mask_tool = b
        self.tools.buttons()[0].setChecked(True)
        self.tools.buttonClicked.connect(lambda b: setattr(self.canvas, "tool", b.property("tool")))
        self.brush_spin = QSpinBox()
        self.brush_spin.setRange(1, 4)
        self.brush_spin.setPrefix("brush ")
        self.brush_spin.setSuffix(" px")
        self.brush_spin.setToolTip("Brush size in image pixels (pen, eraser and mask brush)")
        self.brush_spin.valueChanged.connect(lambda v: setattr(self.canvas, "brush", v))
        row.addWidget(self.brush_spin)
        row.addStretch(1)
        self.undo_button = self._button("Undo", "Undo the last stroke or action (Ctrl+Z)", self.canvas.undo)
        self.clear_button = self._button("Clear", "Paint the whole picture white (undoable)", self.canvas.clear)
        self.import_button = self._button("Import image…", "Load a picture file, cropped to a square and resized "
                                          "to the model's size", self.import_requested.emit)
        for b in (self.undo_button, self.clear_button, self.import_button):
            row.addWidget(b)
        return row

    def _palette_row(self) -> QGridLayout:
        grid = QGridLayout()
        grid.setSpacing(2)
        self.swatches = QButtonGroup(self)
        for i, rgb in enumerate(PALETTE):
            b = self._button("", f"Pen colour rgb{rgb}", checkable=True)
            b.setIcon(swatch_icon(rgb))
            b.setProperty("rgb", rgb)
            self.swatches.addButton(b)
            grid.addWidget(b, 0, i)
        self.swatches.buttons()[0].setChecked(True)
        self.swatches.buttonClicked.connect(lambda b: self.set_color(tuple(b.property("rgb"))))
        self.custom_button = self._button("Colour…", "Pick any pen colour", self._pick_color)
        grid.addWidget(self.custom_button, 0, len(PALETTE))
        grid.setColumnStretch(len(PALETTE) + 1, 1)
        return grid

    def _mask_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.mask_hint = QLabel("Paint the part to redraw with the mask brush (red overlay).")
        self.mask_clear = self._button("Clear mask", "Redraw nothing: unmark every pixel", self.canvas.clear_mask)
        self.mask_invert = self._button("Invert mask", "Redraw what is kept and keep what is redrawn",
                                        self.canvas.invert_mask)
        row.addWidget(self.mask_hint, 1)
        row.addWidget(self.mask_clear)
        row.addWidget(self.mask_invert)
        return row

    # --- the canvas's API, passed through ----------------------------------------------------------------
    def image(self) -> np.ndarray:
        return self.canvas.image()

    def mask(self) -> np.ndarray:
        return self.canvas.mask()

    def set_image(self, image: np.ndarray) -> None:
        self.canvas.set_image(image)

    def set_mask(self, mask: np.ndarray) -> None:
        self.canvas.set_mask(mask)

    def reset(self, size: int) -> None:
        self.canvas.reset(size)

    def set_tool(self, name: str) -> None:
        for b in self.tools.buttons():
            if b.property("tool") == name:
                b.setChecked(True)
        self.canvas.tool = name

    def set_color(self, rgb: tuple[int, int, int]) -> None:
        self.canvas.color = tuple(int(v) for v in rgb)
        self.custom_button.setIcon(swatch_icon(self.canvas.color))

    @Slot()
    def _pick_color(self) -> None:
        color = QColorDialog.getColor(QColor(*self.canvas.color), self, "Pen colour")
        if color.isValid():
            self.set_color((color.red(), color.green(), color.blue()))

    def set_mask_mode(self, on: bool) -> None:
        """Inpainting shows the mask and its tools; sketching hides them (the mask is kept meanwhile)."""
        self.canvas.show_mask = on
        for w in (self.mask_tool, self.mask_hint, self.mask_clear, self.mask_invert):
            w.setVisible(on)
        if not on and self.canvas.tool == MASK:
            self.set_tool(PEN)
        self.canvas.update()

    @Slot()
    def _update_buttons(self) -> None:
        self.undo_button.setEnabled(self.canvas.can_undo())
