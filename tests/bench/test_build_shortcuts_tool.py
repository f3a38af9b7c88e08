"""tools/build_shortcuts.py: the order of its steps, what it skips and resumes after a stop, what it refuses.

The main.py commands themselves are tested where they live (tests/cli); here a stand-in runs them, writing the
files each would write."""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from toy_data import tiny_bundle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("build_shortcuts", ROOT / "tools" / "build_shortcuts.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up while being defined
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        del sys.modules[spec.name]


def _save_model(path: Path, distill_steps: int | None = None) -> None:
    from core.checkpoint import save_checkpoint

    b = tiny_bundle()
    extra = {} if distill_steps is None else {"distilled": {"distill_steps": distill_steps}}
    save_checkpoint(path, b.net.state_dict(), unet_config=b.net.config, schedule_config=b.schedule_config,
                    label_names=b.label_names, extra=extra)


class FakeMain:
    """Stands in for `python main.py ...`: writes what the command would and records it. stop_at: the step
    (by its --calls) that is interrupted once, half-way, with a save to resume from."""

    def __init__(self, stop_at: str | None = None):
        self.calls: list[list[str]] = []
        self.stop_at = stop_at

    def __call__(self, cmd: list[str]) -> int:
        from core.catalog import RESUME_FILE

        args = cmd[2:]
        self.calls.append(args)
        opt = dict(zip(args[1::2], args[2::2]))
        if args[0] == "tune-steps":
            shutil.copyfile(opt["--checkpoint"], opt["--out"])
            return 0
        out = Path(opt["--out"])
        out.mkdir(exist_ok=True)
        total = int(opt.get("--steps", 1200))
        if self.stop_at is not None and opt.get("--calls") == self.stop_at:
            self.stop_at = None
            (out / RESUME_FILE).write_bytes(b"saved")
            _save_model(out / "model.safetensors", total // 2)
            return 130
        (out / RESUME_FILE).write_bytes(b"saved")
        _save_model(out / "model.safetensors", total)
        return 0


def test_it_builds_every_spacing_then_both_students_and_copies_nothing_into_checkpoints(tool, tmp_path, capsys):
    model, out = tmp_path / "candidate.safetensors", tmp_path / "ship"
    _save_model(model)
    fake = FakeMain()
    assert tool.build(model, out, run=fake) == 0
    kinds = [(a[0], a[a.index("--calls") + 1], "ramp" in a) for a in fake.calls]
    assert kinds == [("tune-steps", "2", False), ("tune-steps", "3", False), ("tune-steps", "5", True),
                     ("tune-steps", "4", True), ("tune-steps", "6", True), ("distill", "4", False),
                     ("distill", "2", False)]
    # each step reads the file the one before wrote; the students' teachers are the shipped names
    reads = [a[a.index("--checkpoint") + 1] for a in fake.calls]
    assert reads[0] == str(model) and reads[5] == str(out / "default.safetensors")
    assert reads[6] == str(out / "default.shortcut4.safetensors")
    assert fake.calls[6][fake.calls[6].index("--steps") + 1] == "2400"
    for name in tool.SHIPPED:
        assert (out / name).is_file()
    printed = capsys.readouterr().out
    assert f"cp {out / 'default.shortcut2.safetensors'} checkpoints/default.shortcut2.safetensors" in printed
    fake.calls.clear()
    assert tool.build(model, out, run=fake) == 0 and fake.calls == []  # all done: nothing runs again


def test_after_a_stop_it_skips_what_is_done_and_resumes_the_distillation(tool, tmp_path):
    model, out = tmp_path / "candidate.safetensors", tmp_path / "ship"
    _save_model(model)
    fake = FakeMain(stop_at="4")
    assert tool.build(model, out, run=fake) == 130
    assert not (out / "default.shortcut4.safetensors").exists()  # a half-trained student is not copied
    fake.calls.clear()
    assert tool.build(model, out, run=fake) == 0
    assert fake.calls[0] == ["distill", "--checkpoint", str(out / "default.safetensors"), "--out",
                             str(out / "shortcut4"), "--resume"]
    assert [a[0] for a in fake.calls] == ["distill", "distill"] and "--resume" not in fake.calls[1]


def test_a_failing_step_stops_the_build_with_its_exit_code(tool, tmp_path):
    model, out = tmp_path / "candidate.safetensors", tmp_path / "ship"
    _save_model(model)
    ran = []
    assert tool.build(model, out, run=lambda cmd: ran.append(cmd) or 2) == 2
    assert len(ran) == 1 and not (out / "tuned-2.safetensors").exists()


def test_it_refuses_another_models_folder_a_folder_with_files_and_checkpoints(tool, tmp_path):
    model, other = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _save_model(model)
    _save_model(other, distill_steps=1)  # other bytes
    out = tmp_path / "ship"
    assert tool.build(model, out, run=FakeMain()) == 0
    with pytest.raises(tool.ToolError, match="built for another model"):
        tool.build(other, out, run=FakeMain())
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("a user's file")
    with pytest.raises(tool.ToolError, match="has files"):
        tool.build(model, busy, run=FakeMain())
    assert (busy / "mine.txt").read_text() == "a user's file"
    with pytest.raises(tool.ToolError, match="inside checkpoints"):
        tool.build(model, ROOT / "checkpoints" / "ship", run=FakeMain())
    assert not (ROOT / "checkpoints" / "ship").exists()
    with pytest.raises(tool.ToolError, match="no such model file"):
        tool.build(tmp_path / "missing.safetensors", tmp_path / "x", run=FakeMain())
    assert tool.main(["--model", str(other), "--out", str(out)]) == 2  # one line on stderr, exit code 2
