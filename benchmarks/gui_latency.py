"""GUI latency benchmark (python -m benchmarks.gui_latency): a timer probe of the event-loop delay.

A QTimer asks to fire every `interval_ms`; each time it fires late, the lateness is how long the event
loop was busy (or starved of the CPU or the GIL) -- what a user feels as a stutter. Use it around
any long-running work:

    probe = EventLoopProbe(); probe.start()
    ...                                   # train / sample with the window open
    probe.stop(); print(probe.summary())  # {'samples', 'p50_ms', 'p99_ms', 'max_ms'}
"""
from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer


class EventLoopProbe(QObject):
    """Records the delay of a periodic timer (ms beyond its interval) on the thread that owns it."""

    def __init__(self, interval_ms: int = 10, parent=None):
        super().__init__(parent)
        self.interval_ms = interval_ms
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._last: float | None = None
        self.delays_ms: list[float] = []

    def start(self) -> None:
        self.delays_ms.clear()
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self._last = None

    @property
    def running(self) -> bool:
        return self._timer.isActive()

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.delays_ms.append(max(0.0, (now - self._last) * 1000.0 - self.interval_ms))
        self._last = now

    def summary(self) -> dict:
        """{'samples', 'p50_ms', 'p99_ms', 'max_ms'} of the delays seen so far (zeros when none)."""
        d = np.asarray(self.delays_ms, dtype=np.float64)
        if d.size == 0:
            return {"samples": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        return {"samples": int(d.size), "p50_ms": float(np.percentile(d, 50)),
                "p99_ms": float(np.percentile(d, 99)), "max_ms": float(d.max())}


# --------------------------------------------------------------------------------------------
# A/B measurement: training in the app (window open, plot redrawing) vs. the Trainer directly
#   python -m benchmarks.gui_latency --seconds 30 --rounds 2 [--preset quick] [--preview-every 200]
# Rounds alternate direct / app, so both see the same background load.
# --------------------------------------------------------------------------------------------


def _direct_run(ds, config: dict, seconds: float, out_dir, threads: int | None = None) -> float:
    """images/s of core.training.Trainer driven by a plain loop, after its first step."""
    from core.threads import configure_threads
    from core.training import TrainConfig, Trainer

    configure_threads(threads)
    tr = Trainer(ds, TrainConfig(**config), out_dir)
    t0 = n0 = None
    for m in tr.run():
        now = time.perf_counter()
        if t0 is None:
            t0, n0 = now, m.step
        elif now - t0 >= seconds:
            return (m.step - n0) * tr.config.batch_size / (now - t0)
    return float("nan")


def _app_run(app, window, config: dict, seconds: float, preview_every: int,
             threads: int | None = None) -> tuple[float, dict]:
    """images/s of a run started from the Train tab, and the event-loop delays meanwhile."""
    panel = window.train_panel
    panel.train_threads = threads
    panel.apply_config(config)
    panel.preview_every.setValue(preview_every)
    window.tabs.setCurrentWidget(panel)
    stamps: list[tuple[float, int]] = []
    threads: list[int] = []
    panel.start()
    from desktop.jobs.training import ThreadsChosen

    def on_item(item) -> None:
        if isinstance(item, ThreadsChosen):
            threads.append(item.threads)
        elif isinstance(item, list):  # a batch of core.training.StepMetrics
            stamps.append((time.perf_counter(), int(item[-1].step)))

    panel._worker.progress.connect(on_item)
    probe = EventLoopProbe()
    _pump(app, lambda: len(stamps) >= 1, 120)
    probe.start()
    cpu0 = time.thread_time()  # CPU time of this (the GUI) thread: what the window costs the trainer
    _pump(app, lambda: stamps[-1][0] - stamps[0][0] >= seconds, seconds + 120)
    probe.stop()
    (t0, n0), (t1, n1) = stamps[0], stamps[-1]
    gui_cpu = (time.thread_time() - cpu0) / (t1 - t0)
    panel.stop()
    _pump(app, lambda: panel.run_state == "idle", 120)
    return (n1 - n0) * panel.form.values()["batch_size"] / (t1 - t0), probe.summary() | {"gui_cpu": gui_cpu, "threads": threads}


def _pump(app, done, limit: float) -> None:
    """Run a real event loop (as app.exec does, no busy polling) until done() or the time limit."""
    from PySide6.QtCore import QEventLoop

    loop, end = QEventLoop(), time.perf_counter() + limit
    check = QTimer()
    check.setInterval(20)
    check.timeout.connect(lambda: (done() or time.perf_counter() > end) and loop.quit())
    check.start()
    if not done():
        loop.exec()
    check.stop()


def main(argv=None) -> int:
    import argparse
    import os
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--preview-every", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both (default: the app's choice)")
    ap.add_argument("--app-threads", type=int, default=None, help="torch threads in the app only")
    args = ap.parse_args(argv)
    os.environ.setdefault("DIFFUSION_DESK_HOME", tempfile.mkdtemp(prefix="dd-probe-"))
    from desktop import engine
    from desktop.app import make_application
    from desktop.main_window import MainWindow

    app = make_application([])
    window = MainWindow()
    window.resize(1280, 820)
    window.show()
    window.start_loading()
    _pump(app, lambda: window.loaded, 120)
    engine.warm_up_training()
    config = engine.train_presets()[args.preset].to_dict() | {"steps": 1_000_000, "checkpoint_every": 1_000_000}
    ds = window.state.dataset
    for r in range(args.rounds):
        direct = _direct_run(ds, config, args.seconds, tempfile.mkdtemp(prefix="dd-direct-"), args.threads)
        in_app, delays = _app_run(app, window, config, args.seconds, args.preview_every,
                                  args.app_threads or args.threads)
        print(f"round {r + 1}: direct {direct:7.1f} images/s | app {in_app:7.1f} images/s "
              f"({in_app / direct:6.1%}) | event-loop delay p50 {delays['p50_ms']:.1f} ms, "
              f"p99 {delays['p99_ms']:.1f} ms, max {delays['max_ms']:.1f} ms ({delays['samples']} samples); "
              f"GUI thread CPU {delays['gui_cpu']:.1%} of a core; app threads chosen {delays['threads'] or 'fixed'}",
              flush=True)
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
