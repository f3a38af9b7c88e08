"""Loaded by pytest before any test module imports torch or Qt."""
import os

# Tests run beside other processes on 2 cores: spinning OpenMP threads would starve each other
# (see main.py). Headless Qt for every test.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
