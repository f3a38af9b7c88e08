"""The "make it fast" tools, walked through in the real app on the shipped model: Tune the steps, quality against
model calls in the Quality tab, and Teach a shortcut (small settings, so the walk takes minutes), its student then
loaded and sampled in Sample & compare as "distilled, 4 calls".

    xvfb-run -a -s "-screen 0 1400x950x24" python tools/fast_walkthrough.py    # docs/screenshots/fast_*.png

Each step calls the slot its button or menu item calls, and the app's real event loop turns while the jobs run.
Screenshots: fast_1_tune.png, fast_2_curves.png, fast_3_shortcut.png, fast_4_student.png. A check that fails
ends the walk with exit code 1. The student it makes lives in the user's runs folder like any other.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from lab_walkthrough import _run_until  # noqa: E402
from screenshots import _settle, open_app  # noqa: E402
from walkthrough import _check, _shot  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distill-steps", type=int, default=300, help="the walk's student: training steps (default 300)")
    ap.add_argument("--pool", type=int, default=1024, help="the walk's student: teacher solutions (default 1024)")
    ap.add_argument("--quality-images", type=int, default=300, help="images per point of the curves (default 300)")
    args = ap.parse_args()
    app, win, mw = open_app(1400, 950)
    _settle(app, 1.0)
    win.tabs.setCurrentIndex(mw.TAB_SAMPLE)
    sp = win.sample_panel
    _run_until(app, lambda: sp.state.model is not None and sp.state.dataset is not None, "the shipped model", 120)

    # Tune the steps: DPM-Solver++(3M) at 5 calls
    tune = sp.lab.open_tune()
    tune.resize(640, 330)
    tune.calls_spin.setValue(5)
    tune.run()
    _run_until(app, lambda: not tune.is_busy(), "the step search")
    _check(tune.result is not None and tune.result.name == "tuned-5", "the search found tuned-5")
    print(f"tune: {tune.note.text()}", flush=True)
    _shot(app, win, "fast_1_tune.png")
    tune.close()

    # Three columns at 5 calls, then the Quality tab's curves against model calls
    for col, (sampler, spacing) in zip(sp.columns, [("dpmpp3m", "karras"), ("dpmpp3m", "tuned-5"),
                                                     ("ipndm", "karras")]):
        col.set_spec(sampler, 5, spacing=spacing)
    _check(sp.columns[1].spec().spacing == "tuned-5", "the tuned spacing is a column's spacing")
    sp.run()
    _run_until(app, lambda: not sp.is_busy(), "Sample & compare")
    sp.quality_n.setValue(args.quality_images)
    sp.measure_curves()
    _run_until(app, lambda: not sp.is_busy(), "the quality curves")
    curves = sp.quality_tab.curves
    _check(len(curves) == 3, f"a curve per column ({len(curves)})")
    for k, pts in sorted(curves.items()):
        print("curve " + sp.columns[k].spec().title + ": " +
              ", ".join(f"{p.spec.calls}:{p.fid:.2f}" for p in sorted(pts, key=lambda p: p.spec.calls)), flush=True)
    _shot(app, win, "fast_2_curves.png")

    # Teach a shortcut: a 4-call student, small settings
    sc = sp.lab.open_shortcut()
    sc.resize(760, 720)
    sc.calls_spin.setValue(4)
    sc.steps_spin.setValue(args.distill_steps)
    sc.pool_spin.setValue(args.pool)
    sc.start()
    _run_until(app, lambda: not sc.is_busy(), "the shortcut", timeout=3600)
    _check(sc.summary is not None and not sc.summary.stopped, "the shortcut ran to its end")
    print(f"shortcut: {sc.note.text()}", flush=True)
    _shot(app, win, "fast_3_shortcut.png")
    student = sc.summary.model_path
    sc.load_student()
    _run_until(app, lambda: sp.state.model is not None and sp.state.model.path is not None
               and str(sp.state.model.path) == student, "loading the student", 120)
    sc.close()
    _check(sp.columns[0].spec().title == "distilled, 4 calls", "the student's column is 'distilled, 4 calls'")
    sp.tabs.setCurrentIndex(0)
    sp.run()
    _run_until(app, lambda: not sp.is_busy(), "Sample & compare with the student")
    _shot(app, win, "fast_4_student.png")
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
