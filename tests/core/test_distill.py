"""Teach a shortcut: a tiny model distilled for a few steps runs, saves, resumes exactly and samples; the student
is linked to its teacher; built-in guidance at scale 1 is the unguided teacher; damaged or foreign runs are refused."""
import json
import shutil

import numpy as np
import pytest
import torch

from cli import main
from core.checkpoint import load_checkpoint, save_checkpoint
from core.denoiser import Denoiser
from core.paths import file_digest
from core.samplers import generate, sample_ddim, sample_dpmpp_3m
from core.schedule import Schedule, ScheduleConfig
from core.training.distill import (POOL_FILE, DistillConfig, DistillError, Distiller, jump, merge_shortest_jumps,
                                   preview_inputs, student_timesteps, teacher_timesteps)
from core.unet import UNetConfig, build_network

ZSNR = ScheduleConfig(kind="linear_zsnr", prediction="v")
SMALL = dict(calls=2, trajectories=32, steps=6, batch_size=8, teacher_calls=6, checkpoint_every=3, lr=1e-3,
             precision="fp32")


@pytest.fixture(scope="module", params=["course", "desk"])
def teacher_file(request, tmp_path_factory):
    torch.manual_seed(0)
    net = build_network(UNetConfig(n_feat=8, n_cfeat=3, height=8, network=request.param))
    with torch.no_grad():  # the desk network starts with zero label and output layers: make the label matter
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    return save_checkpoint(path, net.state_dict(), unet_config=net.config, schedule_config=ZSNR,
                           label_names=["a", "b", "c"], dataset="toy", step=7)


def _run(teacher_file, out, **kw):
    d = Distiller(load_checkpoint(teacher_file), DistillConfig(**{**SMALL, **kw}), out)
    losses = [m.loss for m in d.run()]
    d.close()
    return losses


def test_a_tiny_distillation_saves_a_student_linked_to_its_teacher(teacher_file, tmp_path):
    losses = _run(teacher_file, tmp_path / "d")
    assert len(losses) == 6 and all(np.isfinite(losses))
    student = load_checkpoint(tmp_path / "d" / "model.safetensors")
    info = student.meta["extra"]["distilled"]
    assert info["teacher"] == "teacher.safetensors" and info["teacher_sha256"] == file_digest(teacher_file)
    assert info["calls"] == 2 and info["guidance"] == 1.0 and info["distill_steps"] == 6
    assert student.schedule_config.spacings[0][0] == "distilled-2"
    assert student.label_names == ["a", "b", "c"] and student.meta["step"] == 7
    res = generate(student.net, Schedule(student.schedule_config), sampler="ddim", steps=2, spacing="distilled-2",
                   n=3, context=np.eye(3, dtype=np.float32), seed=1)
    assert res.nfe == 2 and res.finite and res.timesteps == [500, 250, 0]  # auto: trailing without a tuned-2
    assert (tmp_path / "d" / "loss.csv").read_text().count("\n") == 7


def test_resume_continues_exactly(teacher_file, tmp_path):
    whole = _run(teacher_file, tmp_path / "whole")
    d = Distiller(load_checkpoint(teacher_file), DistillConfig(**SMALL), tmp_path / "split")
    it = d.run()
    first = [next(it).loss for _ in range(3)]  # step 3 is a checkpoint
    d.close()
    d = Distiller(load_checkpoint(teacher_file), DistillConfig(**SMALL), tmp_path / "split", resume=True)
    assert d.step == 3
    rest = [m.loss for m in d.run()]
    d.close()
    assert first + rest == whole
    a = load_checkpoint(tmp_path / "whole" / "model.safetensors").net.state_dict()
    b = load_checkpoint(tmp_path / "split" / "model.safetensors").net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "split" / "loss.csv").read_text().count("\n") == 7


def test_resume_may_raise_the_total_but_not_change_the_settings(teacher_file, tmp_path):
    _run(teacher_file, tmp_path / "d")
    teacher = load_checkpoint(teacher_file)
    with pytest.raises(DistillError, match="other settings"):
        Distiller(teacher, DistillConfig(**{**SMALL, "lr": 5e-4}), tmp_path / "d", resume=True)
    d = Distiller(teacher, DistillConfig(**{**SMALL, "steps": 8}), tmp_path / "d", resume=True)
    assert [m.step for m in d.run()] == [7, 8]
    d.close()
    assert json.loads((tmp_path / "d" / "distill.json").read_text())["distill_config"]["steps"] == 8


def test_another_teacher_or_a_damaged_pool_is_refused(teacher_file, tmp_path):
    _run(teacher_file, tmp_path / "d")
    other = build_network(UNetConfig(n_feat=8, n_cfeat=3, height=8))
    other_file = save_checkpoint(tmp_path / "other.safetensors", other.state_dict(), unet_config=other.config,
                                 schedule_config=ZSNR, label_names=["a", "b", "c"])
    with pytest.raises(DistillError, match="another teacher"):
        Distiller(load_checkpoint(other_file), DistillConfig(**SMALL), tmp_path / "d", resume=True)
    (tmp_path / "d" / POOL_FILE).write_bytes(b"\x00" * 100)
    with pytest.raises(DistillError, match="pool.safetensors.*make the teacher's solutions again"):
        Distiller(load_checkpoint(teacher_file), DistillConfig(**SMALL), tmp_path / "d", resume=True)


def test_pool_is_the_teachers_own_solution_and_guidance_one_is_unguided(teacher_file, tmp_path):
    """With guidance 1 the pool holds exactly the unguided teacher's DPM-Solver++(3M) states at the student's
    timesteps; with guidance 2 it differs (the guided path is what that student learns)."""
    teacher = load_checkpoint(teacher_file)
    d = Distiller(teacher, DistillConfig(**{**SMALL, "steps": 1}), tmp_path / "g1")
    d.close()
    sched = Schedule(ZSNR)
    student_ts = student_timesteps(sched, DistillConfig(**SMALL, teacher_spacing="karras"))
    grid = teacher_timesteps(sched, student_ts, 6)
    assert set(student_ts) <= set(grid)
    noise = d.states[:, 0]
    model = Denoiser(teacher.net, sched, d.contexts)
    final = sample_dpmpp_3m(model, noise.clone(), grid)
    assert torch.allclose(d.states[:, -1], final, atol=1e-5)
    d2 = Distiller(teacher, DistillConfig(**{**SMALL, "steps": 1, "guidance": 2.0}), tmp_path / "g2")
    d2.close()
    assert torch.equal(d2.states[:, 0], noise)
    guided = sample_dpmpp_3m(Denoiser(teacher.net, sched, d.contexts, guidance=2.0), noise.clone(), grid)
    assert torch.allclose(d2.states[:, -1], guided, atol=1e-5)
    assert not torch.equal(d2.states[:, -1], d.states[:, -1])


def test_merging_the_shortest_jumps_keeps_the_ends_and_drops_the_closest_inner_timesteps():
    ramp = [500.0, 401.0, 283.0, 80.0, 1.0, 0.0]
    assert merge_shortest_jumps(ramp, 5) == ramp
    assert merge_shortest_jumps(ramp, 4) == [500.0, 401.0, 283.0, 80.0, 0.0]  # 80 -> 1 -> 0 becomes 80 -> 0
    assert merge_shortest_jumps(ramp, 3) == [500.0, 283.0, 80.0, 0.0]  # then 500 -> 401 -> 283 (217 in all)
    assert merge_shortest_jumps(ramp, 1) == [500.0, 0.0]


def test_the_default_teacher_is_the_closest_ramp_tuned_spacing_else_the_accurate_solution():
    from core.catalog import distill_teacher_spacing

    spacings = [("tuned-3", [500, 300, 40, 0]), ("tuned-5", [500, 400, 280, 80, 1, 0]),
                ("tuned-6", [500, 440, 380, 250, 80, 6, 0]), ("distilled-4", [500, 400, 280, 80, 0])]
    tuned = {"tuned-3": {"calls": 3, "error": 0.1}, "tuned-5": {"method": "ramp", "error": 1.2},
             "tuned-6": {"method": "ramp", "error": 0.85}}
    assert distill_teacher_spacing(spacings, tuned, 4) == "tuned-6"  # scored closest to the training images
    assert distill_teacher_spacing(spacings, tuned, 5) == "tuned-6"
    assert distill_teacher_spacing(spacings, tuned, 6) == "karras"  # nothing tuned has more steps
    tuned["tuned-6"]["error"] = float("nan")  # a damaged score does not count
    assert distill_teacher_spacing(spacings, tuned, 2) == "tuned-5"  # tuned-3 was not found by the ramp search
    assert distill_teacher_spacing(spacings, None, 4) == "karras"


def test_an_auto_teacher_is_settled_and_recorded_and_an_older_run_still_resumes(teacher_file, tmp_path):
    teacher = load_checkpoint(teacher_file)
    path = save_checkpoint(tmp_path / "tuned.safetensors", teacher.net.state_dict(), unet_config=teacher.net.config,
                           schedule_config=ZSNR.with_spacing("tuned-3", [500.0, 300.0, 40.0, 0.0]),
                           label_names=["a", "b", "c"], extra={"tuned": {"tuned-3": {"method": "ramp", "error": 1.0}}})
    d = Distiller(load_checkpoint(path), DistillConfig(**SMALL), tmp_path / "auto")
    assert d.config.teacher_spacing == "tuned-3" and d.student_ts == [500.0, 300.0, 0.0]
    d.close()
    assert json.loads((tmp_path / "auto" / "distill.json").read_text())["distill_config"]["teacher_spacing"] == "tuned-3"
    # a run saved before teacher_spacing existed learnt from the accurate solution, and resumes as such
    _run(teacher_file, tmp_path / "old", steps=3)
    info = json.loads((tmp_path / "old" / "distill.json").read_text())
    del info["distill_config"]["teacher_spacing"]
    (tmp_path / "old" / "distill.json").write_text(json.dumps(info))
    assert main(["distill", "--checkpoint", str(teacher_file), "--out", str(tmp_path / "old"), "--resume",
                 "--steps", "4"]) == 0


def test_a_student_of_a_named_teacher_spacing_learns_that_samplers_own_states(teacher_file, tmp_path):
    """teacher_spacing tuned-3: the pool is the teacher's DPM-Solver++(3M) over exactly that spacing, kept at the
    student's timesteps, which are the spacing's with its shortest jump merged; the student file says so."""
    tuned = [500.0, 300.0, 40.0, 0.0]
    teacher = load_checkpoint(teacher_file)
    path = save_checkpoint(tmp_path / "tuned.safetensors", teacher.net.state_dict(), unet_config=teacher.net.config,
                           schedule_config=ZSNR.with_spacing("tuned-3", tuned), label_names=["a", "b", "c"])
    teacher = load_checkpoint(path)
    cfg = DistillConfig(**{**SMALL, "teacher_spacing": "tuned-3"})
    d = Distiller(teacher, cfg, tmp_path / "d")
    assert d.student_ts == [500.0, 300.0, 0.0]  # 300 -> 40 -> 0 (300 in all) is shorter than 500 -> 300 -> 40
    final = sample_dpmpp_3m(Denoiser(teacher.net, Schedule(teacher.schedule_config), d.contexts), d.states[:, 0].clone(),
                            tuned)
    assert torch.allclose(d.states[:, -1], final, atol=1e-5)
    assert torch.allclose(d.teacher_preview(d.states[:4, 0], d.contexts[:4]), final[:4], atol=1e-5)
    assert all(np.isfinite([m.loss for m in d.run()]))
    d.close()
    info = load_checkpoint(tmp_path / "d" / "model.safetensors").meta["extra"]["distilled"]
    assert "over its spacing tuned-3" in info["method"] and info["distill_config"]["teacher_spacing"] == "tuned-3"
    with pytest.raises(DistillError, match="teacher spacing 'tuned-5': the teacher has no such spacing"):
        Distiller(teacher, DistillConfig(**{**SMALL, "teacher_spacing": "tuned-5"}), tmp_path / "e")
    with pytest.raises(DistillError, match="not among the teacher spacing tuned-3's"):
        Distiller(teacher, DistillConfig(**{**SMALL, "teacher_spacing": "tuned-3", "spacing": "trailing"}),
                  tmp_path / "f")
    with pytest.raises(DistillError, match="3 steps, fewer than the student's 4 calls"):
        Distiller(teacher, DistillConfig(**{**SMALL, "teacher_spacing": "tuned-3", "calls": 4}), tmp_path / "g")


def test_a_student_teaches_a_student_of_fewer_calls_what_its_own_ddim_steps_draw(teacher_file, tmp_path):
    """A second round (progressive distillation): a 4-call student as the teacher; the pool is its DDIM over its
    distilled-4 timesteps (not DPM-Solver++(3M), not an accurate solution), kept at the 2-call student's
    timesteps, its shortest jumps merged; the new student names the round; more calls or guidance are refused."""
    first = tmp_path / "first"
    _run(teacher_file, first, calls=4)
    four = load_checkpoint(first / "model.safetensors")
    ts4 = dict(four.schedule_config.spacings)["distilled-4"]
    d = Distiller(four, DistillConfig(**SMALL), tmp_path / "second")  # calls 2, teacher spacing auto
    assert d.config.teacher_spacing == "distilled-4" and d.teacher_solver is sample_ddim
    assert d.student_ts == merge_shortest_jumps([float(t) for t in ts4], 2)
    ddim = sample_ddim(Denoiser(four.net, Schedule(four.schedule_config), d.contexts), d.states[:, 0].clone(), ts4)
    assert torch.allclose(d.states[:, -1], ddim, atol=1e-5)
    three_m = sample_dpmpp_3m(Denoiser(four.net, Schedule(four.schedule_config), d.contexts),
                              d.states[:, 0].clone(), ts4)
    assert not torch.allclose(d.states[:, -1], three_m, atol=1e-3)
    assert torch.allclose(d.teacher_preview(d.states[:4, 0], d.contexts[:4]), ddim[:4], atol=1e-5)
    assert all(np.isfinite([m.loss for m in d.run()]))
    d.close()
    info = load_checkpoint(tmp_path / "second" / "model.safetensors").meta["extra"]["distilled"]
    assert info["calls"] == 2 and info["teacher"] == "model.safetensors" and "second round" in info["method"]
    for kw, message in (({"calls": 4}, "4-call student: it can teach a student of 1 to 3 calls, not 4"),
                        ({"teacher_spacing": "karras"}, "use teacher spacing auto or distilled-4, not karras"),
                        ({"guidance": 2.0}, "guidance built in")):
        with pytest.raises(DistillError, match=message):
            Distiller(four, DistillConfig(**{**SMALL, **kw}), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_jump_is_the_ddim_step_of_each_prediction_target(prediction):
    """jump() with per-image coefficients equals the Denoiser's conversion followed by DDIM's step."""
    sched = Schedule(ScheduleConfig(prediction=prediction))
    x, out = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t, s = 300, 120
    a_t, s_t = sched.ab_at(t) ** 0.5, (1 - sched.ab_at(t)) ** 0.5
    a_s, s_s = sched.ab_at(s) ** 0.5, (1 - sched.ab_at(s)) ** 0.5
    full = lambda v: torch.full((2, 1, 1, 1), v)  # noqa: E731
    got = jump(out, x, prediction, full(a_t), full(s_t), full(a_s), full(s_s))

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))
            self.config = UNetConfig(n_feat=8, n_cfeat=1, height=4)

        def forward(self, *_):
            return out

    want = sample_ddim(Denoiser(Fixed(), sched), x.clone(), [t, s])
    assert torch.allclose(got, want, atol=1e-5)


def test_distillation_brings_two_calls_closer_to_the_teacher(teacher_file, tmp_path):
    """After 80 steps the student's 2-call images are nearer the teacher's accurate ones than the teacher's own
    2-call DDIM images were (the point of a shortcut), on noise outside the pool."""
    teacher = load_checkpoint(teacher_file)
    d = Distiller(teacher, DistillConfig(**{**SMALL, "steps": 80, "trajectories": 64, "batch_size": 32}),
                  tmp_path / "d")
    for _ in d.run():
        pass
    noise, ctx = preview_inputs(teacher, per_label=4, seed=123)
    ref = d.teacher_preview(noise, ctx)
    before = sample_ddim(Denoiser(teacher.net, d.schedule, ctx), noise.clone(), d.student_ts)
    after = d.preview(noise, ctx)
    d.close()
    err = lambda x: (x - ref).pow(2).mean().sqrt().item()  # noqa: E731
    assert err(after) < 0.92 * err(before), (err(after), err(before))


def test_bad_settings_are_refused_in_one_line():
    for bad, msg in [({"calls": 0}, "calls must be between 1"), ({"calls": 9}, "between 1 and 8"),
                     ({"teacher_calls": 1}, "teacher calls"), ({"guidance": 0.0}, "guidance"),
                     ({"trajectories": 4, "batch_size": 8}, "one batch"), ({"lr": -1.0}, "lr")]:
        with pytest.raises(ValueError, match=msg):
            DistillConfig(**bad)


def test_cli_distills_resumes_and_refuses_changed_settings(teacher_file, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["distill", "--checkpoint", str(teacher_file), "--out", str(out), "--calls", "2", "--trajectories", "16",
            "--batch-size", "8", "--teacher-calls", "4", "--steps", "2", "--precision", "fp32", "--device", "cpu"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "--spacing distilled-2" in text and "teacher solutions: 16/16" in text
    assert main(["distill", "--checkpoint", str(teacher_file), "--out", str(out), "--resume", "--steps", "3"]) == 0
    assert "step 3/3" in capsys.readouterr().out
    assert main(["distill", "--checkpoint", str(teacher_file), "--out", str(out), "--resume", "--calls", "3"]) == 2
    assert "keeps its settings" in capsys.readouterr().err
    assert main(args) == 2  # a new run into a used folder
    assert "not empty" in capsys.readouterr().err
    assert main([*args[:4], str(tmp_path / "other"), *args[5:], "--teacher-spacing", "tuned-9"]) == 2
    err = capsys.readouterr().err
    assert "teacher spacing 'tuned-9': the teacher has no such spacing" in err and err.count("\n") == 1
    shutil.rmtree(out)


def test_fp16_scales_the_loss_and_a_resume_keeps_the_scale(teacher_file, tmp_path, monkeypatch):
    """fp16 (a GPU without bf16 in hardware) trains with loss scaling, and the scale and its count of clean
    steps survive a resume; run here with the CPU's fp16 autocast and the CPU's GradScaler."""
    from core.training import distill

    monkeypatch.setattr(distill, "resolve_precision", lambda pref, device: "fp16")
    d = Distiller(load_checkpoint(teacher_file), DistillConfig(**SMALL), tmp_path / "d")
    assert d.scaler.is_enabled()
    before = {k: v.clone() for k, v in d.net.state_dict().items()}
    it = d.run()
    first = [next(it).loss for _ in range(3)]  # step 3 is a checkpoint
    scale, tracker = d.scaler.get_scale(), d.scaler.state_dict()["_growth_tracker"]
    assert all(np.isfinite(first)) and (scale, tracker) != (65536.0, 0)  # it scaled: grew its count or backed off
    assert any(not torch.equal(before[k], v) for k, v in d.net.state_dict().items())  # and the weights moved
    d.close()
    d = Distiller(load_checkpoint(teacher_file), DistillConfig(**SMALL), tmp_path / "d", resume=True)
    assert (d.scaler.get_scale(), d.scaler.state_dict()["_growth_tracker"]) == (scale, tracker)
    assert not d.notes
    d.close()
    monkeypatch.setattr(distill, "resolve_precision", lambda pref, device: "fp32")  # no scaling: nothing to keep
    d = Distiller(load_checkpoint(teacher_file), DistillConfig(**SMALL), tmp_path / "d", resume=True)
    assert not d.scaler.is_enabled() and d.step == 3
    d.close()
