"""Before Qt starts: no display, or missing X11 libraries, give one plain line and exit 2 (not Qt's abort, 134)."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from desktop.platform_check import display_problem, package_for

ROOT = Path(__file__).resolve().parents[2]
LDD = """\tlinux-vdso.so.1 (0x00007ffd)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)
"""


def _fake_ldd(output):
    return lambda cmd, **kw: SimpleNamespace(stdout=output, returncode=0)


def test_missing_xcb_libraries_are_named_with_their_packages(tmp_path):
    msg = display_problem({"DISPLAY": ":0"}, platform="linux", files=[tmp_path / "libqxcb.so"], run=_fake_ldd(LDD))
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in msg
    assert "apt-get install libxcb-icccm4 libxcb-keysyms1" in msg and "cursor0" not in msg.split("Fedora")[0]


def test_nothing_to_say_when_everything_loads_or_qt_draws_elsewhere(tmp_path):
    ok = _fake_ldd("\tlibc.so.6 => /lib/libc.so.6\n")
    assert display_problem({"DISPLAY": ":0"}, platform="linux", files=[tmp_path / "x"], run=ok) is None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, platform="linux", files=[], run=ok) is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, platform="linux", files=[], run=ok) is None
    assert display_problem({}, platform="darwin") is None


def test_no_display_is_said_plainly():
    msg = display_problem({"QT_QPA_PLATFORM": "xcb"}, platform="linux", files=[])
    assert "DISPLAY is not set" in msg and "xvfb-run" in msg


def test_package_names_for_unlisted_libraries():
    assert package_for("libxcb-cursor.so.0") == "libxcb-cursor0"
    assert package_for("libfoo-bar.so.3") == "libfoo-bar3"
    assert package_for("libgtk4.so.1") == "libgtk4-1"
    # a bare Debian 12 lacks libgthread-2.0.so.0, which glib's package ships (there is no libgthread-2.0-0 package)
    assert package_for("libgthread-2.0.so.0") == "libglib2.0-0"


def test_the_app_without_a_display_exits_2_with_one_line():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["QT_QPA_PLATFORM"] = "xcb"
    r = subprocess.run([sys.executable, "main.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "DISPLAY is not set" in r.stderr
