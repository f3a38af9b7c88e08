"""Training on several GPUs: the command line's `train` under torchrun as a child process, followed live.

The app does not run several processes itself: it starts

    python -m torch.distributed.run --standalone --nproc_per_node=N main.py train --config CFG.json ...

and follows the run folder: new rows of loss.csv become progress (lists of core.training.StepMetrics,
as the in-app training job sends them), a new model.safetensors a checkpoint event the panel can
preview. Stop sends SIGTERM to the launcher, which passes it on to every process; they stop at one
step, save, and the launcher exits. The signals are those of desktop.threads: progress, result,
failed, finished.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from core.catalog import LOG_FILE as LOG_NAME, MODEL_FILE as MODEL_NAME, RESUME_FILE as RESUME_NAME

ROOT = Path(__file__).resolve().parent.parent.parent
POLL_MS = 500
CONFIG_NAME = "train_config.json"  # the settings the app hands the child run


@dataclass(frozen=True)
class Checkpointed:
    path: str  # model.safetensors, newly written by the child


@dataclass(frozen=True)
class ChildRunEnded:
    how: str  # "finished" or "stopped"
    out_dir: str


def multi_process_supported() -> bool:
    """A source install can start torchrun with its own interpreter; a frozen app has no `python -m`."""
    return not getattr(sys, "frozen", False)


def torchrun_command(n_procs: int, out_dir: Path, data: str, *, config: dict | None = None,
                     total_steps: int | None = None, force: bool = False) -> list[str]:
    """The child's command line. A new run (config given) gets its settings as a JSON file in its folder;
    without config it resumes the run in out_dir (optionally to total_steps; force: even one that had
    diverged, as the user was asked)."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_procs}",
            str(ROOT / "main.py"), "train", "--data", data, "--out", str(out_dir)]
    if config is None:
        return args + ["--resume"] + (["--steps", str(total_steps)] if total_steps else []) + (["--force"] if force else [])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_NAME).write_text(json.dumps(config, indent=1))
    return args + ["--config", str(out_dir / CONFIG_NAME)]


class TorchrunRun(QObject):
    """One child torchrun training run, followed through its run folder (see module docstring)."""

    progress = Signal(object)
    result = Signal(object)
    failed = Signal(object)
    finished = Signal()

    def __init__(self, command: list[str], out_dir: str | Path, total_steps: int, parent=None, *,
                 poll_ms: int = POLL_MS, env: dict | None = None):
        super().__init__(parent)
        self.command, self.out_dir, self.total_steps = command, Path(out_dir), total_steps
        self._offset = 0  # bytes of loss.csv already read
        self._started = 0.0  # time.monotonic() at start: the rows' clock (a child run cannot pause)
        self._header: list[str] | None = None
        self._model_mtime = self._mtime(self.out_dir / MODEL_NAME)
        self._stop_requested = False
        self._stderr = b""
        self._proc = QProcess(self)
        if env is not None:
            penv = QProcessEnvironment()
            for k, v in env.items():
                penv.insert(k, v)
            self._proc.setProcessEnvironment(penv)
        self._proc.setWorkingDirectory(str(ROOT))
        self._proc.readyReadStandardError.connect(self._read_stderr)
        self._proc.finished.connect(self._on_exit)
        self._proc.errorOccurred.connect(self._on_error)
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self._poll)

    # --- control ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._started = time.monotonic()
        self._proc.start(self.command[0], self.command[1:])
        self._timer.start()

    def request_stop(self) -> None:
        """SIGTERM to the launcher: every process stops at the same step and saves."""
        self._stop_requested = True
        if self._proc.state() != QProcess.NotRunning:
            self._proc.terminate()

    def is_running(self) -> bool:
        return self._proc.state() != QProcess.NotRunning

    # --- following the folder -----------------------------------------------------------------------------
    @staticmethod
    def _mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    def _poll(self) -> None:
        rows = self._new_rows()
        if rows:
            self.progress.emit(rows)
        mtime = self._mtime(self.out_dir / MODEL_NAME)
        if mtime != self._model_mtime:
            self._model_mtime = mtime
            self.progress.emit(Checkpointed(str(self.out_dir / MODEL_NAME)))

    def _new_rows(self) -> list:
        """StepMetrics of the complete loss.csv lines written since the last poll."""
        from desktop.jobs.training import metrics_from_log_row

        path = self.out_dir / LOG_NAME
        try:
            if path.stat().st_size < self._offset:  # cut back (a resume): read it again from the start
                self._offset, self._header = 0, None
            with path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        out, now = [], time.monotonic() - self._started
        for line in chunk[:end].decode("utf-8", "replace").splitlines():
            cells = line.strip().split(",")
            if self._header is None or cells == self._header:
                self._header = cells
                continue
            row = dict(zip(self._header, cells))
            out.append(metrics_from_log_row(lambda k, row=row: float(row.get(k) or "nan"), self.total_steps, now))
        return out

    def _read_stderr(self) -> None:
        self._stderr = (self._stderr + bytes(self._proc.readAllStandardError()))[-20000:]

    def _error_line(self) -> str:
        lines = [ln.strip() for ln in self._stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        if errors:
            return errors[0][len("error:"):].strip()
        return lines[-1] if lines else "the training processes ended without saying why"

    def _on_exit(self, code: int, status) -> None:
        self._timer.stop()
        self._poll()
        saved = (self.out_dir / RESUME_NAME).is_file()
        if code == 0:
            self.result.emit(ChildRunEnded("finished", str(self.out_dir)))
        elif self._stop_requested and saved:
            self.result.emit(ChildRunEnded("stopped", str(self.out_dir)))
        else:
            self.failed.emit(RuntimeError(f"Training on several GPUs stopped (exit code {code}): {self._error_line()}"))
        self.finished.emit()

    # --- the panel's view of a job (TrainingJob has the same three) ---------------------------------------
    def request_pause(self) -> None:
        """Several processes cannot pause together; Stop saves a checkpoint and Resume continues it."""

    def request_resume(self) -> None:
        pass

    def failure_message(self, e: BaseException) -> str:
        kept = (f"The last checkpoint in {self.out_dir} was kept; you can resume from it."
                if (self.out_dir / RESUME_NAME).is_file() else "No checkpoint had been saved yet.")
        return f"{e} {kept}"

    def _on_error(self, err) -> None:
        if err == QProcess.FailedToStart:
            self._timer.stop()
            self.failed.emit(RuntimeError(f"could not start {self.command[0]}: {self._proc.errorString()}"))
            self.finished.emit()
