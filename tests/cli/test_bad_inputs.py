"""Bad input and faults: every CLI mistake is exit 2 with one line on stderr and no traceback; a diverging
run never writes a poisoned checkpoint; one writer per run folder; an unwritable folder fails first; the
model/resume pair survives a crash between its writes; SIGTERM saves like Ctrl-C."""
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from core.checkpoint import read_metadata
from cli import main
from core.data import ImageDataset, save_npz
from core.runlock import LOCK_FILE, RunLockedError
from core.training import TRAIN_PRESETS, Trainer, TrainingDiverged, read_loss_log

ROOT = Path(__file__).resolve().parents[2]
CFG = replace(TRAIN_PRESETS["tiny"], steps=12, batch_size=8, checkpoint_every=4, precision="fp32", seed=1)


def _dataset() -> ImageDataset:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    return ImageDataset(imgs, np.eye(2, dtype=np.float32)[np.arange(32) % 2], ["cat", "dog"], "tiny")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny data set file and one trained run folder, shared by the table below."""
    tmp = tmp_path_factory.mktemp("bad")
    save_npz(_dataset(), tmp / "tiny.npz")
    assert main(["train", "--data", str(tmp / "tiny.npz"), "--out", str(tmp / "run"), "--preset", "tiny",
                 "--steps", "4", "--batch", "8", "--precision", "fp32", "--device", "cpu"]) == 0
    return tmp


def _patched_checkpoint(src: Path, dst: Path, **meta_changes) -> Path:
    """A copy of a checkpoint with some metadata fields replaced (JSON text as stored)."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(src))
    meta.update(meta_changes)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def _unet(path: Path, **changes) -> str:
    cfg = read_metadata(path)["unet_config"]
    return json.dumps({**cfg, **changes})


def _cases(tmp: Path) -> list[tuple[list[str], str]]:
    data, run = str(tmp / "tiny.npz"), tmp / "run"
    ck = run / "model.safetensors"
    train = ["train", "--data", data, "--preset", "tiny", "--device", "cpu", "--out"]
    sample = ["sample", "--device", "cpu", "--out", str(tmp / "o.png"), "--checkpoint"]
    bad = lambda name, **kw: str(_patched_checkpoint(ck, tmp / f"{name}.safetensors", **kw))  # noqa: E731
    cfg = {}
    for name, text in {"typo": '{"n_feet": 8}', "list": "[8]", "broken": '{"steps": ', "neg": '{"steps": -1}'}.items():
        cfg[name] = tmp / f"cfg_{name}.json"
        cfg[name].write_text(text)
    return [
        (train + [str(tmp / "a"), "--config", str(cfg["typo"])], "unknown setting(s) n_feet"),
        (train + [str(tmp / "a"), "--config", str(cfg["list"])], "must hold one JSON object"),
        (train + [str(tmp / "a"), "--config", str(cfg["broken"])], "not valid JSON"),
        (train + [str(tmp / "a"), "--config", str(cfg["neg"])], "steps must be from 1"),
        (train + [str(tmp / "a"), "--config", str(tmp / "none.json")], "cannot read it"),
        (train + [str(tmp / "a"), "--checkpoint-every", "0"], "--checkpoint-every 0"),
        (train + [str(tmp / "a"), "--checkpoint-every", "-1"], "--checkpoint-every -1"),
        (train + [str(tmp / "a"), "--n-feat", "0"], "--n-feat 0"),
        (train + [str(tmp / "a"), "--n-feat", "-8"], "--n-feat -8"),
        (train + [str(tmp / "a"), "--lr", "inf"], "--lr inf"),
        (train + [str(tmp / "a"), "--lr", "1e6"], "--lr 1000000.0"),
        (train + [str(tmp / "a"), "--steps", "0"], "--steps 0"),
        (train + [str(tmp / "a"), "--steps", str(10**12)], "--steps"),
        (train + [str(tmp / "a"), "--seed", str(10**20)], "--seed"),
        (train + [str(tmp / "a"), "--schedule", "linear_zsnr", "--prediction", "eps"], "do not go together"),
        (train + [str(tmp / "o.png" if False else tmp / "tiny.npz" / "sub")], "cannot write"),
        (train + [str(run)], "already holds a run"),
        (train + [str(tmp / "a"), "--init", str(tmp / "missing.safetensors")], "--init"),
        (train + [str(run), "--resume", "--init", str(ck)], "use one of them"),
        (sample + [str(ck), "--n", "-5", "--context", "none"], "--n -5"),
        (sample + [str(ck), "--n", "0"], "--n 0"),
        (sample + [str(ck), "--steps", "0"], "--steps 0"),
        (sample + [str(ck), "--steps", "501"], "--steps 501"),
        (sample + [str(ck), "--eta", "2"], "--eta 2"),
        (sample + [str(ck), "--eta", "nan"], "--eta nan"),
        (sample + [str(ck), "--sampler", "dpmpp2m", "--eta", "0.5"], "has no eta"),
        (sample + [str(ck), "--guidance", "nan"], "--guidance nan"),
        (sample + [str(ck), "--guidance", "inf"], "--guidance inf"),
        (sample + [str(ck), "--context", "cat:abc"], "bad weight 'abc' for label cat"),
        (sample + [str(ck), "--context", "cat:1e30"], "out of range"),
        (sample + [str(ck), "--seed", str(2**63)], "--seed"),
        (sample + [str(ck), "--guidance-interval", "0.8,0.1"], "--guidance-interval"),
        (sample + [str(ck), "--gif", str(tmp)], "is a folder"),
        (sample + [bad("null", unet_config="null")], "field 'unet_config' must be a JSON object"),
        (sample + [bad("list", unet_config="[32, 2]")], "field 'unet_config' must be a JSON object"),
        (sample + [bad("neg", unet_config=_unet(ck, n_feat=-8))], "n_feat"),
        (sample + [bad("frac", unet_config=_unet(ck, n_feat=12.5))], "n feat must be a whole number"),
        (sample + [bad("huge", unet_config=_unet(ck, n_feat=100000))], "n_feat"),
        (sample + [bad("tfrac", schedule_config=json.dumps({"kind": "linear", "T": 500.5}))], "T must be"),
        (sample + [bad("tbig", schedule_config=json.dumps({"kind": "linear", "T": 10**9}))], "T must be"),
        (sample + [bad("labels", label_names=json.dumps(["cat"]))], "1 label names"),
        (sample + [data], "this is a data set (numpy file), not a model"),
        (sample + [str(tmp / "run" / "loss.csv")], "not a readable .safetensors"),
        # settings a resumed run cannot change are refused, not silently ignored
        (["train", "--data", data, "--out", str(run), "--resume", "--batch", "4", "--lr", "0.5"],
         "--batch --lr: a resumed run keeps the settings"),
        (["train", "--data", data, "--out", str(run), "--resume", "--config", str(cfg["typo"])], "--config"),
        # every bench flag is checked before any work starts
        (["bench", "quality", "--n", "0"], "--n 0"),
        (["bench", "quality", "--seeds", "0"], "--seeds 0"),
        (["bench", "quality", "--guidance", "nan"], "--guidance nan"),
        (["bench", "quality", "--samplers", "ddim:10+g=nan"], "guidance must be a finite number"),
        (["bench", "quality", "--samplers", "bogus:3"], "unknown sampler"),
        (["bench", "sample", "--sample-list", "ddim:0"], "steps must be between 1 and 500"),
        (["bench", "sample", "--sample-list", "ddim:abc"], "--sample-list ddim:abc: the step count 'abc' is not"),
        (["bench", "quality", "--samplers", "heun:x"], "--samplers heun:x"),
        (["train", "--data", data, "--out", str(tmp / "size"), "--size", "-4"], "--size -4"),
        (["train", "--data", "emoji16", "--out", str(tmp / "size"), "--size", "100000"], "--size 100000"),
        (["bench", "train", "--rounds", "-1"], "--rounds -1"),
        (["bench", "train", "--steps-per-round", "0"], "--steps-per-round 0"),
        (["bench", "train", "--loss-steps", "-3"], "--loss-steps -3"),
        (["bench", "train", "--loss-steps", "0"], "--loss-steps 0"),
        (["bench", "quality", "--quick", "--n", "50"], "--quick sets its own"),
    ]


def test_every_bad_input_is_exit_2_with_one_line_and_no_traceback(files, capsys):
    for argv, expected in _cases(files):
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2, (argv, err)
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, (argv, err)
        assert expected in err, (argv, err)
    assert not (files / "o.png").exists()  # nothing was written by any of them


def test_nan_weights_and_a_pickle_are_refused_in_one_line(files, capsys):
    ck = files / "run" / "model.safetensors"
    tensors = load_file(str(ck))
    with safe_open(str(ck), framework="pt") as f:
        meta = f.metadata()
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(files / "nan.safetensors"), metadata=meta)
    torch.save({"w": torch.zeros(2)}, files / "evil.pth")  # a plain dict: pickled objects, refused without code
    import pickle

    (files / "code.pth").write_bytes(pickle.dumps(os.getcwd, protocol=2))  # names a function, as torch.save would
    for path, expected in [("nan.safetensors", "NaN or infinite"), ("code.pth", "contains Python code")]:
        rc = main(["sample", "--device", "cpu", "--out", str(files / "x.png"), "--checkpoint", str(files / path)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and expected in err and "\n" not in err, err
    assert not (files / "x.png").exists()


def test_large_n_is_sampled_in_batches(files, capsys):
    rc = main(["sample", "--device", "cpu", "--checkpoint", str(files / "run" / "model.safetensors"), "--n", "300",
               "--sampler", "ddim", "--steps", "2", "--context", "cat", "--out", str(files / "big.png"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["n"] == 300 and (files / "big.png").is_file()


# --- divergence -------------------------------------------------------------------------------------

def _poison_after(trainer, step: int):
    """Make the weights infinite once `step` steps are done (as an exploding update would)."""
    original = trainer._train_step

    def step_fn():
        out = original()
        if trainer.step + 1 == step:
            with torch.no_grad():
                for p in trainer.net.parameters():
                    p.mul_(float("inf"))
        return out

    trainer._train_step = step_fn


def test_diverging_run_keeps_the_last_good_checkpoint_and_says_its_step(tmp_path):
    tr = Trainer(_dataset(), CFG, tmp_path, device="cpu")
    _poison_after(tr, 6)  # checkpoints at 4 and 8: step 6's weights are poisoned
    with pytest.raises(TrainingDiverged, match="from step 4"):
        for _ in tr.run():
            pass
    assert read_metadata(tmp_path / "model.safetensors")["step"] == 4
    for name in ("model.safetensors", "resume.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(tmp_path / name)).values() if t.is_floating_point())
    with pytest.raises(TrainingDiverged, match="NaN or infinite"):
        tr.save()  # an explicit save (Stop, Ctrl-C) of a poisoned state is refused too
    assert read_metadata(tmp_path / "model.safetensors")["step"] == 4


def test_divergence_before_any_checkpoint_says_there_is_none(tmp_path):
    tr = Trainer(_dataset(), CFG, tmp_path / "run", device="cpu")
    _poison_after(tr, 2)
    with pytest.raises(TrainingDiverged, match="no checkpoint had been saved yet"):
        for _ in tr.run():
            pass
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_finite_but_exploding_loss_stops_the_run(tmp_path):
    tr = Trainer(_dataset(), CFG, tmp_path, device="cpu")
    original = tr._train_step

    def step_fn():
        losses, ts = original()
        return (losses * 1e6 if tr.step == 5 else losses), ts  # step 6's loss: a million times the others

    tr._train_step = step_fn
    with pytest.raises(TrainingDiverged, match="exploded at step 6"):
        for _ in tr.run():
            pass
    assert read_metadata(tmp_path / "model.safetensors")["step"] == 4
    tr.close()
    # resuming it would train through the same place: refused, unless asked for with --force
    from core.training.resume import DivergedRunError

    with pytest.raises(DivergedRunError, match="stopped because it diverged at step 6 .*--force"):
        Trainer.from_run(_dataset(), tmp_path, device="cpu")
    args = ["train", "--data", "x", "--out", str(tmp_path), "--resume"]
    data = tmp_path.parent / "data.npz"
    save_npz(_dataset(), data)
    args[2] = str(data)
    assert main(args) == 2  # the CLI: one line, exit 2
    forced = Trainer.from_run(_dataset(), tmp_path, device="cpu", force=True)
    assert any("had diverged at step 6" in n for n in forced.notes) and not (tmp_path / "diverged.json").exists()
    forced.close()


def test_a_checkpoint_whose_model_outputs_nan_is_not_called_good(tmp_path):
    """Finite weights can still give NaN images (an overflow inside the network): save() checks a forward."""
    tr = Trainer(_dataset(), CFG, tmp_path, device="cpu")
    with torch.no_grad():
        for p in tr.ema.parameters():
            p.mul_(1e30)  # finite, but the forward overflows to inf / nan
    assert all(torch.isfinite(p).all() for p in tr.ema.parameters())
    with pytest.raises(TrainingDiverged, match="NaN or infinite"):
        tr.save()
    assert not (tmp_path / "model.safetensors").exists()
    tr.close()


# --- one writer, writable folder ------------------------------------------------------------------

def test_a_second_writer_is_refused_and_a_stale_lock_is_replaced(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "since": 0}))
        with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
            Trainer(_dataset(), CFG, tmp_path, device="cpu")
    finally:
        holder.kill()
        holder.wait()
    tr = Trainer(_dataset(), CFG, tmp_path, device="cpu")  # the holder is gone: its lock is stale
    assert any("stale lock" in n for n in tr.notes)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    tr.close()
    assert not (tmp_path / LOCK_FILE).exists()


@pytest.mark.slow
def test_two_cli_trainers_on_one_folder(tmp_path):
    save_npz(_dataset(), tmp_path / "d.npz")
    cmd = [sys.executable, "main.py", "train", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run"),
           "--preset", "tiny", "--steps", "100000", "--batch", "8", "--device", "cpu", "--checkpoint-every", "1000000"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stdout:  # wait until it trains (its SIGTERM handler is installed by then)
            if line.startswith("step "):
                break
        assert (tmp_path / "run" / LOCK_FILE).exists()
        second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "another training run" in second.stderr, second.stderr
        first.send_signal(signal.SIGTERM)  # SIGTERM saves like Ctrl-C
        out, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: saved step" in err and "Traceback" not in err
    assert (tmp_path / "run" / "model.safetensors").is_file() and not (tmp_path / "run" / LOCK_FILE).exists()


def test_unwritable_out_fails_before_training(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError, match="cannot write the run folder"):
        Trainer(_dataset(), CFG, tmp_path / "file" / "run", device="cpu")


# --- the model/resume pair --------------------------------------------------------------------------

@pytest.mark.slow
def test_crash_between_the_two_writes_resumes_exactly(tmp_path):
    ref = Trainer(_dataset(), CFG, tmp_path / "ref", device="cpu")
    ref_losses = [m.loss for m in ref.run()]
    tr = Trainer(_dataset(), CFG, tmp_path / "run", device="cpu")
    real_save_model = tr._save_model

    def crash_on_second():
        if tr.step == 8:
            raise KeyboardInterrupt("power cut after resume.safetensors was written")
        return real_save_model()

    tr._save_model = crash_on_second
    with pytest.raises(KeyboardInterrupt):
        for _ in tr.run():
            pass
    tr.close()
    assert read_metadata(tmp_path / "run" / "model.safetensors")["step"] == 4  # the older model file
    resumed = Trainer.from_run(_dataset(), tmp_path / "run", device="cpu")
    assert resumed.step == 8 and any("rewrote it" in n for n in resumed.notes)
    assert read_metadata(tmp_path / "run" / "model.safetensors")["step"] == 8
    rest = [m.loss for m in resumed.run()]
    assert rest == ref_losses[8:]
    log = read_loss_log(tmp_path / "run" / "loss.csv")
    assert list(log["step"]) == list(range(1, 13))  # every step once, none missing


def test_crash_at_the_first_save_leaves_a_resumable_folder_not_a_silent_overwrite(tmp_path, capsys):
    save_npz(_dataset(), tmp_path / "d.npz")
    tr = Trainer(_dataset(), CFG, tmp_path / "run", device="cpu")
    tr._save_model = lambda: (_ for _ in ()).throw(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        for _ in tr.run():
            pass
    tr.close()
    assert (tmp_path / "run" / "resume.safetensors").is_file() and not (tmp_path / "run" / "model.safetensors").exists()
    base = ["train", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main(base + ["--preset", "tiny"]) == 2 and "already holds a run" in capsys.readouterr().err
    assert main(base + ["--resume", "--steps", "6"]) == 0
    assert read_metadata(tmp_path / "run" / "model.safetensors")["step"] == 6


def test_resume_with_a_resume_file_of_another_width_is_one_line(tmp_path, capsys):
    save_npz(_dataset(), tmp_path / "d.npz")
    for name, width in (("a", "8"), ("b", "16")):
        assert main(["train", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / name), "--preset", "tiny",
                     "--steps", "2", "--batch", "8", "--n-feat", width, "--device", "cpu"]) == 0
    with safe_open(str(tmp_path / "a" / "resume.safetensors"), framework="pt") as f:
        info_a = f.metadata()["info"]  # says n_feat 8
    _patched_checkpoint(tmp_path / "b" / "resume.safetensors", tmp_path / "a" / "resume.safetensors", info=info_a)
    capsys.readouterr()
    rc = main(["train", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "a"), "--resume", "--steps", "4",
               "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "Traceback" not in err
    assert "weights do not match the configuration (tensor" in err and "shape" in err, err


def test_a_model_file_of_another_run_is_rewritten_on_resume(tmp_path):
    a = Trainer(_dataset(), CFG, tmp_path / "a", device="cpu")
    b = Trainer(_dataset(), replace(CFG, seed=9), tmp_path / "b", device="cpu")
    for tr in (a, b):
        for m in tr.run():
            if m.step == 4:
                break
        tr.close()
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    resumed = Trainer.from_run(_dataset(), tmp_path / "a", device="cpu")
    assert any("another run" in n for n in resumed.notes)
    assert read_metadata(tmp_path / "a" / "model.safetensors")["extra"]["run_id"] == resumed.run_id
