"""Before Qt starts on Linux: is there a display, and can Qt's X11 plugin load? Plain words instead of Qt's abort.

Qt aborts the process (exit code 134) when its xcb platform plugin cannot load, and names the wrong library
("xcb-cursor0 or libxcb-cursor0 is needed" whatever is missing), or, with no display, suggests reinstalling.
This module asks the dynamic loader (`ldd`) which of the plugin's libraries are missing and names the Debian /
Ubuntu packages that provide them. No Qt import: it runs before Qt is loaded.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# soname -> Debian/Ubuntu package, for the libraries Qt's xcb plugin needs that minimal systems lack
PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0", "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0", "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0", "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-randr.so.0": "libxcb-randr0", "libxcb-xkb.so.1": "libxcb-xkb1", "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-sync.so.1": "libxcb-sync1", "libxcb-xfixes.so.0": "libxcb-xfixes0", "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-util.so.1": "libxcb-util1", "libxcb-render.so.0": "libxcb-render0", "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1", "libX11.so.6": "libx11-6", "libSM.so.6": "libsm6", "libICE.so.6": "libice6",
    "libEGL.so.1": "libegl1", "libGL.so.1": "libgl1", "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1", "libfreetype.so.6": "libfreetype6", "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libdbus-1.so.3": "libdbus-1-3",
}
NON_X11_PLATFORMS = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb", "wayland", "wayland-egl", "vkkhrdisplay")


def package_for(soname: str) -> str:
    """The package that ships a library, from the table or guessed from the name (libfoo-bar.so.3 -> libfoo-bar3)."""
    if soname in PACKAGES:
        return PACKAGES[soname]
    m = re.match(r"(lib[\w.+-]+?)\.so\.(\d+)", soname)
    if not m:
        return soname
    base, major = m.group(1).lower(), m.group(2)
    return f"{base}-{major}" if base[-1].isdigit() else f"{base}{major}"


def missing_libraries(files: list[Path], run=subprocess.run) -> list[str]:
    """Sonames that `ldd` reports 'not found' for any of `files` (empty when ldd is absent or fails)."""
    if not shutil.which("ldd"):
        return []
    missing: list[str] = []
    for f in files:
        try:
            out = run(["ldd", str(f)], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.splitlines():
            if "not found" in line:
                name = line.split("=>")[0].strip()
                if name not in missing:
                    missing.append(name)
    return missing


def _xcb_plugin_files() -> list[Path]:
    try:
        import importlib.util

        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    qt = Path(list(spec.submodule_search_locations)[0]) / "Qt"
    files = [qt / "plugins" / "platforms" / "libqxcb.so", *sorted((qt / "lib").glob("libQt6XcbQpa.so*"))[:1]]
    return [f for f in files if f.is_file()]


def display_problem(environ=None, platform: str | None = None, files: list[Path] | None = None,
                    run=subprocess.run) -> str | None:
    """One plain paragraph saying why the window cannot open, or None when it can (or we cannot tell)."""
    env = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux"):
        return None
    qpa = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip().lower()
    if qpa in NON_X11_PLATFORMS or (not qpa and env.get("WAYLAND_DISPLAY")):
        return None
    if not env.get("DISPLAY"):
        return ("no display to open the window on (DISPLAY is not set). Start the app from a desktop session, "
                "use 'ssh -X' for a remote machine, or run it under a virtual screen: xvfb-run -a python main.py. "
                "The command line works without one: python main.py --help")
    missing = missing_libraries(_xcb_plugin_files() if files is None else files, run=run)
    if not missing:
        return None
    pkgs = " ".join(dict.fromkeys(package_for(m) for m in missing))
    return (f"the window cannot open: Qt's X11 support needs {', '.join(missing)}, which this system lacks. "
            f"Install them with: sudo apt-get install {pkgs}   (Debian/Ubuntu; on Fedora: sudo dnf install "
            "xcb-util-cursor xcb-util-wm xcb-util-keysyms). The command line works without them: python main.py --help")
