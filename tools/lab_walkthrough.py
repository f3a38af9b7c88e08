"""The sampler lab, walked through in the real app on the shipped model, with the event loop's stalls measured
while each job runs: Run in Sample & compare, a 4 x 4 X/Y grid, sketch -> emoji, inpainting, variations and the
history.

    xvfb-run -a -s "-screen 0 1400x950x24" python tools/lab_walkthrough.py    # docs/screenshots/lab_*.png

Each step calls the slot its button or menu item calls; the sketch is painted with the canvas's own pen and fill
(what a click with those tools does). While a job runs the app's real event loop turns (a QEventLoop, not a
processEvents poll), and a 10 ms timer probe (benchmarks.gui_latency) records how late it fires: the stall a user
would feel. Screenshots: lab_1_grid.png, lab_3_sketch.png, lab_4_inpaint.png, lab_5_variations.png,
lab_2_history.png. A check that fails ends the walk with exit code 1. Run it alone: the timings are the machine's.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from screenshots import _settle, open_app  # noqa: E402
from walkthrough import _check, _shot  # noqa: E402

RED, GREEN, BROWN = (221, 46, 68), (119, 178, 85), (120, 80, 40)


def _run_until(app, cond, what: str, timeout: float = 600.0) -> None:
    """Turn the app's event loop (as app.exec() would) until cond() holds."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop, poll, end = QEventLoop(), QTimer(), time.monotonic() + timeout
    poll.timeout.connect(lambda: (cond() or time.monotonic() > end) and loop.quit())
    poll.start(25)
    loop.exec()
    poll.stop()
    if not cond():
        raise TimeoutError(f"{what} did not finish in {timeout:.0f} s")


def _measured(app, start, done, what: str) -> dict:
    """Start a job, turn the event loop until it is done; its wall time and the probe's stall figures."""
    from benchmarks.gui_latency import EventLoopProbe

    probe = EventLoopProbe(10)
    probe.start()
    t0 = time.perf_counter()
    start()
    _run_until(app, done, what)
    seconds = time.perf_counter() - t0
    probe.stop()
    s = probe.summary()
    print(f"{what}: {seconds:.2f} s, event-loop stall p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
          f"max {s['max_ms']:.1f} ms ({s['samples']} ticks)", flush=True)
    _check(s["p99_ms"] < 50, f"{what}: stall p99 under 50 ms")
    return {"what": what, "seconds": seconds, **s}


def _paint_apple(canvas) -> None:
    """A red apple with a brown stalk and a green leaf on white, as a user paints it: pen outline, then fill."""
    c = canvas.canvas
    c.clear()
    side = c.side
    mid, r = side / 2 - 0.5, side * 0.34
    for a in np.linspace(0, 2 * np.pi, 64, endpoint=False):
        c.paint_at(int(round(mid + r * np.cos(a))), int(round(mid + 1 + r * np.sin(a))), RED)
    c.fill(int(mid), int(mid + 1), RED)
    for y in range(side // 8, side // 4 + 1):
        c.paint_at(side // 2, y, BROWN)
    for x, y in ((side // 2 + 1, side // 6), (side // 2 + 2, side // 6), (side // 2 + 2, side // 6 - 1)):
        c.paint_at(x, y, GREEN)


def main() -> int:
    app, win, mw = open_app(1400, 950)
    _settle(app, 1.0)
    win.tabs.setCurrentIndex(mw.TAB_SAMPLE)
    sp = win.sample_panel
    rows = []

    # Sample & compare, as the app opens: the history gets its first entry
    rows.append(_measured(app, sp.run, lambda: not sp.is_busy(), "Sample & compare Run (3 columns)"))

    # The X/Y grid: 4 samplers x 4 step counts, 8 images a cell, from the same noise
    grid = sp.lab.open_grid()
    grid.x_row.set_axis("sampler", "ddim,dpmpp2m,dpmpp3m,ipndm")
    grid.y_row.set_axis("steps", "5,8,10,15")
    grid.resize(1000, 800)
    rows.append(_measured(app, grid.run, lambda: not grid.is_busy() and grid.summary is not None,
                          "X/Y grid 4 x 4"))
    print(f"grid: {grid.note.text()}", flush=True)
    _shot(app, win, "lab_1_grid.png")
    grid.close()

    # Sketch -> emoji: an apple sketch under "food"
    sk = sp.lab.open_sketch()
    sk.resize(1000, 640)
    _paint_apple(sk.canvas)
    sk.label_box.setCurrentIndex(max(0, sk.label_box.findText("food")))
    sk.n_spin.setValue(8)
    rows.append(_measured(app, sk.run, lambda: not sk.is_busy() and sk.result is not None, "sketch -> emoji"))
    print(f"sketch: Run to screen {sk.seconds_to_screen:.3f} s; {sk.status.text()}", flush=True)
    _check(sk.seconds_to_screen < 1.0, "sketch -> emoji on screen within 1 s of Run")
    sk.scrubber.setValue(max(0, sk.scrubber.maximum() // 2))
    _shot(app, win, "lab_3_sketch.png")

    # Inpainting: a face from the comparison, its lower half redrawn
    face = next(r for r in sp.summary.results if r.index == sp.columns[0].index).images[1]
    sk.load_image(face)
    sk.inpaint_mode.setChecked(True)
    mask = np.zeros((sk.canvas.canvas.side,) * 2, bool)
    mask[sk.canvas.canvas.side // 2:] = True
    sk.canvas.set_mask(mask)
    sk.label_box.setCurrentIndex(max(0, sk.label_box.findText("face")))
    rows.append(_measured(app, sk.run, lambda: not sk.is_busy() and sk.result is not None
                          and sk.result.mode == "inpaint", "inpainting (RePaint)"))
    kept = all(np.array_equal(img[~mask], face[~mask]) for img in sk.result.images)
    _check(kept, "inpainting keeps the unmasked half pixel for pixel")
    _shot(app, win, "lab_4_inpaint.png")
    sk.close()

    # Variations of one image of the comparison (what its right-click menu does)
    col = sp.columns[-1]
    vd_done = lambda: (vd := sp.lab.variations_dialog) is not None and not vd.is_busy() and \
        vd.strip.complete() is not None and vd.mix_strip.complete() is not None  # noqa: E731
    rows.append(_measured(app, lambda: col.variations_requested.emit(col, 2), vd_done, "variations (8 + morph of 8)"))
    _shot(app, win, "lab_5_variations.png")
    sp.lab.variations_dialog.close()

    # The history: every run above, newest first
    history = sp.lab.open_history()
    _run_until(app, lambda: history.list.count() >= 4, "the history", timeout=60)
    _check(history.list.count() >= 4, f"the history lists {history.list.count()} runs")
    kinds = [e.get("kind") for e in history.entries]
    _check("sketch" in kinds and "grid" in kinds and "compare" in kinds, f"the history holds {kinds}")
    _shot(app, win, "lab_2_history.png")
    history.close()

    print("\n| job | wall s | stall p50 ms | stall p99 ms | max ms |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['seconds']:.2f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |")
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
