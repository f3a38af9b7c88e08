"""Shared test setup. Qt runs offscreen; desktop tests write to a temporary per-user data folder.

Nothing Qt-related is imported at module level: the core tests check that `core` never loads Qt.
"""
from __future__ import annotations

import faulthandler
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Why a watchdog: a hung test (no CPU, no output) would otherwise wait for CI's 90-minute limit and say
# nothing. After WATCHDOG_S seconds in one test, faulthandler's own thread (it needs no GIL) writes every
# thread's stack to WATCHDOG_FILE and ends the run with exit code 1 (the file stays empty while no test has
# hung; pytest holds the terminal's output, so the stacks go to a file, which .ci/run prints). Hangs and
# crashes seen so far are told in docs/reliability.md.
WATCHDOG_S = float(os.environ.get("DIFFUSION_DESK_TEST_WATCHDOG_S", "600"))
WATCHDOG_FILE = Path(os.environ.get("DIFFUSION_DESK_TEST_WATCHDOG_FILE",
                                    Path(tempfile.gettempdir()) / f"diffusion-desk-test-watchdog-{os.getpid()}.txt"))
_watchdog_out = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _watchdog_out
    if _watchdog_out is None:  # open for the whole session: faulthandler's thread writes to its file descriptor
        _watchdog_out = open(WATCHDOG_FILE, "w")  # noqa: SIM115
    _watchdog_out.write(f"running {item.nodeid}; if it is still running after {WATCHDOG_S:.0f} s, every "
                        "thread's stack follows:\n")
    _watchdog_out.flush()
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True, file=_watchdog_out)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        _watchdog_out.seek(0)
        _watchdog_out.truncate()


@pytest.fixture(autouse=True)
def _own_settings(tmp_path_factory, monkeypatch):
    """Every test gets its own settings and data folder: nothing a test saves (the composer, the sampler
    columns, recent files) reaches the next test or the developer's own settings."""
    monkeypatch.setenv("DIFFUSION_DESK_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def user_home(tmp_path, monkeypatch):
    """A fresh per-user data folder (runs, imported data sets, settings.ini) for one test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DIFFUSION_DESK_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def emoji_small():
    """96 built-in emoji (16 px, all 6 labels present): small enough to train on in a second."""
    import numpy as np

    from core.data import load_builtin

    ds = load_builtin("emoji16")
    per_label = [np.flatnonzero(ds.labels[:, k] > 0)[:16] for k in range(ds.n_labels)]
    return ds.subset(np.sort(np.unique(np.concatenate(per_label))))


@pytest.fixture
def tiny_config():
    """TrainConfig values for tests: a few thousand parameters, a few steps."""
    return {"n_feat": 8, "steps": 30, "batch_size": 16, "lr": 2e-3, "checkpoint_every": 10, "precision": "fp32"}


class DialogRecorder(list):
    """Message boxes shown during a test, as (kind, title, text); `answer` is what question() returns."""

    answer = None


@pytest.fixture
def dialogs(monkeypatch):
    """Replace QMessageBox's modal static functions (a modal box would hang an offscreen test)."""
    from PySide6.QtWidgets import QMessageBox

    rec = DialogRecorder()
    rec.answer = QMessageBox.StandardButton.No

    def record(kind):
        def show(parent, title, text, *args, **kwargs):
            rec.append((kind, title, text))
            return rec.answer if kind == "question" else QMessageBox.StandardButton.Ok
        return show

    for kind in ("warning", "critical", "information", "question"):
        monkeypatch.setattr(QMessageBox, kind, staticmethod(record(kind)))
    return rec
