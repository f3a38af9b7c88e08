"""The workshop flow, walked through in the real app on a real X server: edit labels -> teach -> sample.

    xvfb-run -a -s "-screen 0 1400x950x24" python tools/walkthrough.py     # screenshots into docs/screenshots/

What it does, as a user would (each step calls the slot the button or menu calls): open the app on a
fresh data folder; on Data & labels add the label "fruit", select the 34 fruit emoji in the image
browser, give them "fruit" and take "food" off them; press "Teach the model these labels"; wait for
the fine-tune on the Train tab; then draw "fruit" in Sample & compare with three samplers from the
same noise. Screenshots of the whole screen (ImageMagick `import -window root`, the window's own
grab where that is missing): teach_1_labels.png, teach_2_training.png, teach_3_trained.png,
teach_4_sample.png.
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


def main() -> int:
    from screenshots import open_app

    app, win, mw = open_app(1380, 920)
    OUT.mkdir(parents=True, exist_ok=True)

    # 1. Data & labels: a new label "fruit" on the fruit emoji, taken off "food"
    win.tabs.setCurrentIndex(mw.TAB_DATA)
    dp = win.data_panel
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
    _shot(app, win, "teach_1_labels.png")

    # 2. Teach: the fine-tune preset from the shipped model, on the Train tab
    dp.teach_btn.click()
    tp = win.train_panel
    _wait(app, lambda: tp.run_state == "running" and tp._latest is not None and tp._latest.step >= 150,
          what="the fine-tune")
    _shot(app, win, "teach_2_training.png")
    t0 = time.monotonic()
    _wait(app, lambda: tp.run_state == "idle", what="the end of the fine-tune")
    print(f"fine-tune finished {time.monotonic() - t0:.0f} s after the second screenshot; {tp.status.text()}")
    _settle(app, 2.0)
    _shot(app, win, "teach_3_trained.png")

    # 3. Sample & compare: "fruit", three samplers from the same noise
    _wait(app, lambda: win.state.model is not None and "fruit" in win.state.model.label_names, what="the new model")
    row = win.composer.rows[0]
    row.set_weights([1.0 if n == "fruit" else 0.0 for n in row.names])
    win.composer.publish()
    win.tabs.setCurrentIndex(mw.TAB_SAMPLE)
    sp = win.sample_panel
    sp.run()
    _wait(app, lambda: not sp.is_busy(), what="sampling")
    _settle(app, 2.0)
    _shot(app, win, "teach_4_sample.png")
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
