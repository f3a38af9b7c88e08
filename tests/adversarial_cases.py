"""Malformed inputs through the CLI, counted: a re-runnable case list for issue 25 ("every bad file or flag gets
one line"). Not part of the test suite (pytest collects test_*.py only); run it by hand:

    .venv/bin/python tests/adversarial_cases.py            # every case; a table and the counts
    .venv/bin/python tests/adversarial_cases.py resume     # only cases whose name contains "resume"
    .venv/bin/python tests/adversarial_cases.py --json out.json

Each case writes one malformed file (or sets one flag or variable), runs `cli.main` in this process and
sorts the outcome:
  clean      exit 2 with one line on stderr that names the file or flag (or exit 0 where the case expects
             the input to be repaired, e.g. a garbage run.lock under our own OS lock)
  traceback  an exception escaped the CLI
  exit0      exit 0 where the input must be refused
  data_loss  a file that was there before (a run's model, resume file or loss log) changed or vanished
             although the command failed, or vanished or lost lines although it succeeded
  unclear    exit 2, but not one line naming the file or flag (or a refusal where the case expects success)
  hang       over the per-case time limit
The process's address space is capped (--mem-gb) so a case that allocates without checking fails here
instead of swapping the machine; the CLI's own memory estimate sees the same cap.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from adversarial_inputs import Base, Case, all_cases  # noqa: E402


def build_base(root: Path) -> Base:
    from cli import main
    from core.data import ImageDataset, save_npz
    from core.unet import ContextUnet, UNetConfig

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    data = root / "tiny.npz"
    save_npz(ImageDataset(imgs, np.eye(2, dtype=np.float32)[np.arange(32) % 2], ["cat", "dog"], "tiny"), data)
    run = root / "run"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main(["train", "--data", str(data), "--out", str(run), "--preset", "tiny", "--steps", "4", "--batch",
                   "8", "--checkpoint-every", "2", "--precision", "fp32", "--device", "cpu"])
    assert rc == 0, "the base run did not train"
    course = ContextUnet(UNetConfig(n_feat=8, n_cfeat=5, height=8, course_compat=True))
    course_pth = root / "course.pth"
    torch.save(course.state_dict(), course_pth)
    images = root / "images"
    (images / "cat").mkdir(parents=True)
    from PIL import Image
    Image.fromarray(imgs[0]).save(images / "cat" / "a.png")
    return Base(root, data, run, course_pth, images)

# --- running -------------------------------------------------------------------------------------------------

class CaseTimeout(BaseException):
    pass


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """{file: (sha256, rows of a .csv)} of every file a case starts with (its own lock excepted)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "run.lock":
            data = p.read_bytes()
            lines = data.count(b"\n") if p.suffix == ".csv" else 0  # a loss log's rows
            out[str(p.relative_to(folder))] = (hashlib.sha256(data).hexdigest(), lines)
    return out


def _lost(before: dict, after: dict, rc) -> list[str]:
    """Files a case damaged: any that changed or went while the command failed; after a success (a run that
    continued) only those that went or lost lines (a loss log cut back)."""
    if rc != 0:
        return [k for k, v in before.items() if after.get(k) != v]
    return [k for k, (_, lines) in before.items() if k not in after or after[k][1] < lines]


@contextlib.contextmanager
def _environment(changes: dict):
    old = {k: os.environ.get(k) for k in changes}
    for k, v in changes.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_case(case: Case, base: Base, work: Path, limit_s: int) -> dict:
    from cli import main

    ws = work / case.name.replace("/", "__")
    ws.mkdir(parents=True)
    argv = case.setup(ws, base)
    before = _snapshot(ws)
    out, err = io.StringIO(), io.StringIO()
    rc, tb = None, ""

    def alarm(signum, frame):
        raise CaseTimeout()
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(limit_s)
    t0 = time.monotonic()
    try:
        with _environment(case.env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except CaseTimeout:
        rc = "hang"
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    except BaseException as e:  # noqa: BLE001 - an escaped exception is what this counts
        tb = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        rc = "traceback"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    seconds = time.monotonic() - t0
    text = err.getvalue().strip()
    after = _snapshot(ws)
    lost = _lost(before, after, rc)
    if rc == "hang":
        outcome = "hang"
    elif lost:
        outcome = "data_loss"
    elif rc == "traceback" or "Traceback" in text:
        outcome = "traceback"
    elif case.expect == "ok":
        outcome = "clean" if rc == 0 else "unclear"
    elif rc == 0:
        outcome = "exit0"
    else:
        lines = text.splitlines()
        last = lines[-1] if lines else ""
        named = any(n in last for n in case.names)
        one = sum(1 for line in lines if line.startswith("error:")) == 1 and last.startswith("error: ")
        outcome = "clean" if rc == 2 and one and named else "unclear"
    message = tb or (text.splitlines()[-1] if text else "")
    return {"case": case.name, "outcome": outcome, "rc": rc, "seconds": round(seconds, 1), "message": message[:300],
            "lost": lost}


def _limit_memory(gb: float) -> None:
    """Cap the address space at what the process already maps plus `gb`: an unchecked allocation then fails
    here with an error instead of pushing a shared machine into swap or the OOM killer."""
    size_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize"))
    cap = size_kb * 1024 + int(gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("only", nargs="*", help="run only cases whose name contains one of these")
    p.add_argument("--json", help="write every case's outcome to this file")
    p.add_argument("--mem-gb", type=float, default=4.0, help="address space allowed above the start (default 4)")
    p.add_argument("--limit-s", type=int, default=120, help="seconds per case before it counts as a hang")
    p.add_argument("--list", action="store_true", help="print the case names and stop")
    p.add_argument("--verbose", "-v", action="store_true", help="print every case, not only the unclean ones")
    args = p.parse_args(argv)
    cases = [c for c in all_cases() if not args.only or any(o in c.name for o in args.only)]
    if args.list:
        print("\n".join(c.name for c in cases))
        return 0
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="adversarial-") as tmp:
        base = build_base(Path(tmp))
        _limit_memory(args.mem_gb)
        results = []
        for case in cases:
            try:
                r = run_case(case, base, Path(tmp) / "cases", args.limit_s)
            except Exception as e:  # noqa: BLE001 - a broken case setup is reported, not fatal
                r = {"case": case.name, "outcome": "setup_error", "rc": None, "seconds": 0,
                     "message": "".join(traceback.format_exception_only(type(e), e)).strip()[:300], "lost": []}
            results.append(r)
            if args.verbose or r["outcome"] != "clean":
                print(f"{r['outcome']:10} {r['case']:45} rc={r['rc']} {r['seconds']:5.1f}s  {r['message'][:160]}",
                      flush=True)
    counts = {k: sum(r["outcome"] == k for r in results)
              for k in ("clean", "traceback", "exit0", "data_loss", "unclear", "hang", "setup_error")}
    print(f"\n{len(results)} cases: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "results": results}, indent=1))
    return 0 if counts["clean"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
