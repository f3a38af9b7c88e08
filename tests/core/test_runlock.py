"""The run lock excludes under contention: many processes racing for one folder, one holder at a time."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.runlock import LOCK_FILE, RunLock, RunLockedError

ROOT = Path(__file__).resolve().parents[2]
RACER = """
import json, os, sys, time
sys.path.insert(0, {root!r})
from core.runlock import RunLock, RunLockedError
folder, start, log = sys.argv[1], float(sys.argv[2]), sys.argv[3]
while time.time() < start:
    pass
try:
    lock = RunLock(folder).acquire()
except RunLockedError:
    print("refused")
    sys.exit(0)
t0 = time.monotonic_ns()
time.sleep(0.3)
t1 = time.monotonic_ns()
lock.release()
with open(log, "a") as f:
    f.write(json.dumps([t0, t1]) + "\\n")
print("held")
"""


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("present", ["none", "stale", "empty", "garbage"])
def test_racing_processes_hold_the_lock_one_at_a_time(tmp_path, present):
    folder = tmp_path / "run"
    folder.mkdir()
    lock = folder / LOCK_FILE
    if present == "stale":
        lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "since": 0}))
    elif present == "empty":
        lock.write_text("")
    elif present == "garbage":
        lock.write_text("[" * 100000)  # a depth bomb: read as unreadable, never a RecursionError
    script = tmp_path / "racer.py"
    script.write_text(RACER.format(root=str(ROOT)))
    log = tmp_path / "held.jsonl"
    start = time.time() + 1.5  # every racer spins until the same moment
    procs = [subprocess.Popen([sys.executable, str(script), str(folder), str(start), str(log)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    held = sorted(json.loads(line) for line in log.read_text().splitlines())
    assert len(held) >= 1 and sum(o[0].strip() == "held" for o in outs) == len(held)
    for (a0, a1), (b0, b1) in zip(held, held[1:]):
        assert a1 <= b0, "two processes held the run lock at once"
    assert not lock.exists()


def test_the_same_process_may_take_its_own_lock_again_and_a_live_holder_is_named(tmp_path):
    first = RunLock(tmp_path).acquire()
    second = RunLock(tmp_path).acquire()  # an earlier trainer of this process that was never closed
    assert second.held and not first.held
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    holder = subprocess.Popen([sys.executable, "-c", f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); "
                               f"from core.runlock import RunLock; l = RunLock({str(tmp_path / 'other')!r}).acquire(); "
                               "print('ok', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
            RunLock(tmp_path / "other").acquire()
    finally:
        holder.kill()
        holder.wait()
    assert RunLock(tmp_path / "other").acquire().held  # its process died: the OS let go of the lock
    second.release()
    assert not (tmp_path / LOCK_FILE).exists()
