"""Build the packaged desktop app and test it: one command for maintainers.

    python3 tools/build_app.py                  # build dist/DiffusionDesk/, smoke-test it, time its start
    python3 tools/build_app.py --default-checkpoint runs/default/model.safetensors
    python3 tools/build_app.py --skip-build     # test an existing dist/DiffusionDesk/ again

Steps: pick an interpreter that has the app's requirements and PyInstaller (this one, or a build venv
in build/venv created from requirements-build.txt); make the app icon if resources/icons/ has none;
run PyInstaller on build.spec into dist/DiffusionDesk/; run the built executable's smoke test
(`--self-test`: window, default model, DDIM grid, one-click sampling, tiny training); check that
nothing new appeared inside dist/DiffusionDesk/; measure the start-up time, cold and warm.
Prints the build time, the folder size and the smoke test's report; exits non-zero if anything failed.

Too slow for every CI run (several minutes, ~1 GB of disk): run it before a release and after
changing build.spec, requirements or anything the app imports at start-up. See docs/packaging.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = "DiffusionDesk"
DIST = ROOT / "dist"
WORK = ROOT / "build"
BUILD_VENV = WORK / "venv"
ICON_DIR = ROOT / "resources" / "icons"
NEEDED = ("torch", "PySide6", "pyqtgraph", "safetensors", "PIL", "numpy", "PyInstaller")


def log(text: str = "") -> None:
    print(text, flush=True)


# --- interpreter ------------------------------------------------------------------------------------

def has_requirements(python: str) -> bool:
    code = "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in %r))" % (NEEDED,)
    return subprocess.run([python, "-c", code], cwd=ROOT).returncode == 0


def binding_problem(python: str) -> str:
    """desktop.app's warning about a Qt binding release known to crash the app ('' when sound)."""
    code = "from desktop.app import qt_binding_problem as q; print(q() or '')"
    res = subprocess.run([python, "-c", code], cwd=ROOT, capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else ""


def build_python(args) -> str:
    """The interpreter to build with: --python, else this one if it has everything, else build/venv."""
    if args.python:
        if not has_requirements(args.python):
            sys.exit(f"error: {args.python} lacks one of {', '.join(NEEDED)}; "
                     f"install them with: {args.python} -m pip install -r requirements-build.txt")
        problem = binding_problem(args.python)
        if problem:
            sys.exit(f"error: {args.python}: {problem}")
        return args.python
    if not args.venv and has_requirements(sys.executable):
        problem = binding_problem(sys.executable)
        if not problem:
            return sys.executable
        log(f"Not building with {sys.executable}: {problem}\nUsing the build venv {BUILD_VENV} instead.")
    py = BUILD_VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not py.is_file():
        log(f"Creating the build venv {BUILD_VENV} ...")
        venv.EnvBuilder(with_pip=True).create(BUILD_VENV)
    if not has_requirements(str(py)) or binding_problem(str(py)):
        log(f"Installing torch from {args.torch_index} and requirements-build.txt into the build venv "
            "(torch is large: a few minutes) ...")
        pip = [str(py), "-m", "pip", "install", "-q"]
        # torch first, from the chosen index: on Linux, PyPI's default torch wheel is the multi-GB CUDA build
        if subprocess.run(pip + [torch_requirement(), "--index-url", args.torch_index], cwd=ROOT).returncode != 0:
            # An offline machine or a mirror: the index pip is configured with may still have the pinned torch.
            log(f"Could not install torch from {args.torch_index}; trying pip's configured package index instead.")
            if subprocess.run(pip + [torch_requirement()], cwd=ROOT).returncode != 0:
                raise SystemExit(f"error: could not install {torch_requirement()} from {args.torch_index} nor from "
                                 "pip's configured index; give one that has it with --torch-index URL")
        if subprocess.run(pip + ["-r", str(ROOT / "requirements-build.txt")], cwd=ROOT).returncode != 0:
            raise SystemExit("error: could not install requirements-build.txt into the build venv (see pip's "
                             "message above)")
    return str(py)


def torch_requirement() -> str:
    """The torch pin of requirements.txt (e.g. 'torch==2.13.0')."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip().startswith("torch"):
            return line.split("#")[0].strip()
    return "torch"


# --- icon -------------------------------------------------------------------------------------------

def make_icon() -> None:
    """resources/icons/app_icon.{png,ico,icns}: the app's own drawing (desktop.app.draw_app_icon)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from desktop.app import draw_app_icon, make_application

    make_application([])
    ICON_DIR.mkdir(parents=True, exist_ok=True)
    png = ICON_DIR / "app_icon.png"
    draw_app_icon(512).save(str(png))
    img = Image.open(png).convert("RGBA")
    img.save(ICON_DIR / "app_icon.ico", sizes=[(s, s) for s in (16, 24, 32, 48, 64, 128, 256)])
    img.save(ICON_DIR / "app_icon.icns")
    log(f"Icon written: {png} (+ .ico, .icns)")


def ensure_icon(python: str) -> None:
    if not all((ICON_DIR / f"app_icon.{ext}").is_file() for ext in ("png", "ico", "icns")):
        subprocess.run([python, str(Path(__file__).resolve()), "--make-icon"], cwd=ROOT, check=True)


# --- build ------------------------------------------------------------------------------------------

def default_model(args) -> Path | None:
    if args.default_checkpoint:
        path = Path(args.default_checkpoint).resolve()
        if not path.is_file():
            sys.exit(f"error: --default-checkpoint {path}: no such file")
        return path
    shipped = ROOT / "checkpoints" / "default.safetensors"
    if shipped.is_file():
        return shipped
    if args.allow_no_model:
        return None
    sys.exit("error: there is no default model (checkpoints/default.safetensors), so the app would open without "
             "one and the smoke test would fail.\nShip one with --default-checkpoint PATH (for example "
             "runs/default/model.safetensors), or build anyway with --allow-no-model.")


def run_pyinstaller(python: str, model: Path | None) -> float:
    env = dict(os.environ)
    if model is not None:
        env["DIFFUSION_DESK_DEFAULT_CHECKPOINT"] = str(model)
    cmd = [python, "-m", "PyInstaller", str(ROOT / "build.spec"), "--noconfirm", "--clean",
           "--distpath", str(DIST), "--workpath", str(WORK / "pyinstaller"), "--log-level", "WARN"]
    WORK.mkdir(exist_ok=True)
    log_path = WORK / "pyinstaller.log"
    log(f"Running PyInstaller (log: {log_path.relative_to(ROOT)}) ...")
    start = time.perf_counter()
    with open(log_path, "w") as out:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        log(log_path.read_text(errors="replace")[-4000:])
        sys.exit(f"error: PyInstaller failed (exit {rc}); the full log is {log_path}")
    return seconds


# --- the built app ----------------------------------------------------------------------------------

def app_folder() -> Path:
    return DIST / APP


def executable() -> Path:
    if sys.platform == "darwin" and (DIST / f"{APP}.app").is_dir():
        return DIST / f"{APP}.app" / "Contents" / "MacOS" / APP
    return app_folder() / (f"{APP}.exe" if os.name == "nt" else APP)


def folder_size(folder: Path) -> tuple[int, dict[str, int]]:
    """Total bytes, and bytes per top-level part of the bundle (torch, PySide6, ...)."""
    parts: dict[str, int] = {}
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(dirpath, name)
            if p.is_symlink():
                continue
            size = p.stat().st_size
            total += size
            rel = p.relative_to(folder).parts
            key = "/".join(rel[:2]) if rel[0] == "_internal" and len(rel) > 2 else rel[0]
            parts[key] = parts.get(key, 0) + size
    return total, parts


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(dirpath, name)
            st = p.lstat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def evict_from_page_cache(folder: Path) -> bool:
    """Drop the app's files from the OS file cache (Linux), so the next start reads them from disk."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(dirpath, name)
            if p.is_symlink():
                continue
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return True


def run_app(args: list[str], timeout: float) -> tuple[int, str, dict]:
    """Start the built executable with the self-test; (exit code, output, its SELF_TEST_JSON numbers)."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    env.pop("DIFFUSION_DESK_HOME", None)  # the self-test makes its own temporary data folder
    env["DIFFUSION_DESK_T0"] = repr(time.time())  # "process start" as the user would feel it
    try:
        res = subprocess.run([str(executable()), "--self-test", "--json", *args], cwd=WORK, env=env,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return 124, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), {}
    out = res.stdout + res.stderr
    numbers = {}
    for line in res.stdout.splitlines():
        if line.startswith("SELF_TEST_JSON "):
            numbers = json.loads(line.split(" ", 1)[1])
    return res.returncode, out, numbers


def smoke_test(timeout: float) -> bool:
    log(f"\nSmoke test: {executable().relative_to(ROOT)} --self-test")
    before = snapshot(app_folder())
    report = WORK / "self_test_report.txt"
    rc, out, _ = run_app(["--report", str(report), "--save", str(WORK / "self_test_grid.png"),
                          "--screenshot", str(WORK / "self_test_window.png")], timeout)
    log("\n".join("  | " + ln for ln in out.rstrip().splitlines() if "propagateSizeHints" not in ln))
    cli_ok = cli_check(timeout)
    after = snapshot(app_folder())
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if changed:
        log(f"FAIL: the app wrote inside its own folder: {changed[:10]}")
    else:
        log(f"ok: nothing new or changed in {app_folder().relative_to(ROOT)}/ after the smoke test")
    return rc == 0 and cli_ok and not changed


def cli_check(timeout: float) -> bool:
    """The same executable as a command-line tool: sample a small grid with the default model."""
    out_png = WORK / "cli_sample.png"
    out_png.unlink(missing_ok=True)
    cmd = [str(executable()), "sample", "--out", str(out_png), "--sampler", "dpmpp2m", "--steps", "10", "--n", "12"]
    res = subprocess.run(cmd, cwd=WORK, capture_output=True, text=True, timeout=timeout)
    ok = res.returncode == 0 and out_png.is_file()
    text = (res.stdout + res.stderr).strip().splitlines()
    log(f"{'ok' if ok else 'FAIL'}: command line 'DiffusionDesk sample ...': {text[-1] if text else res.returncode}")
    return ok


def startup_times(runs: int, timeout: float) -> dict:
    """Seconds from launch to the window shown and to the engine ready (model loaded): cold, then warm."""
    result = {}
    if evict_from_page_cache(app_folder()):
        rc, out, n = run_app(["--startup-only"], timeout)
        if rc == 0 and n:
            result["cold"] = (n["window_shown_s"], n["engine_ready_s"])
        else:
            log(out)
    warm = []
    for _ in range(runs):
        rc, out, n = run_app(["--startup-only"], timeout)
        if rc != 0 or not n:
            log(out)
            break
        warm.append((n["window_shown_s"], n["engine_ready_s"]))
    if warm:
        result["warm"] = (statistics.median(w[0] for w in warm), statistics.median(w[1] for w in warm))
        result["warm_runs"] = warm
    return result


# --- main -------------------------------------------------------------------------------------------

def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", help="build with this interpreter (it needs requirements-build.txt installed)")
    p.add_argument("--venv", action="store_true", help="build in build/venv (created from requirements-build.txt)")
    p.add_argument("--torch-index", default="https://download.pytorch.org/whl/cpu",
                   help="where the build venv gets torch (default: the CPU wheels; for a CUDA build e.g. "
                        "https://download.pytorch.org/whl/cu128)")
    p.add_argument("--default-checkpoint", help="ship this .safetensors as the default model "
                                                "(default: checkpoints/default.safetensors)")
    p.add_argument("--allow-no-model", action="store_true", help="build even without a default model")
    p.add_argument("--skip-build", action="store_true", help="test the existing dist/ only")
    p.add_argument("--no-smoke", action="store_true", help="skip the smoke test")
    p.add_argument("--startup-runs", type=int, default=3, help="warm start-up measurements (0: none; default 3)")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed for each run of the app")
    p.add_argument("--make-icon", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.make_icon:
        make_icon()
        return 0
    build_s = None
    if not args.skip_build:
        python = build_python(args)
        log(f"Build interpreter: {python}")
        ensure_icon(python)
        model = default_model(args)
        log(f"Default model: {model or '(none)'}")
        build_s = run_pyinstaller(python, model)
    if not executable().is_file():
        sys.exit(f"error: {executable()} does not exist; build first")
    total, parts = folder_size(app_folder())
    ok = True
    if not args.no_smoke:
        ok = smoke_test(args.timeout)
    times = startup_times(args.startup_runs, args.timeout) if args.startup_runs > 0 else {}
    log("\nSummary")
    if build_s is not None:
        log(f"  build time         {build_s / 60:.1f} min ({build_s:.0f} s)")
    log(f"  folder size        {total / 2**20:,.0f} MiB  ({app_folder().relative_to(ROOT)}/)")
    for key, size in sorted(parts.items(), key=lambda kv: -kv[1])[:8]:
        log(f"    {size / 2**20:8,.0f} MiB  {key}")
    for kind in ("cold", "warm"):
        if kind in times:
            shown, ready = times[kind]
            extra = (f" (median of {len(times['warm_runs'])})" if kind == "warm"
                     else " (app files evicted from the cache)")
            log(f"  start-up, {kind}     window shown {shown:.2f} s, model loaded {ready:.2f} s{extra}")
    if times.get("warm_runs"):
        log("    warm runs: " + ", ".join(f"{a:.2f}/{b:.2f} s" for a, b in times["warm_runs"]))
    if not args.no_smoke:
        log(f"  smoke test         {'PASSED' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
