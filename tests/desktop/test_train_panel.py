"""The Train tab with a real (tiny) training run on a worker thread."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from core.config import TrainConfig, preset_dicts

pytest.importorskip("pytestqt")


@pytest.fixture
def panel(qtbot, user_home, dialogs, emoji_small, tiny_config):
    from desktop.state import AppState
    from desktop.panels.train_panel import TrainPanel

    state = AppState()
    p = TrainPanel(state)
    p.train_threads = 1  # the test machine is shared; one torch thread avoids oversubscription
    qtbot.addWidget(p)
    p.set_presets(preset_dicts())
    state.set_dataset(emoji_small)
    p.apply_config(tiny_config)
    p.preview_every.setValue(10)
    p.models = []
    state.model_changed.connect(p.models.append)
    yield p
    if p.is_busy():  # never leave a thread running past the test
        p.stop()
        qtbot.waitUntil(lambda: not p.is_busy(), timeout=20000)


def test_presets_fill_the_form_and_edits_switch_to_custom(panel):
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findData("course"))
    assert panel.form.widgets["n_feat"].value() == 64
    assert panel.preset_combo.currentData() == "course"
    panel.form.widgets["batch_size"].setValue(50)
    assert panel.preset_combo.currentData() == "custom"
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findData("quick"))
    values = panel.form.values()
    assert values["n_feat"] == 32 and values["batch_size"] == 100
    assert TrainConfig(**values).steps == values["steps"]  # the form binds to TrainConfig


def test_every_field_has_a_tooltip(panel):
    for key, w in panel.form.widgets.items():
        assert len(w.toolTip()) > 40, key


def test_tiny_run_plots_loss_previews_and_publishes_the_model(qtbot, panel, tiny_config):
    assert panel.start()
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=30000)
    steps = tiny_config["steps"]
    assert panel.loss_plot.n_points == steps
    x, y = panel.loss_plot.raw.getOriginalDataset()
    assert len(x) == steps and np.all(np.isfinite(y)) and x[-1] == steps
    assert panel.loss_plot.redraws >= 1
    # the smoothed loss falls over a run (from ~1 at the start)
    smooth = panel.loss_plot.smooth_y.view()
    assert smooth[-1] < smooth[0]
    # previews every 10 steps plus a final one, one row per label
    assert [s for s, _ in panel.previews] == [10, 20, 30]
    grid = panel.previews[-1][1]
    assert grid.shape == (6, 6, 16, 16, 3) and grid.dtype == np.uint8
    assert panel.preview_view.has_image()
    assert panel.progress.value() == steps
    assert "Finished" in panel.status.text()
    # the finished run is the current model, saved in the run folder under the user data folder
    bundle = panel.models[-1]
    assert bundle.meta["live"] is False and bundle.meta["step"] == steps
    run = Path(bundle.meta["run_dir"])
    assert run.parent.name == "runs" and (run / "model.safetensors").is_file() and (run / "loss.csv").is_file()


def test_progress_signals_are_throttled(qtbot, panel, monkeypatch):
    from desktop.jobs import training

    monkeypatch.setattr(training, "PROGRESS_INTERVAL_S", 10.0)  # one emit per 10 s: only the last step flushes
    batches = []
    panel.start()
    panel._worker.progress.connect(lambda item: isinstance(item, list) and batches.append(len(item)))
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=30000)
    assert sum(batches) >= 1 and len(batches) <= 8  # previews and the end flush, not one signal per step
    assert panel.loss_plot.n_points == 30


@pytest.mark.slow
def test_pause_publishes_live_model_resume_continues_stop_saves(qtbot, panel, tiny_config):
    panel.apply_config({**tiny_config, "steps": 5000, "checkpoint_every": 1000})
    panel.preview_every.setValue(0)
    panel.start()
    qtbot.waitUntil(lambda: panel.loss_plot.n_points >= 3, timeout=20000)
    panel.pause()
    qtbot.waitUntil(lambda: panel.run_state == "paused", timeout=10000)
    live = panel.models[-1]
    assert live.meta["live"] is True
    n = panel.loss_plot.n_points
    assert live.meta["step"] == n
    qtbot.wait(400)
    assert panel.loss_plot.n_points == n  # no steps while paused
    panel.resume()
    qtbot.waitUntil(lambda: panel.loss_plot.n_points >= n + 3, timeout=20000)
    panel.stop()
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=20000)
    stopped = panel.models[-1]
    assert stopped.meta["live"] is False
    saved_step = stopped.meta["step"]
    assert saved_step == panel.loss_plot.n_points
    from core.checkpoint import read_metadata
    run = Path(stopped.meta["run_dir"])
    assert read_metadata(run / "model.safetensors")["step"] == saved_step
    assert "Stopped" in panel.status.text()

    # Resume continues the stopped run from its checkpoint, with the old curve kept
    assert panel.resume_btn.isEnabled()
    panel.resume()
    qtbot.waitUntil(lambda: panel.loss_plot.n_points >= saved_step + 3, timeout=20000)
    steps = panel.loss_plot.steps.view()
    assert np.array_equal(steps[:saved_step + 3], np.arange(1, saved_step + 4))
    panel.stop()
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=20000)


def test_nan_loss_shows_a_dialog_that_says_what_was_kept(qtbot, panel, monkeypatch):
    import torch

    from core.training import trainer as train
    from desktop.panels import train_panel

    real_step = train.Trainer._train_step

    def poisoned(self):
        losses, ts = real_step(self)
        return (losses * float("nan") if self.step >= 12 else losses), ts

    monkeypatch.setattr(train.Trainer, "_train_step", poisoned)
    shown = []
    monkeypatch.setattr(train_panel.QMessageBox, "warning", lambda *a, **k: shown.append(a[1:3]))
    panel.start()
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=20000)
    assert len(shown) == 1
    title, text = shown[0]
    assert "NaN" in text and "kept" in text
    assert "error" in panel.status.text()
    assert torch.isfinite(torch.tensor(panel.loss_plot.loss.view())).all()


def test_bad_settings_are_refused_with_a_dialog(qtbot, panel, monkeypatch):
    from desktop.panels import train_panel

    shown = []
    monkeypatch.setattr(train_panel.QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    panel.form.widgets["n_feat"].setValue(12)  # not a multiple of 8: TrainConfig refuses it
    assert not panel.start()
    assert shown and "multiple of 8" in shown[0]
    assert panel.run_state == "idle" and not panel.is_busy()


def test_resume_from_a_folder_of_another_data_set_is_refused(qtbot, panel, monkeypatch, emoji_small):
    from desktop.panels import train_panel

    panel.start()
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=30000)
    run = panel.models[-1].meta["run_dir"]
    panel.state.set_dataset(emoji_small.subset(np.arange(20)))
    shown = []
    monkeypatch.setattr(train_panel.QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    assert not panel.resume_from_folder(run, total_steps=40)
    assert "emoji16" in shown[0]


def test_loss_plot_stays_cheap_for_long_runs(qtbot):
    from desktop.widgets.loss_plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(800, 400)
    plot.show()
    n = 200_000  # ~8 hours at 7 steps/s
    from core.training import StepMetrics

    metrics = [StepMetrics(s, n, 1 / np.sqrt(s), 1e-3, 0.0, 0.0, (1.0, 1.0, 1.0)) for s in range(1, n + 1)]
    plot.append(metrics[:1000])
    plot.append(metrics[1000:])
    t = time.perf_counter()
    plot.refresh()
    plot.plot.grab()
    assert time.perf_counter() - t < 2.0
    assert plot.n_points == n
    (x0, x1), (y0, y1) = plot.item.vb.viewRange()
    assert x0 <= 1 and x1 >= n and y1 >= 1.0  # the view follows all the data
    plot.set_log_scale(True)
    (_, _), (ly0, ly1) = plot.item.vb.viewRange()
    assert ly0 < np.log10(1 / np.sqrt(n)) and ly1 >= 0  # log10 of the loss range
    assert not plot.item.getAxis("right").logMode  # the learning rate axis stays linear


def test_thread_tuner_keeps_all_cores_when_they_are_faster_and_drops_to_one_under_load():
    from core.threads import ThreadTuner

    def run(tuner, seconds_for, steps):
        used = []
        for i in range(steps):
            n = tuner.threads_for(i)
            used.append(n)
            tuner.record(i, seconds_for(n))
        return used

    free = ThreadTuner(2, every=50, sample=4, warmup=2)
    used = run(free, lambda n: 0.1 if n == 2 else 0.17, 120)
    assert free.best == 2 and used.count(1) == 3 * 4  # one trial window of 4 steps per 50
    loaded = ThreadTuner(2, every=50, sample=4, warmup=2)
    used = run(loaded, lambda n: 2.0 if n == 2 else 0.3, 120)
    assert loaded.best == 1 and used[20:50] == [1] * 30
    noisy = ThreadTuner(2, every=50, sample=4, warmup=2)
    run(noisy, lambda n: 0.1 if n == 2 else 0.095, 120)  # a 5% difference is noise: no switch
    assert noisy.best == 2
    assert ThreadTuner(1).threads_for(7) == 1


def test_tuned_threads_sets_torch_threads_from_the_step_times(monkeypatch):
    import torch

    from core.threads import ThreadTuner, TunedThreads

    before = torch.get_num_threads()
    try:
        tuner = ThreadTuner(2, every=20, sample=2, warmup=1)
        seen = []
        monkeypatch.setattr(tuner, "record", lambda i, sec: seen.append(i))
        tuned = TunedThreads(tuner)
        counts = [tuned.tick() for _ in range(20)]
        assert seen == list(range(20))  # every step is timed
        assert counts[:6] == [2, 2, 1, 1, 2, 2] and torch.get_num_threads() == 2  # trial window: steps 3-4 at 1
    finally:
        torch.set_num_threads(before)


def test_an_edited_set_is_offered_first_and_going_back_to_the_original_asks(qtbot, panel, dialogs, emoji_small):
    import dataclasses

    from PySide6.QtWidgets import QMessageBox

    names = list(emoji_small.label_names) + ["fruit"]
    labels = np.concatenate([emoji_small.labels, np.zeros((emoji_small.n, 1), np.float32)], 1)
    edited = dataclasses.replace(emoji_small, name="emoji16-edited", source="", label_names=names, labels=labels)
    panel.state.set_dataset(edited)
    combo = panel.dataset_combo
    assert combo.currentIndex() == 0 and combo.itemData(0) == "__current__"
    assert combo.itemText(0) == f"Current: emoji16-edited ({len(names)} labels — edited)"
    requested = []
    panel.dataset_requested.connect(requested.append)
    builtin = combo.findData("emoji16")
    dialogs.answer = QMessageBox.StandardButton.No
    panel.dataset_box.activated(builtin)
    assert requested == [] and dialogs[-1][0] == "question" and combo.currentIndex() == 0  # kept the edits
    dialogs.answer = QMessageBox.StandardButton.Yes
    panel.dataset_box.activated(builtin)
    assert requested == ["emoji16"]


@pytest.fixture
def shipped(tiny_config, emoji_small, tmp_path, monkeypatch):
    """A tiny trained model standing in for the shipped default model."""
    from core.training import Trainer, TrainConfig
    from desktop import engine

    base = Trainer(emoji_small, TrainConfig(**{**tiny_config, "steps": 2}), tmp_path / "shipped", device="cpu")
    for _ in base.run():
        pass
    base.close()
    path = str(tmp_path / "shipped" / "model.safetensors")
    monkeypatch.setattr(engine, "default_checkpoint", lambda: path)
    return path


def test_fine_tune_preset_starts_from_the_shipped_model(qtbot, panel, tiny_config, shipped):
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findData("finetune"))
    assert panel.start_from.currentData() == "<shipped>" and panel.init_checkpoint() == shipped
    panel.apply_config({**tiny_config, "steps": 5})
    panel.start_from.setCurrentIndex(panel.start_from.findData("<shipped>"))
    assert panel.start()
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=30000)
    bundle = panel.models[-1]
    from core.checkpoint import read_metadata

    meta = read_metadata(Path(bundle.meta["run_dir"]) / "model.safetensors")
    assert meta["train_config"]["init"] == shipped and meta["step"] == 5


def test_smoothed_loss_is_bias_corrected_from_the_first_step():
    from desktop.widgets.loss_plot import ema_smooth

    state = [0.0, 0]
    out = ema_smooth(np.array([0.15, 0.15, 0.15]), state)
    assert np.allclose(out, 0.15)  # an uncorrected EMA would start at 0.003
    more = ema_smooth(np.array([np.nan, 0.25]), state)  # continued across calls, NaN skipped
    b = 0.98
    avg3 = 0.15 * (1 - b**3)  # the raw EMA after three steps of 0.15
    assert more[0] == pytest.approx(0.15)  # a NaN step shows the smoothed value so far
    assert more[1] == pytest.approx((b * avg3 + (1 - b) * 0.25) / (1 - b**4))


def test_teach_starts_the_fine_tune_from_the_shipped_model(qtbot, panel, tiny_config, shipped):
    presets = panel.settings_box.presets
    presets["finetune"] = {**presets["finetune"], **tiny_config, "steps": 3, "batch_size": 8}
    assert panel.teach()
    assert panel.preset_combo.currentData() == "finetune" and panel.start_from.currentData() == "<shipped>"
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=30000)
    assert panel.models[-1].meta["step"] == 3


@pytest.mark.slow
def test_resuming_a_stopped_run_keeps_its_earlier_previews(qtbot, panel, tiny_config):
    panel.apply_config({**tiny_config, "steps": 5000, "checkpoint_every": 1000})
    panel.preview_every.setValue(5)
    panel.start()
    qtbot.waitUntil(lambda: len(panel.preview_strip.previews) >= 2, timeout=60000)
    panel.stop()
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=20000)
    before = [s for s, _ in panel.preview_strip.previews]  # every 5 steps, and one at the stop
    saved = panel.models[-1].meta["step"]
    panel.resume()
    qtbot.waitUntil(lambda: len(panel.preview_strip.previews) > len(before), timeout=60000)
    after = [s for s, _ in panel.preview_strip.previews]
    assert after[:len(before)] == before and after[len(before)] > saved
    panel.stop()
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=20000)


def test_a_short_stopped_run_does_not_replace_the_sampling_model_nor_become_the_remembered_one():
    from types import SimpleNamespace

    from desktop.main_window import _worth_remembering
    from desktop.panels.train_panel import replaces_sampling_model

    good, demo = SimpleNamespace(meta={"step": 20000}), SimpleNamespace(meta={"step": 99})
    assert not replaces_sampling_model("stopped", demo, good)
    assert replaces_sampling_model("finished", demo, good)  # a run that ran to its end is what was asked for
    assert replaces_sampling_model("ceiling", demo, good)  # a fine-tune that stopped because it had learnt
    assert replaces_sampling_model("stopped", SimpleNamespace(meta={"step": 25000}), good)
    assert replaces_sampling_model("stopped", demo, None)
    assert not _worth_remembering(SimpleNamespace(meta={"step": 99, "auto": True}))
    assert _worth_remembering(SimpleNamespace(meta={"step": 99}))  # chosen by the user
    assert _worth_remembering(SimpleNamespace(meta={"step": 5000, "auto": True}))


def test_the_eta_waits_for_the_warm_up_then_uses_the_recent_rate():
    from core.progress import TimeLeft
    from desktop.widgets.common import eta_text

    tl = TimeLeft()
    assert eta_text(tl, 1000) == "estimating time left…"
    tl.add(1.0, 2)
    tl.add(10.0, 40)
    assert eta_text(tl, 1000) == "estimating time left…"  # still warming up
    # slow start (imports), then 10 steps/s: 600 steps left at 10/s is 1 min, not the 2 min the mean says
    tl.clear()
    for t, k in [(0.5, 1), (15.0, 100)] + [(15.0 + k, 100 + 10 * k) for k in range(1, 31)]:
        tl.add(t, k)
    assert eta_text(tl, 1000) == "about 1 min 00 s left"


def test_resuming_a_diverged_run_asks_first_and_goes_on_only_when_told(qtbot, panel, dialogs):
    import json

    from PySide6.QtWidgets import QMessageBox

    from core.catalog import DIVERGED_FILE

    panel.start()
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=30000)
    run = Path(panel.models[-1].meta["run_dir"])
    step = panel.models[-1].meta["step"]
    (run / DIVERGED_FILE).write_text(json.dumps({"step": step + 1, "saved_step": step, "reason": "the loss exploded"}))
    dialogs.answer = QMessageBox.StandardButton.No
    assert not panel.resume_from_folder(str(run), total_steps=step + 4)
    assert dialogs[-1][0] == "question" and "the loss exploded" in dialogs[-1][2]
    dialogs.answer = QMessageBox.StandardButton.Yes
    assert panel.resume_from_folder(str(run), total_steps=step + 4)
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=30000)
    assert panel.models[-1].meta["step"] == step + 4 and not (run / DIVERGED_FILE).exists()


def _teach_a_new_label(panel, tiny_config, emoji_small, monkeypatch, steps: int) -> list:
    """Teach "new one" (the first 20 images) with a judgement every 2 steps; the job's items, as they come."""
    from desktop.panels import train_panel as tp

    monkeypatch.setattr(tp, "JUDGE_EVERY", 2)
    labels = np.concatenate([emoji_small.labels, np.zeros((emoji_small.n, 1), np.float32)], axis=1)
    labels[:20, -1], labels[:20, :-1] = 1, 0  # the first 20 images: a label the shipped model does not know
    taught = type(emoji_small)(emoji_small.images, labels, [*emoji_small.label_names, "new one"], "taught")
    panel.state.set_dataset(taught)
    items = []
    seen = panel._on_item
    monkeypatch.setattr(panel, "_on_item", lambda item: (items.append(item), seen(item)))
    presets = panel.settings_box.presets
    presets["finetune"] = {**presets["finetune"], **tiny_config, "steps": steps, "batch_size": 8}
    assert panel.teach()
    return items


def test_teaching_a_new_label_shows_how_often_its_samples_are_called_it(qtbot, panel, tiny_config, shipped,
                                                                        emoji_small, monkeypatch):
    """The live figure of a fine-tune that teaches a label: the judge's ceiling when the run starts, then one
    measurement every JUDGE_EVERY steps and one at the end, as signals the view plots."""
    from desktop.jobs import training as jobs

    items = _teach_a_new_label(panel, tiny_config, emoji_small, monkeypatch, steps=5)
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=60000)
    ready = [i for i in items if isinstance(i, jobs.JudgeReady)]
    progress = [i for i in items if isinstance(i, jobs.LabelProgress)]
    assert len(ready) == 1 and ready[0].labels == ["new one"] and ready[0].counts == {"new one": 20}
    assert 0 <= ready[0].ceiling["new one"] <= 1
    assert [p.step for p in progress] == [0, 2, 4, 5]  # at the start, every 2 steps, and the last step
    assert all(0 <= p.called["new one"] <= 1 for p in progress)
    view = panel.label_progress
    assert view.isVisibleTo(panel) and [s for s, _ in view.points["new one"]] == [0, 2, 4, 5]
    assert "called new one:" in view.text.text() and "real new one images:" in view.text.text()


def test_a_fine_tune_without_new_labels_and_a_run_from_scratch_show_no_figure(qtbot, panel, tiny_config, shipped):
    presets = panel.settings_box.presets
    presets["finetune"] = {**presets["finetune"], **tiny_config, "steps": 3, "batch_size": 8}
    assert panel.teach()
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=60000)
    assert not panel.label_progress.isVisibleTo(panel) and not panel.label_progress.points


def test_stop_once_learnt_ends_the_fine_tune_at_the_ceiling(qtbot, panel, tiny_config, shipped, emoji_small,
                                                             monkeypatch):
    import core.judge

    fit = core.judge.fit_judge

    def easy_judge(*args, **kwargs):  # a ceiling of 0: the first judgement inside the run reaches it
        judge = fit(*args, **kwargs)
        judge.ceiling = {name: 0.0 for name in judge.ceiling}
        return judge

    monkeypatch.setattr(core.judge, "fit_judge", easy_judge)
    panel.label_progress.stop_check.setChecked(True)
    _teach_a_new_label(panel, tiny_config, emoji_small, monkeypatch, steps=50)
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=60000)
    assert panel.models[-1].meta["step"] == 2  # stopped at the first judgement after step 0, and saved
    assert panel.status.text().startswith("Learnt: stopped") and panel.state.model is panel.models[-1]


def test_a_judge_that_fails_never_stops_the_fine_tune(qtbot, panel, tiny_config, shipped, emoji_small, monkeypatch):
    import core.judge
    from desktop.jobs import training as jobs

    def broken(*args, **kwargs):
        raise RuntimeError("the judge broke")

    monkeypatch.setattr(core.judge, "called_share", broken)
    items = _teach_a_new_label(panel, tiny_config, emoji_small, monkeypatch, steps=5)
    qtbot.waitUntil(lambda: panel.run_state == "idle", timeout=60000)
    assert panel.models[-1].meta["step"] == 5
    assert [i for i in items if isinstance(i, jobs.JudgeReady)] and not [i for i in items
                                                                          if isinstance(i, jobs.LabelProgress)]
    assert any(isinstance(i, jobs.RunEnded) and i.how == "finished" for i in items)
