"""Who imports `benchmarks`, and how its modules import each other, read from the source with `ast`.

The app (core/, desktop/, main.py) never imports the benchmarks: a packaged build ships without them, and
cli/bench.py reaches them only for `main.py bench`. Inside the package the imports form no cycle: the shared
modules (common, tables, ...) sit below the benchmarks, and the driver (bench.py) above them.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "benchmarks"
# Besides the package itself: the CLI's `bench` command, the developer scripts and the tests.
MAY_IMPORT_FILES = ("cli/bench.py",)
MAY_IMPORT_DIRS = ("benchmarks/", "tools/", "tests/")
SKIP_DIRS = {"__pycache__", "build", "dist", "runs"}


def _python_files(root: Path) -> list[Path]:
    """The project's Python files: hidden folders (.venv, .git) and build output left out."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS]
        out += [Path(folder) / f for f in files if f.endswith(".py")]
    return sorted(out)


def _imported_modules(path: Path) -> set[str]:
    """Every absolute module name a file imports, at any depth (lazy imports inside functions too);
    `from benchmarks import x` gives both benchmarks and benchmarks.x."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _importers_of(package: str, root: Path) -> list[str]:
    """Files (relative paths) that import `package` or one of its modules."""
    return [p.relative_to(root).as_posix() for p in _python_files(root)
            if any(m == package or m.startswith(package + ".") for m in _imported_modules(p))]


def _violations(root: Path) -> list[str]:
    """Files that import the benchmarks without being allowed to (the app: core/, desktop/, main.py, ...)."""
    return [f for f in _importers_of(PACKAGE, root) if f not in MAY_IMPORT_FILES and not f.startswith(MAY_IMPORT_DIRS)]


def _package_graph(package_dir: Path) -> dict[str, set[str]]:
    """{module: modules of the same package it imports}, relative (`from .x import`) and absolute imports."""
    package = package_dir.name
    names = {p.stem for p in package_dir.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in sorted(package_dir.glob("*.py")):
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:  # from . import x / from .x import y
                    base = node.module
                elif node.level == 0 and node.module and node.module.split(".")[0] == package:
                    base = ".".join(node.module.split(".")[1:2]) or None
                else:
                    continue
                if base:
                    edges.add(base.split(".")[0])
                else:  # from . import x, y: the names may be modules
                    edges |= {a.name for a in node.names if a.name in names}
            elif isinstance(node, ast.Import):
                edges |= {a.name.split(".")[1] for a in node.names
                          if a.name.startswith(package + ".") and a.name.split(".")[1] in names}
        graph[path.stem] = {e for e in edges if e in names and e != path.stem}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_only_the_cli_tools_and_tests_import_the_benchmarks():
    assert "cli/bench.py" in _importers_of(PACKAGE, ROOT)  # the reader finds the one importer that must be there
    assert _violations(ROOT) == [], "the app imports the benchmarks"


def test_the_benchmarks_package_has_no_import_cycle():
    graph = _package_graph(ROOT / PACKAGE)
    assert {"bench", "common"} <= set(graph) and "common" in graph["bench"]  # the graph was read
    assert _cycle(graph) is None, f"import cycle in benchmarks/: {' -> '.join(_cycle(graph))}"


def test_the_checks_catch_a_made_up_cycle_and_a_made_up_importer(tmp_path):
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from benchmarks import c\n")
    (pkg / "c.py").write_text("import benchmarks.a\n")
    (pkg / "d.py").write_text("from . import c\n")
    assert _cycle(_package_graph(pkg)) == ["a", "b", "c", "a"]
    (pkg / "c.py").write_text("")
    assert _cycle(_package_graph(pkg)) is None
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "x.py").write_text("def g():\n    from benchmarks.common import log\n")  # lazy: still found
    (tmp_path / "main.py").write_text("from benchmarks import bench\n")
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "bench.py").write_text("import benchmarks.bench\n")
    (tmp_path / "cli" / "train.py").write_text("from benchmarks import common\n")  # not the bench command
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "y.py").write_text("import benchmarks\n")  # not ours: skipped
    assert _importers_of(PACKAGE, tmp_path) == ["benchmarks/b.py", "cli/bench.py", "cli/train.py", "core/x.py",
                                                "main.py"]
    assert _violations(tmp_path) == ["cli/train.py", "core/x.py", "main.py"]
