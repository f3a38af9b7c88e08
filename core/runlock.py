"""One writer per run folder: a lock file holding the writer's PID and host.

`RunLock(folder).acquire()` takes an OS lock (flock) on `run.lock` and holds it for the run's life, so two
trainers (two CLI runs, or the CLI and the app) can never write one folder at once, however many start
together: the OS decides, and a writer that dies releases its lock with its process. Under that lock the
file's content is checked: a live process on this host named there (a writer without the OS lock) still
excludes; a dead one is stale and replaced with a note. Locks from another host are never guessed stale; the
message says how to remove one by hand. Where the OS has no flock (Windows), the file is created with O_EXCL
instead. No torch: the app checks a folder before it starts a run.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from .errors import UserError
from .schema import Float, Int, Obj, Str, check, load_json_text

LOCK_FILE = "run.lock"
# The largest process id the OS can hand out: Linux's pid_max ceiling (2**22); Windows ids are 32-bit.
PID_MAX = 2**32 - 1 if os.name == "nt" else 2**22
# What _took writes. Anything else in the file is a damaged lock (a writer that died while writing it, or
# not ours): under our OS lock it is replaced, with a note that says what was wrong with it.
LOCK_SCHEMA = Obj({"pid": Int(1, PID_MAX), "host": Str(max_len=255, min_len=1), "since": Float(0, 1e12)},
                  optional=("since",))


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


_HELD: dict[str, "RunLock"] = {}  # lock path -> the RunLock of this process that holds it


class RunLock:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_FILE
        self.held = False
        self.note = ""  # set when a stale lock was replaced
        self._fd: int | None = None  # the open lock file whose flock we hold

    def acquire(self) -> "RunLock":
        """Take the lock (re-entrant within this process); raises RunLockedError or a plain OSError."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self._acquire_exclusive_create()
        key = os.path.abspath(self.path)
        earlier = _HELD.get(key)
        if earlier is not None and earlier.held:  # this process's own (an earlier trainer in the app or a test)
            self._fd, earlier._fd, earlier.held = earlier._fd, None, False
            return self._took(key, self._read_fd(self._fd))
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._refuse_holder()
                continue  # the holder let go between our flock and the read: try again
            except BaseException:
                os.close(fd)
                raise
            if not self._same_file(fd):  # a releaser unlinked it after we opened it: ours would be a ghost
                os.close(fd)
                continue
            try:
                read = self._read_fd(fd)
                self._check_content(read)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return self._took(key, read)
        raise RunLockedError(f"{self.path.parent}: could not take the run folder's lock ({self.path.name})")

    def _took(self, key: str, read: tuple[dict, str]) -> "RunLock":
        """Write our PID and host into the file we hold, and remember it for this process."""
        data = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)
        self.held = True
        _HELD[key] = self
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    @staticmethod
    def _read_fd(fd: int) -> tuple[dict, str]:
        return _parse_lock(os.pread(fd, 4096, 0))

    def _refuse_holder(self) -> None:
        """Another process holds the OS lock: say who (it may still be writing its PID: read a few times)."""
        info = {}
        for _ in range(20):
            try:
                info, _ = _parse_lock(self.path.read_bytes()[:4096])
            except OSError:
                return  # gone: the holder released it
            if info:
                break
            time.sleep(0.01)
        pid, since = info.get("pid", "?"), _since(info)
        raise RunLockedError(f"{self.path.parent}: another training run (process {pid}, since {since}) is "
                             "writing this folder; wait for it to finish, stop it, or choose another --out")

    def _check_content(self, read: tuple[dict, str]) -> None:
        """We hold the OS lock; a live writer named in the file that does not use it still excludes."""
        info, problem = read
        if not info:  # new, left empty by a writer that died while creating it, or damaged
            if problem:
                self.note = f"removed an unreadable lock file from {self.path.parent} ({problem})"
            return
        pid, host = info["pid"], info["host"]
        if host == socket.gethostname():
            if pid == os.getpid() or not _alive(pid):
                if pid != os.getpid():
                    self.note = f"removed a stale lock of process {pid} (no longer running) from {self.path.parent}"
                return
            raise RunLockedError(f"{self.path.parent}: another training run (process {pid}, since {_since(info)}) "
                                 "is writing this folder; wait for it to finish, stop it, or choose another --out")
        raise RunLockedError(f"{self.path.parent}: locked by process {pid} on host {host} (since {_since(info)}); "
                             f"if no run is active there, delete {self.path} and try again")

    def _acquire_exclusive_create(self) -> "RunLock":
        """Without flock: create the file with O_EXCL (replacing a stale one is then not race-free)."""
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
            info, problem = _parse_lock(self.path.read_bytes()[:4096])
        except OSError:
            info, problem = {}, ""
        pid, host = info.get("pid"), info.get("host")
        since = _since(info)
        if info and host == socket.gethostname():
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
            self.note = f"removed an unreadable lock file from {self.path.parent}" + (f" ({problem})" if problem else "")
            self.path.unlink(missing_ok=True)
            return
        raise RunLockedError(f"{self.path.parent}: locked by process {pid} on host {host} (since {since}); if no "
                             f"run is active there, delete {self.path} and try again")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)  # while still holding the OS lock: no one can take a ghost
            self.held = False
            _HELD.pop(os.path.abspath(self.path), None)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown: the lock is then stale and detected as such
            pass


def _parse_lock(raw: bytes) -> tuple[dict, str]:
    """(the lock's content, "") when it fits LOCK_SCHEMA; ({}, "") for an empty file; ({}, what is wrong) for
    a damaged or foreign one (files lie: no exception)."""
    if not raw.strip():
        return {}, ""
    try:
        return check(load_json_text(raw, source=LOCK_FILE, max_bytes=4096, max_depth=4), LOCK_SCHEMA, LOCK_FILE), ""
    except UserError as e:
        return {}, str(e)


def _since(info: dict) -> str:
    t = info.get("since", 0)
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(t)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unknown time"


def take_run_lock(out_dir: Path) -> RunLock:
    """The run folder's lock, taken for a run: RunLockedError when another writer holds it, an OSError naming the
    folder when it cannot be written there."""
    try:
        return RunLock(out_dir).acquire()
    except RunLockedError:
        raise
    except OSError as e:
        raise OSError(f"{out_dir}: cannot write the run folder there ({e.strerror or e}); choose another --out") from None
