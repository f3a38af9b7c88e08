"""In-app training throughput against the command line's, on the same settings, alternated in one process.

    QT_QPA_PLATFORM=offscreen python -m benchmarks.app_vs_cli [--steps 150] [--rounds 2]

CLI: the loop of `main.py train` (Trainer.run() with the core thread tuner), in a process of its own as a
user runs it (`--cli-here` runs it in this process's main thread instead). App: the Train tab itself
(TrainPanel with its TrainingJob on a worker thread, the live loss plot and the 10 Hz redraw, previews
off). Both train the Quick preset's network (n_feat 32, batch 100, fp32) on emoji16. Throughput is
wall-clock: images per second between step 20 and the last step, as seen by the consumer (the CLI's
loop, the panel's GUI thread), so whatever the app costs shows. Target: app >= 90% of the CLI.

`--busy` then runs the same rounds again beside a second process that keeps one core busy (the one
`bench busy` starts) and reports each side's busy/idle ratio. Target: >= 40% of idle, CLI and app.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SKIP = 20  # steps before the clock starts (warm-up, the tuner's first trial)


def _config(steps: int) -> dict:
    return {"n_feat": 32, "steps": steps, "batch_size": 100, "precision": "fp32", "checkpoint_every": 10**9}


def cli_rate(ds, steps: int) -> float:
    from core.threads import tuned_threads
    from core.training import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(ds, TrainConfig(**_config(steps)), tmp, device="cpu")
        tuned = tuned_threads(tr.device)  # as `main.py train` does on the CPU
        t0 = None
        for m in tr.run():
            if tuned is not None:
                tuned.tick()
            if m.step == SKIP:
                t0 = time.perf_counter()
        rate = (steps - SKIP) * 100 / (time.perf_counter() - t0)
        tr.close()
    return rate


def cli_rate_child(steps: int) -> float:
    """cli_rate in a fresh process: in this one, the main thread's OpenMP team would stay alive beside the
    app's training thread's, and libgomp shortens its spin-waits to almost nothing once it manages more
    threads than there are cores (the training thread then runs as under OMP_WAIT_POLICY=PASSIVE)."""
    code = ("import sys; sys.path.insert(0, %r); from benchmarks.app_vs_cli import cli_rate; "
            "from core.data import load_builtin; from core.threads import configure_threads; configure_threads(); "
            "print(cli_rate(load_builtin('emoji16'), %d))" % (str(ROOT), steps))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def app_rate(app, ds, steps: int) -> float:
    from PySide6.QtCore import QEventLoop, QTimer

    from desktop import engine
    from desktop.panels.train_panel import TrainPanel
    from desktop.state import AppState

    state = AppState()
    panel = TrainPanel(state)
    panel.set_presets({k: c.to_dict() for k, c in engine.train_presets().items()})
    state.set_dataset(ds)
    panel.apply_config(_config(steps))
    panel.preview_every.setValue(0)
    seen: dict[int, float] = {}
    real = panel._on_progress

    def on_progress(metrics):
        now = time.perf_counter()
        for m in metrics:
            seen.setdefault(m.step, now)
        real(metrics)

    panel._on_progress = on_progress
    # The app's own event loop, as app.exec() runs it: it sleeps until an event arrives. (Polling with
    # processEvents() every few ms, as this benchmark first did, kept taking the GIL and cost the app
    # time that the real app does not pay.)
    loop = QEventLoop()
    check = QTimer()
    check.timeout.connect(lambda: loop.quit() if panel.run_state == "idle" and not panel.is_busy() else None)
    assert panel.start()
    check.start(200)
    loop.exec()
    check.stop()
    panel.deleteLater()
    app.processEvents()
    first = min(s for s in seen if s >= SKIP)
    return (steps - first) * 100 / (seen[steps] - seen[first])


def _rounds(app, ds, a, what: str) -> tuple[list[float], list[float]]:
    """`a.rounds` CLI and app runs, alternated so drifting machine load hits both alike."""
    cli, gui = [], []
    for r in range(a.rounds):
        if a.cli_here:
            from core.threads import configure_threads

            configure_threads()
            cli.append(cli_rate(ds, a.steps))
        else:
            cli.append(cli_rate_child(a.steps))
        gui.append(app_rate(app, ds, a.steps))
        print(f"{what}, round {r + 1}: CLI {cli[-1]:.0f} img/s, app {gui[-1]:.0f} img/s", flush=True)
    return cli, gui


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", help="merge the figures into this bench results file (its \"app\" section)")
    ap.add_argument("--plot-every", type=int, help="redraw the loss plot every k progress ticks (default: the app's)")
    ap.add_argument("--cli-here", action="store_true",
                    help="run the CLI side in this process's main thread (shows the cost of two OpenMP teams)")
    ap.add_argument("--busy", action="store_true",
                    help="then the same rounds beside a process that keeps one core busy (busy/idle per side)")
    a = ap.parse_args()
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["DIFFUSION_DESK_HOME"] = tempfile.mkdtemp(prefix="dd-bench-")
    from PySide6.QtWidgets import QApplication

    from core.data import load_builtin

    app = QApplication.instance() or QApplication([])
    ds = load_builtin("emoji16")  # numpy only: the main thread starts no OpenMP team (as in the app)
    if a.plot_every:
        from desktop.panels.train_panel import TrainPanel

        TrainPanel.PLOT_EVERY = a.plot_every
    cli, gui = _rounds(app, ds, a, "idle")
    out = {"steps": a.steps, "rounds": a.rounds, "cli_img_s": statistics.median(cli), "app_img_s": statistics.median(gui),
           "app_vs_cli": statistics.median(gui) / statistics.median(cli), "cli_here": a.cli_here, "load_average": os.getloadavg()[0]}
    if a.busy:
        from benchmarks.busy import start_spinner

        spinner = start_spinner()
        try:
            bcli, bgui = _rounds(app, ds, a, "one core busy")
        finally:
            spinner.kill()
            spinner.wait()
        out["busy"] = {"cli_img_s": statistics.median(bcli), "app_img_s": statistics.median(bgui),
                       "cli_busy_vs_idle": statistics.median(bcli) / out["cli_img_s"],
                       "app_busy_vs_idle": statistics.median(bgui) / out["app_img_s"]}
    print(json.dumps(out))
    if a.json:  # merged into a bench results file (docs/bench_results.json: its "app" section)
        from benchmarks.common import load_json, machine_stamp, save_json

        out["machine"] = machine_stamp()
        results = load_json(a.json)
        results["app"] = out
        results.setdefault("commands", {})["app"] = "python -m benchmarks.app_vs_cli " + " ".join(sys.argv[1:])
        save_json(results, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
