"""The Train tab's core work: `core.training.Trainer.run()` as a generator job for `threads.GeneratorWorker`.

`TrainingJob(...).run` is started with control=True. It yields, in order: RunStarted; for a fine-tune that
teaches new labels, JudgeReady and then a LabelProgress every judge_every steps; lists of
core.training.StepMetrics (everything since the previous batch, at most ~10 a second); Preview grids;
ThreadsChosen when the thread tuner settles; Paused / Resumed; Saved; RunEnded. A stop request
(the worker's stop event) ends the loop between two steps and saves a checkpoint; pause and resume
are this job's own events, checked between steps. core and torch are imported inside `run`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from desktop.settings import DEFAULT_SEED

PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress batches a second, however fast the steps are
PREVIEW_PER_LABEL, PREVIEW_STEPS = 6, 20  # a preview: 6 images per label, DDIM with 20 steps


@dataclass(frozen=True)
class RunStarted:
    out_dir: str
    step: int
    total_steps: int
    device: str
    precision: str
    resumed: bool
    config: dict  # the TrainConfig as a dict (a resumed run brings its own)


@dataclass(frozen=True)
class Preview:
    step: int
    grid: np.ndarray  # (rows, per_label, H, W, 3) uint8


@dataclass(frozen=True)
class JudgeReady:
    """A fine-tune that teaches new labels: the judge that knows them is fitted (core.judge)."""

    labels: list[str]  # the labels the model did not know
    ceiling: dict[str, float]  # per label: its real images called by that label when left out of the fitting
    counts: dict[str, int]  # real images per label
    how: str  # what draws the judged samples, for the panel's text


@dataclass(frozen=True)
class LabelProgress:
    step: int
    called: dict[str, float]  # per new label: the share of its samples the judge calls it


@dataclass(frozen=True)
class ThreadsChosen:
    threads: int  # torch CPU threads chosen by the ThreadTuner


@dataclass(frozen=True)
class Paused:
    bundle: object  # a snapshot ModelBundle of the EMA model (meta["live"] = True)


@dataclass(frozen=True)
class Resumed:
    pass


@dataclass(frozen=True)
class Saved:
    step: int
    path: str  # the checkpoint written after stop / finish


@dataclass(frozen=True)
class RunEnded:
    how: str  # "finished", "stopped" or "ceiling" (every new label reached its ceiling; see TrainingJob)
    bundle: object  # snapshot ModelBundle (meta["live"] = False)


class TrainingJob:
    """One training run: a new one from (dataset, config, out_dir), or `resume=True` from out_dir's checkpoint."""

    def __init__(self, dataset, config=None, out_dir: str | Path = "", *, resume: bool = False,
                 total_steps: int | None = None, preview_every: int = 200, device: str = "auto",
                 threads: int | None = None, force: bool = False, judge_every: int = 0, judge_guidance: float = 1.0,
                 stop_at_ceiling: bool = False):
        self.dataset, self.config, self.out_dir = dataset, config, Path(out_dir)
        self.resume, self.total_steps, self.device = resume, total_steps, device
        self.force = force  # resume a run that had diverged (the user was asked)
        self.preview_every, self.threads = preview_every, threads  # threads None: one per core
        # A fine-tune that teaches new labels: every judge_every steps (0 = never) its samples of each new label
        # are judged, and with stop_at_ceiling the run ends once every new label is called as often as its
        # own real images are.
        self.judge_every, self.judge_guidance = judge_every, judge_guidance
        self._judge, self._taught, self.reached_ceiling = None, [], False
        self._stop_at_ceiling = threading.Event()  # the user may tick it while the run goes
        self.set_stop_at_ceiling(stop_at_ceiling)
        self._pause = threading.Event()
        self._stop: threading.Event | None = None

    # --- control, called from the GUI thread (events only: thread-safe) ---------------------------
    def request_pause(self) -> None:
        self._pause.set()

    def request_resume(self) -> None:
        self._pause.clear()

    def set_stop_at_ceiling(self, on: bool) -> None:
        self._stop_at_ceiling.set() if on else self._stop_at_ceiling.clear()

    # --- the thread's body -------------------------------------------------------------------------
    def run(self, *, control):
        from core.threads import configure_threads
        from core.training import MODEL_FILE, Trainer

        self._stop = control.stop
        configure_threads(self.threads)
        if self.resume:
            tr = Trainer.from_run(self.dataset, self.out_dir, device=self.device, steps=self.total_steps,
                                  force=self.force)
        else:
            tr = Trainer(self.dataset, self.config, self.out_dir, device=self.device)
        yield RunStarted(str(tr.out_dir), tr.step, tr.config.steps, str(tr.device), tr.precision, self.resume,
                         tr.config.to_dict())
        if self.judge_every:
            yield from self._start_judge(tr)
        stopped = yield from self._loop(tr)
        if stopped or tr.step < tr.config.steps:
            path = tr.save()  # "Stop saves a checkpoint"; a finished run saved on its last step already
        else:
            path = tr.out_dir / MODEL_FILE
        yield Saved(tr.step, str(path))
        yield self._preview(tr)
        how = "ceiling" if self.reached_ceiling else "stopped" if stopped else "finished"
        yield RunEnded(how, self._snapshot(tr, live=False))

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _loop(self, tr):
        """Iterate the trainer; returns True when stopped by the user."""
        from core.threads import tuned_threads

        pending, last_emit = [], time.monotonic()
        # Tuned only when the thread count is the app's choice and the run is on the CPU.
        tuned, best = tuned_threads(tr.device, threads=self.threads), None
        for m in tr.run():
            if tuned is not None:
                tuned.tick(tr.config.batch_size / max(m.images_per_s, 1e-9))  # the step's own time, not the GUI's
                if tuned.best != best:
                    best = tuned.best
                    yield ThreadsChosen(best)
            pending.append(m)
            now = time.monotonic()
            if now - last_emit >= PROGRESS_INTERVAL_S or m.step == m.total_steps:
                yield pending
                pending, last_emit = [], now
            if self.preview_every and m.step % self.preview_every == 0 and m.step < m.total_steps:
                yield self._preview(tr)
            if self._judge is not None and (m.step % self.judge_every == 0 or m.step == m.total_steps):
                if (progress := self._progress(tr)) is not None:
                    yield progress
                if progress is not None and self._stop_at_ceiling.is_set() and self._at_ceiling(progress) \
                        and m.step < m.total_steps:
                    self.reached_ceiling = True
                    break
            if self._pause.is_set() and not self._stopping():
                if pending:
                    yield pending
                    pending = []
                yield from self._wait_while_paused(tr)
            if self._stopping():
                break
        if pending:
            yield pending
        return self._stopping() or self.reached_ceiling

    # --- the live "how well has it learnt?" ----------------------------------------------------------
    def _start_judge(self, tr):
        """Fit the judge on the run's own data set (a second or two) when the run teaches new labels."""
        from core.judge import JUDGE_N, JUDGE_SAMPLER, fit_judge
        from core.metrics import ClassifierError, load_classifier
        from core.training.finetune import taught_labels

        self._taught = taught_labels(tr.config, self.dataset)
        if not self._taught:
            return
        try:
            clf = load_classifier()
        except ClassifierError:
            return  # a build without the evaluation classifier trains as before, without the figure
        ds = self.dataset
        try:
            self._judge = fit_judge(ds.images, ds.labels, list(ds.label_names), clf)
        except Exception:  # noqa: BLE001 - the figure is an extra: a set it cannot judge still trains
            return
        how = (f"{JUDGE_N} samples per label, {JUDGE_SAMPLER['sampler']} {JUDGE_SAMPLER['steps']} "
               f"{JUDGE_SAMPLER['spacing']} steps" + (f", guidance {self.judge_guidance:g}"
                                                      if self.judge_guidance != 1 else ", unguided"))
        yield JudgeReady(list(self._taught), {n: self._judge.ceiling.get(n, float("nan")) for n in self._taught},
                         {n: self._judge.counts.get(n, 0) for n in self._taught}, how)
        if (first := self._progress(tr)) is not None:
            yield first

    def _progress(self, tr) -> LabelProgress | None:
        """The new labels' figure now; None (and no more figures this run) if judging fails: training goes on."""
        from core.judge import called_share

        try:
            called = called_share(self._judge, tr.ema, tr.schedule, self._taught, guidance=self.judge_guidance,
                                  precision=tr.precision)
        except Exception:  # noqa: BLE001 - the figure is an extra, never a reason to stop the run
            self._judge = None
            return None
        return LabelProgress(tr.step, called)

    def _at_ceiling(self, p: LabelProgress) -> bool:
        ceiling = self._judge.ceiling
        return all(n in ceiling and p.called[n] >= ceiling[n] for n in self._taught)

    def _wait_while_paused(self, tr):
        """Block this worker thread (not the GUI) until resume or stop; the model stays in memory."""
        yield Paused(self._snapshot(tr, live=True))
        while self._pause.is_set() and not self._stopping():
            time.sleep(0.05)
        if not self._stopping():
            yield Resumed()

    @staticmethod
    def _preview(tr) -> Preview:
        return Preview(tr.step, tr.preview(per_label=PREVIEW_PER_LABEL, steps=PREVIEW_STEPS, seed=DEFAULT_SEED))

    @staticmethod
    def _snapshot(tr, *, live: bool):
        """The EMA model copied out, so sampling on another thread never sees weights change under it."""
        import copy

        from core.checkpoint import ModelBundle

        b = tr.bundle()
        meta = dict(b.meta, live=live, run_dir=str(tr.out_dir), train_config=tr.config.to_dict())
        return ModelBundle(copy.deepcopy(b.net).eval(), b.schedule_config, list(b.label_names), meta, b.path)

    # --- when it fails --------------------------------------------------------------------------------
    def failure_message(self, e: BaseException) -> str:
        """What happened and what was kept, for the dialog."""
        from core.training import TrainingDiverged
        from desktop.engine import user_message

        kept = self._kept_text()
        if isinstance(e, TrainingDiverged):
            return str(e)  # already says what happened and what was kept
        if isinstance(e, OSError):
            return f"Could not write to the run folder {self.out_dir}: {user_message(e)} {kept}"
        return f"Training stopped: {user_message(e)} {kept}"

    def _kept_text(self) -> str:
        from core.training import MODEL_FILE

        model = self.out_dir / MODEL_FILE
        if not model.is_file():
            return "No checkpoint had been saved yet."
        try:
            from core.checkpoint import read_metadata

            step = read_metadata(model)["step"]
        except Exception:  # noqa: BLE001 - a damaged file is reported as such
            return f"The checkpoint file in {self.out_dir} could not be read back."
        return f"The last checkpoint (step {step}) in {self.out_dir} was kept; you can resume from it."


def logged_metrics(folder) -> list:
    """A run's loss log as StepMetrics, so a resumed plot continues the old curve ([] when unreadable)."""
    from core.training import LOG_FILE, read_loss_log

    path = Path(folder) / LOG_FILE
    try:
        log = read_loss_log(path) if path.is_file() else {}
    except Exception:  # noqa: BLE001 - a damaged log only costs the old curve
        return []
    if not log or "step" not in log:
        return []
    total = int(log["step"][-1])
    return [metrics_from_log_row(lambda k, i=i: float(log[k][i]) if k in log else float("nan"), total)
            for i in range(len(log["step"]))]


def metrics_from_log_row(value, total_steps: int, elapsed: float = float("nan")):
    """One loss.csv row as core.training.StepMetrics; value(column) gives the row's float for a column name
    (nan where the log has no such column). Shared by the resumed plot and the torchrun follower. The log
    keeps no clock: elapsed is the reader's (nan: unknown)."""
    from core.training import StepMetrics

    return StepMetrics(int(value("step")), total_steps, value("loss"), value("lr"), value("images_per_s"),
                       elapsed, (value("loss_low_noise"), value("loss_mid_noise"), value("loss_high_noise")))
