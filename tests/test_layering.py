"""Architecture rules: core never loads Qt."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_importing_core_loads_no_qt_module():
    code = ("import sys, core.schedule, core.unet, core.samplers, core.train, core.checkpoint, core.data, "
            "core.device, core.export, core.cli, core.paths\n"
            "try:\n    import core.metrics\nexcept ImportError:\n    pass\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6')]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_shared_catalogue_loads_no_torch():
    code = "import sys, core.catalog; sys.exit(1 if 'torch' in sys.modules or 'numpy' in sys.modules else 0)"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
