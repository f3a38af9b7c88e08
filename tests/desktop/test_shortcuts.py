"""Sample & compare's "make it fast" tools: Tune the steps adds a spacing to the loaded model that every column
offers and that saves with it; Teach a shortcut distils the loaded model with previews, stops, resumes, and its
student samples as "distilled, N calls"."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from toy_data import EMOJI_LABELS, saved_tiny_model, two_row_state  # noqa: E402

TIMEOUT_MS = 120000


@pytest.fixture
def saved_model(tmp_path):
    from core.schedule import ScheduleConfig

    return saved_tiny_model(tmp_path, ScheduleConfig(kind="linear_zsnr", prediction="v"), step=5)


@pytest.fixture
def state(saved_model):
    return two_row_state(saved_model)


@pytest.fixture
def panel(qtbot, state):
    from desktop.panels.sample_panel import SamplePanel

    p = SamplePanel(state)
    qtbot.addWidget(p)
    yield p
    p.shutdown()


def _wait_idle(qtbot, dlg):
    qtbot.waitUntil(lambda: not dlg.is_busy(), timeout=TIMEOUT_MS)


def test_the_ramp_search_adds_its_spacing_and_asks_for_the_data_set_without_one(qtbot, panel, state, monkeypatch,
                                                                                 dialogs, emoji_small):
    import core.step_search as ss

    real = ss.RampSearchConfig
    monkeypatch.setattr(ss, "RampSearchConfig", lambda **kw: real(**{"n": 32, "batch": 32, **kw}))
    dlg = panel.lab.open_tune()
    qtbot.addWidget(dlg)
    assert dlg.method_box.currentData() == "ramp"  # the default: what looks best at 4 to 6 calls
    dlg.calls_spin.setValue(4)
    dlg.run()  # no data set loaded
    _wait_idle(qtbot, dlg)
    assert dialogs and "data set" in dialogs[-1][2] and state.model.schedule_config.named_spacing("tuned-4") is None
    state.set_dataset(emoji_small)
    dlg.run()
    _wait_idle(qtbot, dlg)
    ts = state.model.schedule_config.named_spacing("tuned-4")
    assert ts is not None and len(ts) == 5 and ts[0] == 500 and ts[-1] == 0
    assert "training images" in dlg.note.text()
    assert dlg._tuned["tuned-4"]["distance"] == "data"


def test_tuned_spacing_joins_every_column_holds_its_steps_and_saves_with_the_model(qtbot, panel, state, tmp_path,
                                                                                     monkeypatch, dialogs):
    import core.step_search as ss
    from core.checkpoint import load_checkpoint

    small = dict(trajectories=16, held_out=16, grid=40, batch=32)  # the search's size, not its logic
    real = ss.StepSearchConfig
    monkeypatch.setattr(ss, "StepSearchConfig", lambda **kw: real(**{**small, **kw}))
    dlg = panel.lab.open_tune()
    qtbot.addWidget(dlg)
    dlg.method_box.setCurrentIndex(dlg.method_box.findData("gits"))
    dlg.calls_spin.setValue(3)
    dlg.run()
    assert dlg.is_busy() and not dlg.run_button.isEnabled()
    _wait_idle(qtbot, dlg)
    ts = state.model.schedule_config.named_spacing("tuned-3")
    assert ts is not None and ts[0] == 500 and ts[-1] == 0 and len(ts) == 4
    assert "tuned-3" in dlg.note.text() and "closer" in dlg.note.text()
    col = panel.columns[0]
    i = col.spacing_box.findData("tuned-3")
    assert i >= 0 and col.spacing_box.itemText(i) == "tuned-3 (3 steps)"
    col.set_spec("dpmpp3m", 10)
    col.spacing_box.setCurrentIndex(i)
    assert col.steps_spin.value() == 3 and not col.steps_spin.isEnabled() and col.spec().spacing == "tuned-3"
    col.spacing_box.setCurrentIndex(col.spacing_box.findData("karras"))
    assert col.steps_spin.isEnabled()

    out = tmp_path / "tuned.safetensors"
    dlg.save(str(out))
    qtbot.waitUntil(out.is_file, timeout=TIMEOUT_MS)
    again = load_checkpoint(out)
    assert again.schedule_config.named_spacing("tuned-3") == ts
    assert again.meta["extra"]["tuned"]["tuned-3"]["calls"] == 3
    before = out.read_bytes()
    dlg.save(str(out))  # never over a file
    assert dialogs and "exists" in dialogs[-1][2] and out.read_bytes() == before


def test_shortcut_distils_previews_stops_resumes_and_its_student_samples_as_distilled(qtbot, panel, state, tmp_path,
                                                                                      user_home, saved_model):
    dlg = panel.lab.open_shortcut()
    qtbot.addWidget(dlg)
    dlg.calls_spin.setValue(2)
    dlg.steps_spin.setValue(100)
    dlg.pool_spin.setValue(256)
    saved = []
    dlg.student_saved.connect(saved.append)
    dlg.start()
    qtbot.waitUntil(lambda: dlg.loss_plot.n_points >= 3, timeout=TIMEOUT_MS)
    dlg.stop()
    _wait_idle(qtbot, dlg)
    assert dlg.summary.stopped and 3 <= dlg.summary.step < 100
    assert dlg.resume_button.isEnabled() and saved == [dlg.summary.model_path]
    assert dlg.teacher_view.has_image() and dlg.student_view.has_image()
    assert dlg.teacher_view._grid_shape[:2] == (1, len(EMOJI_LABELS))
    assert Path(dlg.summary.model_path).parent.parent == user_home / "runs"
    dlg.resume()
    _wait_idle(qtbot, dlg)
    assert not dlg.summary.stopped and dlg.summary.step == 100 and "Done" in dlg.note.text()

    with qtbot.waitSignal(panel.model_requested, timeout=TIMEOUT_MS) as got:
        dlg.load_button.click()
    from core.checkpoint import load_checkpoint

    student = load_checkpoint(got.args[0])
    state.set_model(student)
    spec = panel.columns[0].spec()
    assert (spec.sampler, spec.steps, spec.spacing, spec.guidance) == ("ddim", 2, "distilled-2", 1.0)
    assert spec.title == "distilled, 2 calls" and panel.columns[0]._title.text() == "distilled, 2 calls"
    # the other columns, off the student's own steps, say that they draw poorly with it
    assert "distilled student" not in panel.columns[0]._summary.text()
    assert all("other samplers draw poorly" in c._summary.text() for c in panel.columns[1:])
    # the 2-call student can teach a 1-call student what its own two steps draw, with its built-in guidance
    assert dlg.start_button.isEnabled() and dlg.calls_spin.maximum() == 1 and dlg.calls_spin.value() == 1
    assert [dlg.teacher_box.itemData(i) for i in range(dlg.teacher_box.count())] == ["distilled-2"]
    assert not dlg.guidance_spin.isEnabled() and dlg.config()["guidance"] == 1.0
    dlg.steps_spin.setValue(100)
    dlg.start()
    _wait_idle(qtbot, dlg)
    one = load_checkpoint(dlg.summary.model_path)
    assert one.meta["extra"]["distilled"]["calls"] == 1 and "second round" in one.meta["extra"]["distilled"]["method"]
    state.set_model(one)
    assert not dlg.start_button.isEnabled()  # a 1-call student has nothing left to teach
    state.set_model(saved_model)  # an ordinary model again: back to 1-4 calls and guidance, no warnings
    assert dlg.calls_spin.maximum() == 4 and dlg.guidance_spin.isEnabled()
    assert not any("distilled student" in c._summary.text() for c in panel.columns)


def test_learn_from_lists_the_models_tuned_spacings_longer_than_the_student(qtbot, panel, state):
    import dataclasses

    from core.schedule import spaced_timesteps, Schedule

    sched = Schedule(state.model.schedule_config)
    cfg = state.model.schedule_config
    for n in (3, 5):
        cfg = cfg.with_spacing(f"tuned-{n}", spaced_timesteps(n, sched, "karras"))
    # tuned-5 was found by the ramp search, tuned-3 by GITS: only the first is a default teacher
    meta = {**state.model.meta, "extra": {"tuned": {"tuned-5": {"method": "ramp", "error": 1.2},
                                                   "tuned-3": {"calls": 3, "error": 0.2}}}}
    state.set_model(dataclasses.replace(state.model, schedule_config=cfg, meta=meta))
    dlg = panel.lab.open_shortcut()
    qtbot.addWidget(dlg)
    dlg.calls_spin.setValue(4)
    items = [(dlg.teacher_box.itemText(i), dlg.teacher_box.itemData(i)) for i in range(dlg.teacher_box.count())]
    assert items == [("its accurate solver (~24 calls)", "karras"), ("what it draws in 5 calls (tuned-5)", "tuned-5")]
    assert dlg.config()["teacher_spacing"] == "tuned-5"  # the default: the best-scored ramp-tuned spacing
    dlg.calls_spin.setValue(2)  # tuned-3 can teach too, but tuned-5 stays the default
    assert dlg.teacher_box.count() == 3 and dlg.teacher_box.currentData() == "tuned-5"
    dlg.teacher_box.setCurrentIndex(dlg.teacher_box.findData("tuned-3"))
    dlg.teacher_box.activated.emit(dlg.teacher_box.currentIndex())  # the user's pick stays
    dlg.calls_spin.setValue(1)
    assert dlg.config()["teacher_spacing"] == "tuned-3"
    assert "a 4-call student is the better teacher" in dlg.note.text()  # at 1-2 calls, before any run
    dlg.calls_spin.setValue(4)
    assert dlg.note.text() == ""


def test_lab_menu_lists_the_fast_tools(panel):
    texts = [a.text() for a in panel.controls.lab_menu.actions() if not a.isSeparator()]
    assert "Tune the steps…" in texts and "Teach a shortcut…" in texts


def test_the_model_menu_names_a_student_a_shortcut_of_its_teacher(tmp_path, user_home, saved_model):
    from core.training.distill import DistillConfig, Distiller
    from desktop import engine

    d = Distiller(saved_model, DistillConfig(calls=2, trajectories=16, steps=2, batch_size=8, teacher_calls=4,
                                             precision="fp32"), user_home / "runs" / "shortcut2-x")
    for _ in d.run():
        pass
    d.close()
    labels = [label for label, path in engine.model_choices() if "shortcut2-x" in path]
    assert labels and labels[0].startswith("Shortcut shortcut2-x (2 calls, of tiny.safetensors")
