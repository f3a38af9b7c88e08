"""Architecture rules: core never loads Qt."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_importing_core_loads_no_qt_module():
    code = ("import sys, core.schedule, core.unet, core.samplers, core.train, core.checkpoint, core.data, "
            "core.device, core.export, core.paths\n"
            "try:\n    import core.metrics\nexcept ImportError:\n    pass\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6')]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_shared_catalogue_loads_no_torch():
    code = "import sys, core.catalog; sys.exit(1 if 'torch' in sys.modules or 'numpy' in sys.modules else 0)"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level?) for every import in a file."""
    import ast

    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, id(node) in top))
    return out


def test_core_imports_neither_desktop_nor_benchmarks_nor_the_cli():
    for path in (ROOT / "core").glob("*.py"):
        bad = [m for m, _ in _imports(path) if m.split(".")[0] in ("desktop", "benchmarks", "cli", "PySide6")]
        assert not bad, (path.name, bad)


def test_desktop_loads_core_lazily_except_the_torch_free_catalogue():
    """At import time the GUI may use only core.catalog; everything else of core (torch) loads inside functions."""
    for path in (ROOT / "desktop").glob("*.py"):
        eager = [m for m, top in _imports(path) if top and m.startswith("core") and m != "core.catalog"]
        assert not eager, (path.name, eager)


def test_export_and_paths_load_no_torch():
    code = "import sys, core.export, core.paths; sys.exit(1 if 'torch' in sys.modules else 0)"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_data_sets_and_checkpoints_are_written_with_the_same_permissions(tmp_path):
    import numpy as np

    from core.data import ImageDataset, save_npz
    from core.paths import atomic_write_bytes

    ds = ImageDataset(np.zeros((2, 4, 4, 3), np.uint8), np.eye(2, dtype=np.float32), ["a", "b"], "t")
    save_npz(ds, tmp_path / "d.npz")
    atomic_write_bytes(tmp_path / "c.bin", b"x")
    assert (tmp_path / "d.npz").stat().st_mode & 0o777 == (tmp_path / "c.bin").stat().st_mode & 0o777 == 0o644


def test_every_user_facing_error_of_core_derives_from_user_error():
    from cli import CliError
    from core.checkpoint import CheckpointError
    from core.data import DataError
    from core.device import DeviceError
    from core.errors import UserError, one_line
    from core.metrics import ClassifierError
    from core.runlock import RunLockedError
    from core.train import TrainingDiverged
    from core.unet import CourseWeightsError

    for cls in (CliError, CheckpointError, DataError, DeviceError, ClassifierError, RunLockedError, TrainingDiverged,
                CourseWeightsError):
        assert issubclass(cls, UserError), cls
    assert one_line(ValueError("first line\nsecond")) == "first line" and one_line(KeyError()) == "KeyError"
