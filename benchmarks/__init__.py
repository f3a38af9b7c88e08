"""Benchmarks against the course notebooks' code, and sample-quality figures. Never imported by the app.

How each one is started (from the repository root):

    python main.py bench NAME            NAME: peak, train, sample, quality, ddp, busy (peak.py, train_speed.py,
                                         sample_speed.py, quality.py, ddp.py, busy.py), all, report
    python -m benchmarks.app_vs_cli      the Train tab against the CLI (QT_QPA_PLATFORM=offscreen)
    python -m benchmarks.gui_latency     event-loop delay while the app trains
    python -m benchmarks.profile_step    where a training step's time goes
    python -m benchmarks.recipe_study    the equal-budget recipe study (docs/recipes.md)
    python -m benchmarks.teach_new_label how fast the shipped model learns a new label (README)

`python -m benchmarks.bench ...` is the same as `python main.py bench ...`; bench.py is the driver. Shared
pieces: common.py (settings, machine, sampler lists, JSON, judging), tables.py, pictures.py, and pages.py
with page_text.py for docs/benchmarks.md.
"""
