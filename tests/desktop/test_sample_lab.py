"""Sample & compare's lab: the X/Y grid dialog, the history of runs and settings read back from PNGs."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from toy_data import EMOJI_LABELS, saved_tiny_model, two_row_state  # noqa: E402

TIMEOUT_MS = 30000


@pytest.fixture
def saved_model(tmp_path):
    """A tiny model saved to a file (the history records its path and sha256) and loaded back."""
    return saved_tiny_model(tmp_path)


@pytest.fixture
def state(saved_model):
    return two_row_state(saved_model)


@pytest.fixture
def panel(qtbot, state):
    from desktop.panels.sample_panel import SamplePanel

    p = SamplePanel(state)
    qtbot.addWidget(p)
    p.per_row_spin.setValue(2)
    p.precision_box.setCurrentIndex(p.precision_box.findData("fp32"))
    p.columns[0].set_spec("ddim", 3)
    p.columns[1].set_spec("dpmpp2m", 2)
    p.columns[2].set_spec("heun", 2, spacing="karras")
    p.seed_spin.setValue(7)
    yield p
    p.shutdown()


def run_and_wait(qtbot, panel):
    with qtbot.waitSignal(panel.busy_changed, timeout=TIMEOUT_MS, check_params_cb=lambda busy: not busy):
        panel.run()
    return panel.summary


def wait_history(qtbot, n: int):
    from desktop import threads
    from desktop.jobs import history as hj

    qtbot.waitUntil(lambda: not threads.background_busy() and len(hj.load_entries()) >= n, timeout=TIMEOUT_MS)
    return hj.load_entries()


def test_the_lab_menu_offers_grid_history_and_png_in_two_clicks(panel):
    actions = [a for a in panel.controls.lab_menu.actions() if not a.isSeparator()]
    assert [a.text() for a in actions] == ["X/Y grid…", "Sketch → emoji / inpaint…", "Tune the steps…",
                                           "Teach a shortcut…", "History…", "Settings from a PNG…"]
    assert all(a.toolTip() for a in actions)


def test_the_grid_dialog_fills_every_cell_with_exactly_a_single_runs_pixels(qtbot, panel, state, tmp_path):
    from core.schedule import Schedule
    from core.xy_grid import run_cell

    dlg = panel.lab.open_grid()
    qtbot.addWidget(dlg)
    dlg.x_row.set_axis("sampler", "ddim,dpmpp2m")
    dlg.y_row.set_axis("steps", "1,3")
    dlg.per_cell.setValue(3)
    base = dlg.base()[0]  # off the axes: the panel's cheapest column (dpmpp2m 2), seed and first row
    assert (base.sampler, base.steps, base.seed, base.context) == ("dpmpp2m", 2, 7, "face")
    with qtbot.waitSignal(dlg.grid_finished, timeout=TIMEOUT_MS):
        dlg.run()
    cells = dlg.summary.cells
    assert set(cells) == {(0, 0), (0, 1), (1, 0), (1, 1)} and dlg.progress.value() == 4
    for (r, c), cell in cells.items():
        single = run_cell(state.model.net, Schedule(state.model.schedule_config), dlg.spec.cell(r, c), 3,
                          EMOJI_LABELS, precision=dlg.summary.precision)
        assert np.array_equal(cell.images, single.images)
        assert dlg._cells[r, c][1].text().endswith(f"{cell.nfe} calls")
    qtbot.waitUntil(lambda: not dlg.is_busy(), timeout=TIMEOUT_MS)
    assert dlg.export_button.isEnabled()
    out = tmp_path / "grid.png"
    dlg.export(str(out))
    qtbot.waitUntil(out.exists, timeout=TIMEOUT_MS)
    from desktop.jobs import history as hj

    entry = hj.read_png_entry(str(out))
    assert hj.restorable(entry).grid == dlg.spec


def test_the_grid_takes_the_columns_guidance_interval_and_rescale(qtbot, panel, state, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from core.schedule import Schedule
    from core.xy_grid import run_cell

    panel.columns[0].set_spec("ddim", 8)
    panel.columns[2].set_spec("heun", 8)
    panel.columns[1].set_spec("dpmpp2m", 2, guidance=3.0, interval=(0.2, 0.7), rescale=0.5)  # the cheapest
    dlg = panel.lab.open_grid()
    qtbot.addWidget(dlg)
    base = dlg.base()[0]
    assert (base.guidance, base.guidance_interval, base.guidance_rescale) == (3.0, (0.2, 0.7), 0.5)
    assert "guidance 3, guided at t/T 0.2-0.7, rescale 0.5" in dlg.base_label.text()
    dlg.x_row.set_axis("steps", "2,4")
    dlg.y_row.set_axis("seed", "3")
    dlg.per_cell.setValue(2)
    monkeypatch.setattr(QMessageBox, "warning", lambda *a: pytest.fail(a[2]))
    with qtbot.waitSignal(dlg.grid_finished, timeout=TIMEOUT_MS):
        dlg.run()
    sched = Schedule(state.model.schedule_config)
    for (r, c), cell in dlg.summary.cells.items():
        single = run_cell(state.model.net, sched, dlg.spec.cell(r, c), 2, EMOJI_LABELS, precision="fp32")
        assert np.array_equal(cell.images, single.images) and cell.nfe == single.nfe < 2 * cell.settings.steps
    qtbot.waitUntil(lambda: not dlg.is_busy(), timeout=TIMEOUT_MS)


def test_a_bad_axis_is_a_message_and_nothing_runs(qtbot, panel, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    said = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a: said.append(a[2]))
    dlg = panel.lab.open_grid()
    qtbot.addWidget(dlg)
    dlg.x_row.set_axis("steps", "1,zero")
    dlg.run()
    assert not dlg.is_busy() and "'zero' is not a whole number" in said[0]


def test_a_restored_run_draws_the_same_pixels_bit_for_bit(qtbot, panel, state):
    first = run_and_wait(qtbot, panel)
    images = {r.index: r.images.copy() for r in first.results}
    entries = wait_history(qtbot, 1)
    entry = entries[0]
    assert entry["model"]["sha256"] and entry["seed"] == 7 and entry["per_row"] == 2
    assert [r["sampler"] for r in entry["results"]] == ["ddim", "dpmpp2m", "heun"]
    # scramble the panel, then restore from the history
    panel.seed_spin.setValue(99)
    panel.per_row_spin.setValue(5)
    panel.columns[0].set_spec("ddpm", 9)
    panel._remove_column(panel.columns[2])
    panel.lab.restore(entry)
    assert panel.seed_spin.value() == 7 and panel.per_row_spin.value() == 2 and len(panel.columns) == 3
    assert [c.spec().sampler for c in panel.columns] == ["ddim", "dpmpp2m", "heun"]
    assert panel.columns[2].spec().spacing == "karras"
    again = run_and_wait(qtbot, panel)
    for r in again.results:
        assert np.array_equal(r.images, images[r.index]), r.index


def test_an_exported_png_restores_its_run(qtbot, panel, tmp_path):
    from desktop.jobs import history as hj

    run_and_wait(qtbot, panel)
    wait_history(qtbot, 1)
    out = tmp_path / "compare.png"
    with qtbot.waitSignal(panel.export_finished, timeout=TIMEOUT_MS):
        panel.exports.final_png(str(out))
    entry = hj.read_png_entry(str(out))
    r = hj.restorable(entry)
    assert r.seed == 7 and [c["sampler"] for c in r.columns] == ["ddim", "dpmpp2m", "heun"]
    assert r.composer["rows"][1] == np.eye(len(EMOJI_LABELS))[3].tolist()  # the composer's second row: food


def test_the_history_dialog_lists_newest_first_filters_and_clears(qtbot, panel, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    run_and_wait(qtbot, panel)
    panel.columns[0].set_spec("ddpm", 4)
    run_and_wait(qtbot, panel)
    wait_history(qtbot, 2)
    dlg = panel.lab.open_history()
    qtbot.addWidget(dlg)
    qtbot.waitUntil(lambda: dlg.list.count() == 2, timeout=TIMEOUT_MS)
    assert dlg.selected()["results"][0]["sampler"] == "ddpm"  # the newest first
    assert not dlg.list.item(0).icon().isNull()
    dlg.sampler_filter.setCurrentText("ddpm")
    assert dlg.list.count() == 1
    dlg.sampler_filter.setCurrentText("all")
    restored = []
    dlg.restore_requested.connect(restored.append)
    dlg.restore_selected()
    assert restored and restored[0]["results"][0]["sampler"] == "ddpm"
    monkeypatch.setattr(QMessageBox, "question", lambda *a: QMessageBox.StandardButton.Yes)
    dlg.ask_clear()
    qtbot.waitUntil(lambda: dlg.list.count() == 0 and not dlg.clear_button.isEnabled(), timeout=TIMEOUT_MS)


def test_the_history_is_capped_and_skips_damaged_files(tmp_path):
    from desktop.jobs import history as hj

    entry = {"version": 1, "kind": "compare", "time": 1.7e9, "model": {"path": "", "name": "m", "sha256": "x"},
             "seed": 1, "per_row": 2, "precision": "fp32", "columns": [
                 {"sampler": "ddim", "steps": 3, "eta": 0.0, "guidance": None, "spacing": "trailing"}] * 2,
             "results": []}
    thumb = np.zeros((16, 32, 3), np.uint8)
    for i in range(5):
        hj.record(dict(entry, time=1.7e9 + i), thumb, tmp_path)
    hj._prune(tmp_path, keep=3)
    assert len(hj.load_entries(tmp_path)) == 3
    (tmp_path / "20990101-000000-000000.json").write_text("[" * 100000)  # a depth bomb
    (tmp_path / "20990101-000000-000001.json").write_text(json.dumps({"kind": "compare", "seed": "x"}))
    (tmp_path / "not-ours.json").write_text("{}")
    assert [e["time"] for e in hj.load_entries(tmp_path)] == [1.7e9 + 4, 1.7e9 + 3, 1.7e9 + 2]
    hj.clear(tmp_path)
    assert (tmp_path / "not-ours.json").exists()  # only the history's own files are removed


@pytest.mark.parametrize("text, says", [
    ("not json", "not valid JSON"), ("[]", "not a JSON object"), ('{"kind": "video"}', "not the settings"),
    ('{"kind": "compare", "columns": []}', "columns are missing"),
    ('{"kind": "grid", "grid": {"x": 1}}', "grid's settings are damaged"),
])
def test_a_png_with_damaged_settings_is_one_line(tmp_path, text, says):
    from PIL import Image

    from core.export import save_png
    from desktop.jobs import history as hj

    out = tmp_path / "x.png"
    save_png(Image.new("RGB", (4, 4)), out, {"entry": text})
    with pytest.raises(ValueError, match=says):
        hj.read_png_entry(str(out))


def test_variations_open_from_a_columns_image_and_redraw_it_exactly(qtbot, panel):
    first = run_and_wait(qtbot, panel)
    col = panel.columns[1]
    result = next(r for r in first.results if r.index == col.index)
    with qtbot.waitSignal(col.variations_requested, timeout=1000) as sig:
        col.variations_requested.emit(col, 2)  # what the image's context menu and double-click send
    dlg = panel.lab.variations_dialog
    assert sig.args[1] == 2 and dlg is not None and dlg.isVisible()
    qtbot.waitUntil(lambda: not dlg.is_busy() and dlg.redrawn is not None, timeout=TIMEOUT_MS)
    assert np.array_equal(dlg.redrawn, result.images[2])
    with qtbot.waitSignal(dlg.seed_chosen, timeout=1000) as chosen:
        dlg.seed_chosen.emit(42)
    assert chosen.args == [42] and panel.seed_spin.value() == 42  # "Use this seed" reaches the panel
    dlg.cancel()
    qtbot.waitUntil(lambda: not dlg.is_busy(), timeout=TIMEOUT_MS)


def _sketch_dialog(qtbot, panel, inpaint: bool):
    """The panel's sketch dialog with a picture (and, for inpainting, a mask) on its canvas, set for a quick run."""
    d = panel.lab.open_sketch()
    d.precision = "fp32"
    picture = np.full((16, 16, 3), 255, np.uint8)
    picture[4:12, 4:12] = (255, 204, 77)
    d.canvas.set_image(picture)
    (d.inpaint_mode if inpaint else d.sketch_mode).setChecked(True)
    if inpaint:
        mask = np.zeros((16, 16), bool)
        mask[2:9, 3:13] = True
        d.canvas.set_mask(mask)
        d.resample_spin.setValue(2)
        d.jump_spin.setValue(2)
    d.steps_spin.setValue(3)
    d.n_spin.setValue(2)
    d.seed_spin.setValue(11)
    d.label_box.setCurrentIndex(d.label_box.findText(EMOJI_LABELS[3]))
    return d


def _run_sketch(qtbot, d):
    with qtbot.waitSignal(d.busy_changed, timeout=TIMEOUT_MS, check_params_cb=lambda busy: not busy):
        d.run()
    return d.result


@pytest.mark.parametrize("inpaint", [False, True], ids=["sketch", "inpaint"])
def test_a_sketch_run_is_kept_and_restores_the_same_pixels(qtbot, panel, inpaint):
    d = _sketch_dialog(qtbot, panel, inpaint)
    picture, mask = d.canvas.image(), d.canvas.mask()
    first = _run_sketch(qtbot, d).images.copy()
    entry = wait_history(qtbot, 1)[0]
    assert entry["kind"] == "sketch" and entry["model"]["sha256"] and entry["seed"] == 11
    assert entry["row_names"] == [EMOJI_LABELS[3]] and entry["results"][0]["nfe"] == d.result.nfe
    assert entry["runtime"].startswith("CPU")
    # scramble the dialog, then restore from the history
    d.canvas.canvas.clear()
    d.canvas.canvas.clear_mask()
    (d.sketch_mode if inpaint else d.inpaint_mode).setChecked(True)
    d.seed_spin.setValue(3)
    d.n_spin.setValue(5)
    d.label_box.setCurrentIndex(0)
    d.strength_slider.setValue(95)
    panel.lab.restore(entry)
    assert d.mode() == ("inpaint" if inpaint else "sketch") and d.seed_spin.value() == 11 and d.n_spin.value() == 2
    assert np.array_equal(d.canvas.image(), picture) and np.array_equal(d.canvas.mask(), mask)
    assert d.label_box.currentText() == EMOJI_LABELS[3] and "restored" in d.status.text()
    assert np.array_equal(_run_sketch(qtbot, d).images, first)
    d.shutdown()
    qtbot.waitUntil(lambda: not d.is_busy(), timeout=TIMEOUT_MS)


def test_a_saved_sketch_png_restores_its_run(qtbot, panel, tmp_path):
    from desktop.jobs import history as hj

    d = _sketch_dialog(qtbot, panel, inpaint=False)
    _run_sketch(qtbot, d)
    wait_history(qtbot, 1)
    out = tmp_path / "sketch.png"
    with qtbot.waitSignal(d.saved, timeout=TIMEOUT_MS):
        d.save_png(str(out))
    r = hj.restorable(hj.read_png_entry(str(out)))
    assert r.kind == "sketch" and r.sketch["seed"] == 11 and r.sketch["steps"] == 3
    assert np.array_equal(r.sketch["image"], d.canvas.image()) and r.sketch["mask"] is None


@pytest.mark.parametrize("change, says", [
    ({"mode": "video"}, "missing or damaged"), ({"side": 10**9}, "size"), ({"image": "!!!"}, "picture"),
    ({"image": "AAAA"}, "wrong size"), ({"mask": 5}, "mask"), ({"steps": 0}, "steps"), ({"seed": True}, "seed"),
    ({"strength": "1"}, "strength"), ({"guidance": float("nan")}, "guidance"),
])
def test_a_damaged_sketch_entry_is_one_line(change, says):
    import base64

    from desktop.jobs import history as hj

    good = {"mode": "inpaint", "side": 4, "image": base64.b64encode(bytes(48)).decode(),
            "mask": base64.b64encode(bytes(2)).decode(), "label": "food", "strength": 1.0, "sampler": "ddim",
            "steps": 3, "resample": 2, "jump": 2, "guidance": 1.0, "seed": 1, "n": 2, "precision": "fp32"}
    ok = hj.restorable({"kind": "sketch", "sketch": good})
    assert ok.sketch["image"].shape == (4, 4, 3) and ok.sketch["mask"].shape == (4, 4) and not ok.sketch["mask"].any()
    with pytest.raises(ValueError, match=says):
        hj.restorable({"kind": "sketch", "sketch": {**good, **change}})


def test_a_restore_checks_the_models_digest_off_the_gui_thread(qtbot, panel, state):
    run_and_wait(qtbot, panel)
    entry = wait_history(qtbot, 1)[0]
    said = []
    state.status_message.connect(said.append)
    panel.lab.restore(entry)  # the same file: nothing to say beyond the restore itself
    changed = dict(entry, model=dict(entry["model"], sha256="0" * 64))
    panel.lab.restore(changed)
    qtbot.waitUntil(lambda: any("has changed since" in s for s in said), timeout=TIMEOUT_MS)
    assert sum("has changed since" in s for s in said) == 1
