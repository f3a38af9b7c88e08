"""The benchmarks' pictures, drawn with Pillow (matplotlib is not a dependency): sample quality against
time, and a grid of samples per label.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .common import font


PALETTE = {"ddpm": (200, 60, 50), "ddim": (40, 110, 200), "dpmpp2m": (30, 150, 80)}


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _nice_step(raw: float) -> float:
    """The 1, 2 or 5 times a power of ten at or above raw (axis tick spacing)."""
    e = 10.0 ** math.floor(math.log10(raw))
    return next(m * e for m in (1, 2, 5, 10) if m * e >= raw)


def plot_quality(quality: dict, path: str | Path, *, course_ddpm_seconds: float | None = None) -> Path:
    """Feature-FID against seconds for 32 images (log x), error bars = sd over seeds, floor dashed."""
    W, H, L, R, T, B = 900, 560, 90, 30, 50, 70
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    f, fs = font(16), font(13)
    res = quality["results"]
    xs = [r["seconds_32"] for r in res]
    ys_hi = [r["fid_mean"] + (r["fid_sd"] or 0) for r in res]
    floor = quality["floor"]["mean"]
    x_lo, x_hi = min(xs) / 1.6, max(xs + ([course_ddpm_seconds] if course_ddpm_seconds else [])) * 1.6
    y_step = _nice_step(max(ys_hi + [floor]) * 1.12 / 5)
    y_hi = y_step * math.ceil(max(ys_hi + [floor]) * 1.08 / y_step)
    px = lambda x: L + (math.log10(x) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo)) * (W - L - R)
    py = lambda y: H - B - y / y_hi * (H - T - B)
    d.rectangle([L, T, W - R, H - B], outline=(0, 0, 0))
    for e in range(math.floor(math.log10(x_lo)), math.ceil(math.log10(x_hi)) + 1):  # log ticks
        for m in (1, 2, 5):
            x = m * 10.0 ** e
            if x_lo <= x <= x_hi:
                d.line([px(x), T, px(x), H - B], fill=(225, 225, 225))
                d.text((px(x), H - B + 6), f"{x:g}", fill=(0, 0, 0), font=fs, anchor="mt")
    for k in range(round(y_hi / y_step) + 1):
        y = y_step * k
        d.line([L, py(y), W - R, py(y)], fill=(225, 225, 225))
        d.text((L - 6, py(y)), f"{y:.4g}", fill=(0, 0, 0), font=fs, anchor="rm")
    for x in range(L, W - R, 12):  # the real-vs-real floor
        d.line([x, py(floor), x + 6, py(floor)], fill=(120, 120, 120), width=2)
    d.text((W - R - 6, py(floor) - 4), "real vs real (floor)", fill=(90, 90, 90), font=fs, anchor="rb")
    if course_ddpm_seconds:
        for ref, text in ((course_ddpm_seconds, "course DDPM-500 (32 images)"),
                          (course_ddpm_seconds / 50, "1/50 of the course DDPM-500")):
            if x_lo <= ref <= x_hi:
                for y in range(T, H - B, 12):
                    d.line([px(ref), y, px(ref), y + 6], fill=(200, 140, 0), width=2)
                right = px(ref) > 0.7 * W  # label on the side with room
                d.text((px(ref) + (-4 if right else 4), T + 4), text, fill=(170, 110, 0), font=fs,
                       anchor="rt" if right else "lt")
    ddpm = next((r for r in res if r["sampler"] == "ddpm" and r["steps"] == 500 and not r.get("clip_x0")), None)
    if ddpm:  # the quality target: DDPM-500's feature-FID + 10%
        y = py(1.1 * ddpm["fid_mean"])
        for x in range(L, W - R, 8):
            d.line([x, y, x + 3, y], fill=(200, 60, 50), width=1)
        d.text((L + 6, y - 3), "DDPM-500 + 10%", fill=(200, 60, 50), font=fs, anchor="lb")
    taken = []  # label boxes placed so far: each label takes the first free spot around its point
    for r in sorted(res, key=lambda r: r["seconds_32"]):
        color = PALETTE.get(r["sampler"], (80, 80, 80))
        x, y, sd = px(r["seconds_32"]), py(r["fid_mean"]), r["fid_sd"] or 0
        d.line([x, py(r["fid_mean"] - sd), x, py(r["fid_mean"] + sd)], fill=color, width=2)
        d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=color)
        taken.append((x - 6, y - 6, x + 6, y + 6))
    for r in sorted(res, key=lambda r: r["seconds_32"]):
        color = PALETTE.get(r["sampler"], (80, 80, 80))
        x, y = px(r["seconds_32"]), py(r["fid_mean"])
        text = f"{r['entry']} ({r['nfe']} calls)"
        for dx, dy, anchor in ((8, -2, "lb"), (8, 2, "lt"), (-8, -2, "rb"), (-8, 2, "rt"), (8, -16, "lb"),
                               (8, 16, "lt"), (-8, -16, "rb"), (-8, 16, "rt"), (8, -30, "lb"), (8, 30, "lt")):
            box = d.textbbox((x + dx, y + dy), text, font=fs, anchor=anchor)
            if box[0] > L and box[2] < W - R and not any(_overlap(box, t) for t in taken):
                break
        d.text((x + dx, y + dy), text, fill=color, font=fs, anchor=anchor)
        taken.append(box)
    d.text((W / 2, 14), f"Quality against time: feature-FID (lower is better), {quality['n']} images per point",
           fill=(0, 0, 0), font=f, anchor="mt")
    d.text((W / 2, H - 22), "seconds to sample 32 images (log scale)", fill=(0, 0, 0), font=f, anchor="mt")
    label = Image.new("RGB", (200, 24), "white")
    ImageDraw.Draw(label).text((100, 12), "feature-FID", fill=(0, 0, 0), font=f, anchor="mm")
    label = label.rotate(90, expand=True)
    img.paste(label, (8, int((T + H - B) / 2 - 100)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def grid_image(panels: list[tuple[str, np.ndarray]], label_names: list[str], *, scale: int = 4,
               title: str = "") -> Image.Image:
    """Side-by-side panels of (rows = labels, cols = samples) uint8 grids (L, k, H, W, 3), labelled."""
    f, fs = font(15), font(13)
    L, k, h, w, _ = panels[0][1].shape
    cell, gap, left, top = h * scale, 2, 130, 58 if title else 34
    panel_w = k * (cell + gap)
    width = max(left + len(panels) * (panel_w + 20), 16 + int(f.getlength(title)) if title else 0)
    img = Image.new("RGB", (width, top + L * (cell + gap) + 8), "white")
    d = ImageDraw.Draw(img)
    if title:
        d.text((8, 6), title, fill=(0, 0, 0), font=f)
    for p, (name, grid) in enumerate(panels):
        x0 = left + p * (panel_w + 20)
        d.text((x0, top - 22), name, fill=(0, 0, 0), font=f)
        for i in range(L):
            for j in range(k):
                tile = Image.fromarray(grid[i, j]).resize((cell, cell), Image.NEAREST)
                img.paste(tile, (x0 + j * (cell + gap), top + i * (cell + gap)))
    for i, name in enumerate(label_names[:L]):
        d.text((8, top + i * (cell + gap) + cell / 2), name, fill=(0, 0, 0), font=fs, anchor="lm")
    return img


def same_noise_panels(panels: list[tuple[str, str, str]], *, seed: int = 3, per_label: int = 8,
                      title: str = "") -> Image.Image:
    """Panels (title, checkpoint, bench entry such as 'ddim:4+sp=distilled-4') drawn from the same noise, one
    row per label of the first model: what the quality tables' numbers look like side by side."""
    from core.checkpoint import load_checkpoint
    from core.samplers import generate
    from core.schedule import Schedule

    from .common import parse_entries
    from .quality import _solver_options

    drawn, names = [], None
    for name, path, entry in panels:
        b = load_checkpoint(path, "cpu")
        names = names or list(b.label_names)
        e = parse_entries(entry, "--panel")[0]
        L = len(names)
        ctx = np.repeat(np.eye(L, dtype=np.float32), per_label, axis=0)
        res = generate(b.net, Schedule(b.schedule_config), sampler=e["sampler"], steps=e["steps"], n=len(ctx),
                       context=ctx, seed=seed, eta=e["eta"], guidance=e["guidance"] or 1.0, **_solver_options(e))
        drawn.append((f"{name} ({res.nfe} calls)", res.images.reshape(L, per_label, *res.images.shape[1:])))
    return grid_image(drawn, names, title=title)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.pictures",
                                 description="Samplers or models side by side from the same noise, one row per label.")
    ap.add_argument("--panel", action="append", required=True, metavar="TITLE=CHECKPOINT|ENTRY",
                    help="e.g. 'student=checkpoints/default.shortcut4.safetensors|ddim:4+sp=distilled-4'")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--per-label", type=int, default=8)
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    panels = []
    for text in args.panel:
        name, _, rest = text.partition("=")
        path, _, entry = rest.partition("|")
        if not (name and path and entry):
            ap.error(f"--panel {text!r}: write TITLE=CHECKPOINT|ENTRY")
        panels.append((name, path, entry))
    out = Path(args.out)
    if out.exists():
        ap.error(f"--out {out}: exists; pictures never replace a file (remove it first)")
    same_noise_panels(panels, seed=args.seed, per_label=args.per_label, title=args.title).save(out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
