"""`main.py --self-test`: the packaged app's smoke test, and the startup-time probe.

Runs the real app the way a user does, with nobody watching: the main window is created and shown
(offscreen unless --show), the background startup loads the engine and the default model, then

  1. a grid is sampled with DDIM straight through the core (one row per label) and checked:
     shape, finite values, not constant, images that differ, a plausible range of colours, and
     -- for an emoji model -- how often the shipped classifier recognises the asked-for label;
  2. the "Sample & compare" tab's Run button is clicked (the user's one click) and must finish
     every column without an error dialog;
  3. a tiny training run is started from the Train tab and must save a checkpoint in the per-user
     data folder;
  4. the app's own folder must be unchanged afterwards (the app never writes inside itself).

Any error dialog the app raises is recorded and closed, so a failure ends the test with its
message instead of hanging. Everything the app writes goes to a temporary data folder (or --home),
so the test neither reads nor changes the user's settings. Exit status 0 = passed, 1 = failed.

    DiffusionDesk --self-test                  full smoke test (about 15-40 s on a 2-core CPU)
    DiffusionDesk --self-test --startup-only   time to the window and to a loaded model, then exit
    python main.py --self-test --help          all options
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from desktop import settings
from desktop.diagnostics.checks import (binding_reference_drift, changed_files, check_grid,
                                        folder_snapshot, install_folder, process_start_time)
from desktop.diagnostics.driver import Driver, Report, SelfTestFailed

TINY_TRAIN = {"n_feat": 8, "steps": 12, "batch_size": 16, "checkpoint_every": 6, "log_every": 1,
              "precision": "fp32", "warmup_steps": 0}
LENIENT_CHECKS = {"plausible colours"}  # what an untrained model fails (its samples are saturated noise)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="DiffusionDesk --self-test",
                                description="Smoke test of the app: window, default model, sampling, training.")
    p.add_argument("--startup-only", action="store_true",
                   help="only measure the time to the window and to a loaded model, then exit")
    p.add_argument("--checkpoint", help="model to test instead of the shipped default (opened like File > Open)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps for the checked grid (default 25)")
    p.add_argument("--per-label", type=int, default=4, help="images per label in the checked grid (default 4)")
    p.add_argument("--seed", type=int, default=settings.DEFAULT_SEED)
    p.add_argument("--min-accuracy", type=float, default=None,
                   help="fail when the emoji classifier recognises fewer of the asked-for labels than this "
                        "(default: only reported)")
    p.add_argument("--lenient", action="store_true",
                   help="for an untrained model: the colour check is reported, not required")
    p.add_argument("--no-tab", action="store_true", help="skip clicking Run in the Sample & compare tab")
    p.add_argument("--tab-max-steps", type=int, default=None,
                   help="cap every sampler column's steps in the tab run (quick checks; default: as shipped)")
    p.add_argument("--no-train", action="store_true", help="skip the tiny training run")
    p.add_argument("--home", help="per-user data folder to use (default: a temporary folder, deleted after)")
    p.add_argument("--save", metavar="PNG", help="write the checked grid to this file")
    p.add_argument("--screenshot", metavar="PNG", help="write a screenshot of the window at the end (and of the "
                                                        "Sample & compare tab beside it, as <name>-sample.png)")
    p.add_argument("--show", action="store_true", help="show the window on screen instead of offscreen")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for each step (default 300)")
    p.add_argument("--json", action="store_true", help="end with one line 'SELF_TEST_JSON {...}' of the numbers")
    p.add_argument("--report", metavar="TXT", help="also write the report to this file (windowed builds have no "
                                                   "console on Windows)")
    return p.parse_args(argv)


def run_self_test(argv: list[str]) -> int:
    """Entry point (main.py --self-test ...): 0 when every check passed, 1 otherwise, 2 for bad options."""
    t0, t0_source = process_start_time()
    try:
        args = _parse(argv)
    except SystemExit as e:  # --help or a bad option
        return int(e.code or 0) if isinstance(e.code, int) else 2
    if not args.show:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="diffusion-desk-selftest-"))
    saved_env = {k: os.environ.get(k) for k in ("DIFFUSION_DESK_HOME",)}
    os.environ["DIFFUSION_DESK_HOME"] = str(home)  # settings, runs and imports go here, not to the user's
    report = Report()
    try:
        return _run(args, report, t0, t0_source, home)
    finally:
        for k, v in saved_env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)


def _run(args, report: Report, t0: float, t0_source: str, home: Path) -> int:
    from desktop.engine import app_root

    root = install_folder(app_root())
    before = folder_snapshot(root) if getattr(sys, "frozen", False) else None
    report.say(f"Diffusion Desk self-test ({'packaged app' if getattr(sys, 'frozen', False) else 'source tree'})")
    report.say(f"  app folder   {root}")
    models = ", ".join(sorted(p.name for p in (app_root() / "checkpoints").glob("*.safetensors"))) or "none"
    report.say(f"  resources    {app_root()} (models: {models})")
    report.say(f"  data folder  {home} (temporary)" if not args.home else f"  data folder  {home}")
    report.say(f"  python {sys.version.split()[0]}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    app, window, driver = _open_window(args, report, t0)
    try:
        _startup(args, report, driver, window, t0, t0_source)
        if not args.startup_only:
            _steps(args, report, driver, window)
    except SelfTestFailed as e:
        report.fail(str(e))
    except Exception:  # noqa: BLE001 - a bug the test found: the maintainer wants the traceback
        report.fail("unexpected error:\n" + traceback.format_exc())
    finally:
        _close(args, report, driver, window)
    if before is not None:
        changed = changed_files(before, folder_snapshot(root))
        ok = not changed
        report.say(f"  {'ok  ' if ok else 'FAIL'}  app folder unchanged" + ("" if ok else f": {changed[:5]}"))
        if not ok:
            report.failures.append("the app wrote inside its own folder")
    return _finish(args, report)


def _open_window(args, report: Report, t0: float):
    from desktop.app import make_application
    from desktop.main_window import MainWindow

    app = make_application([])
    window = MainWindow()
    driver = Driver(args, report, t0)
    window.installEventFilter(driver._filter)
    window.state.model_changed.connect(lambda b: b is not None and driver.t_model is None
                                       and setattr(driver, "t_model", time.time()))
    driver.watchdog.start()
    window.show()
    from PySide6.QtCore import QTimer

    QTimer.singleShot(0, window.start_loading)  # exactly as desktop.app.run_app does
    return app, window, driver


def _startup(args, report: Report, driver: Driver, window, t0: float, t0_source: str) -> None:
    driver.wait("the main window", lambda: driver.t_shown is not None, args.timeout)
    shown = driver.t_shown - t0
    report.numbers["window_shown_s"] = round(shown, 3)
    since = {"launcher": "launch", "os": "process start", "import": "self-test import"}[t0_source]
    report.say(f"  time  window shown     {shown:6.2f} s after {since}")
    driver.wait("the engine and the default model", lambda: window.loaded, args.timeout)
    ready = time.time() - t0
    report.numbers["engine_ready_s"] = round(ready, 3)
    model = window.state.model
    what = model.description if model is not None else "no model"
    report.say(f"  time  engine ready     {ready:6.2f} s ({window.state.runtime_label}; {what})")
    if args.checkpoint:
        window.open_checkpoint(args.checkpoint)
        want = Path(args.checkpoint).resolve()
        took = driver.wait(f"opening {args.checkpoint}", lambda: _model_is(window, want) or bool(report.dialogs),
                           args.timeout)
        report.say(f"  time  model opened     {took:6.2f} s ({Path(args.checkpoint).name}, as File > Open checkpoint)")
    if report.dialogs:
        raise SelfTestFailed(f"error dialog at startup: {report.dialogs[0]}")
    if window.state.model is None:
        raise SelfTestFailed("no model loaded at startup: this build has no checkpoints/default.safetensors "
                             "(or it could not be read); see the status bar message: "
                             f"{window.statusBar().currentMessage()!r}")
    if args.startup_only:
        report.say(f"DIFFUSION_DESK_WINDOW_SHOWN {driver.t_shown:.3f}")


def _model_is(window, path: Path) -> bool:
    m = window.state.model
    return m is not None and m.path is not None and Path(m.path).resolve() == path


def _steps(args, report: Report, driver: Driver, window) -> None:
    bundle = window.state.model
    report.say(f"  model {bundle.description}")
    _check_binding(report, driver)
    _check_sampling(args, report, driver, bundle)
    if not args.no_tab:
        _click_sample_tab(args, report, driver, window)
    if not args.no_train:
        _tiny_training(args, report, driver, window)
    if report.dialogs:
        raise SelfTestFailed(f"error dialog: {report.dialogs[0]}")


def _check_binding(report: Report, driver: Driver) -> None:
    import PySide6

    from desktop import threads

    # other threads' work (the app's start-up jobs) moves the counts too: let it finish first
    driver.wait("the app's background jobs", lambda: not threads.background_busy(), 120)
    n = 200
    drift = binding_reference_drift(n)
    ok = drift["True"] > -n // 2  # the bug loses about one reference per emit
    report.say(f"  {'ok  ' if ok else 'FAIL'}  Qt binding keeps references (PySide6 {PySide6.__version__}, {n} signal "
               f"emits: None {drift['None']:+d}, True {drift['True']:+d})")
    if not ok:
        report.failures.append(f"PySide6 {PySide6.__version__} loses a reference per signal emit: the app would crash "
                               "after about a minute of use (rebuild with PySide6-Essentials 6.11.3)")


def _check_sampling(args, report: Report, driver: Driver, bundle) -> None:
    from desktop.jobs.sampling import label_accuracy, sample_grid

    job = lambda: sample_grid(bundle, steps=args.steps, per_label=args.per_label, seed=args.seed)  # noqa: E731
    out = driver.background("sampling with DDIM", job, timeout_s=args.timeout)
    report.numbers.update(sample_s=round(out["seconds"], 3), sample_n=out["n"], sample_nfe=out["nfe"])
    report.say(f"  time  DDIM {args.steps} steps     {out['seconds']:6.2f} s for {out['n']} images "
               f"({out['nfe']} model calls each, {out['ms_per_call']:.1f} ms per call; {out['runtime']})")
    for c in check_grid(out["images"], n=out["n"], height=out["height"], finite=out["finite"]):
        required = not (args.lenient and c.name in LENIENT_CHECKS)
        report.say(f"  {'ok  ' if c.ok else 'FAIL' if required else 'info'}  {c.name}: {c.detail}")
        if not c.ok and required:
            report.failures.append(f"sampled grid: {c.name} ({c.detail})")
    acc = label_accuracy(out["images"], out["context"], list(bundle.label_names))
    if acc is not None:
        chance = 1.0 / out["context"].shape[1]
        report.numbers["label_accuracy"] = round(acc, 3)
        bad = args.min_accuracy is not None and acc < args.min_accuracy
        report.say(f"  {'FAIL' if bad else 'info'}  label accuracy {acc:.0%} by the shipped classifier "
                   f"(chance {chance:.0%}{f', needs {args.min_accuracy:.0%}' if args.min_accuracy else ''})")
        if bad:
            report.failures.append(f"label accuracy {acc:.0%} below {args.min_accuracy:.0%}")
    if args.save:
        from desktop.jobs.export import save_grid_png

        save_grid_png(out["images"], args.per_label, args.save)
        report.say(f"  grid  {args.save}")


def _click_sample_tab(args, report: Report, driver: Driver, window) -> None:
    """The user's one click: Run in the Sample & compare tab, every column to the end, no dialog."""
    panel = window.sample_panel
    needed = ("run_button", "per_row_spin", "is_busy", "columns")
    if not all(hasattr(panel, a) for a in needed):
        report.say("  skip  Sample & compare tab: this build's panel has no Run button to click")
        return
    from desktop.main_window import TAB_SAMPLE

    window.tabs.setCurrentIndex(TAB_SAMPLE)
    panel.per_row_spin.setValue(1)  # one image per label keeps DDPM's 500 calls short on a CPU
    if args.tab_max_steps:
        for col in panel.columns:
            spin = getattr(col, "steps_spin", None)
            if spin is not None and spin.value() > args.tab_max_steps:
                spin.setValue(args.tab_max_steps)
    if not panel.run_button.isEnabled():
        raise SelfTestFailed("Sample & compare: the Run button is disabled with a model loaded")
    n_cols = len(panel.columns)
    start = time.time()
    panel.run_button.click()
    driver.wait("the Sample & compare run", lambda: not panel.is_busy() or bool(report.dialogs), args.timeout)
    driver.wait("the Sample & compare run", lambda: not panel.is_busy(), args.timeout)
    seconds = time.time() - start
    summary = getattr(panel, "summary", None)
    done = len(summary.results) if summary is not None else 0
    report.numbers["tab_run_s"] = round(seconds, 3)
    if args.screenshot:  # what a first-time user sees after the one click
        shot = Path(args.screenshot)
        window.grab().save(str(shot.with_name(f"{shot.stem}-sample{shot.suffix}")))
    report.verdict(done == n_cols and not report.dialogs,
                   f"Sample & compare, one click: {done} of {n_cols} columns in {seconds:.1f} s",
                   "the Sample & compare run did not finish every column")


def _tiny_training(args, report: Report, driver: Driver, window) -> None:
    """Start a tiny run from the Train tab; it must end by saving a checkpoint in the data folder."""
    from desktop import engine
    from desktop.main_window import TAB_TRAIN

    panel = window.train_panel
    if not all(hasattr(panel, a) for a in ("apply_config", "start", "is_busy", "run_state")):
        report.say("  skip  tiny training: this build's Train panel has no start()")
        return
    window.tabs.setCurrentIndex(TAB_TRAIN)
    panel.apply_config(dict(TINY_TRAIN))
    start = time.time()
    if not panel.start():
        raise SelfTestFailed(f"tiny training: the Train tab did not start ({report.dialogs or 'no reason given'})")
    driver.wait("the tiny training run", lambda: not panel.is_busy(), args.timeout)
    seconds = time.time() - start
    runs = engine.run_models()
    report.numbers["train_s"] = round(seconds, 3)
    where = runs[-1].parent if runs else settings.runs_dir()
    report.verdict(bool(runs) and not report.dialogs, f"tiny training ({TINY_TRAIN['steps']} steps, n_feat "
                   f"{TINY_TRAIN['n_feat']}) in {seconds:.1f} s, saved to {where}",
                   "the tiny training run saved no checkpoint")


def _close(args, report: Report, driver: Driver, window) -> None:
    if args.screenshot:
        try:
            window.grab().save(args.screenshot)
            report.say(f"  shot  {args.screenshot}")
        except Exception as e:  # noqa: BLE001 - a screenshot is a bonus, never the failure
            report.say(f"  info  no screenshot ({e})")
    panel = window.train_panel
    if getattr(panel, "is_busy", lambda: False)():
        panel.stop()
        try:
            driver.wait("stopping the training run", lambda: not panel.is_busy(), 60)
        except SelfTestFailed as e:
            report.fail(str(e))
    window.close()
    driver.watchdog.stop()
    _close_leftovers(driver)
    window.deleteLater()


def _close_leftovers(driver: Driver) -> None:
    from PySide6.QtCore import QCoreApplication, QEvent

    driver._close_dialogs()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def _finish(args, report: Report) -> int:
    failed = bool(report.failures)
    report.say(f"RESULT: {'FAIL' if failed else 'PASS'}" + (f" ({len(report.failures)} problem(s))" if failed else ""))
    if args.json:
        payload = dict(report.numbers, passed=not failed, failures=report.failures, dialogs=report.dialogs)
        report.say("SELF_TEST_JSON " + json.dumps(payload))
    if args.report:
        Path(args.report).write_text("\n".join(report.lines) + "\n", encoding="utf-8")
    return 1 if failed else 0
