"""The code paths a GPU takes, run here on the CPU with the GPU-only parts switched by flags.

No test compiles anything (that takes tens of seconds and needs a compiler): torch.compile is replaced
by stand-ins, which is enough to pin the fallbacks and the CUDA-graph handling around it."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core import compile as device_mod
from core.data import ImageDataset
from core.compile import CompiledForward, compiled_forward
from core.samplers import generate
from core.schedule import Schedule
from core.training import TRAIN_PRESETS, Trainer
from core.unet import ContextUnet, UNetConfig


@pytest.fixture()
def net():
    torch.manual_seed(0)
    return ContextUnet(UNetConfig(n_feat=8, n_cfeat=3, height=16)).eval()


def _sample(net, **kw):
    return generate(net, Schedule(), sampler="dpmpp2m", steps=4, n=3, context=np.eye(3, dtype=np.float32), seed=5,
                    guidance=2.0, **kw)


def test_compile_without_a_compiler_samples_eagerly_with_a_note(net, monkeypatch):
    monkeypatch.setattr(device_mod, "compiler_available", lambda device: False)
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled without a compiler"))
    plain, fallback = _sample(net), _sample(net, compile=True)
    assert np.array_equal(plain.images, fallback.images)
    assert fallback.settings["compiled"] is False
    assert "C++ compiler" in fallback.settings["compile_note"]
    assert "compiled" not in plain.settings


def test_a_compiler_failure_falls_back_to_the_same_images(net, monkeypatch):
    calls = []

    def broken(*args):
        calls.append(len(args))
        raise RuntimeError("inductor: no working C++ compiler found\nlong trace")

    monkeypatch.setattr(device_mod, "compiler_available", lambda device: True)
    monkeypatch.setattr(torch, "compile", lambda module, **kw: broken)
    plain = _sample(net)
    fallback = _sample(net, compile=True)
    assert np.array_equal(plain.images, fallback.images)
    assert calls == [3]  # tried once, then eager for good
    assert fallback.settings["compiled"] is False
    assert fallback.settings["compile_note"].startswith("torch.compile failed (RuntimeError: inductor: no working")
    assert "long trace" not in fallback.settings["compile_note"]


def test_one_compiled_forward_per_net_is_reused(net, monkeypatch):
    made = []
    monkeypatch.setattr(device_mod, "compiler_available", lambda device: True)
    monkeypatch.setattr(torch, "compile", lambda module, **kw: made.append(kw) or module)
    first = compiled_forward(net, torch.device("cpu"))
    assert compiled_forward(net, torch.device("cpu")) is first and first.compiled
    assert made == [{"dynamic": False, "mode": None}]
    assert np.array_equal(_sample(net, compile=True).images, _sample(net).images)


def test_cuda_graph_outputs_are_copied_out_of_the_graph_pool(monkeypatch):
    """On CUDA the forward is a replayed CUDA graph whose output buffer the next replay overwrites: each
    step is marked and its output cloned, so a multistep solver's remembered predictions stay valid."""
    pool = torch.zeros(2)

    def replay(x):  # what a CUDA graph does: the same output buffer every call
        pool.copy_(x)
        return pool

    marks = []
    monkeypatch.setattr(device_mod, "compiler_available", lambda device: True)
    monkeypatch.setattr(torch, "compile", lambda module, **kw: (kw["mode"] == "reduce-overhead" or pytest.fail())
                        and replay)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    fwd = CompiledForward(torch.nn.Identity(), torch.device("cuda"))  # only the device's type is read
    a, b = fwd(torch.tensor([1.0, 2.0])), fwd(torch.tensor([3.0, 4.0]))
    assert a.tolist() == [1.0, 2.0] and b.tolist() == [3.0, 4.0] and len(marks) == 2


def test_packaged_app_never_compiles(monkeypatch):
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert not device_mod.compiler_available(torch.device("cpu"))
    assert not device_mod.compiler_available(torch.device("cuda"))


def _blobs() -> ImageDataset:
    rng = np.random.default_rng(0)
    imgs = (rng.random((24, 16, 16, 3)) * 255).astype(np.uint8)
    return ImageDataset(imgs, np.eye(3, dtype=np.float32)[rng.integers(0, 3, 24)], ["a", "b", "c"], "blobs")


_SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
_CORE = Path(__file__).resolve().parents[2] / "core"
_OURS = tuple(str(p) for p in (*sorted((_CORE / "training").glob("*.py")), _CORE / "unet.py", _CORE / "desk_unet.py",
                               _CORE / "device.py"))


def test_no_device_to_host_read_inside_a_group_of_training_steps(tmp_path, monkeypatch):
    """A CUDA run reads the loss back once per log_every steps. Any .item()/.cpu()/bool() on a tensor inside a
    training step would stall the GPU every step: none may come from our code (PyTorch's own optimizer
    reads CPU-side step counters, which is not a device sync)."""
    cfg = replace(TRAIN_PRESETS["tiny"], steps=6, batch_size=8, log_every=3, checkpoint_every=1000, seed=1)
    tr = Trainer(_blobs(), cfg, tmp_path / "run", device="cpu")
    seen: list[str] = []
    for name in _SYNCS:
        original = getattr(torch.Tensor, name)

        def counting(self, *a, _original=original, _name=name, **k):
            caller = sys._getframe(1).f_code.co_filename
            if caller in _OURS:
                seen.append(f"{_name} from {Path(caller).name}:{sys._getframe(1).f_lineno}")
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counting)
    for _ in range(3):
        tr._train_step()
    monkeypatch.undo()
    assert seen == []
    assert all(Path(p).is_file() for p in _OURS) and any("trainer.py" in p for p in _OURS)  # watching real files
    assert [m.step for m in tr.run()] == [1, 2, 3, 4, 5, 6]  # the run itself, read back in groups of 3
    tr.close()


_TEAM_CHECK = """
import os, threading, time, torch
from core.threads import release_openmp_threads
torch.set_num_threads(2)
out = []
def body():
    count = lambda: len(os.listdir("/proc/self/task"))
    before = count()
    a = torch.randn(1000, 1000)
    (a + a).sum()  # a parallel region: this thread now masters an OpenMP team
    with_team, released = count(), release_openmp_threads()
    end = time.monotonic() + 5  # the team's threads are told to end; they leave a moment later (seen: 1 in 6)
    while count() > before and time.monotonic() < end:
        time.sleep(0.01)
    out.extend([before, with_team, released, count()])
t = threading.Thread(target=body)
t.start()
t.join()
print(*out)
"""


def test_a_thread_that_ran_a_parallel_op_can_free_its_openmp_team():
    """The GUI thread frees its OpenMP team before a job starts (desktop.threads.start): the team's threads
    end. In a fresh process, so that no other test's threads come or go while the threads are counted."""
    import os
    import subprocess

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("counts threads through /proc (Linux)")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", _TEAM_CHECK], cwd=Path(__file__).resolve().parents[2], env=env,
                         capture_output=True, text=True, check=True, timeout=120).stdout.split()
    before, with_team, released, after = int(out[0]), int(out[1]), out[2], int(out[3])
    assert with_team > before and released == "True" and after == before


@pytest.mark.parametrize("major, hip, expected", [(7, None, "fp16"), (8, None, "bf16"), (9, None, "bf16"),
                                                  (7, "6.2", "bf16")])
def test_auto_precision_on_a_gpu_takes_bf16_only_where_it_is_in_hardware(monkeypatch, major, hip, expected):
    """A V100 or T4 (compute capability 7.x) would emulate bf16, which torch.cuda.is_bf16_supported() counts as
    support: such GPUs train in fp16 with loss scaling; Ampere on, and ROCm, in bf16."""
    from types import SimpleNamespace

    from core.device import resolve_precision

    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: asked.append(d) or SimpleNamespace(major=major))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: pytest.fail("counts emulation as support"))
    monkeypatch.setattr(torch.version, "hip", hip)
    gpu = torch.device("cuda", 1)
    assert resolve_precision("auto", gpu) == expected
    assert asked == ([] if hip else [gpu])  # the run's own GPU, not the current one
    assert resolve_precision("fp32", gpu) == "fp32"
