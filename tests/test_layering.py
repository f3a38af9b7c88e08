"""Architecture rules (docs/architecture.md): which way the imports may run, and what loads torch.

core never imports Qt, desktop, benchmarks or the CLI. In desktop only engine.py and jobs/ import core
(or torch), and only inside functions; every other desktop module may use just the torch-free core modules
in TORCH_FREE_CORE. The window and its panels import without loading torch.
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_FREE_CORE = {"core.catalog", "core.errors", "core.config", "core.labels", "core.context", "core.xy_grid",
                   "core.schema", "core.progress"}  # the GUI may import these


def _run(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level?) for every absolute import in a file; `from core import x` gives core.x."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ("core", "desktop", "benchmarks"):
                out += [(f"{node.module}.{a.name}", id(node) in top) for a in node.names]
            else:
                out.append((node.module, id(node) in top))
    return out


def _modules(package: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts)


def _may_use_core(path: Path, root: Path = ROOT) -> bool:
    rel = path.relative_to(root / "desktop").as_posix()
    return rel == "engine.py" or rel.startswith("jobs/")


def _layering_violations(root: Path = ROOT) -> list[tuple[str, str]]:
    """(file, import) pairs that break the desktop rules; [] for a sound tree."""
    bad = []
    for path in _modules("desktop", root):
        rel = path.relative_to(root).as_posix()
        for module, top in _imports(path):
            head = module.split(".")[0]
            if head in ("benchmarks", "cli"):
                bad.append((rel, module))  # developer code and the CLI are not the app's
            elif head in ("core", "torch") and module not in TORCH_FREE_CORE:
                if not _may_use_core(path, root):
                    bad.append((rel, module))  # only engine.py and jobs/ reach the core
                elif top:
                    bad.append((rel, f"{module} (at import time)"))  # and only lazily: the window comes first
    return bad


def test_importing_core_loads_no_qt_module():
    code = ("import sys, core.schedule, core.unet, core.samplers, core.training, core.checkpoint, core.data, "
            "core.device, core.export, core.paths\n"
            "try:\n    import core.metrics\nexcept ImportError:\n    pass\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6', 'desktop')]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    res = _run(code)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_settings_labels_and_context_parser_load_no_torch():
    code = ("import sys, core.config, core.labels, core.context, core.xy_grid, core.schema, core.progress\n"
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    res = _run(code, 60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_shared_catalogue_and_errors_load_no_torch():
    code = ("import sys, core.catalog, core.errors\n"
            "sys.exit(1 if 'torch' in sys.modules or 'numpy' in sys.modules else 0)")
    res = _run(code, 60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_core_imports_neither_desktop_nor_benchmarks_nor_the_cli():
    for path in _modules("core"):
        bad = [m for m, _ in _imports(path) if m.split(".")[0] in ("desktop", "benchmarks", "cli", "PySide6",
                                                                     "pyqtgraph", "shiboken6")]
        assert not bad, (path.name, bad)


def test_only_the_engine_and_the_jobs_reach_the_core_and_only_lazily():
    """A panel or widget that imports core.samplers (or torch), or an engine that imports it at module level, fails."""
    assert _layering_violations() == []


def test_the_rule_catches_the_old_shapes(tmp_path):
    """The check itself: a panel importing core.samplers, a widget importing torch, an eager engine, a GUI module
    importing benchmarks are each reported; the torch-free catalogue is not."""
    files = {
        "desktop/panels/p.py": "from core.samplers import generate\nfrom core.catalog import SAMPLER_CATALOG\n",
        "desktop/widgets/w.py": "def f():\n    import torch\n",
        "desktop/engine.py": "from core.data import load_dataset\n",
        "desktop/jobs/j.py": "def f():\n    from core import metrics\n",
        "desktop/main_window.py": "from benchmarks import gui_latency\nfrom core.errors import UserError\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert sorted(_layering_violations(tmp_path)) == [
        ("desktop/engine.py", "core.data (at import time)"), ("desktop/main_window.py", "benchmarks.gui_latency"),
        ("desktop/panels/p.py", "core.samplers"), ("desktop/widgets/w.py", "torch")]


def test_the_window_and_its_panels_import_without_torch():
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in _modules("desktop"))
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "bad = [m for m in ('torch', 'core.training', 'core.samplers', 'benchmarks') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    res = _run(code)
    assert "desktop.main_window" in modules and "desktop.panels.sample_panel" in modules
    assert res.returncode == 0, res.stdout + res.stderr


def test_export_and_paths_load_no_torch():
    res = _run("import sys, core.export, core.paths; sys.exit(1 if 'torch' in sys.modules else 0)", 60)
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
    from core.training import TrainingDiverged
    from core.unet import CourseWeightsError

    for cls in (CliError, CheckpointError, DataError, DeviceError, ClassifierError, RunLockedError, TrainingDiverged,
                CourseWeightsError):
        assert issubclass(cls, UserError), cls
    assert one_line(ValueError("first line\nsecond")) == "first line" and one_line(KeyError()) == "KeyError"
