"""Image grids, PNG files with their settings in text chunks, and GIF animations (Pillow only)."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from .paths import atomic_write_bytes


def make_grid(images: np.ndarray, *, ncols: int | None = None, scale: int = 4, pad: int = 2,
              row_labels: list[str] | None = None) -> Image.Image:
    """Tile (N, H, W, 3) uint8 images on white, upscaled by `scale` with nearest (pixel art stays crisp)."""
    n, h, w, _ = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    ch, cw = h * scale, w * scale
    left = _label_width(row_labels) if row_labels else 0
    canvas = Image.new("RGB", (left + pad + ncols * (cw + pad), pad + nrows * (ch + pad)), "white")
    for i in range(n):
        r, c = divmod(i, ncols)
        tile = Image.fromarray(images[i]).resize((cw, ch), Image.NEAREST)
        canvas.paste(tile, (left + pad + c * (cw + pad), pad + r * (ch + pad)))
    if row_labels:
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default()
        for r, text in enumerate(row_labels[:nrows]):
            draw.text((4, pad + r * (ch + pad) + ch // 2 - 6), text, fill=(40, 40, 40), font=font)
    return canvas


def _label_width(labels: list[str]) -> int:
    font = ImageFont.load_default()
    return 8 + max(int(font.getlength(t)) for t in labels)


def png_bytes(image: Image.Image, text: dict[str, object] | None = None) -> bytes:
    """PNG-encode with each `text` item as a tEXt chunk (sampler, steps, seed, model ...)."""
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(str(key), str(value))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(image: Image.Image, path: str | Path, text: dict[str, object] | None = None) -> Path:
    """Write a PNG atomically, with its settings in text chunks."""
    atomic_write_bytes(path, png_bytes(image, text))
    return Path(path)


def save_gif(frames: list[Image.Image], path: str | Path, *, ms_per_frame: int = 80, hold_last_ms: int = 1200) -> Path:
    """An animated GIF that loops, holding the last frame a little longer."""
    if not frames:
        raise ValueError("no frames to write")
    durations = [ms_per_frame] * (len(frames) - 1) + [hold_last_ms]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   optimize=False)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
