"""Exports of Sample & compare (PNG grids with their settings as text chunks, the denoising GIF) and of
the self-test's grid. Pillow for the pictures, core.export for the grids and the PNG writer; the
functions are meant for `threads.run_in_background` (core is imported inside them).
"""
from __future__ import annotations

import json

import numpy as np

from desktop.jobs.sampling import ColumnSpec

SOFTWARE = "Diffusion Desk"


def export_text(summary_like: dict) -> dict[str, str]:
    """PNG text chunks: sampler settings, seed, model, software (one comma-separated value per column)."""
    cols: list[ColumnSpec] = summary_like["columns"]
    text = {
        "software": SOFTWARE,
        "sampler": ", ".join(c.sampler for c in cols),
        "steps": ", ".join(str(c.steps) for c in cols),
        "eta": ", ".join(f"{c.eta:g}" if c.sampler == "ddim" else "-" for c in cols),
        "guidance": ", ".join(f"{c.guidance:g}" for c in cols),
        "seed": str(summary_like["seed"]),
        "model": summary_like.get("model", ""),
        "precision": summary_like.get("precision", ""),
        "contexts": ", ".join(summary_like.get("row_names", [])),
    }
    if any(c.partly_guided for c in cols):
        text["guidance interval"] = ", ".join(c.interval_text for c in cols)
    if any(c.guided and c.guidance_rescale > 0 for c in cols):
        text["guidance rescale"] = ", ".join(f"{c.guidance_rescale:g}" for c in cols)
    if "nfe" in summary_like:
        text["nfe"] = ", ".join(str(v) for v in summary_like["nfe"])
    if "seconds" in summary_like:
        text["seconds"] = ", ".join(f"{v:.4f}" for v in summary_like["seconds"])
    if "position" in summary_like:
        text["frame"] = summary_like["position"]
    text["settings"] = json.dumps({"columns": [c.__dict__ for c in cols], "seed": summary_like["seed"]})
    if summary_like.get("entry"):  # the whole run as the history keeps it: "Settings from a PNG…" restores it
        text["entry"] = json.dumps(summary_like["entry"])
    return text


def compose_columns(grids: list[list[np.ndarray]], titles: list[str], per_row: int, *,
                    row_names: list[str] | None = None, caption: str | None = None):
    """One picture of several columns side by side, each one or two grids (x_t | x0) under a title."""
    from PIL import Image, ImageDraw, ImageFont

    from core.export import make_grid

    font = ImageFont.load_default()
    scale = max(1, 48 // grids[0][0].shape[1])  # 16 px emoji -> 48 px tiles
    tiles = [[make_grid(g, ncols=per_row, scale=scale) for g in col] for col in grids]
    label_w = 8 + max((int(font.getlength(t)) for t in row_names), default=0) if row_names else 0
    gap, head, foot = 12, 22, 20 if caption else 4
    widths = [sum(t.width for t in col) + 4 * (len(col) - 1) for col in tiles]
    widths = [max(w, int(font.getlength(title)) + 4) for w, title in zip(widths, titles)]
    grid_h = max(t.height for col in tiles for t in col)
    canvas = Image.new("RGB", (label_w + sum(widths) + gap * (len(tiles) + 1), head + grid_h + foot), "white")
    draw = ImageDraw.Draw(canvas)
    x = label_w + gap
    for col, title, w in zip(tiles, titles, widths):
        draw.text((x, 5), title, fill=(30, 30, 30), font=font)
        cx = x
        for tile in col:
            canvas.paste(tile, (cx, head))
            cx += tile.width + 4
        x += w + gap
    if row_names:
        rows = -(-len(grids[0][0]) // per_row)
        cell = tiles[0][0].height / rows
        for r, name in enumerate(row_names[:rows]):
            draw.text((4, head + int(cell * (r + 0.5)) - 6), name, fill=(60, 60, 60), font=font)
    if caption:
        draw.text((label_w + gap, head + grid_h + 3), caption, fill=(90, 90, 90), font=font)
    return canvas


def export_png(path: str, grids, titles, per_row, row_names, text: dict[str, str], caption) -> str:
    """Compose the columns and write a PNG (atomically) with `text` as tEXt chunks."""
    from core.export import save_png

    save_png(compose_columns(grids, titles, per_row, row_names=row_names, caption=caption), path, text)
    return str(path)


def export_gif(path: str, frames, titles, per_row, row_names, comment: str, captions,
               *, ms_per_frame: int = 80, hold_last_ms: int = 1500) -> str:
    """Looping GIF of the composed columns, frame by frame; the settings go in its comment block
    (core.export.save_gif writes no comment)."""
    import io

    from PIL import Image

    from core.paths import atomic_write_bytes

    if not frames:
        raise ValueError("no frames to write")
    images = [compose_columns(f, titles, per_row, row_names=row_names, caption=c) for f, c in zip(frames, captions)]
    durations = [ms_per_frame] * (len(images) - 1) + [hold_last_ms]
    buf = io.BytesIO()
    # One shared palette (the frames' colours barely change) and per-frame optimisation: a 60-frame GIF
    # was 10.6 MB with a palette per frame.
    palette = images[-1].convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
    frames_p = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    frames_p[0].save(buf, format="GIF", save_all=True, append_images=frames_p[1:], duration=durations, loop=0,
                     comment=comment.encode("utf-8"), optimize=True, disposal=1)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def save_grid_png(images: np.ndarray, per_label: int, path: str, software: str = f"{SOFTWARE} self-test") -> str:
    """The self-test's checked grid, one row per label."""
    from core.export import make_grid, save_png

    save_png(make_grid(images, ncols=per_label), path, {"software": software})
    return path
