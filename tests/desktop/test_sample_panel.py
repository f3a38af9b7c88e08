"""The Sample & compare tab with a tiny model: columns, shared noise, cancel, scrubber, exports, quality."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from toy_data import EMOJI_LABELS as LABELS  # noqa: E402  (the classifier's labels)
from toy_data import tiny_bundle  # noqa: E402

RUN_TIMEOUT_MS = 30000


def three_rows(guidance: float = 1.0):
    """The first three labels, one row each, as the context composer hands them over."""
    from desktop.state import Composition, ContextRow

    eye = np.eye(len(LABELS)).tolist()
    return Composition([ContextRow(LABELS[i], eye[i]) for i in range(3)], guidance)


@pytest.fixture
def state(emoji_small):
    from desktop.state import AppState

    s = AppState()
    s.set_dataset(emoji_small)
    s.set_model(tiny_bundle())
    s.set_composition(three_rows())
    return s


@pytest.fixture
def panel(qtbot, state):
    from desktop.panels.sample_panel import SamplePanel

    p = SamplePanel(state)
    qtbot.addWidget(p)
    p.per_row_spin.setValue(2)  # 3 rows x 2 = 6 images per column
    p.precision_box.setCurrentIndex(p.precision_box.findData("fp32"))
    p.columns[0].set_spec("ddpm", 12)
    p.columns[1].set_spec("ddim", 6, eta=0.0, guidance=2.0)  # guided: two model calls per step
    p.columns[2].set_spec("dpmpp2m", 4)
    yield p
    p.shutdown()


def run_and_wait(qtbot, panel):
    with qtbot.waitSignal(panel.busy_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda busy: not busy):
        panel.run()
    return panel.summary


def test_panel_import_does_not_load_torch():
    code = ("import sys; import desktop.panels.sample_panel; "
            "sys.exit(1 if 'torch' in sys.modules or any(m.startswith('core.') and m not in "
            "('core.catalog', 'core.schema', 'core.errors') for m in sys.modules) else 0)")  # the torch-free shared list
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, env={"QT_QPA_PLATFORM": "offscreen",
                                                                       "PATH": "/usr/bin:/bin"}).returncode == 0


def test_default_columns_are_ddpm_all_steps_ddim25_dpmpp3m10_karras(qtbot, state):
    from desktop.panels.sample_panel import SamplePanel

    p = SamplePanel(state)
    qtbot.addWidget(p)
    specs = p.specs()
    assert [(s.sampler, s.steps, s.spacing) for s in specs] == [("ddpm", 500, "trailing"), ("ddim", 25, "trailing"),
                                                                ("dpmpp3m", 10, "karras")]
    assert all(s.guidance == 1.0 for s in specs)
    assert p.run_button.isEnabled() and not p.cancel_button.isEnabled()


def test_three_columns_report_nfe_equal_to_steps_times_guidance(qtbot, panel):
    summary = run_and_wait(qtbot, panel)
    assert not summary.cancelled
    res = sorted(summary.results, key=lambda r: r.index)
    assert [r.nfe for r in res] == [12, 12, 4]  # DDIM is guided: 6 steps x 2 calls
    for r in res:
        assert r.images.shape == (6, 16, 16, 3) and r.images.dtype == np.uint8
        assert r.seconds > 0 and r.ms_per_call == pytest.approx(1000 * r.seconds / r.nfe)
        assert len(r.frame_t) == r.spec.steps + 1 and r.frame_t[0] == 500 and r.frame_t[-1] == 0
        assert np.array_equal(r.frames_x[-1], r.images)  # the last stored frame is the result
    assert summary.warmup_seconds > 0  # the warm-up ran, untimed
    table = panel.timing_table
    assert table.rowCount() == 3
    assert [table.item(i, 2).text() for i in range(3)] == ["12", "12", "4"]
    slowest = max(r.seconds for r in res)
    assert table.item(0, 5).text() == f"{slowest / res[0].seconds:.1f}×"
    assert panel.run_button.isEnabled() and panel.trajectory.slider.isEnabled()


def test_composer_guidance_applies_unless_a_column_has_its_own(qtbot, panel, state):
    state.set_composition(three_rows(guidance=3.0))
    specs = panel.specs()
    assert [s.guidance for s in specs] == [3.0, 2.0, 3.0]
    assert [s.steps * s.calls_per_step for s in specs] == [24, 12, 8]


def test_every_column_starts_from_the_same_noise_and_a_seed_repeats_a_run(qtbot, panel):
    first = run_and_wait(qtbot, panel)
    starts = [r.frames_x[0] for r in first.results]
    assert all(np.array_equal(starts[0], s) for s in starts[1:])
    again = run_and_wait(qtbot, panel)
    for a, b in zip(first.results, again.results):
        assert np.array_equal(a.frames_x[0], b.frames_x[0])
        assert np.array_equal(a.images, b.images)  # DDPM's added noise is seeded too
    panel.seed_spin.setValue(panel.seed_spin.value() + 1)
    other = run_and_wait(qtbot, panel)
    assert not np.array_equal(other.results[0].frames_x[0], starts[0])


def test_cancel_stops_within_one_model_call_and_keeps_finished_columns(qtbot, panel, state):
    calls, cancelled_at = [], []
    state.model.net.register_forward_hook(lambda *_: calls.append(time.perf_counter()))
    panel.columns[0].set_spec("dpmpp2m", 3)
    panel.columns[1].set_spec("ddpm", 500)  # long enough to cancel in the middle
    panel.columns[2].set_spec("ddpm", 500)  # as costly: it runs after column 1 (cheapest first, ties in order)
    panel.run()
    qtbot.waitUntil(lambda: len(calls) >= 30, timeout=RUN_TIMEOUT_MS)
    cancelled_at.append(time.perf_counter())
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.is_busy(), timeout=RUN_TIMEOUT_MS)
    after = [t for t in calls if t > cancelled_at[0]]
    assert len(after) <= 1  # at most the call that was already running
    summary = panel.summary
    assert summary.cancelled
    assert [r.index for r in summary.results] == [0]  # the finished first column is kept
    assert panel.columns[0]._save.isEnabled() and not panel.columns[1]._save.isEnabled()
    assert "cancelled" in panel.columns[2]._progress.format()
    assert panel.run_button.isEnabled()


def test_cheap_columns_run_first_and_show_as_soon_as_they_are_ready(qtbot, panel):
    from desktop.jobs.sampling import ColumnSpec, column_order

    assert column_order([ColumnSpec("ddpm", 500), ColumnSpec("ddim", 25), ColumnSpec("dpmpp3m", 10),
                         ColumnSpec("dpmpp2m", 10, guidance=3.0)]) == [2, 3, 1, 0]  # guided 10 = 20 calls
    shown = []
    for c in panel.columns:
        original = c.set_result
        c.set_result = lambda result, c=c, original=original: (shown.append(c.index) if result else None,
                                                               original(result))
    panel.columns[0].set_spec("ddpm", 60)
    panel.columns[1].set_spec("ddim", 25)
    panel.columns[2].set_spec("dpmpp3m", 5)
    summary = run_and_wait(qtbot, panel)
    assert shown == [2, 1, 0]
    assert [r.index for r in summary.results] == [0, 1, 2]  # kept in column order for the tabs and exports


def test_pictures_are_marked_stale_when_the_model_changes(qtbot, panel, state):
    import copy

    run_and_wait(qtbot, panel)
    assert all(not c.stale for c in panel.columns)
    state.set_model(copy.copy(state.model))  # another model (a finished run, a menu choice)
    assert all(c.stale and "model changed" in c._progress.format() for c in panel.columns)
    panel.columns[0].set_spec(*_spec_args(panel.columns[0]))  # touching a setting keeps the model notice
    assert "model changed" in panel.columns[0]._progress.format()
    run_and_wait(qtbot, panel)
    assert all(not c.stale for c in panel.columns)


def _spec_args(column):
    spec = column.spec()
    return spec.sampler, spec.steps


def test_scrubber_shows_noise_at_the_start_and_the_result_at_the_end(qtbot, panel):
    from desktop.widgets.trajectory import BY_CALLS, BY_T, frame_index

    summary = run_and_wait(qtbot, panel)
    slider = panel.trajectory.slider
    assert slider.maximum() == 500 and slider.value() == 500  # by noise level, ends on the result
    ddim = summary.results[1]
    assert frame_index(ddim, 0, BY_T) == 0
    assert frame_index(ddim, 500, BY_T) == len(ddim.frame_t) - 1
    assert ddim.frame_t[frame_index(ddim, 250, BY_T)] >= 250  # the last state at or above t = 250
    panel.view_box.setCurrentIndex(panel.view_box.findData("xt"))
    slider.setValue(0)
    shown = panel.columns[1]._x
    assert np.array_equal(shown, ddim.frames_x[0])
    panel.trajectory.mode_box.setCurrentIndex(panel.trajectory.mode_box.findData(BY_CALLS))
    assert slider.maximum() == 12  # the longest column: DDPM's 12 steps
    slider.setValue(4)
    dpm = summary.results[2]
    assert np.array_equal(panel.columns[2]._x, dpm.images)  # DPM-Solver++ is done after 4 calls
    assert frame_index(summary.results[0], 4, BY_CALLS) == 4
    panel.trajectory.play_button.setChecked(True)
    qtbot.waitUntil(lambda: not panel.trajectory.play_button.isChecked(), timeout=10000)
    assert slider.value() == slider.maximum()


def test_exports_write_png_and_gif_with_settings(qtbot, panel, tmp_path):
    from PIL import Image

    summary = run_and_wait(qtbot, panel)
    exports = {
        "final.png": panel.exports.final_png, "frame.png": panel.exports.frame_png, "anim.gif": panel.exports.gif,
        "column.png": lambda p: panel.exports.column_png(1, p),
    }
    for name, fn in exports.items():
        with qtbot.waitSignal(panel.export_finished, timeout=RUN_TIMEOUT_MS):
            fn(str(tmp_path / name))
    with Image.open(tmp_path / "final.png") as im:
        text = im.text
        assert im.width > 3 * 2 * 16 and im.height > 3 * 16
    assert text["sampler"] == "ddpm, ddim, dpmpp2m" and text["steps"] == "12, 6, 4"
    assert text["guidance"] == "1, 2, 1" and text["eta"] == "-, 0, -"
    assert text["seed"] == str(summary.seed) and text["software"] == "Diffusion Desk"
    assert text["model"] == summary.model and text["nfe"] == "12, 12, 4"
    with Image.open(tmp_path / "column.png") as im:
        assert im.text["sampler"] == "ddim" and im.text["guidance"] == "2"
    with Image.open(tmp_path / "frame.png") as im:
        assert "noise level" in im.text["frame"]
    with Image.open(tmp_path / "anim.gif") as im:
        assert im.is_animated and im.n_frames > 10
        assert str(summary.seed) in im.info["comment"].decode()


def test_schedule_view_marks_each_columns_timesteps(qtbot, panel):
    view = panel.schedule_view
    assert view.marker_counts == [12, 6, 4]  # one tick per model-call step (t = 0 is the result, not a call)
    panel.columns[1].steps_spin.setValue(25)
    assert view.marker_counts == [12, 25, 4]
    view.t_slider.setValue(500)
    assert "t = 500" in view._t_text.text()
    assert view._pair.has_image() and view._strip.has_image()


def test_quality_button_scores_every_column(qtbot, panel):
    pytest.importorskip("core.metrics")
    if not panel.quality_button.isEnabled():
        pytest.skip(panel.quality_button.toolTip())
    panel.quality_n.setValue(60)
    with qtbot.waitSignal(panel.busy_changed, timeout=60000, check_params_cb=lambda busy: not busy):
        panel.measure_quality()
    points = panel.quality_tab.points
    assert sorted(points) == [0, 1, 2]
    for p in points.values():
        assert np.isfinite(p.fid) and p.fid >= 0 and p.n == 60
        assert p.accuracy is not None and 0 <= p.accuracy <= 1  # the model's labels are the classifier's
    assert panel.quality_table.rowCount() == 3


def test_the_sweep_visits_each_samplers_own_step_counts():
    from desktop.jobs import quality as qj
    from desktop.jobs.sampling import ColumnSpec

    calls = lambda specs: [s.calls for s in specs]  # noqa: E731
    assert calls(qj.sweep_specs(ColumnSpec("dpmpp3m", 10), {})) == list(qj.SWEEP_CALLS)
    heun = qj.sweep_specs(ColumnSpec("heun", 10), {})  # two calls a step but one on the last: odd counts only
    assert calls(heun) == [3, 5, 15] and [s.steps for s in heun] == [2, 3, 8]
    zsnr = qj.sweep_specs(ColumnSpec("heun", 10, zero_terminal=True), {})  # and one fewer from pure noise
    assert calls(zsnr) == [2, 4, 6, 8, 10, 20]
    one = qj.sweep_specs(ColumnSpec("ddim", 3, spacing="distilled-4"), {"distilled-4": 4})
    assert [(s.steps, s.spacing) for s in one] == [(4, "distilled-4")]
    guided = qj.sweep_specs(ColumnSpec("ddim", 3, guidance=2.0), {})
    assert calls(guided) == [2 * c for c in qj.SWEEP_CALLS]  # guidance doubles each count


def test_quality_against_calls_draws_a_curve_per_column(qtbot, panel):
    pytest.importorskip("core.metrics")
    if not panel.quality_tab.curves_button.isEnabled():
        pytest.skip(panel.quality_tab.curves_button.toolTip())
    from desktop.jobs import quality as qj

    panel.quality_n.setValue(60)
    panel.columns[0].set_spec("dpmpp3m", 10)
    with qtbot.waitSignal(panel.busy_changed, timeout=120000, check_params_cb=lambda busy: not busy):
        panel.measure_curves()
    curves = panel.quality_tab.curves
    assert sorted(curves) == [0, 1, 2]
    assert [p.spec.calls for p in curves[0]] == list(qj.SWEEP_CALLS)
    assert all(np.isfinite(p.fid) and p.n == 60 for ps in curves.values() for p in ps)
    xs, ys = panel.quality_tab._curve_items[0].getData()
    # in log mode the item holds log10 of the data
    assert len(xs) == len(qj.SWEEP_CALLS) and np.allclose(10 ** ys, [p.fid for p in curves[0]])
    assert panel.quality_tab.plot_tabs.currentIndex() == 1  # the sweep shows its own plot
    assert len(panel.quality_tab.curves_legend.items) == 3
    assert panel.quality_tab.points == {}  # the table's single points are a separate measurement


def test_the_real_vs_real_line_is_named_in_a_legend_clear_of_the_points(panel):
    from desktop.jobs import quality as qj

    tab = panel.quality_tab
    tab.begin([c.spec().title for c in panel.columns])
    tab.on_item(qj.QualityStarted({"floor": 0.6, "n": 500, "mix": "one row per label"}))
    for i, (fid, secs) in enumerate([(0.7, 8.0), (1.4, 0.3), (0.65, 0.1)]):  # a fast point right on the line
        tab.on_item(qj.QualityPoint(i, panel.columns[i].spec(), fid, 0.8, 500, secs))
    assert tab._floor_line.isVisible() and getattr(tab._floor_line, "label", None) is None  # no text on the line
    assert tab.floor_legend.isVisible() and [label.text for _, label in tab.floor_legend.items] == ["real vs real"]
    (x0, x1), (y0, y1) = tab.quality_plot.getPlotItem().viewRange()
    assert y1 >= 1.4 * 1.2 - 1e-6 and x0 < np.log10(0.1) and x1 > np.log10(8.0)


def test_quality_button_disabled_with_reason_when_unavailable(qtbot, state, monkeypatch):
    from desktop import engine
    from desktop.panels.sample_panel import SamplePanel

    monkeypatch.setattr(engine, "quality_available", lambda: (False, "No classifier in this build."))
    p = SamplePanel(state)
    qtbot.addWidget(p)
    assert not p.quality_button.isEnabled()
    assert "No classifier" in p.quality_button.toolTip()


def test_a_failing_model_gives_a_dialog_not_a_traceback(qtbot, state, panel, monkeypatch):
    from core.unet import ContextUnet

    from desktop.panels import sample_panel

    class Broken(ContextUnet):
        def forward(self, x, t, c=None):
            raise RuntimeError("a layer failed while sampling")

    shown = []
    monkeypatch.setattr(sample_panel.QMessageBox, "warning", lambda *a: shown.append(a[2]))
    state.set_model(tiny_bundle(Broken))
    with qtbot.waitSignal(panel.busy_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda busy: not busy):
        panel.run()
    assert len(shown) == 1 and "a layer failed while sampling" in shown[0]
    assert panel.run_button.isEnabled() and not panel.is_busy()


def test_a_course_pth_model_samples_one_row_per_course_label(qtbot, panel, state, tmp_path):
    import torch

    from core.checkpoint import load_checkpoint
    from core.unet import ContextUnet, UNetConfig

    path = tmp_path / "context_model_trained.pth"
    torch.save(ContextUnet(UNetConfig(n_feat=8, n_cfeat=5, height=16, course_compat=True)).state_dict(), path)
    state.set_model(load_checkpoint(path))  # the composer still holds emoji rows (6 labels)
    ctx, names, note = panel._contexts()
    assert ctx.shape == (5, 5) and names == ["hero", "non-hero", "food", "spell", "side-facing"]
    assert "model knows 5" in note
    summary = run_and_wait(qtbot, panel)
    assert [r.images.shape for r in summary.results] == [(10, 16, 16, 3)] * 3


def test_no_model_disables_run(qtbot, state):
    from desktop.panels.sample_panel import SamplePanel

    state.set_model(None)
    p = SamplePanel(state)
    qtbot.addWidget(p)
    assert not p.run_button.isEnabled()
    assert "No model" in p.model_label.text()
    p.run()  # a stray call does nothing
    assert not p.is_busy()


def test_columns_can_be_added_up_to_four_and_removed_down_to_two(qtbot, panel):
    panel.add_button.click()
    assert len(panel.columns) == 4 and not panel.add_button.isEnabled()
    assert len(panel.schedule_view.marker_counts) == 4
    for _ in range(3):
        panel._remove_column(panel.columns[-1])
    assert len(panel.columns) == 2
    assert not panel.columns[0]._remove.isEnabled()
    assert [c.index for c in panel.columns] == [0, 1]


def test_every_catalogue_sampler_is_offered_with_its_summary_and_spacing_reaches_the_run(qtbot, panel):
    from core.catalog import SAMPLER_CATALOG

    col = panel.columns[2]
    assert [col.sampler_box.itemData(i) for i in range(col.sampler_box.count())] == [c.name for c in SAMPLER_CATALOG]
    col.set_spec("heun", 3, spacing="karras")
    assert col._title.text() == "5 calls"  # Heun: two calls per step, one on the last
    assert col.sampler_box.toolTip() == next(c.summary for c in SAMPLER_CATALOG if c.name == "heun")
    assert col.spec().spacing == "karras" and col.spec().title.endswith("karras")
    summary = run_and_wait(qtbot, panel)
    r = summary.results[2]
    assert r.nfe == 5 and r.spec.spacing == "karras"
    assert r.timesteps[0] == 500 and r.timesteps[-1] == 0 and any(t != int(t) for t in r.timesteps)


def test_torch_cpu_out_of_memory_is_said_in_plain_words():
    from desktop.engine import user_message

    err = RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: not enough memory: "
                       "you tried to allocate 98304000000 bytes.")
    msg = user_message(err)
    assert msg.startswith("Not enough memory") and "alloc_cpu" not in msg and "fewer images" in msg


def test_removing_a_column_keeps_the_others_results_and_a_changed_column_is_marked_stale(qtbot, panel):
    summary = run_and_wait(qtbot, panel)
    assert len(summary.results) == 3
    kept = {r.spec.sampler: r.seconds for r in summary.results if r.spec.sampler != "ddim"}
    panel._remove_column(panel.columns[1])  # the DDIM column
    assert [r.index for r in panel.summary.results] == [0, 1]
    assert {r.spec.sampler: r.seconds for r in panel.summary.results} == kept
    assert panel.timing_table.rowCount() == 2
    col = panel.columns[1]  # now the DPM-Solver++ column, its result still shown
    assert not col.stale
    col.set_spec("heun", 3)
    assert col.stale and "settings changed" in col._progress.format() and "gray" in col._result.styleSheet()
    col.set_spec("dpmpp2m", 4)  # back to the settings that made the result
    assert not col.stale


def test_save_dialogs_remember_the_last_folder_and_never_open_in_the_install_folder(user_home, tmp_path):
    from desktop import settings

    root = Path(__file__).resolve().parents[2]
    first = settings.export_dir()
    assert first.is_dir() and root not in first.resolve().parents and first.resolve() != root
    (tmp_path / "grids").mkdir()
    settings.remember_export_dir(str(tmp_path / "grids" / "a.png"))
    assert settings.export_dir() == tmp_path / "grids"


def test_gif_export_shares_one_palette_and_stays_small(tmp_path):
    from desktop.jobs import export as ex

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    frames = [[[np.clip(base.astype(int) + k, 0, 255).astype(np.uint8)]] for k in range(60)]
    path = ex.export_gif(str(tmp_path / "a.gif"), frames, ["DDIM"], 3, ["a", "b"], "settings",
                         [f"{k}" for k in range(60)])
    from PIL import Image

    with Image.open(path) as im:
        assert im.n_frames == 60
    assert Path(path).stat().st_size < 2_000_000


def test_the_empty_quality_chart_has_a_readable_range(panel):
    (x0, x1), (y0, y1) = panel.quality_tab.quality_plot.getPlotItem().viewRange()
    assert (x0, x1) == pytest.approx((-1, 2)) and (y0, y1) == pytest.approx((0, 10))


# --- "Guide with": no label (CFG), another label, or a weaker model (autoguidance) ---------------------

def test_composition_resolves_its_guide_for_the_model_labels():
    from desktop.state import Composition

    neg, guide, note = Composition(guide_with="label:Food").guide_for(LABELS)
    assert neg.tolist() == [0, 0, 0, 1, 0, 0] and guide == "" and "food" in note.lower()  # by name, any case
    neg, guide, note = Composition(guide_with="label:fruit").guide_for(LABELS)
    assert neg is None and guide == "" and "no label fruit" in note
    assert Composition(guide_with="model:/x/g.safetensors").guide_for(LABELS)[:2] == (None, "/x/g.safetensors")
    assert Composition().guide_for(LABELS) == (None, "", "")


def _job(columns, negative=None, guide_model=""):
    from desktop.jobs import sampling as sw

    ctx = np.eye(len(LABELS), dtype=np.float32)[:3]
    return sw.SampleJob(columns, 5, ctx, 2, "fp32", negative, guide_model)


def _images(bundle, job):
    from desktop.jobs import sampling as sw
    import threading

    from desktop.threads import Control

    gen = sw.run_columns(bundle, job, control=Control(threading.Event(), lambda item: None))
    results = {}
    try:
        while True:
            item = next(gen)
            if isinstance(item, sw.ColumnResult):
                results[item.index] = item
    except StopIteration:
        pass
    return [results[i] for i in sorted(results)]


def test_a_guide_equal_to_the_model_gives_the_unguided_images_and_zeros_give_cfg(tmp_path):
    from core.checkpoint import save_checkpoint
    from desktop.jobs import sampling as sw

    bundle = tiny_bundle()
    path = save_checkpoint(tmp_path / "same.safetensors", bundle.net.state_dict(), unet_config=bundle.net.config,
                           schedule_config=bundle.schedule_config, label_names=LABELS)
    plain = sw.ColumnSpec("dpmpp2m", 4)
    guided = sw.ColumnSpec("dpmpp2m", 4, guidance=3.0)
    unguided = _images(bundle, _job([plain]))[0]
    self_guided = _images(bundle, _job([guided], guide_model=str(path)))[0]
    assert self_guided.nfe == 8  # two passes per step, as CFG
    assert np.array_equal(self_guided.images, unguided.images)  # out_u == out_c: guidance changes nothing
    cfg = _images(bundle, _job([guided]))[0]
    against_zero = _images(bundle, _job([guided], negative=np.zeros(len(LABELS), np.float32)))[0]
    assert np.array_equal(cfg.images, against_zero.images)  # "no label" is the all-zero negative
    away_from_food = _images(bundle, _job([guided], negative=np.eye(len(LABELS), dtype=np.float32)[3]))[0]
    assert not np.array_equal(away_from_food.images, cfg.images)


def test_the_composer_offers_each_label_and_publishes_the_choice(qtbot, state):
    from desktop.widgets.composer import Composer

    comp = Composer(state)
    qtbot.addWidget(comp)
    comp.set_label_names(LABELS)
    items = [comp.guide_combo.itemData(i) for i in range(comp.guide_combo.count())]
    assert items[0] == "" and [f"label:{n}" for n in LABELS] == items[1:1 + len(LABELS)]
    comp.set_shipped_guide("/x/default.guide.safetensors")
    assert comp.guide_combo.findData("model:/x/default.guide.safetensors") >= 0
    comp.guide_combo.setCurrentIndex(comp.guide_combo.findData("label:food"))
    comp.publish()
    assert state.composition.guide_with == "label:food"
    assert comp.saved_state()["guide_with"] == "label:food"
    comp.set_label_names([n for n in LABELS if n != "food"])  # the label goes: back to "no label"
    assert comp.guide_with() == ""


def test_a_row_of_its_own_not_label_guides_only_that_row_away_from_it(qtbot, state):
    from desktop.jobs import sampling as sw
    from desktop.widgets.composer import Composer

    comp = Composer(state)
    qtbot.addWidget(comp)
    comp.set_label_names(LABELS)
    comp.guide_combo.setCurrentIndex(comp.guide_combo.findData("label:face"))
    food, other = LABELS.index("food"), LABELS.index("person")
    comp.rows[other].set_negative("food")
    assert comp.rows[other].title.text() == "person, not food"
    comp.publish()
    composition = state.composition
    assert [r.negative for r in composition.rows] == ["" if i != other else "food" for i in range(len(LABELS))]
    assert composition.rows[other].name == "person, not food"  # the grid's row title
    ctx = composition.matrix(len(LABELS))
    rows = composition.row_negatives(LABELS, ctx)
    eye = np.eye(len(LABELS), dtype=np.float32)
    assert np.array_equal(rows[other], eye[food])  # its own
    assert all(np.array_equal(rows[i], eye[LABELS.index("face")]) for i in range(len(LABELS)) if i != other)
    assert composition.row_negatives(LABELS, ctx[:2]) is None  # not the composer's rows: "Guide with" only
    job = sw.SampleJob([sw.ColumnSpec("ddim", 4, guidance=3.0)], 0, ctx, 2, "fp32", eye[0], "", rows)
    batch = job.negative_batch()
    assert batch.shape == (2 * len(LABELS), len(LABELS)) and np.array_equal(batch[2 * other + 1], eye[food])
    # the quality measure's contexts (one label each, any order) find their composer row's negative
    quality = job.negative_batch(eye[[other, food, other]])
    assert np.array_equal(quality, eye[[food, LABELS.index("face"), food]])
    saved = comp.saved_state()
    assert saved["negatives"][other] == "food"
    again = Composer(state)
    qtbot.addWidget(again)
    again.restore_state(saved)
    again.set_label_names(LABELS)
    assert again.rows[other].negative() == "food" and again.rows[0].negative() == ""
    renamed = [n if n != "food" else "meal" for n in LABELS]
    again.set_label_names(renamed)  # a rename follows into the "not" label
    assert again.rows[other].negative() == "meal"
    again.set_label_names([n for n in renamed if n != "meal"])  # a deleted label is nobody's "not" any more
    assert all(r.negative() == "" for r in again.rows)


def test_teaching_raises_the_guidance_to_what_a_taught_label_needs_and_never_lowers_it(qtbot, state):
    from core.catalog import TAUGHT_GUIDANCE
    from desktop.widgets.composer import Composer

    comp = Composer(state)
    qtbot.addWidget(comp)
    comp.set_label_names(LABELS)
    assert comp.guidance_spin.value() == 1.0 and comp.raise_guidance(TAUGHT_GUIDANCE)
    assert state.composition.guidance == TAUGHT_GUIDANCE  # published at once: the run's live figure reads it
    comp.guidance_spin.setValue(TAUGHT_GUIDANCE + 1)
    assert not comp.raise_guidance(TAUGHT_GUIDANCE) and comp.guidance_spin.value() == TAUGHT_GUIDANCE + 1


def test_a_row_not_label_samples_as_the_same_negative_for_the_whole_run():
    from desktop.jobs import sampling as sw

    bundle = tiny_bundle()
    eye = np.eye(len(LABELS), dtype=np.float32)
    guided = sw.ColumnSpec("dpmpp2m", 4, guidance=3.0)
    food = eye[LABELS.index("food")]
    everyone = _images(bundle, _job([guided], negative=food))[0]
    job = _job([guided])
    per_row = _images(bundle, sw.SampleJob(job.columns, job.seed, job.context, job.per_row, job.precision, None, "",
                                           np.repeat(food[None], len(job.context), axis=0)))[0]
    assert np.array_equal(per_row.images, everyone.images)  # every row "not food" is "Guide with: not food"
    zeros = np.zeros((len(job.context), len(LABELS)), np.float32)
    cfg = _images(bundle, job)[0]
    assert np.array_equal(_images(bundle, sw.SampleJob(job.columns, job.seed, job.context, job.per_row, job.precision,
                                                       None, "", zeros))[0].images, cfg.images)


def test_the_sampler_columns_come_back_next_session_and_bad_saved_ones_are_ignored(qtbot, state, user_home):
    from desktop import settings
    from desktop.panels.sample_panel import DEFAULT_COLUMNS, SamplePanel

    first = SamplePanel(state)
    qtbot.addWidget(first)
    first.columns[1].set_spec("ipndm", 5, spacing="karras")
    first.columns[2].set_spec("ddim", 8, eta=0.5, guidance=2.5)
    first.shutdown()
    second = SamplePanel(state)
    qtbot.addWidget(second)
    specs = second.specs()
    assert [(s.sampler, s.steps, s.spacing) for s in specs[:2]] == [("ddpm", 500, "trailing"), ("ipndm", 5, "karras")]
    assert (specs[2].sampler, specs[2].steps, specs[2].eta, specs[2].guidance) == ("ddim", 8, 0.5, 2.5)
    assert second.columns[2].own_guidance.isChecked() and not second.columns[1].own_guidance.isChecked()
    for bad in ([{"sampler": "nope", "steps": 5}] * 2, "not a list", [{"sampler": "ddim", "steps": True}] * 2):
        settings.save_json("sample/columns", bad)
        third = SamplePanel(state)
        qtbot.addWidget(third)
        assert [s.sampler for s in third.specs()] == [c[0] for c in DEFAULT_COLUMNS]
    settings.qsettings().setValue("sample/columns", "{not json")
    fourth = SamplePanel(state)
    qtbot.addWidget(fourth)
    assert len(fourth.specs()) == len(DEFAULT_COLUMNS)


def test_speed_ups_come_from_an_alternating_per_call_calibration(qtbot, panel):
    from desktop.jobs import sampling as sw

    summary = run_and_wait(qtbot, panel)
    cal = summary.calibrated_ms
    assert set(cal) == {0, 1, 2} and all(v > 0 for v in cal.values())
    head = panel.speed_tab.timing_table.horizontalHeaderItem(4)
    assert head.text() == "ms per call (calibrated)" and "in turn" in head.toolTip()
    rows = {panel.speed_tab.timing_table.item(r, 0).text(): r for r in range(3)}
    by_index = {res.index: res for res in summary.results}
    cost = {i: by_index[i].nfe * cal[i] for i in cal}
    for i, res in by_index.items():
        text = panel.speed_tab.timing_table.item(rows[res.spec.title], 5).text()
        assert text == f"{max(cost.values()) / cost[i]:.1f}×"
    # the calibration times each column's own batch: guided DDIM runs two passes a call
    job = sw.SampleJob([sw.ColumnSpec("ddim", 2), sw.ColumnSpec("ddim", 2, guidance=3.0)], 0,
                       np.eye(len(LABELS), dtype=np.float32)[:2], 4, "fp32")
    ms = sw.calibrate_calls(tiny_bundle().net, job, "fp32", rounds=2)
    assert set(ms) == {0, 1}


def test_the_status_bar_and_the_header_name_the_same_runtime_after_a_run(qtbot, panel):
    seen = []
    panel.state.runtime_changed.connect(seen.append)
    run_and_wait(qtbot, panel)
    assert seen and seen[-1] == panel.summary.runtime_label
    assert panel.summary.runtime_label in panel.model_bar.runtime_label.text()


def test_a_column_guided_only_inside_an_interval_makes_one_call_outside_it(monkeypatch):
    """The column's interval and rescale reach the sampler: a 0.1-0.8 interval guides only the steps whose t/T
    lies inside it (one pass elsewhere), and an interval of 0 to 1 is plain CFG bit for bit."""
    import core.samplers
    from core.schedule import Schedule, spaced_timesteps
    from desktop.jobs import sampling as sw

    seen, real = [], core.samplers.generate

    def spy(*args, **kwargs):
        seen.append((kwargs["guidance_interval"], kwargs["guidance_rescale"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(core.samplers, "generate", spy)
    bundle = tiny_bundle()
    everywhere = sw.ColumnSpec("ddim", 8, guidance=3.0)
    inside = sw.ColumnSpec("ddim", 8, guidance=3.0, guidance_interval=(0.1, 0.8))
    rescaled = sw.ColumnSpec("ddim", 8, guidance=3.0, guidance_interval=(0.1, 0.8), guidance_rescale=0.5)
    full, part, part_rescaled = _images(bundle, _job([everywhere, inside, rescaled]))
    assert sorted(seen) == [((0.0, 1.0), 0.0), ((0.1, 0.8), 0.0), ((0.1, 0.8), 0.5)]
    sched = Schedule(bundle.schedule_config)
    ts = spaced_timesteps(8, sched, "trailing")[:-1]  # DDIM calls the model once at each step's start
    inside_steps = sum(0.1 <= t / sched.T <= 0.8 for t in ts)
    assert 0 < inside_steps < 8
    assert full.nfe == 16 and part.nfe == 8 + inside_steps and part_rescaled.nfe == part.nfe
    assert inside.calls == 16  # before the run the column can only promise at most this
    plain = _images(bundle, _job([sw.ColumnSpec("ddim", 8, guidance=3.0, guidance_interval=(0.0, 1.0))]))[0]
    assert np.array_equal(plain.images, full.images)
    assert inside.title.endswith("guided 0.1-0.8") and rescaled.title.endswith("guided 0.1-0.8, rescale 0.5")
    assert "guided" not in sw.ColumnSpec("ddim", 8, guidance=1.0, guidance_interval=(0.1, 0.8)).title


def test_the_guidance_row_shows_while_guided_and_its_interval_keeps_lo_below_hi(qtbot, state, user_home):
    from desktop.panels.sample_panel import SamplePanel

    p = SamplePanel(state)
    qtbot.addWidget(p)
    col = p.columns[2]
    assert col._guidance_row.isHidden()  # unguided: nothing to shape
    col.set_spec("dpmpp3m", 10, guidance=2.0, spacing="karras")
    assert not col._guidance_row.isHidden()
    assert col._title.text() == "20 calls"
    col.interval_lo.setValue(0.1)
    col.interval_hi.setValue(0.8)
    assert col.spec().guidance_interval == (0.1, 0.8)
    assert col._title.text() == "≤ 20 calls"  # the steps outside the interval make one call
    assert col.interval_lo.maximum() == pytest.approx(0.75) and col.interval_hi.minimum() == pytest.approx(0.15)
    col.interval_lo.setValue(0.95)  # clamped one step below hi
    assert col.spec().guidance_interval == (0.75, 0.8)
    col.rescale_spin.setValue(0.5)
    assert col.spec().guidance_rescale == 0.5
    col.own_guidance.setChecked(False)  # back to the composer's guidance, 1 here
    assert col._guidance_row.isHidden() and col._title.text() == "10 calls"
    col.own_guidance.setChecked(True)
    col.guidance_spin.setValue(2.0)
    p.shutdown()  # saves the columns for the next session
    again = SamplePanel(state)
    qtbot.addWidget(again)
    spec = again.specs()[2]
    assert (spec.guidance, spec.guidance_interval, spec.guidance_rescale) == (2.0, (0.75, 0.8), 0.5)
    assert not again.columns[2]._guidance_row.isHidden()
    again.shutdown()


def test_saved_guidance_intervals_are_checked_and_a_damaged_one_guides_everywhere():
    from desktop.widgets.column_strip import valid_column_settings

    base = {"sampler": "ddim", "steps": 10, "eta": 0.0, "guidance": 2.0}
    for bad in ([0.8, 0.1], [0.5, 0.5], [-0.1, 0.5], [0.1, 1.5], [0.1], "0.1-0.8", [True, 0.8], [float("nan"), 1.0],
                None):
        cols = valid_column_settings([{**base, "interval": bad, "rescale": 2.0}] * 2, {"ddim"})
        assert [c["interval"] for c in cols] == [[0.0, 1.0]] * 2 and [c["rescale"] for c in cols] == [0.0] * 2
    cols = valid_column_settings([{**base, "interval": [0.1, 0.8], "rescale": 0.5}] * 2, {"ddim"})
    assert cols[0]["interval"] == [0.1, 0.8] and cols[0]["rescale"] == 0.5
    old = valid_column_settings([base] * 2, {"ddim"})  # saved before intervals existed
    assert old[0]["interval"] == [0.0, 1.0] and old[0]["rescale"] == 0.0
