"""The command line: train then sample with each sampler; JSON output; one-line errors, exit 2."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli import main
from core.data import ImageDataset, save_npz

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    labels = np.eye(2, dtype=np.float32)[np.arange(40) % 2]
    save_npz(ImageDataset(imgs, labels, ["cat", "dog"], "tiny"), tmp / "tiny.npz")
    rc = main(["train", "--data", str(tmp / "tiny.npz"), "--out", str(tmp / "run"), "--preset", "tiny",
               "--steps", "6", "--batch", "8", "--precision", "fp32", "--device", "cpu"])
    assert rc == 0
    return tmp


def test_train_writes_checkpoint_and_log(run_dir):
    assert (run_dir / "run" / "model.safetensors").is_file()
    assert (run_dir / "run" / "loss.csv").read_text().count("\n") == 7  # header + 6 steps


def test_resume_extends_a_run(run_dir, capsys):
    rc = main(["train", "--data", str(run_dir / "tiny.npz"), "--out", str(run_dir / "run"), "--resume",
               "--steps", "8", "--device", "cpu"])
    assert rc == 0 and "done: 8 steps" in capsys.readouterr().out


@pytest.mark.parametrize("sampler,steps,nfe", [("ddpm", 40, 40), ("ddim", 30, 30), ("dpmpp2m", 10, 10)])
def test_sample_each_sampler_writes_a_grid_and_json(run_dir, capsys, sampler, steps, nfe):
    out = run_dir / f"{sampler}.png"
    rc = main(["sample", "--checkpoint", str(run_dir / "run" / "model.safetensors"), "--out", str(out),
               "--sampler", sampler, "--steps", str(steps), "--n", "4", "--json", "--device", "cpu"])
    assert rc == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["sampler"] == sampler and info["steps"] == steps and info["nfe"] == nfe and info["n"] == 4
    assert info["seconds"] > 0
    img = Image.open(out)
    assert img.text["sampler"] == sampler and img.text["seed"] == "0" and img.text["steps"] == str(steps)


def test_sample_with_context_guidance_and_gif(run_dir, capsys):
    gif = run_dir / "anim.gif"
    rc = main(["sample", "--checkpoint", str(run_dir / "run" / "model.safetensors"), "--out", str(run_dir / "g.png"),
               "--context", "cat+dog:0.6", "--guidance", "2", "--steps", "5", "--gif", str(gif), "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out.strip())["nfe"] == 10  # guidance: two passes per step
    assert Image.open(gif).n_frames >= 5


def test_user_errors_are_one_line_and_exit_2(run_dir, capsys):
    assert main(["sample", "--checkpoint", str(run_dir / "nope.safetensors"), "--out", "x.png"]) == 2
    assert main(["sample", "--checkpoint", str(run_dir / "run" / "model.safetensors"), "--out", "x.png",
                 "--context", "bird"]) == 2
    assert main(["train", "--data", str(run_dir / "missing"), "--out", str(run_dir / "r2")]) == 2
    assert main(["train", "--data", str(run_dir / "tiny.npz"), "--out", str(run_dir / "run")]) == 2  # exists
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    assert "nope.safetensors: no such file" in err[0] and "bird" in err[1] and "cat" in err[1]
    assert "use --resume" in err[3]


def test_main_py_reports_errors_without_traceback(tmp_path):
    res = subprocess.run([sys.executable, "main.py", "sample", "--checkpoint", str(tmp_path / "x.pth"),
                          "--out", str(tmp_path / "y.png")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "x.pth: no such file" in res.stderr


def test_fine_tune_from_a_checkpoint(run_dir, capsys):
    rc = main(["train", "--data", str(run_dir / "tiny.npz"), "--out", str(run_dir / "ft"), "--preset", "finetune",
               "--init", str(run_dir / "run" / "model.safetensors"), "--steps", "3", "--batch", "8", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0 and "fine-tuning: kept 2 label(s)" in captured.err and "n_feat 32 -> 8" in captured.err
    assert "done: 3 steps" in captured.out


# --- outputs never replace what the user owns ---------------------------------------------------------

@pytest.mark.parametrize("target", ["model", "resume", "data", "checkpoint_via_gif", "text", "same_as_out"])
def test_sample_outputs_never_replace_a_model_run_or_data_file(run_dir, tmp_path, capsys, target):
    ckpt = run_dir / "run" / "model.safetensors"
    victim = {"model": tmp_path / "copy" / "model.safetensors", "resume": run_dir / "run" / "resume.safetensors",
              "data": run_dir / "tiny.npz", "checkpoint_via_gif": ckpt, "text": tmp_path / "notes.png",
              "same_as_out": tmp_path / "grid.png"}[target]
    if target == "model":
        victim.parent.mkdir()
        victim.write_bytes(ckpt.read_bytes())
    if target == "text":
        victim.write_text("my notes, not an image")
    before = victim.read_bytes() if victim.exists() else None
    flags = ["--gif", str(victim), "--out", str(tmp_path / "grid.png")] if target in ("checkpoint_via_gif", "same_as_out") \
        else ["--out", str(victim)]
    rc = main(["sample", "--checkpoint", str(ckpt), "--sampler", "ddim", "--steps", "2", "--n", "2",
               "--device", "cpu", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    if before is not None:
        assert victim.read_bytes() == before  # untouched
    if target not in ("checkpoint_via_gif", "same_as_out"):
        assert ("--force" in err) == (target != "checkpoint_via_gif")


def test_force_replaces_another_kind_of_file_but_a_png_is_simply_rewritten(run_dir, tmp_path):
    ckpt = str(run_dir / "run" / "model.safetensors")
    common = ["sample", "--checkpoint", ckpt, "--sampler", "ddim", "--steps", "2", "--n", "2", "--device", "cpu"]
    notes = tmp_path / "notes.png"
    notes.write_text("text")
    assert main([*common, "--out", str(notes), "--force"]) == 0
    assert notes.read_bytes().startswith(b"\x89PNG")
    assert main([*common, "--out", str(notes)]) == 0  # an existing PNG: re-running the same command
    assert main([*common, "--out", str(tmp_path / "m.png"), "--gif", ckpt, "--force"]) == 2  # never the input


@pytest.mark.parametrize("case", ["empty_out", "empty_data", "loss_log", "other_files"])
def test_a_new_run_refuses_empty_paths_and_folders_that_hold_files(run_dir, tmp_path, capsys, case):
    out = tmp_path / "run"
    if case == "loss_log":
        out.mkdir()
        (out / "loss.csv").write_text("step,loss\n1,0.5\n")
    if case == "other_files":
        out.mkdir()
        (out / "thesis.tex").write_text("mine")
    args = ["train", "--data", "" if case == "empty_data" else str(run_dir / "tiny.npz"),
            "--out", "" if case == "empty_out" else str(out), "--preset", "tiny", "--steps", "2", "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and ("empty" in err), err
    if case == "loss_log":
        assert (out / "loss.csv").read_text() == "step,loss\n1,0.5\n"
    if case == "other_files":
        assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_sample_with_a_negative_label_and_with_a_guide_model(run_dir, tmp_path, capsys):
    ckpt = str(run_dir / "run" / "model.safetensors")
    common = ["sample", "--checkpoint", ckpt, "--sampler", "dpmpp2m", "--steps", "4", "--n", "4", "--device", "cpu",
              "--precision", "fp32"]
    assert main([*common, "--out", str(tmp_path / "plain.png")]) == 0
    assert main([*common, "--out", str(tmp_path / "self.png"), "--guidance", "3", "--guide-model", ckpt]) == 0
    plain, self_guided = (np.asarray(Image.open(tmp_path / f)) for f in ("plain.png", "self.png"))
    assert np.array_equal(plain, self_guided)  # autoguidance by the model itself is the unguided result
    assert Image.open(tmp_path / "self.png").text["guide_model"] == "model.safetensors"
    assert main([*common, "--out", str(tmp_path / "neg.png"), "--context", "cat", "--negative", "dog",
                 "--guidance", "2"]) == 0
    capsys.readouterr()
    for bad, msg in ((["--negative", "dog"], "only acts with guidance"),
                     (["--negative", "zebra", "--guidance", "2"], "--negative"),
                     (["--guide-model", "auto", "--guidance", "2"], "no guide model beside")):
        assert main([*common, "--out", str(tmp_path / "x.png"), *bad]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err


def test_ctrl_c_while_sampling_is_one_line_not_a_traceback(run_dir, tmp_path, capsys, monkeypatch):
    import core.samplers

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(core.samplers, "generate", interrupted)
    rc = main(["sample", "--checkpoint", str(run_dir / "run" / "model.safetensors"), "--out", str(tmp_path / "g.png"),
               "--n", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 130 and err.startswith("interrupted: sample stopped") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g.png").exists()


def test_a_new_run_may_start_in_a_folder_holding_only_its_own_inputs(run_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "dataset.npz").write_bytes((run_dir / "tiny.npz").read_bytes())  # as the app's torchrun launcher does
    assert main(["train", "--data", str(out / "dataset.npz"), "--out", str(out), "--preset", "tiny", "--steps", "2",
                 "--batch", "8", "--device", "cpu"]) == 0


def test_sample_finishes_a_sketch_and_inpaints_keeping_the_rest(run_dir, tmp_path, capsys):
    ckpt = str(run_dir / "run" / "model.safetensors")
    sketch = np.zeros((8, 8, 3), np.uint8)
    sketch[2:6, 2:6] = (220, 40, 40)
    Image.fromarray(sketch).save(tmp_path / "sketch.png")
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[:, :4] = 255  # redraw the left half
    Image.fromarray(mask).save(tmp_path / "mask.png")
    common = ["sample", "--checkpoint", ckpt, "--n", "2", "--device", "cpu", "--precision", "fp32", "--context", "cat",
              "--init-image", str(tmp_path / "sketch.png")]
    assert main([*common, "--strength", "0", "--out", str(tmp_path / "same.png"), "--json"]) == 0
    capsys.readouterr()
    grid = np.asarray(Image.open(tmp_path / "same.png").convert("RGB"))
    assert (grid == sketch[0, 0]).all(axis=2).any() and (grid == (220, 40, 40)).all(axis=2).any()  # kept as drawn
    assert main([*common, "--strength", "0.7", "--sampler", "dpmpp2m", "--steps", "4",
                 "--out", str(tmp_path / "sdedit.png")]) == 0
    assert main([*common, "--mask", str(tmp_path / "mask.png"), "--steps", "6", "--resample", "2",
                 "--out", str(tmp_path / "inpaint.png")]) == 0
    out = capsys.readouterr().out
    assert "repaint 6 steps" in out and "12 model calls" in out
    for bad, msg in ((["--strength", "1.5"], "--strength"), (["--resample", "0", "--mask", str(tmp_path / "mask.png")],
                                                             "--resample")):
        assert main([*common, *bad, "--out", str(tmp_path / "x.png")]) == 2
        assert msg in capsys.readouterr().err
    assert main(["sample", "--checkpoint", ckpt, "--mask", str(tmp_path / "mask.png"), "--out",
                 str(tmp_path / "x.png")]) == 2
    assert "needs --init-image" in capsys.readouterr().err


def test_variation_seeds_nudge_the_images_and_keep_their_ends(run_dir, tmp_path, capsys):
    ckpt = str(run_dir / "run" / "model.safetensors")
    common = ["sample", "--checkpoint", ckpt, "--sampler", "dpmpp2m", "--steps", "4", "--n", "4", "--device", "cpu",
              "--precision", "fp32"]
    shots = {}
    for name, extra in (("a", ["--seed", "1"]), ("b", ["--seed", "2"]), ("v0", ["--seed", "1", "--variation-seed", "2",
                        "--variation-strength", "0"]), ("v1", ["--seed", "1", "--variation-seed", "2",
                        "--variation-strength", "1"]), ("v3", ["--seed", "1", "--variation-seed", "2",
                        "--variation-strength", "0.3"])):
        assert main([*common, *extra, "--out", str(tmp_path / f"{name}.png")]) == 0
        shots[name] = np.asarray(Image.open(tmp_path / f"{name}.png").convert("RGB")).astype(int)
    assert np.array_equal(shots["v0"], shots["a"]) and np.array_equal(shots["v1"], shots["b"])
    d_near, d_far = np.abs(shots["v3"] - shots["a"]).mean(), np.abs(shots["b"] - shots["a"]).mean()
    assert 0 < d_near < d_far  # nudged, not replaced
    capsys.readouterr()
    assert main([*common, "--variation-seed", "2", "--variation-strength", "1.5", "--out", str(tmp_path / "x.png")]) == 2
    assert "--variation-strength" in capsys.readouterr().err


def test_tune_steps_ramp_writes_a_new_model_with_the_spacing_and_refuses_what_it_cannot_search(tmp_path, capsys):
    """`tune-steps --method ramp` on a 16 px model of the built-in set's labels: a new file with tuned-3 and how
    it was found; the model read is untouched. A model the evaluation classifier cannot read, and one whose data
    set is not named, are refused in one line (exit 2)."""
    import torch

    from core.checkpoint import load_checkpoint, save_checkpoint
    from core.data import load_builtin
    from core.schedule import ScheduleConfig
    from core.unet import ContextUnet, UNetConfig

    ds = load_builtin("emoji16")
    torch.manual_seed(0)
    net = ContextUnet(UNetConfig(n_feat=8, n_cfeat=ds.n_labels, height=16))
    model = save_checkpoint(tmp_path / "m.safetensors", net.state_dict(), unet_config=net.config,
                            schedule_config=ScheduleConfig(kind="linear_zsnr", prediction="v"),
                            label_names=ds.label_names, dataset="emoji16")
    before = model.read_bytes()
    out = tmp_path / "tuned.safetensors"
    rc = main(["tune-steps", "--checkpoint", str(model), "--method", "ramp", "--calls", "3", "--images", "32",
               "--out", str(out), "--device", "cpu", "--json"])
    assert rc == 0 and model.read_bytes() == before
    said = json.loads(capsys.readouterr().out)
    assert said["spacing"] == "tuned-3" and said["method"] == "ramp" and said["data"] == "emoji16"
    b = load_checkpoint(out)
    assert list(b.schedule_config.named_spacing("tuned-3")) == pytest.approx(said["timesteps"])
    kept = b.meta["extra"]["tuned"]["tuned-3"]
    assert kept["method"] == "ramp" and kept["timesteps"] == said["timesteps"]
    assert ("rho" in kept and "sigma_max" in kept and "t_last" in kept) or "built_in" in kept
    nameless = save_checkpoint(tmp_path / "n.safetensors", net.state_dict(), unet_config=net.config,
                               schedule_config=ScheduleConfig(), label_names=ds.label_names)
    small = tmp_path / "run_small.safetensors"
    small8 = ContextUnet(UNetConfig(n_feat=8, n_cfeat=ds.n_labels, height=8))
    save_checkpoint(small, small8.state_dict(), unet_config=small8.config, schedule_config=ScheduleConfig(),
                    label_names=ds.label_names, dataset="emoji16")
    for ckpt, says in ((nameless, "--data"), (small, "--method gits")):
        rc = main(["tune-steps", "--checkpoint", str(ckpt), "--method", "ramp", "--calls", "3", "--images", "32",
                   "--out", str(tmp_path / f"x{says[2]}.safetensors"), "--device", "cpu"])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err, err
