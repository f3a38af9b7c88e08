"""Benchmarks against the course notebooks' code, and sample-quality figures. Never imported by the app.

`python main.py bench ...` (or `python -m benchmarks.bench ...`); see benchmarks/bench.py.
"""
