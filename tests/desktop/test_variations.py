"""Variation seeds and the label mix for one image of Sample & compare, on a tiny model: the pictures against
normal Sample & compare runs (bit for bit), the dialog's strips, cancel, exports, and the column's menu."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("pytestqt")

LABELS = ["face", "person", "animal & nature", "food", "object", "symbol & flag"]
RUN_TIMEOUT_MS = 30000
SEED, OTHER = 5, 77  # the run's seed, and a variation seed
INDEX = 3  # image 3 of 3 rows x 2: row 1, second image (not the batch's first row, nor its last)


def tiny_bundle(net_class=None):
    import torch

    from core.checkpoint import ModelBundle
    from core.schedule import ScheduleConfig
    from core.unet import ContextUnet, UNetConfig

    torch.manual_seed(0)
    net = (net_class or ContextUnet)(UNetConfig(n_feat=8, n_cfeat=len(LABELS), height=16)).eval()
    return ModelBundle(net, ScheduleConfig(), list(LABELS), {"dataset": "test", "step": 0})


def make_job(spec, seed: int = SEED, rows=(0, 1, 2), negative=None):
    from desktop.jobs.sampling import SampleJob

    ctx = np.eye(len(LABELS), dtype=np.float32)[list(rows)]
    return SampleJob([spec], seed, ctx, 2, "fp32", negative)


def drive(gen):
    """Run a control=True generator job on this thread: (items, return value)."""
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as end:
            return items, end.value


def control():
    from desktop.threads import Control

    return Control(threading.Event(), lambda item: None)


def sample_and_compare(bundle, job) -> np.ndarray:
    """The images of a normal Sample & compare run (run_columns, as the panel starts it)."""
    from desktop.jobs.sampling import run_columns

    _, summary = drive(run_columns(bundle, job, control=control()))
    return summary.results[0].images


def pictures(bundle, job, spec, draws, index: int = INDEX) -> list[np.ndarray]:
    from desktop.jobs import variations as vj

    items, summary = drive(vj.draw_pictures(bundle, vj.Source(job, spec, index), draws, control=control()))
    assert not summary.cancelled and summary.pictures == len(draws)
    return [i.image for i in items if isinstance(i, vj.Picture)]


def specs():
    from desktop.jobs.sampling import ColumnSpec

    return {"dpmpp3m karras": ColumnSpec("dpmpp3m", 4, spacing="karras"),
            "ddpm (adds noise)": ColumnSpec("ddpm", 6),
            "ddim eta 0.5, guided": ColumnSpec("ddim", 4, eta=0.5, guidance=2.0)}


@pytest.fixture(scope="module")
def bundle():
    return tiny_bundle()


# --- the job: every picture against a normal run ---------------------------------------------------------

def test_importing_the_dialog_and_its_job_loads_no_torch():
    code = ("import sys; import desktop.panels.variations_dialog, desktop.jobs.variations; "
            "sys.exit(1 if {'torch', 'PIL', 'core.samplers', 'core.editing', 'core.export'} & set(sys.modules) "
            "else 0)")
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root,
                          env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"}).returncode == 0


@pytest.mark.parametrize("name", list(specs()))
def test_strength_0_redraws_the_run_s_own_image_pixel_for_pixel(bundle, name):
    from desktop.jobs import variations as vj

    spec = specs()[name]
    job = make_job(spec, negative=np.eye(len(LABELS), dtype=np.float32)[5] if spec.guidance != 1 else None)
    original = sample_and_compare(bundle, job)[INDEX]
    pics = pictures(bundle, job, spec, [vj.Draw("original", 0)] + vj.variation_draws(OTHER, 0.0, 2))
    for p in pics:
        assert np.array_equal(p, original)  # the same noise, and for DDPM and DDIM eta > 0 the same added noise


def test_strength_1_is_the_variation_seed_s_image_and_between_is_neither(bundle):
    from desktop.jobs import variations as vj

    spec = specs()["dpmpp3m karras"]
    job = make_job(spec)
    own = sample_and_compare(bundle, job)[INDEX]
    theirs = [sample_and_compare(bundle, make_job(spec, seed=OTHER + j))[INDEX] for j in range(2)]
    at_1 = pictures(bundle, job, spec, vj.variation_draws(OTHER, 1.0, 2))
    assert all(np.array_equal(a, b) for a, b in zip(at_1, theirs))  # neighbour j: image k of seed OTHER + j
    assert not np.array_equal(theirs[0], theirs[1])
    (half,) = pictures(bundle, job, spec, vj.variation_draws(OTHER, 0.5, 1))
    assert not np.array_equal(half, own) and not np.array_equal(half, theirs[0])


def test_the_label_mix_runs_from_label_a_s_image_to_label_b_s_from_the_same_noise(bundle):
    from desktop.jobs import variations as vj

    spec = specs()["ddpm (adds noise)"]
    job = make_job(spec)  # image 3 is in row 1: label A = person
    a, b = np.eye(len(LABELS), dtype=np.float32)[[1, 3]]
    draws = vj.mix_draws(a, b)
    assert len(draws) == vj.STRIP == 8
    assert [d.weight for d in draws] == pytest.approx(np.linspace(0, 1, 8))
    assert np.allclose(draws[2].context, (1 - 2 / 7) * a + 2 / 7 * b)
    mix = pictures(bundle, job, spec, draws)
    assert np.array_equal(mix[0], sample_and_compare(bundle, job)[INDEX])
    with_b = make_job(spec, rows=(0, 3, 2))  # the same run with the composer's row 1 set to food
    assert np.array_equal(mix[-1], sample_and_compare(bundle, with_b)[INDEX])
    assert len({m.tobytes() for m in mix}) > 2  # it does morph


def test_use_this_seed_only_where_sample_and_compare_can_draw_the_neighbour():
    from desktop.jobs import variations as vj
    from desktop.jobs.sampling import ColumnSpec

    def seed(spec, strength, compat=False):
        return vj.seed_for_panel(vj.Source(make_job(spec), spec, INDEX), strength, 40, compat)

    dpm = ColumnSpec("dpmpp3m", 10, spacing="karras")
    assert seed(dpm, 1.0) == (40, seed(dpm, 1.0)[1]) and "image 4" in seed(dpm, 1.0)[1]
    for args in ((dpm, 0.5), (ColumnSpec("ddpm", 50), 1.0), (ColumnSpec("ddim", 10, eta=0.3), 1.0),
                 (ColumnSpec("euler_a", 10), 1.0), (dpm, 1.0, True)):
        value, why = seed(*args)
        assert value is None and why.startswith("Not available")


# --- the dialog ----------------------------------------------------------------------------------------------

@pytest.fixture
def state(bundle):
    from desktop.state import AppState

    s = AppState()
    s.set_model(bundle)
    return s


@pytest.fixture
def dlg(qtbot, state):
    from desktop.panels.variations_dialog import VariationsDialog

    d = VariationsDialog(state)
    yield d
    # Not qtbot.addWidget: pytest-qt deletes those before fixtures end, and a deleted dialog is never told its
    # worker has finished, so this wait would time out. Here the worker ends first, then the dialog goes.
    d.cancel()
    qtbot.waitUntil(lambda: not d.is_busy(), timeout=RUN_TIMEOUT_MS)
    d.close()
    d.deleteLater()


def open_and_wait(qtbot, d, bundle, spec, original=None):
    job = make_job(spec)
    with qtbot.waitSignal(d.strip_finished, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda s: s == "mix"):
        d.open_for(bundle, job, spec, INDEX, ["face", "person", "animal & nature"], original)
    qtbot.waitUntil(lambda: not d.is_busy(), timeout=RUN_TIMEOUT_MS)
    return job


def test_the_dialog_redraws_the_image_and_fills_both_strips_of_eight(qtbot, dlg, bundle):
    spec = specs()["dpmpp3m karras"]
    original = sample_and_compare(bundle, make_job(spec))[INDEX]
    open_and_wait(qtbot, dlg, bundle, spec, original)
    assert dlg.isVisible() and not dlg.isModal()
    assert np.array_equal(dlg.redrawn, original) and "identical to the grid's image" in dlg.info.text()
    assert dlg.strip.complete().shape == (8, 16, 16, 3) and dlg.mix_strip.complete().shape == (8, 16, 16, 3)
    assert np.array_equal(dlg.mix_strip.complete()[0], original)  # w = 0 is label A: the image itself
    assert dlg.label_a.text() == "A: person" and dlg.label_b.currentText() == "face"
    assert dlg.vseed.value() == SEED + 1 and "slerp" in dlg.strength.toolTip()
    assert "variation seed 6," in dlg.strip.buttons[0].toolTip()
    before = dlg.strip.complete()
    with qtbot.waitSignal(dlg.strip_finished, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda s: s == "variations"):
        dlg.strength.setValue(0)  # redrawn after a pause: eight copies of the image
    assert all(np.array_equal(p, original) for p in dlg.strip.complete()) and not np.array_equal(before, dlg.strip.complete())


def test_use_this_seed_hands_a_seed_to_sample_and_compare_only_at_strength_1(qtbot, dlg, bundle):
    open_and_wait(qtbot, dlg, bundle, specs()["dpmpp3m karras"])
    assert not dlg.use_seed.isEnabled() and "Pick a neighbour" in dlg.use_note.text()
    dlg.strip.buttons[2].click()
    assert not dlg.use_seed.isEnabled() and "blends two seeds" in dlg.use_note.text()
    dlg.strength.setValue(100)
    assert dlg.use_seed.isEnabled()
    with qtbot.waitSignal(dlg.seed_chosen, timeout=1000) as sig:
        dlg.use_seed.click()
    assert sig.args == [SEED + 1 + 2]


def test_cancel_stops_the_worker_within_one_model_call(qtbot, dlg, bundle, monkeypatch):
    from desktop.jobs import sampling
    from desktop.jobs.sampling import ColumnSpec

    calls, snapshots = [], []
    real = sampling._snapshot

    def counted(b):  # the job samples a private copy of the network: count that copy's calls
        net = real(b)
        net.register_forward_hook(lambda *_: calls.append(time.perf_counter()))
        snapshots.append(net)
        return net

    monkeypatch.setattr(sampling, "_snapshot", counted)
    spec = ColumnSpec("ddpm", 500)
    dlg.open_for(bundle, make_job(spec), spec, INDEX, ["a", "b", "c"])
    qtbot.waitUntil(lambda: len(calls) >= 30, timeout=RUN_TIMEOUT_MS)
    stopped = time.perf_counter()
    dlg.cancel()
    qtbot.waitUntil(lambda: not dlg.is_busy(), timeout=RUN_TIMEOUT_MS)
    assert len([t for t in calls if t > stopped]) <= 1  # at most the call already running
    assert dlg.strip.complete() is None and not dlg.save_gif_button.isEnabled()
    qtbot.wait(2 * 300)  # no restart comes after a cancel
    assert not dlg.is_busy() and len(snapshots) == 1


def test_a_failing_model_gives_a_message_box(qtbot, dlg, dialogs):
    from core.unet import ContextUnet

    class Broken(ContextUnet):
        def forward(self, x, t, c=None):
            raise RuntimeError("a layer failed while sampling")

    spec = specs()["dpmpp3m karras"]
    dlg.open_for(tiny_bundle(Broken), make_job(spec), spec, INDEX, ["a", "b", "c"])
    qtbot.waitUntil(lambda: not dlg.is_busy() and len(dialogs) > 0, timeout=RUN_TIMEOUT_MS)
    assert dialogs[0][0] == "warning" and "a layer failed while sampling" in dialogs[0][2]


def test_gif_export_writes_a_file_and_replaces_one_only_when_the_user_agrees(qtbot, dlg, bundle, dialogs, tmp_path):
    from PIL import Image

    from desktop.jobs import variations as vj

    open_and_wait(qtbot, dlg, bundle, specs()["dpmpp3m karras"])
    path = tmp_path / "mix.gif"
    with qtbot.waitSignal(dlg.export_finished, timeout=RUN_TIMEOUT_MS):
        assert dlg.save_gif(str(path))
    assert not dialogs  # a new file: nothing to ask
    with Image.open(path) as im:
        assert im.is_animated and im.n_frames == 8 + 6  # A to B and back
        assert f'"variation_seeds": "{SEED + 1} to {SEED + 8}"' in im.info["comment"].decode()
    path.write_bytes(b"GIF89a a user's own file")
    dialogs.answer = dialogs.answer.No
    assert not dlg.save_gif(str(path))  # the user said no: nothing written
    qtbot.wait(200)
    assert path.read_bytes() == b"GIF89a a user's own file" and dialogs[-1][0] == "question"
    with pytest.raises(FileExistsError):
        vj.save_mix_gif(str(path), dlg.mix_strip.complete(), vj.mix_captions("a", "b"), "")  # and never silently
    dialogs.answer = dialogs.answer.Yes
    with qtbot.waitSignal(dlg.export_finished, timeout=RUN_TIMEOUT_MS):
        assert dlg.save_gif(str(path))
    with Image.open(path) as im:
        assert im.n_frames == 14


def test_png_export_keeps_the_settings_in_text_chunks(qtbot, dlg, bundle, tmp_path):
    from PIL import Image

    open_and_wait(qtbot, dlg, bundle, specs()["dpmpp3m karras"])
    path = tmp_path / "strips.png"
    with qtbot.waitSignal(dlg.export_finished, timeout=RUN_TIMEOUT_MS):
        assert dlg.save_png(str(path))
    with Image.open(path) as im:
        text = im.text
        assert im.height > 2 * 16 * 4  # both strips, enlarged
    assert text["sampler"] == "dpmpp3m" and text["spacing"] == "karras" and text["seed"] == str(SEED)
    assert text["image"] == "4 of 6 (2 per row)" and text["variation_strength"] == "0.2"
    assert text["label_a"] == "person" and text["label_b"] == "face" and text["software"] == "Diffusion Desk"
    assert '"index": 3' in text["settings"]


# --- the column's "Variations…" ---------------------------------------------------------------------------

COLOURS = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)],
                   np.uint8)


@pytest.fixture
def column(qtbot):
    from core.catalog import SAMPLER_CATALOG
    from desktop.widgets.sampler_column import SamplerColumn

    col = SamplerColumn(list(SAMPLER_CATALOG))
    qtbot.addWidget(col)
    col.resize(520, 640)
    col.show()
    qtbot.waitExposed(col)
    col.set_layout_info(3, ["top row", "bottom row"])  # row names: the grid starts right of them
    col.show_frame(plain_tiles(), plain_tiles())
    return col


def plain_tiles() -> np.ndarray:
    return np.repeat(np.repeat(COLOURS[:, None, None, :], 16, axis=1), 16, axis=2)


@pytest.mark.parametrize("size, stride", [((211, 143), 1), ((517, 333), 3)])  # a fractional zoom; a whole one
def test_the_image_under_the_pointer_is_the_one_painted_there(qtbot, size, stride):
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QColor

    from desktop.widgets.common import ImageGridView, as_grid

    view = ImageGridView()
    qtbot.addWidget(view)
    view.resize(*size)
    view.set_grid(as_grid(plain_tiles(), 3), ["top row", "bottom row"])
    view.show()
    qtbot.waitExposed(view)
    shot, seen = view.grab().toImage(), set()
    for y in range(0, view.height(), stride):
        for x in range(0, view.width(), stride):
            i = view.cell_at(QPoint(x, y))
            colour = QColor(shot.pixel(x, y)).getRgb()[:3]
            painted = next((k for k in range(6) if tuple(COLOURS[k]) == colour), None)
            assert painted == i, (x, y)  # every pixel: the tile painted there, or none (margin, gap, labels)
            seen.add(i)
    assert seen == {None, 0, 1, 2, 3, 4, 5}


def test_right_click_and_double_click_ask_for_that_image_s_variations(qtbot, column, monkeypatch):
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtGui import QContextMenuEvent
    from PySide6.QtWidgets import QApplication

    from desktop.widgets import sampler_column

    view = column._grid_x0
    points = [QPoint(x, y) for y in range(0, view.height(), 5) for x in range(0, view.width(), 5)]
    centre = {i: np.mean([(p.x(), p.y()) for p in points if view.cell_at(p) == i], axis=0) for i in range(6)}
    at = {i: QPoint(int(c[0]), int(c[1])) for i, c in centre.items()}
    got = []
    column.variations_requested.connect(lambda col, index: got.append((col, index)))
    chosen = []
    monkeypatch.setattr(sampler_column, "_choose", lambda parent, text, pos: chosen.append(text) or True)

    def right_click(p):
        QApplication.sendEvent(view, QContextMenuEvent(QContextMenuEvent.Reason.Mouse, p, view.mapToGlobal(p)))

    right_click(at[4])
    assert got == [] and chosen == []  # no result yet: no menu
    column.set_result(SimpleNamespace(spec=column.spec(), seconds=1.0, nfe=4, ms_per_call=250.0))
    right_click(at[4])
    assert got == [(column, 4)] and chosen == ["Variations of image 5…"]
    qtbot.mouseDClick(view, Qt.MouseButton.LeftButton, pos=at[1])
    assert got[-1] == (column, 1)
    monkeypatch.setattr(sampler_column, "_choose", lambda parent, text, pos: False)  # menu dismissed
    right_click(at[2])
    assert len(got) == 2
