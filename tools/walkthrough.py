"""The workshop flow, walked through in the real app on a real X server: edit labels -> teach -> sample the
new label without touching the composer -> switch models and back -> Run; then the sampler lab.

    xvfb-run -a -s "-screen 0 1400x950x24" python tools/walkthrough.py                # docs/screenshots/
    xvfb-run -a -s "-screen 0 1280x720x24" python tools/walkthrough.py --size 1280x720 --prefix small_

What it does, as a user would (each step calls the slot the button or menu calls; the image clicks are real
X clicks with xdotool): open the app maximised on a fresh data folder; on Data & labels click an image and
check the grid does not reflow under the pointer; add the label "fruit", select the 34 fruit emoji, give
them "fruit" and take "food" off them; press "Teach the model these labels"; wait for the fine-tune on the
Train tab (its live "called fruit" figure must show; --steps sets the fine-tune's length); on Sample & compare press Run (the rows must already include "fruit"); pick the shipped model and
then the taught one again in the model menu and press Run (the "fruit" row must come back); open the X/Y
grid and the history. Screenshots of the whole screen (ImageMagick `import -window root`, the window's own
grab where that is missing): PREFIXteach_1_labels.png ... PREFIXteach_6_not_food.png (the fruit row's own
"Not food"), PREFIXlab_1_grid.png, PREFIXlab_2_history.png. Any check that fails
stops the walk with exit code 1.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
OUT = ROOT / "docs" / "screenshots"


from screenshots import _settle  # noqa: E402
from benchmarks.teach_new_label import FRUIT  # noqa: E402  (the same fruit as the measurement)


def _wait(app, cond, timeout=1800.0, what="the app"):
    end = time.monotonic() + timeout
    while not cond():
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() > end:
            raise TimeoutError(f"{what} did not get there in {timeout:.0f} s")


def _shot(app, win, name: str) -> None:
    _settle(app)
    path = OUT / name
    if os.environ.get("DISPLAY") and shutil.which("import"):
        subprocess.run(["import", "-window", "root", str(path)], check=True)
    else:
        win.grab().save(str(path))
    print(f"wrote {path}", flush=True)


def _select_rows(view, wanted: set[int]) -> None:
    from PySide6.QtCore import QItemSelection, QItemSelectionModel

    from desktop.panels.image_browser import ROLE_INDEX

    model, sel = view.model(), QItemSelection()
    for r in range(model.rowCount()):
        idx = model.index(r, 0)
        if int(idx.data(ROLE_INDEX)) in wanted:
            sel.select(idx, idx)
    view.selectionModel().select(sel, QItemSelectionModel.SelectionFlag.ClearAndSelect)
    first = next((model.index(r, 0) for r in range(model.rowCount())
                  if int(model.index(r, 0).data(ROLE_INDEX)) in wanted), None)
    if first is not None:
        view.scrollTo(first)


def _icons_per_row(view) -> int:
    model = view.model()
    tops = [view.visualRect(model.index(r, 0)).top() for r in range(min(model.rowCount(), 200))]
    return tops.count(tops[0]) if tops else 0


def _x_click(app, widget, x: int, y: int) -> None:
    """A real click at widget coordinates, through the X server (xdotool), then the events it makes."""
    pos = widget.mapToGlobal(widget.rect().topLeft())
    subprocess.run(["xdotool", "mousemove", str(pos.x() + x), str(pos.y() + y), "click", "1"], check=True)
    _settle(app, 0.5)


def _check(ok: bool, what: str) -> None:
    print(("ok: " if ok else "FAILED: ") + what, flush=True)
    if not ok:
        raise SystemExit(1)


def _row_names(sp) -> list[str]:
    return list(sp._contexts()[1])


def main() -> int:
    import argparse

    from screenshots import open_app

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1400x950")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--steps", type=int, default=None,
                    help="the fine-tune's steps (default: the Teach preset's); e.g. 300 on a CPU without fast bf16")
    ap.add_argument("--skip-lab", action="store_true", help="stop after the teach flow (tools/lab_walkthrough.py "
                    "records the lab on the shipped model)")
    args = ap.parse_args()
    width, height = map(int, args.size.split("x"))
    pre = args.prefix
    app, win, mw = open_app(width, height)
    win.showMaximized()
    _settle(app, 1.0)
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"window {win.width()}x{win.height()} on a {width}x{height} screen", flush=True)

    # 1. Data & labels: a click on an image keeps the grid as it was; a new label "fruit" on the fruit emoji
    win.tabs.setCurrentIndex(mw.TAB_DATA)
    dp = win.data_panel
    _settle(app, 1.0)
    if os.environ.get("DISPLAY") and shutil.which("xdotool"):
        before = _icons_per_row(dp.view)
        rect = dp.view.visualRect(dp.view.model().index(2, 0))
        _x_click(app, dp.view.viewport(), rect.center().x(), rect.center().y())
        _check(len(dp.view.selectionModel().selectedIndexes()) == 1, "a real click selects one image")
        _check(_icons_per_row(dp.view) == before, f"the image grid keeps {before} per row after the click")
    names = np.load(ROOT / "resources" / "emoji16.npz")["names"].astype(str)
    fruit = set(np.flatnonzero(np.isin(names, FRUIT)).tolist())
    assert dp.add_label("fruit")
    ds = win.state.dataset
    food, new = ds.label_names.index("food"), ds.label_names.index("fruit")
    all_food = bool((ds.labels[sorted(fruit), food] > 0).all())  # then the "food" filter shows every fruit
    dp.filter_combo.setCurrentIndex(max(0, dp.filter_combo.findData(food)) if all_food else 0)
    _settle(app)
    _select_rows(dp.view, fruit)
    assert dp.assign_selected(new, True) == len(fruit)
    dp.assign_selected(food, False)
    _shot(app, win, f"{pre}teach_1_labels.png")

    # 2. Teach: the fine-tune preset from the shipped model, on the Train tab
    tp = win.train_panel
    if args.steps:
        tp.settings_box.presets["finetune"] = {**tp.settings_box.presets["finetune"], "steps": args.steps}
    dp.teach_btn.click()
    _wait(app, lambda: tp.run_state == "running" and tp._latest is not None and tp._latest.step >= 150
          and len(tp.label_progress.points.get("fruit", [])) >= 3, what="the fine-tune")
    _check(tp.label_progress.isVisible(), f"the live figure: {tp.label_progress.text.text()}")
    _shot(app, win, f"{pre}teach_2_training.png")
    t0 = time.monotonic()
    _wait(app, lambda: tp.run_state == "idle", what="the end of the fine-tune")
    print(f"fine-tune finished {time.monotonic() - t0:.0f} s after the second screenshot; {tp.status.text()}")
    print(f"live figure: {tp.label_progress.text.text()}; points {tp.label_progress.points.get('fruit')}", flush=True)
    _settle(app, 2.0)
    _shot(app, win, f"{pre}teach_3_trained.png")

    # 3. Sample & compare: the taught label is among the rows without a visit to the composer
    _wait(app, lambda: win.state.model is not None and "fruit" in win.state.model.label_names, what="the new model")
    taught = str(win.state.model.path)
    win.tabs.setCurrentIndex(mw.TAB_SAMPLE)
    sp = win.sample_panel
    _settle(app, 1.0)
    _check("fruit" in _row_names(sp), f"the rows include fruit: {_row_names(sp)}")
    sp.run()
    _wait(app, lambda: not sp.is_busy(), what="sampling")
    _settle(app, 2.0)
    _shot(app, win, f"{pre}teach_4_sample.png")

    # 4. The shipped model and back: the "fruit" row returns with the model that knows it
    picker = sp.model_picker
    shipped = next(i for i in range(picker.count()) if str(picker.itemData(i)).endswith("default.safetensors"))
    sp.model_bar.picked(shipped)
    _wait(app, lambda: win.state.model is not None and str(win.state.model.path).endswith("default.safetensors"),
          what="the shipped model")
    _settle(app, 1.0)
    _check("fruit" not in _row_names(sp), f"the shipped model draws its own labels: {_row_names(sp)}")
    back = next(i for i in range(picker.count()) if str(picker.itemData(i)) == taught)
    sp.model_bar.picked(back)
    _wait(app, lambda: win.state.model is not None and str(win.state.model.path) == taught, what="the taught model")
    _settle(app, 1.0)
    _check("fruit" in _row_names(sp), f"back on the taught model the rows include fruit again: {_row_names(sp)}")
    sp.run()
    _wait(app, lambda: not sp.is_busy(), what="sampling")
    _settle(app, 2.0)
    _shot(app, win, f"{pre}teach_5_switched_back.png")

    # 5. The fruit row's own "Not" label: fruit, not food, beside the plain food row
    comp = win.composer
    row = next(r for r in comp.rows if r.title_text() == "fruit")
    row.set_negative("food")
    comp.publish()
    _check("fruit, not food" in _row_names(sp) and "food" in _row_names(sp),
           f"the fruit row is guided away from food: {_row_names(sp)}")
    sp.run()
    _wait(app, lambda: not sp.is_busy(), what="sampling")
    _settle(app, 2.0)
    _shot(app, win, f"{pre}teach_6_not_food.png")

    if args.skip_lab:
        win.close()
        return 0

    # 5. The sampler lab: an X/Y grid of the new label against its neighbours over the number of steps, then
    # the history of this walk
    grid = sp.lab.open_grid()
    grid.x_row.set_axis("steps", "5,10,20")
    grid.y_row.set_axis("context", "fruit,food,animal & nature")
    grid.resize(min(1000, width - 40), min(800, height - 60))
    grid.run()
    _wait(app, lambda: not grid.is_busy() and grid.summary is not None and grid.summary.cells, what="the grid")
    print(f"grid: {grid.note.text()}", flush=True)
    _shot(app, win, f"{pre}lab_1_grid.png")
    grid.close()
    history = sp.lab.open_history()
    _wait(app, lambda: history.list.count() >= 3, timeout=60, what="the history")
    _check(history.list.count() >= 3, f"the history lists {history.list.count()} runs")
    _shot(app, win, f"{pre}lab_2_history.png")
    history.close()
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
