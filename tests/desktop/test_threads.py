"""desktop.threads: the workers' signals reach the GUI thread in order, stop requests, failures, callbacks of
deleted widgets, and the retirement of finished threads (kept alive until they have really ended).

Every job that must still be running while the test looks waits on a threading.Event (`gate`) that the test
sets: nothing here depends on timing, and no job outlives its test (the fixture waits for all of them).
"""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("pytestqt")

WAIT_MS = 5000  # an upper bound only: every wait below ends as soon as its condition holds
GATE_S = 10  # a job never waits longer than this on its gate, even if a failing test never opens it


@pytest.fixture(autouse=True)
def no_job_left_behind(qtbot):
    """Each test starts with no background job of another test and ends with none of its own."""
    from desktop import threads

    qtbot.waitUntil(lambda: not threads.background_busy(), timeout=WAIT_MS)
    yield
    assert threads.wait_for_background(GATE_S), "a job of this test was still running"
    assert not threads._running and not threads._retired


@pytest.fixture
def gate():
    """Holds a job until the test opens it; opened at the end in any case, so that a failed test hangs nothing."""
    g = threading.Event()
    yield g
    g.set()


def _pass(event: threading.Event) -> None:
    """In a job: wait for the test to open `event` (a closed gate after GATE_S fails the job, it never hangs)."""
    if not event.wait(GATE_S):
        raise TimeoutError("the test never opened the gate")


class Recorder:
    """The callbacks of one job: every call as (name, value), and the thread each ran on."""

    def __init__(self):
        self.events: list[tuple[str, object]] = []
        self.thread_ids: set[int] = set()

    def _record(self, name, value=None):
        self.thread_ids.add(threading.get_ident())
        self.events.append((name, value))

    def callbacks(self) -> dict:
        return {"on_progress": lambda item: self._record("progress", item),
                "on_result": lambda value: self._record("result", value),
                "on_failed": lambda error: self._record("failed", error),
                "on_finished": lambda: self._record("finished")}

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1][0] == "finished"

    def of(self, name: str) -> list:
        return [value for kind, value in self.events if kind == name]


def _start(worker, rec: Recorder):
    from desktop import threads

    return threads.start(worker, **rec.callbacks())


# --- results, progress, order ---------------------------------------------------------------------------


def test_a_function_workers_result_arrives_on_the_gui_thread(qtbot):
    from desktop.threads import FunctionWorker

    ran_on = []

    def job(a, b, *, scale):
        ran_on.append(threading.get_ident())
        return (a + b) * scale

    rec = Recorder()
    _start(FunctionWorker(job, 2, 3, scale=10), rec)
    qtbot.waitUntil(lambda: rec.done, timeout=WAIT_MS)
    assert rec.events == [("result", 50), ("finished", None)]
    gui = threading.main_thread().ident
    assert rec.thread_ids == {gui}  # every callback on the GUI thread
    assert ran_on and ran_on[0] != gui  # the job itself on the worker's thread


def test_a_generator_workers_items_arrive_in_order_and_its_return_value_is_the_result(qtbot):
    from desktop.threads import GeneratorWorker

    def job(n):
        for i in range(n):
            yield {"step": i}
        return "done after %d" % n

    rec = Recorder()
    _start(GeneratorWorker(job, 20), rec)
    qtbot.waitUntil(lambda: rec.done, timeout=WAIT_MS)
    assert rec.events == [("progress", {"step": i}) for i in range(20)] + [("result", "done after 20"),
                                                                          ("finished", None)]
    assert rec.thread_ids == {threading.main_thread().ident}


# --- stopping ---------------------------------------------------------------------------------------------


def test_a_stop_request_closes_a_generator_between_two_items(qtbot, gate):
    from desktop.threads import GeneratorWorker

    closed = []

    def job():
        try:
            yield 1
            _pass(gate)  # the test requests the stop before it lets the job go on
            yield 2
            yield 3  # never reached: the worker closes the generator right after item 2
        except GeneratorExit:
            closed.append(True)
            raise

    rec = Recorder()
    worker = GeneratorWorker(job)
    _start(worker, rec)
    qtbot.waitUntil(lambda: rec.of("progress") == [1], timeout=WAIT_MS)
    worker.request_stop()
    gate.set()
    qtbot.waitUntil(lambda: rec.done, timeout=WAIT_MS)
    assert rec.events == [("progress", 1), ("progress", 2), ("result", None), ("finished", None)]
    assert closed == [True]  # closed at its `yield 2`, not left suspended


def test_a_control_job_sees_the_stop_request_and_can_still_report(qtbot):
    from desktop.threads import Control, GeneratorWorker

    seen = []

    def train(steps, *, control):
        seen.append(control)
        yield "step 1"
        if not control.stop.wait(GATE_S):  # a training loop looks at control.stop between its steps
            raise TimeoutError("no stop request")
        control.report("saving")  # from inside the job, as a sampler's per-step callback reports
        yield "saved"  # a control job is not closed on stop: it ends itself
        return f"stopped at 1 of {steps}"

    rec = Recorder()
    worker = GeneratorWorker(train, 100, control=True)
    _start(worker, rec)
    qtbot.waitUntil(lambda: rec.of("progress") == ["step 1"], timeout=WAIT_MS)
    worker.request_stop()
    qtbot.waitUntil(lambda: rec.done, timeout=WAIT_MS)
    assert rec.events == [("progress", "step 1"), ("progress", "saving"), ("progress", "saved"),
                          ("result", "stopped at 1 of 100"), ("finished", None)]
    assert isinstance(seen[0], Control) and seen[0].stop is worker.stop_event


def test_a_function_job_with_control_reports_progress_before_its_result(qtbot):
    from desktop.threads import FunctionWorker

    def sample(n, *, control):
        for i in range(n):
            control.report(i)
        return "grid"

    rec = Recorder()
    _start(FunctionWorker(sample, 3, control=True), rec)
    qtbot.waitUntil(lambda: rec.done, timeout=WAIT_MS)
    assert rec.events == [("progress", 0), ("progress", 1), ("progress", 2), ("result", "grid"), ("finished", None)]


# --- failures ---------------------------------------------------------------------------------------------


def test_an_exception_arrives_as_failed_without_its_traceback_and_finished_comes_last(qtbot):
    from desktop.threads import FunctionWorker, GeneratorWorker

    def broken():
        raise ValueError("bad input")

    def breaks_midway():
        yield 1
        raise RuntimeError("at item 2")

    rec, rec_gen = Recorder(), Recorder()
    _start(FunctionWorker(broken), rec)
    _start(GeneratorWorker(breaks_midway), rec_gen)
    qtbot.waitUntil(lambda: rec.done and rec_gen.done, timeout=WAIT_MS)
    assert [kind for kind, _ in rec.events] == ["failed", "finished"]  # no result
    error = rec.of("failed")[0]
    assert isinstance(error, ValueError) and str(error) == "bad input"
    assert error.__traceback__ is None  # its frames would keep the worker and the job's data alive
    assert [kind for kind, _ in rec_gen.events] == ["progress", "failed", "finished"]
    assert rec_gen.of("progress") == [1] and str(rec_gen.of("failed")[0]) == "at item 2"
    assert rec_gen.of("failed")[0].__traceback__ is None


def test_run_in_background_gives_on_error_one_line_and_on_done_the_result(qtbot):
    from desktop.threads import run_in_background

    done, errors = [], []

    def fails():
        raise KeyError("x")

    run_in_background(lambda: 42, on_done=done.append, on_error=errors.append)
    run_in_background(fails, on_done=done.append, on_error=errors.append)
    qtbot.waitUntil(lambda: bool(done and errors), timeout=WAIT_MS)
    assert done == [42] and errors == ["KeyError: 'x'"]


# --- callbacks of deleted widgets ---------------------------------------------------------------------------


def test_a_callback_of_a_widget_deleted_meanwhile_is_skipped(qtbot, gate):
    import shiboken6
    from PySide6.QtWidgets import QWidget

    from desktop import threads
    from desktop.threads import FunctionWorker

    calls = []

    class Panel(QWidget):
        def show_result(self, value):
            calls.append(("panel", value))

    panel, rec = Panel(), Recorder()

    def save():
        _pass(gate)
        return "saved"

    threads.start(FunctionWorker(save), on_result=panel.show_result, on_finished=rec.callbacks()["on_finished"])
    panel.deleteLater()  # the panel is closed while its save still runs
    qtbot.waitUntil(lambda: not shiboken6.isValid(panel), timeout=WAIT_MS)
    gate.set()
    qtbot.waitUntil(lambda: rec.done, timeout=WAIT_MS)  # a plain function's callback still runs
    assert calls == []


def test_receiver_alive_tells_dead_widgets_from_live_ones_and_plain_functions():
    import shiboken6
    from PySide6.QtCore import QObject

    from desktop.threads import _receiver_alive

    class Owner(QObject):
        def slot(self):
            pass

    class Plain:
        def method(self):
            pass

    owner = Owner()
    assert _receiver_alive(owner.slot) and _receiver_alive(Plain().method) and _receiver_alive(print)
    assert _receiver_alive(lambda: None)
    assert not _receiver_alive(None)
    shiboken6.delete(owner)
    assert not _receiver_alive(owner.slot)


# --- retirement ---------------------------------------------------------------------------------------------


def test_a_finished_thread_leaves_running_and_is_reaped_once_it_has_ended(qtbot, gate):
    from desktop import threads
    from desktop.threads import FunctionWorker

    def job():
        _pass(gate)
        return 1

    at_finish = {}

    def finished():
        at_finish["running"] = any(entry[0] is thread for entry in threads._running)
        at_finish["retired"] = any(t is thread for t, _ in threads._retired)

    worker = FunctionWorker(job)
    thread = threads.start(worker, on_finished=finished)
    running = [entry for entry in threads._running if entry[0] is thread]
    assert len(running) == 1 and running[0][1] is worker  # thread, worker and relay kept alive together
    assert threads.background_busy()
    gate.set()
    qtbot.waitUntil(lambda: bool(at_finish), timeout=WAIT_MS)
    assert at_finish == {"running": False, "retired": True}  # handed to the reaper before on_finished
    qtbot.waitUntil(lambda: not threads._retired, timeout=WAIT_MS)  # the reaper's timer drops it once ended
    assert thread.wait(0) and not threads.background_busy()
    assert not threads._reaper.isActive()  # nothing left to reap: the timer stops


def test_wait_for_background_returns_true_once_the_jobs_end(qtbot, gate):
    from desktop import threads
    from desktop.threads import FunctionWorker, GeneratorWorker

    def held():
        _pass(gate)

    def count():
        yield from range(3)

    rec = Recorder()
    _start(FunctionWorker(held), rec)
    _start(GeneratorWorker(count), Recorder())
    assert threads.wait_for_background(0.05) is False  # the gated job is still running
    gate.set()
    assert threads.wait_for_background(GATE_S) is True
    assert not threads._running and not threads._retired and not threads.background_busy()
    assert rec.events == [("result", None), ("finished", None)]  # its callbacks ran while it waited


def test_has_ended_is_false_while_the_thread_runs_and_true_once_wait_0_is(qtbot, gate):
    import shiboken6
    from PySide6.QtCore import QThread

    from desktop import threads
    from desktop.threads import FunctionWorker

    def job():
        _pass(gate)

    thread = _start(FunctionWorker(job), Recorder())
    assert thread.isRunning() and not thread.wait(0)
    assert threads._has_ended(thread) is False
    gate.set()
    qtbot.waitUntil(lambda: thread.wait(0), timeout=WAIT_MS)
    assert threads._has_ended(thread) is True
    gone = QThread()
    shiboken6.delete(gone)
    assert threads._has_ended(gone) is True  # its C++ object already deleted: nothing left to wait for


_BUILD_WHILE_JOBS_END = r"""
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtWidgets import QApplication, QComboBox, QLabel, QSpinBox, QWidget
from desktop import threads
app = QApplication([])
for i in range(int(sys.argv[1])):
    threads.run_in_background(abs, i)
    w = QWidget()
    for _ in range(3):
        QSpinBox(w), QComboBox(w), QLabel("x", w)
    app.processEvents()
assert threads.wait_for_background(30)
print("done")
"""


def test_building_widgets_while_jobs_end_never_deadlocks(tmp_path):
    """The suite's old rare hang at window creation, made frequent: a job's worker deleted on its own thread
    waited for the GIL inside ~QObject while holding Qt's connection locks, and the GUI thread, building a
    widget, held the GIL and waited for one of those locks. Before the fix this loop hung within its first
    200 rounds (seen under gdb); it runs in a child process so that a regression fails here instead of hanging
    the suite."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "build_while_jobs_end.py"
    script.write_text(_BUILD_WHILE_JOBS_END)
    root = Path(__file__).resolve().parents[2]
    env = {**__import__("os").environ, "PYTHONPATH": str(root)}
    try:
        out = subprocess.run([sys.executable, str(script), "800"], cwd=root, env=env, capture_output=True,
                             text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("building widgets while background jobs ended deadlocked (no end after 120 s)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("done")
