"""What the commands share: the user-error type, the rules that keep outputs off the user's files, Ctrl-C
that saves, and small parsers and formatters."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from core.errors import UserError


EXIT_USER_ERROR = 2


class CliError(UserError):
    """A user mistake: printed as one line on stderr, exit code 2."""


def refuse_a_folder_with_files(out: Path, inputs=()) -> None:
    """A new run starts in a new or empty folder: its loss.csv must not truncate one already there, nor its
    files mix with anyone else's. The command's own inputs may be there (the app's multi-process launcher
    writes the data set and the config into the run folder). A folder with a lock is left to the lock (it
    names the live writer)."""
    from core.catalog import LOG_FILE
    from core.runlock import LOCK_FILE

    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out}: is a file, not a folder; choose a folder for the run")
    if not out.is_dir() or (out / LOCK_FILE).exists():
        return
    own = [Path(p) for p in inputs if p and Path(p).is_file()]
    present = sorted(p.name for p in out.iterdir() if not any(same_path(p, q) for q in own))
    if present:
        ours = LOG_FILE in present
        shown = ", ".join(present[:4]) + (f" and {len(present) - 4} more" if len(present) > 4 else "")
        raise CliError(f"--out {out}: the folder is not empty ({shown}); "
                       + ("it holds a run's loss log but no resume file to continue it; " if ours else "")
                       + "choose a new or empty folder")


def same_path(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class StopRequest:
    """SIGINT / SIGTERM ask the loop to stop after the current step (a save mid-step would not resume exactly);
    a second signal stops at once."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.signal = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        self.trainer.request_stop()

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


def hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def check_writable(flag: str, path: Path) -> None:
    """Fail before sampling when the output cannot be written (an existing folder, or no permission)."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"{flag} {path}: cannot create the folder ({e.strerror or e})") from None
    if path.is_dir() or not os.access(folder, os.W_OK):
        raise CliError(f"{flag} {path}: " + ("is a folder; give a file name" if path.is_dir() else "no permission to write there"))


def parse_interval(text: str) -> tuple[float, float]:
    """--guidance-interval LO,HI as two fractions of T with 0 <= LO <= HI <= 1."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise CliError(f"--guidance-interval: expected LO,HI such as 0.1,0.8, got {text!r}") from None
    if not (0 <= lo <= hi <= 1):
        raise CliError(f"--guidance-interval: need 0 <= LO <= HI <= 1, got {text!r}")
    return lo, hi


def eta_hms(time_left, m) -> str:
    """h:mm:ss left at the recent pace, or '-:--:--' while the sitting warms up."""
    seconds = time_left.seconds(m.total_steps)
    return "-:--:--" if seconds is None else hms(seconds)
