"""One writer per run folder: an exclusive lock file holding the writer's PID and host.

`RunLock(folder).acquire()` creates `run.lock` with O_EXCL, so two trainers (two CLI runs, or the CLI
and the app) can never write one folder at once. A lock whose process is gone (same host, PID not
running) is stale: it is replaced with a note. Locks from another host are never guessed stale; the
message says how to remove one by hand. No torch: the app checks a folder before it starts a run.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from .errors import UserError

LOCK_FILE = "run.lock"


class RunLockedError(UserError, OSError):
    """Another process is writing this run folder; str() says who and what to do."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to someone else
        return True
    return True


class RunLock:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_FILE
        self.held = False
        self.note = ""  # set when a stale lock was replaced

    def acquire(self) -> "RunLock":
        """Take the lock (re-entrant within this process); raises RunLockedError or a plain OSError."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_existing()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, f)
            self.held = True
            return self
        raise RunLockedError(f"{self.path.parent}: could not take the run folder's lock ({self.path.name})")

    def _check_existing(self) -> None:
        """Raise if a live writer holds the lock; remove it if it is stale or our own."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        pid, host = info.get("pid"), info.get("host")
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.get("since", 0)))
        if host == socket.gethostname() and isinstance(pid, int):
            if pid == os.getpid():
                self.path.unlink(missing_ok=True)  # this process's own (an earlier trainer in the app or a test)
                return
            if not _alive(pid):
                self.note = f"removed a stale lock of process {pid} (no longer running) from {self.path.parent}"
                self.path.unlink(missing_ok=True)
                return
            raise RunLockedError(f"{self.path.parent}: another training run (process {pid}, since {since}) is "
                                 "writing this folder; wait for it to finish, stop it, or choose another --out")
        if not info:  # an empty or damaged lock: a writer that died while creating it
            self.note = f"removed an unreadable lock file from {self.path.parent}"
            self.path.unlink(missing_ok=True)
            return
        raise RunLockedError(f"{self.path.parent}: locked by process {pid} on host {host} (since {since}); if no "
                             f"run is active there, delete {self.path} and try again")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown: the lock is then stale and detected as such
            pass
