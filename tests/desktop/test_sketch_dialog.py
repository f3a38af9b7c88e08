"""Sketch → emoji and inpainting: the paint canvas's tools, and the dialog's runs on a tiny model."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

LABELS = ["face", "person", "animal & nature", "food", "object", "symbol & flag"]
RUN_TIMEOUT_MS = 30000
WHITE, RED = (255, 255, 255), (221, 46, 68)


def tiny_bundle(height: int = 16, kind: str = "linear_zsnr", prediction: str = "v"):
    import torch

    from core.checkpoint import ModelBundle
    from core.schedule import ScheduleConfig
    from core.unet import ContextUnet, UNetConfig

    torch.manual_seed(0)
    net = ContextUnet(UNetConfig(n_feat=8, n_cfeat=len(LABELS), height=height)).eval()
    return ModelBundle(net, ScheduleConfig(kind=kind, prediction=prediction), list(LABELS),
                       {"dataset": "test", "step": 0})


def sketch(size: int = 16) -> np.ndarray:
    """A face-ish sketch: a yellow disc with two dark eyes on white."""
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size, 3), 255, np.uint8)
    img[(yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 < (size * 0.4) ** 2] = (255, 204, 77)
    img[size // 3, size // 3] = img[size // 3, size - 1 - size // 3] = (40, 40, 40)
    return img


@pytest.fixture
def canvas(qtbot):
    from desktop.widgets.paint_canvas import PaintCanvas

    c = PaintCanvas(16)
    qtbot.addWidget(c)
    c.resize(500, 560)
    c.show()
    qtbot.waitExposed(c)
    return c


@pytest.fixture
def state():
    from desktop.state import AppState

    s = AppState()
    s.set_model(tiny_bundle())
    return s


@pytest.fixture
def dlg(qtbot, state):
    from desktop.panels.sketch_dialog import SketchDialog

    d = SketchDialog(state)  # not qtbot.addWidget: it would be deleted before the wait below (see there)
    d.precision = "fp32"
    d.n_spin.setValue(3)
    d.steps_spin.setValue(4)
    d.canvas.set_image(sketch())
    yield d
    # pytest-qt deletes added widgets before fixtures end, and a deleted dialog is never told its worker has
    # finished: the worker ends first here, then the dialog goes.
    d.shutdown()
    qtbot.waitUntil(lambda: not d.is_busy(), timeout=RUN_TIMEOUT_MS)
    d.close()
    d.deleteLater()


def run_and_wait(qtbot, d):
    with qtbot.waitSignal(d.busy_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda busy: not busy):
        d.run()
    return d.result


def click(qtbot, c, x, y, button=None):
    from PySide6.QtCore import Qt

    qtbot.mouseClick(c.canvas, button or Qt.MouseButton.LeftButton, pos=c.canvas.pixel_center(x, y))


# --- the canvas -----------------------------------------------------------------------------------------

def test_the_pen_paints_the_clicked_pixel_and_right_button_erases(qtbot, canvas):
    from PySide6.QtCore import Qt

    canvas.set_color(RED)
    click(qtbot, canvas, 3, 5)
    img = canvas.image()
    assert tuple(img[5, 3]) == RED
    assert (img.reshape(-1, 3) != RED).any(axis=1).sum() == 16 * 16 - 1  # that pixel only
    click(qtbot, canvas, 3, 5, Qt.MouseButton.RightButton)
    assert (canvas.image() == 255).all()


def test_a_drag_paints_a_gapless_line(qtbot, canvas):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    canvas.set_color(RED)
    c = canvas.canvas
    QTest.mousePress(c, Qt.MouseButton.LeftButton, pos=c.pixel_center(1, 2))
    QTest.mouseMove(c, c.pixel_center(9, 2))  # one move event: the pixels between are filled in
    QTest.mouseRelease(c, Qt.MouseButton.LeftButton, pos=c.pixel_center(9, 2))
    painted = (canvas.image() == RED).all(axis=2)
    assert painted[2, 1:10].all() and painted.sum() == 9
    canvas.canvas.undo()  # the whole stroke is one undo step
    assert (canvas.image() == 255).all()


def test_fill_fills_exactly_the_enclosed_region_and_undo_restores(qtbot, canvas):
    from desktop.widgets.paint_canvas import FILL

    c = canvas.canvas
    for i in range(2, 8):  # a closed 6x6 outline from (2, 2) to (7, 7)
        for x, y in ((i, 2), (i, 7), (2, i), (7, i)):
            c.paint_at(x, y, (40, 40, 40))
    before = canvas.image()
    canvas.set_tool(FILL)
    canvas.set_color(RED)
    click(qtbot, canvas, 4, 4)
    img = canvas.image()
    inside = np.zeros((16, 16), bool)
    inside[3:7, 3:7] = True
    assert (img[inside] == RED).all()
    assert np.array_equal(img[~inside], before[~inside])  # the outline and the outside untouched
    click(qtbot, canvas, 4, 4)  # filling with its own colour changes nothing: no undo step
    canvas.undo_button.click()
    assert np.array_equal(canvas.image(), before)
    canvas.set_color((0, 0, 255))
    click(qtbot, canvas, 0, 0)  # the outside region, 4-connected around the outline
    assert ((canvas.image() == (0, 0, 255)).all(axis=2) == (before == 255).all(axis=2) & ~inside).all()


def test_eraser_paints_white_and_clear_and_set_image_are_undoable(qtbot, canvas):
    from desktop.widgets.paint_canvas import ERASER

    canvas.set_image(sketch())
    canvas.set_tool(ERASER)
    click(qtbot, canvas, 8, 8)
    assert tuple(canvas.image()[8, 8]) == WHITE and tuple(sketch()[8, 8]) != WHITE
    canvas.clear_button.click()
    assert (canvas.image() == 255).all()
    canvas.canvas.undo()
    canvas.canvas.undo()
    assert np.array_equal(canvas.image(), sketch())
    with pytest.raises(ValueError):
        canvas.set_image(np.zeros((8, 8, 3), np.uint8))


def test_the_mask_brush_marks_pixels_without_touching_the_picture(qtbot, canvas):
    from PySide6.QtCore import Qt

    from desktop.widgets.paint_canvas import MASK

    canvas.set_mask_mode(True)
    canvas.set_image(sketch())
    canvas.brush_spin.setValue(2)
    canvas.set_tool(MASK)
    click(qtbot, canvas, 4, 6)
    expected = np.zeros((16, 16), bool)
    expected[6:8, 4:6] = True  # a 2 px brush
    assert np.array_equal(canvas.mask(), expected)
    assert np.array_equal(canvas.image(), sketch())
    click(qtbot, canvas, 4, 6, Qt.MouseButton.RightButton)
    assert not canvas.mask().any()
    canvas.canvas.undo()
    assert np.array_equal(canvas.mask(), expected)
    canvas.mask_invert.click()
    assert np.array_equal(canvas.mask(), ~expected)
    canvas.mask_clear.click()
    assert not canvas.mask().any()
    canvas.set_mask_mode(False)  # sketching hides the mask tools and falls back to the pen
    assert canvas.canvas.tool != MASK and not canvas.mask_tool.isVisible()


# --- the dialog -----------------------------------------------------------------------------------------

def test_dialog_import_does_not_load_torch():
    code = ("import sys; import desktop.panels.sketch_dialog; "
            "sys.exit(1 if {'torch', 'core.editing', 'core.samplers', 'core.data'} & set(sys.modules) else 0)")
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, env={"QT_QPA_PLATFORM": "offscreen",
                                                                       "PATH": "/usr/bin:/bin"}).returncode == 0


def test_run_is_disabled_without_a_model(qtbot):
    from desktop.panels.sketch_dialog import SketchDialog
    from desktop.state import AppState

    s = AppState()
    d = SketchDialog(s)
    qtbot.addWidget(d)
    assert not d.run_button.isEnabled() and "model" in d.run_button.toolTip()
    d.run()  # nothing starts
    assert not d.is_busy()
    s.set_model(tiny_bundle())
    assert d.run_button.isEnabled()
    assert [d.label_box.itemText(i) for i in range(d.label_box.count())] == ["no label", *LABELS]
    s.set_model(tiny_bundle(height=8))  # another size: the canvas follows the model
    assert d.canvas.image().shape == (8, 8, 3) and d.canvas.mask().shape == (8, 8)
    s.set_model(None)
    assert not d.run_button.isEnabled()


def test_sdedit_makes_n_outputs_and_the_scrubber_walks_its_frames(qtbot, dlg):
    result = run_and_wait(qtbot, dlg)
    assert result.images.shape == (3, 16, 16, 3) and result.images.dtype == np.uint8
    assert result.nfe == 4 and result.n_frames == 4 + 1
    assert dlg.scrubber.minimum() == 0 and dlg.scrubber.maximum() + 1 == result.n_frames
    assert result.frame_t[0] == pytest.approx(0.6 * 500) and result.frame_t[-1] == 0
    assert np.array_equal(result.frames_x[-1], result.images)  # the last frame is the result
    assert all(np.array_equal(result.frames_x0[0][i], sketch()) for i in range(3))  # frame 0: the sketch
    assert not np.array_equal(result.frames_x[0][0], sketch())  # ... noised
    assert not np.array_equal(result.images[0], result.images[1])  # each output from its own noise
    assert len(dlg.outputs.buttons()) == 3 and dlg.use_button.isEnabled() and dlg.save_button.isEnabled()
    dlg.scrubber.setValue(0)
    assert dlg.frame_label.text().startswith("start: the noised sketch")
    dlg.outputs.button(2).click()
    dlg.use_button.click()  # "Use as sketch"
    assert np.array_equal(dlg.canvas.image(), result.images[2])
    dlg.canvas.canvas.undo()  # back to the sketch: the same seed and picture give the same outputs
    assert np.array_equal(run_and_wait(qtbot, dlg).images, result.images)


def test_strength_zero_returns_the_sketch_unchanged(qtbot, dlg):
    dlg.strength_slider.setValue(0)
    assert "unchanged" in dlg.strength_hint.text()
    result = run_and_wait(qtbot, dlg)
    assert result.nfe == 0 and result.n_frames == 1 and dlg.scrubber.maximum() == 0
    assert all(np.array_equal(img, sketch()) for img in result.images)


def test_strength_text_reads_the_schedule(qtbot, dlg):
    dlg.strength_slider.setValue(100)
    assert "t0 = 500 of 500" in dlg.strength_hint.text() and "pure noise" in dlg.strength_hint.text()
    dlg.strength_slider.setValue(10)
    assert "t0 = 50 of 500" in dlg.strength_hint.text() and "light touch" in dlg.strength_hint.text()


def test_inpaint_keeps_what_is_not_masked_exactly(qtbot, dlg):
    dlg.inpaint_mode.setChecked(True)
    dlg.steps_spin.setValue(4)
    dlg.resample_spin.setValue(2)
    dlg.jump_spin.setValue(2)
    empty = run_and_wait(qtbot, dlg)  # nothing masked: the input comes back exactly
    assert all(np.array_equal(img, sketch()) for img in empty.images)
    assert "mask is empty" in dlg.status.text()
    mask = np.zeros((16, 16), bool)
    mask[4:10, 4:10] = True
    dlg.canvas.set_mask(mask)
    result = run_and_wait(qtbot, dlg)
    assert result.nfe == 4 * 2 and result.n_frames == 5 and dlg.scrubber.maximum() == 4
    assert all(np.array_equal(img[~mask], sketch()[~mask]) for img in result.images)
    assert not np.array_equal(result.images[0][mask], sketch()[mask])
    assert np.array_equal(result.frames_x[-1], result.images)


def test_cancel_stops_the_job_within_one_model_call(qtbot, dlg, state):
    calls, cancelled_at = [], []
    state.model.net.register_forward_hook(lambda *_: calls.append(time.perf_counter()))
    dlg.sampler_box.setCurrentIndex(dlg.sampler_box.findData("ddpm"))
    dlg.strength_slider.setValue(100)
    dlg.steps_spin.setValue(500)
    dlg.run()
    qtbot.waitUntil(lambda: len(calls) >= 5, timeout=RUN_TIMEOUT_MS)
    cancelled_at.append(time.perf_counter())
    dlg.cancel()
    qtbot.waitUntil(lambda: not dlg.is_busy(), timeout=RUN_TIMEOUT_MS)
    assert len([t for t in calls if t > cancelled_at[0]]) <= 1  # at most the call already running
    assert len(calls) < 500 and dlg.result is None and dlg.status.text() == "Cancelled."
    assert dlg.run_button.isEnabled() and not dlg.save_button.isEnabled()
    n = len(calls)
    dlg.run()
    qtbot.waitUntil(lambda: len(calls) >= n + 5, timeout=RUN_TIMEOUT_MS)
    dlg.reject()  # closing the dialog (Esc, the close button) stops its run too
    qtbot.waitUntil(lambda: not dlg.is_busy(), timeout=RUN_TIMEOUT_MS)
    assert len(calls) < n + 500 and dlg.result is None


def test_save_png_writes_the_outputs_with_their_settings(qtbot, dlg, tmp_path):
    from PIL import Image

    run_and_wait(qtbot, dlg)
    path = tmp_path / "out.png"
    with qtbot.waitSignal(dlg.saved, timeout=RUN_TIMEOUT_MS):
        dlg.save_png(str(path))
    with Image.open(path) as im:
        text = dict(im.text)
        assert im.size[0] > im.size[1]  # one row: the sketch, then the 3 outputs
    assert text["mode"] == "SDEdit" and text["sampler"] == "dpmpp3m" and text["steps"] == "4"
    assert text["strength"] == "0.6" and text["label"] == "face" and text["seed"] == str(dlg.seed_spin.value())


def test_import_resizes_a_picture_and_refuses_a_broken_file_with_a_message(qtbot, dlg, dialogs, tmp_path):
    from PIL import Image

    big = np.zeros((64, 64, 3), np.uint8)
    big[:, 32:] = (0, 0, 255)
    Image.fromarray(big).save(tmp_path / "half.png")
    dlg.import_image(str(tmp_path / "half.png"))
    qtbot.waitUntil(lambda: (dlg.canvas.image()[:, 12:] == (0, 0, 255)).all(), timeout=RUN_TIMEOUT_MS)
    assert (dlg.canvas.image()[:, :4] == 0).all()
    before = dlg.canvas.image()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    dlg.import_image(str(tmp_path / "broken.png"))
    qtbot.waitUntil(lambda: len(dialogs) == 1, timeout=RUN_TIMEOUT_MS)
    kind, _, text = dialogs[0]
    assert kind == "warning" and "broken.png" in text and "Traceback" not in text
    assert np.array_equal(dlg.canvas.image(), before)
    dlg.load_image(big)  # preloading another size is resized the same way
    qtbot.waitUntil(lambda: (dlg.canvas.image()[:, 12:] == (0, 0, 255)).all(), timeout=RUN_TIMEOUT_MS)


def test_an_error_in_the_job_is_a_message_and_the_dialog_recovers(qtbot, dlg, state, dialogs):
    def broken(*_):
        raise ValueError("the weights hold NaN")

    handle = state.model.net.register_forward_pre_hook(broken)
    run_and_wait(qtbot, dlg)
    assert dialogs == [("warning", "Stopped", "the weights hold NaN")]
    assert dlg.result is None and dlg.run_button.isEnabled()
    handle.remove()
    assert run_and_wait(qtbot, dlg).images.shape == (3, 16, 16, 3)


def test_guidance_without_a_label_costs_nothing_extra(qtbot, dlg):
    dlg.guidance_spin.setValue(3.0)
    assert dlg.make_job().calls == 2 * 4 and "8 model calls per output" in dlg.calls_label.text()
    dlg.label_box.setCurrentIndex(0)  # no label: nothing to guide towards, one call per step
    job = dlg.make_job()
    assert job.context is None and job.calls == 4
    assert run_and_wait(qtbot, dlg).nfe == 4
