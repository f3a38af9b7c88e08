"""Training: loss falls, resume is exact, NaN stops the run and keeps the last good checkpoint."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from toy_data import blob_squares

from core.checkpoint import load_checkpoint, read_metadata
from core.data import ImageDataset
from core.training import (TRAIN_PRESETS, StepMetrics, TrainConfig, Trainer, TrainingDiverged, ema_decay_at,
                           label_balanced_weights, lr_at, read_loss_log)


@pytest.fixture
def blobs() -> ImageDataset:
    """48 8x8 images of 3 labels: a red, a green or a blue square on white, at random places."""
    return blob_squares(48)


CFG = replace(TRAIN_PRESETS["tiny"], steps=20, batch_size=16, checkpoint_every=10, precision="fp32", seed=3)


def _run(trainer, until=None):
    out = []
    for m in trainer.run():
        out.append(m)
        if until and m.step == until:
            break
    return out


@pytest.mark.slow
def test_loss_falls_on_a_small_set(blobs, tmp_path):
    tr = Trainer(blobs, replace(CFG, steps=150, lr=3e-3, checkpoint_every=1000), tmp_path, device="cpu")
    losses = [m.loss for m in _run(tr)]
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:10])


@pytest.mark.slow
def test_metrics_and_files(blobs, tmp_path):
    tr = Trainer(blobs, CFG, tmp_path, device="cpu")
    ms = _run(tr)
    assert [m.step for m in ms] == list(range(1, 21))
    assert isinstance(ms[0], StepMetrics) and ms[0].total_steps == 20 and ms[0].images_per_s > 0
    assert ms[-1].lr == pytest.approx(lr_at(CFG, 19))
    assert len(ms[0].band_loss) == 3
    log = read_loss_log(tmp_path / "loss.csv")
    assert list(log["step"]) == list(range(1, 21))
    meta = read_metadata(tmp_path / "model.safetensors")
    assert meta["step"] == 20 and meta["label_names"] == ["red", "green", "blue"]
    assert meta["dataset_fingerprint"] == blobs.fingerprint()
    assert meta["train_config"]["n_feat"] == 8
    bundle = load_checkpoint(tmp_path / "model.safetensors")
    for k, v in tr.ema.state_dict().items():
        assert torch.equal(bundle.net.state_dict()[k], v), k
    assert tr.preview(per_label=2, steps=3).shape == (3, 2, 8, 8, 3)


@pytest.mark.slow
def test_resume_continues_bit_for_bit(blobs, tmp_path):
    straight = Trainer(blobs, CFG, tmp_path / "a", device="cpu")
    full = _run(straight)
    first = Trainer(blobs, CFG, tmp_path / "b", device="cpu")
    _run(first, until=10)  # stop after the step-10 checkpoint, as a crash or Stop would
    first.save()
    resumed = Trainer.from_run(blobs, tmp_path / "b", device="cpu")
    assert resumed.step == 10
    rest = _run(resumed)
    assert [m.loss for m in rest] == [m.loss for m in full[10:]]
    for k, v in straight.net.state_dict().items():
        assert torch.equal(resumed.net.state_dict()[k], v), k
    assert list(read_loss_log(tmp_path / "b" / "loss.csv")["step"]) == list(range(1, 21))


def test_a_second_ema_is_kept_saved_beside_the_model_and_resumed_exactly(blobs, tmp_path):
    # Decay 0.5 binds from step 8 (the warm-up is min(decay, (1+step)/(10+step))); 0.999 never does here.
    cfg = replace(CFG, steps=16, checkpoint_every=8, lr=3e-3, ema_decay=0.999, second_ema_decay=0.5)
    straight = Trainer(blobs, cfg, tmp_path / "a", device="cpu")
    want = {k: v.detach().clone().double() for k, v in straight.net.named_parameters()}  # buffers are copied
    for step, _ in enumerate(straight.run()):  # the second EMA by hand, from the live weights after each step
        d = ema_decay_at(0.5, step)
        live = dict(straight.net.named_parameters())
        want = {k: d * v + (1 - d) * live[k].detach().double() for k, v in want.items()}
    second = load_checkpoint(tmp_path / "a" / "model.ema2.safetensors")
    first = load_checkpoint(tmp_path / "a" / "model.safetensors")
    assert second.meta["extra"]["ema_decay"] == 0.5 and first.meta["extra"]["ema_decay"] == 0.999
    assert second.meta["step"] == first.meta["step"] == 16
    for k, v in want.items():
        assert torch.allclose(second.net.state_dict()[k].double(), v, atol=1e-6), k
    assert max((second.net.state_dict()[k] - first.net.state_dict()[k]).abs().max() for k in want) > 1e-4

    part = Trainer(blobs, cfg, tmp_path / "b", device="cpu")
    _run(part, until=8)
    resumed = Trainer.from_run(blobs, tmp_path / "b", device="cpu")
    _run(resumed)
    for k, v in straight.ema2.state_dict().items():
        assert torch.equal(resumed.ema2.state_dict()[k], v), k
    for k, v in straight.ema.state_dict().items():
        assert torch.equal(resumed.ema.state_dict()[k], v), k
    assert not (tmp_path / "c").exists()
    _run(Trainer(blobs, replace(cfg, second_ema_decay=0.0, steps=2), tmp_path / "c", device="cpu"))
    assert not (tmp_path / "c" / "model.ema2.safetensors").exists()


@pytest.mark.slow
def test_resume_refuses_another_data_set(blobs, tmp_path):
    _run(Trainer(blobs, CFG, tmp_path, device="cpu"))
    other = blobs.subset(np.arange(24))
    with pytest.raises(ValueError, match="another data set"):
        Trainer.from_run(other, tmp_path, device="cpu")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(blobs, tmp_path):
    tr = Trainer(blobs, CFG, tmp_path, device="cpu")
    _run(tr, until=10)  # checkpoint at step 10
    tr.x.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        _run(tr)
    assert read_metadata(tmp_path / "model.safetensors")["step"] == 10
    assert torch.isfinite(next(iter(load_checkpoint(tmp_path / "model.safetensors").net.parameters()))).all()


def test_unlabelled_data_trains_an_unconditional_model(blobs, tmp_path):
    plain = ImageDataset(blobs.images, np.zeros((48, 0), np.float32), [], "plain")
    tr = Trainer(plain, replace(CFG, steps=3), tmp_path, device="cpu")
    _run(tr)
    assert tr.unet_config.n_cfeat == 1 and tr.preview(per_label=2, steps=2).shape == (1, 2, 8, 8, 3)


def test_lr_and_ema_schedules():
    cfg = replace(CFG, steps=100, lr=1e-3)
    assert lr_at(cfg, 0) == pytest.approx(1e-3) and lr_at(cfg, 50) == pytest.approx(5e-4)  # course: lr*(1-ep/n)
    cos = replace(cfg, lr_schedule="cosine")
    assert lr_at(cos, 50) == pytest.approx(5e-4) and lr_at(cos, 0) == pytest.approx(1e-3)
    warm = replace(cfg, warmup_steps=10)
    assert lr_at(warm, 0) == pytest.approx(1e-4)
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1) and ema_decay_at(0.999, 10**6) == 0.999


# --- training objectives ----------------------------------------------------------------------------

def test_min_snr_weights_against_hand_values():
    from core.schedule import Schedule, ScheduleConfig
    from core.training import loss_weights

    sched = Schedule()
    for t in [1, 100, 250, 400, 500]:
        ab = sched.ab_t[t].item()
        snr = ab / (1 - ab)
        for target, expected in [("eps", min(snr, 5) / snr), ("v", min(snr, 5) / (snr + 1)), ("x0", min(snr, 5))]:
            assert loss_weights(sched, target, "min_snr", 5.0)[t].item() == pytest.approx(expected, rel=1e-12)
    # hand values at t = 1 (SNR ~ 3,300) and t = 500 (SNR 0.0063): eps weight 5/SNR, then 1
    w = loss_weights(sched, "eps", "min_snr")
    assert w[1].item() == pytest.approx(5 * (1 - sched.ab_t[1].item()) / sched.ab_t[1].item())
    assert w[500].item() == 1.0
    assert torch.equal(loss_weights(sched, "v", "uniform"), torch.ones(501, dtype=torch.float64))
    z = loss_weights(Schedule(ScheduleConfig(kind="linear_zsnr", prediction="v")), "v", "min_snr")
    assert z[500].item() == 0.0 and torch.isfinite(z).all()  # SNR = 0 at T: no division by zero


@pytest.mark.parametrize("target,schedule", [("v", "linear_zsnr"), ("x0", "cosine"), ("eps", "linear")])
def test_objective_round_trips_through_checkpoints_and_samples(blobs, tmp_path, target, schedule):
    from core.samplers import generate
    from core.schedule import Schedule

    cfg = replace(CFG, steps=10, prediction=target, schedule=schedule, loss_weighting="min_snr")
    tr = Trainer(blobs, cfg, tmp_path, device="cpu")
    losses = [m.loss for m in _run(tr)]
    assert all(np.isfinite(losses))
    meta = read_metadata(tmp_path / "model.safetensors")
    assert meta["schedule_config"]["prediction"] == target and meta["schedule_config"]["kind"] == schedule
    assert meta["train_config"]["loss_weighting"] == "min_snr"
    bundle = load_checkpoint(tmp_path / "model.safetensors")
    assert bundle.schedule_config.prediction == target
    res = generate(bundle.net, Schedule(bundle.schedule_config), sampler="dpmpp3m", steps=5, n=3, spacing="karras")
    assert res.images.shape == (3, 8, 8, 3)
    resumed = Trainer.from_run(blobs, tmp_path, device="cpu", steps=12)
    assert resumed.config.prediction == target and resumed.schedule.prediction == target


@pytest.mark.parametrize("target", ["eps", "v", "x0"])
def test_the_loss_regresses_the_chosen_target_with_its_weight(blobs, tmp_path, target):
    """With a network that outputs zeros, the per-sample loss is w_t * mean(target^2): v = a eps - s x0."""
    cfg = replace(CFG, steps=1, prediction=target, loss_weighting="min_snr")
    tr = Trainer(blobs, cfg, tmp_path, device="cpu")
    p = next(tr.net.parameters())
    tr.net.forward = lambda x, t, c: x * 0 + 0 * p.sum()
    state = tr.gen.get_state()
    x0, c, t, noise = tr._batch()
    tr.gen.set_state(state)
    losses, ts = tr._train_step()
    ab = tr.ab[t].view(-1, 1, 1, 1)
    expected_target = {"eps": noise, "v": ab.sqrt() * noise - (1 - ab).sqrt() * x0, "x0": x0}[target]
    expected = expected_target.pow(2).mean(dim=(1, 2, 3)) * tr.loss_w[t]
    assert torch.equal(ts, t) and torch.allclose(losses, expected, rtol=1e-5)


def test_train_config_refuses_eps_on_zero_terminal_snr():
    with pytest.raises(ValueError, match="use prediction v or x0"):
        replace(CFG, schedule="linear_zsnr", prediction="eps")
    with pytest.raises(ValueError, match="loss weighting"):
        replace(CFG, loss_weighting="snr")


# --- fine-tuning from a checkpoint ("teach the model a new label") ---------------------------------

def test_fine_tune_maps_labels_by_name_and_a_new_label_starts_at_zero(blobs, tmp_path):
    base = Trainer(blobs, replace(CFG, steps=4), tmp_path / "base", device="cpu")
    _run(base)
    base.close()
    ckpt = tmp_path / "base" / "model.safetensors"
    # the edited set: "green" renamed away, a new "yellow", the order changed
    edited = ImageDataset(blobs.images, np.stack([blobs.labels[:, 2], blobs.labels[:, 0], blobs.labels[:, 1]], 1),
                          ["blue", "red", "yellow"], "blobs-edited")
    tr = Trainer(edited, replace(CFG, steps=4, init=str(ckpt)), tmp_path / "ft", device="cpu")
    assert "new: yellow" in tr.init_report and "dropped: green" in tr.init_report
    old = load_checkpoint(ckpt).net
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3])
    eye_old, eye_new = torch.eye(3), torch.eye(3)
    with torch.no_grad():
        tr.net.eval()
        for new_j, old_i in [(0, 2), (1, 0)]:  # blue, red: outputs unchanged before any step
            assert torch.equal(tr.net(x, t, eye_new[new_j].expand(4, 3)), old(x, t, eye_old[old_i].expand(4, 3)))
        # the new label starts out as "no label": the unconditional output of the old model
        assert torch.equal(tr.net(x, t, eye_new[2].expand(4, 3)), old(x, t, torch.zeros(4, 3)))
        assert torch.equal(tr.ema(x, t, eye_new[1].expand(4, 3)), old(x, t, eye_old[0].expand(4, 3)))
    tr.net.train()
    losses = [m.loss for m in _run(tr)]
    assert len(losses) == 4 and all(np.isfinite(losses))
    meta = read_metadata(tmp_path / "ft" / "model.safetensors")
    assert meta["label_names"] == ["blue", "red", "yellow"] and meta["train_config"]["init"] == str(ckpt)


def test_fine_tune_takes_width_and_objective_from_the_checkpoint(blobs, tmp_path):
    base = Trainer(blobs, replace(CFG, steps=2, n_feat=16, prediction="v", schedule="linear_zsnr"),
                   tmp_path / "base", device="cpu")
    _run(base)
    base.close()
    tr = Trainer(blobs, replace(CFG, steps=2, init=str(tmp_path / "base" / "model.safetensors")),
                 tmp_path / "ft", device="cpu")
    assert (tr.config.n_feat, tr.config.prediction, tr.config.schedule) == (16, "v", "linear_zsnr")
    assert any("n_feat 8 -> 16" in n for n in tr.notes)


def test_the_loss_log_is_live_between_checkpoints_and_a_fresh_start_drops_stale_rows(blobs, tmp_path, monkeypatch):
    import core.training.trainer as train_mod

    monkeypatch.setattr(train_mod, "LOG_FLUSH_S", 0.0)  # every step, so a follower sees each row at once
    tr = Trainer(blobs, replace(CFG, checkpoint_every=1000), tmp_path, device="cpu")
    seen = []
    for m in tr.run():
        seen.append(read_loss_log(tmp_path / "loss.csv")["step"].tolist()[-1])
        if m.step == 5:
            break
    tr.close()
    assert seen == [1, 2, 3, 4, 5] and not (tmp_path / "resume.safetensors").exists()
    tr = Trainer(blobs, replace(CFG, checkpoint_every=1000, steps=3), tmp_path, device="cpu")  # nothing was saved
    _run(tr)
    tr.close()
    assert read_loss_log(tmp_path / "loss.csv")["step"].tolist() == [1, 2, 3]


def test_label_balanced_draws_give_every_label_the_same_share():
    labels = np.zeros((10, 2), np.float32)
    labels[:6, 0] = 1  # six of label 0, two of label 1, two with no label
    labels[6:8, 1] = 1
    w = label_balanced_weights(labels).numpy()
    share = [w[:6].sum(), w[6:8].sum(), w[8:].sum()]
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=1e-6)
    both = labels.copy()
    both[9] = 1  # a multi-label image weighs the mean of its labels' weights
    wb = label_balanced_weights(both).numpy()
    assert wb.sum() == pytest.approx(1.0) and wb[0] < wb[9] < wb[6]


def test_a_run_with_balanced_labels_draws_the_rare_label_as_often_as_the_others(blobs, tmp_path):
    keep = [i for i in range(48) if blobs.labels[i, 2] == 0 or i in (2, 5)]  # only two "blue" images left
    rare = blobs.subset(keep)
    tr = Trainer(rare, replace(CFG, balance_labels=True, batch_size=3000, steps=1), tmp_path, device="cpu")
    _, c, _, _ = tr._batch()
    tr.close()
    kept = c[c.sum(1) > 0]  # context dropout zeroes ~10% of the rows
    np.testing.assert_allclose((kept.sum(0) / kept.sum()).numpy(), [1 / 3] * 3, atol=0.04)


def test_a_new_label_share_keeps_its_share_of_every_batch_and_replays_the_old_labels_as_before(blobs, tmp_path):
    from core.training.objective import split_draw

    base = Trainer(blobs, replace(CFG, steps=2), tmp_path / "base", device="cpu")
    _run(base)
    base.close()
    labels = np.concatenate([blobs.labels, np.zeros((blobs.n, 1), np.float32)], 1)
    labels[:4] = 0
    labels[:4, -1] = 1  # four images become the new label
    edited = ImageDataset(blobs.images, labels, [*blobs.label_names, "new"], "blobs-new")
    balanced = label_balanced_weights(labels)
    w_old, w_new, n_new = split_draw(balanced, labels[:, -1] > 0, 0.7, 10)
    assert n_new == 7 and torch.all(w_old[:4] == 0) and torch.all(w_new[4:] == 0)
    assert torch.equal(w_old[4:], balanced[4:]) and torch.equal(w_new[:4], balanced[:4])  # replay as before
    tr = Trainer(edited, replace(CFG, init=str(tmp_path / "base" / "model.safetensors"), balance_labels=True,
                                 new_label_share=0.5, batch_size=8, context_dropout=0.0), tmp_path / "ft",
                 device="cpu")
    batches = [tr._batch()[1] for _ in range(400)]
    tr.close()
    assert tr._n_old == 4 and all(torch.all(c[:4, -1] == 0) and torch.all(c[4:, -1] == 1) for c in batches)  # half
    old = sum(c[:4, :-1].sum(0) for c in batches)
    np.testing.assert_allclose((old / old.sum()).numpy(), [1 / 3] * 3, atol=0.04)  # the old labels stay balanced
    assert split_draw(None, np.zeros(5, bool), 0.5, 10) is None and split_draw(None, np.ones(5, bool), 0.5, 10) is None
    few = np.arange(200) < 18  # 18 new images: at most 1.8 draws each per step, over every process
    assert split_draw(None, few, 0.6, 100)[2] == 32 and split_draw(None, few, 0.6, 50, processes=2)[2] == 16
    assert split_draw(None, np.arange(200) < 40, 0.6, 100)[2] == 60  # enough images: the share as asked


@pytest.mark.slow
def test_a_new_label_can_start_as_the_known_label_closest_to_its_images(blobs, tmp_path):
    base = Trainer(blobs, replace(CFG, steps=60, lr=3e-3), tmp_path / "base", device="cpu")
    _run(base)
    base.close()
    ckpt = tmp_path / "base" / "model.safetensors"
    # "crimson" takes over the red squares (they lose "red"): it should start as red
    labels = np.concatenate([blobs.labels, blobs.labels[:, :1]], axis=1)
    labels[:, 0] = 0
    edited = ImageDataset(blobs.images, labels, ["red", "green", "blue", "crimson"], "blobs-edited")
    tr = Trainer(edited, replace(CFG, steps=2, init=str(ckpt), new_label_init="nearest"), tmp_path / "ft", device="cpu")
    assert "crimson starts as red" in tr.init_report
    old = load_checkpoint(ckpt).net
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3])
    eye = torch.eye(4)
    with torch.no_grad():
        tr.net.eval()
        for j in range(3):  # the known labels: unchanged
            assert torch.equal(tr.net(x, t, eye[j].expand(4, 4)), old(x, t, torch.eye(3)[j].expand(4, 3)))
        assert torch.equal(tr.net(x, t, eye[3].expand(4, 4)), old(x, t, torch.eye(3)[0].expand(4, 3)))
    tr.close()


def test_temp_files_of_an_interrupted_save_are_removed_on_the_next_start(blobs, tmp_path):
    tr = Trainer(blobs, replace(CFG, steps=3), tmp_path, device="cpu")
    _run(tr)
    tr.close()
    residue = [tmp_path / ".resume.safetensors.abc123.tmp", tmp_path / ".model.safetensors.x9.tmp"]
    for p in residue:
        p.write_bytes(b"half a file")
    (tmp_path / "notes.tmp").write_text("not ours")
    resumed = Trainer.from_run(blobs, tmp_path, device="cpu", steps=4)
    assert not any(p.exists() for p in residue) and (tmp_path / "notes.tmp").exists()
    assert any("2 unfinished temporary file(s)" in n for n in resumed.notes)
    resumed.close()


def test_images_a_mirror_would_spoil_are_never_flipped(tmp_path):
    """An asymmetric image marked mirror-unsafe reaches every batch unflipped; marked safe, it is flipped."""
    from dataclasses import replace as dc_replace

    images = np.zeros((4, 8, 8, 3), np.uint8)
    images[:, :, :4] = 255  # left half white: a flip is visible
    labels = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    cfg = dc_replace(TRAIN_PRESETS["tiny"], steps=1, batch_size=64)
    for mirror_ok, flipped_expected in ((np.zeros(4, bool), False), (np.ones(4, bool), True)):
        ds = ImageDataset(images, labels, ["a", "b"], "asym", mirror_ok=mirror_ok)
        tr = Trainer(ds, cfg, tmp_path / f"run_{int(flipped_expected)}", device="cpu")
        x0 = tr._batch()[0]
        flipped = (x0[:, :, :, 0] < 0).all(dim=(1, 2))  # the left column turned black
        assert bool(flipped.any()) is flipped_expected
        tr.close()


@pytest.mark.parametrize("network", ["course", "desk"])
def test_label_first_steps_move_only_the_new_labels_inputs(blobs, tmp_path, network):
    """During the label-first steps the network is frozen and the known labels' context columns stay put; only
    the new label's columns of the context inputs change. After them the whole network trains."""
    from core.training import CONTEXT_INPUT_KEYS

    base_cfg = replace(CFG, steps=2, network=network, n_feat=16 if network == "desk" else CFG.n_feat)
    base = Trainer(blobs, base_cfg, tmp_path / "base", device="cpu")
    _run(base)
    base.close()
    ckpt = tmp_path / "base" / "model.safetensors"
    labels = np.concatenate([blobs.labels, (np.arange(blobs.n) % 5 == 0)[:, None].astype(np.float32)], 1)
    edited = ImageDataset(blobs.images, labels, [*blobs.label_names, "new"], "blobs-new")
    cfg = replace(base_cfg, steps=3, init=str(ckpt), label_first_steps=3, label_first_lr=0.05, hflip=False)
    tr = Trainer(edited, cfg, tmp_path / "ft", device="cpu")
    before = {k: v.detach().clone() for k, v in tr.net.named_parameters()}  # BatchNorm's statistics still follow
    assert [m.lr for m in _run(tr)] == [0.05] * 3  # the log and the plot show the rate these steps use
    after = dict(tr.net.named_parameters())
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    inputs = [k for k in CONTEXT_INPUT_KEYS if k in before]
    assert moved and set(moved) <= set(inputs), moved  # no weight but the context inputs
    for k in inputs:
        assert torch.equal(before[k][:, :-1], after[k][:, :-1])  # the known labels' columns
    assert any(not torch.equal(before[k][:, -1], after[k][:, -1]) for k in inputs)
    tr.close()
    # past the label-first steps the whole network moves again
    tr2 = Trainer.from_run(edited, tmp_path / "ft", device="cpu", steps=5)
    before = {k: v.detach().clone() for k, v in tr2.net.named_parameters()}
    assert all(m.lr != 0.05 for m in _run(tr2))  # the network's own rate again
    after = dict(tr2.net.named_parameters())
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in inputs)
    tr2.close()


def test_keep_old_labels_trains_the_old_rows_towards_the_starting_model_and_resumes_with_it(blobs, tmp_path):
    """At the first full step the network is the starting model, so every old-label row's loss is exactly 0 and
    only the new label's rows teach anything; a resumed run rebuilds the same frozen starting model."""
    base_cfg = replace(CFG, steps=2, network="desk", n_feat=16)
    base = Trainer(blobs, base_cfg, tmp_path / "base", device="cpu")
    _run(base)
    base.close()
    labels = np.concatenate([blobs.labels, (np.arange(blobs.n) % 4 == 0)[:, None].astype(np.float32)], 1)
    labels[labels[:, -1] > 0, :-1] = 0
    edited = ImageDataset(blobs.images, labels, [*blobs.label_names, "new"], "blobs-new")
    cfg = replace(base_cfg, steps=3, init=str(tmp_path / "base" / "model.safetensors"), keep_old_labels=True,
                  new_label_share=0.5, batch_size=32, context_dropout=0.3)
    tr = Trainer(edited, cfg, tmp_path / "ft", device="cpu")
    start = {k: v.detach().clone() for k, v in tr.anchor.state_dict().items()}
    assert all(torch.equal(start[k], v) for k, v in tr.net.state_dict().items())
    assert not any(p.requires_grad for p in tr.anchor.parameters())
    losses, _ = tr._train_step()
    new = tr._batch_new
    assert 0 < int(new.sum()) < len(new)
    assert torch.all(losses[~new] == 0) and torch.all(losses[new] > 0)  # dropped-label rows included
    tr.step += 1
    tr.save()
    tr.close()
    resumed = Trainer.from_run(edited, tmp_path / "ft", device="cpu", steps=3)
    assert all(torch.equal(start[k], v) for k, v in resumed.anchor.state_dict().items())
    assert not all(torch.equal(start[k], v) for k, v in resumed.net.state_dict().items())  # the run's own weights
    resumed.close()
    plain = Trainer(edited, replace(cfg, keep_old_labels=False), tmp_path / "plain", device="cpu")
    assert plain.anchor is None
    plain.close()
    same_labels = Trainer(blobs, cfg, tmp_path / "same", device="cpu")  # nothing new: it would learn nothing
    assert same_labels.anchor is None
    same_labels.close()


def test_biased_timesteps_follow_their_density_and_shifts_keep_white_white():
    from core.training.objective import biased_timesteps, shift_and_jitter

    g = torch.Generator().manual_seed(0)
    uniform, linear = biased_timesteps(40000, 500, 0.0, g), biased_timesteps(40000, 500, 1.0, g)
    assert int(uniform.min()) >= 1 and int(linear.max()) <= 500
    assert abs(uniform.float().mean().item() / 500 - 0.5) < 0.01  # density 1
    assert abs(linear.float().mean().item() / 500 - 2 / 3) < 0.01  # density 2s: mean 2/3
    assert abs((linear <= 250).float().mean().item() - 0.25) < 0.01  # P(s <= 1/2) = 1/4
    white = torch.ones(8, 3, 6, 6)
    assert torch.equal(shift_and_jitter(white, g), white)
    dot = -torch.ones(64, 3, 6, 6)
    dot[:, :, 3, 3] = 1.0  # one white pixel on black: where it lands is the shift
    out = shift_and_jitter(dot, g, jitter=0.0)
    where = [divmod(int(i), 6) for i in (out[:, 0] > 0.5).flatten(1).float().argmax(1)]
    assert {(y - 3, x - 3) for y, x in where} == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert torch.equal(out.abs(), torch.ones_like(out))  # a pure shift: no value changes, edges replicate


def test_new_label_options_touch_only_the_new_labels_images(blobs, tmp_path):
    """With the noise bias and augmentation on, the old labels' images get exactly the batch they got without
    them; the new label's images are drawn towards high noise and moved."""
    base = Trainer(blobs, replace(CFG, steps=2), tmp_path / "base", device="cpu")
    _run(base)
    base.close()
    ckpt = str(tmp_path / "base" / "model.safetensors")
    labels = np.concatenate([blobs.labels, (np.arange(blobs.n) % 2 == 0)[:, None].astype(np.float32)], 1)
    edited = ImageDataset(blobs.images, labels, [*blobs.label_names, "new"], "blobs-new")
    plain = Trainer(edited, replace(CFG, init=ckpt, hflip=False), tmp_path / "plain", device="cpu")
    treated = Trainer(edited, replace(CFG, init=ckpt, hflip=False, new_label_noise_bias=3.0, new_label_augment=True),
                      tmp_path / "treated", device="cpu")
    assert treated.new_rows.sum().item() == (labels[:, -1] > 0).sum() and plain.new_rows is None
    new_t, old_t, moved = [], [], 0
    for _ in range(30):
        treated.gen.set_state(plain.gen.get_state())  # the same draws up to the options' own (they come last)
        peek = torch.Generator().set_state(treated.gen.get_state())  # the batch's first draw is its images
        is_new = treated.new_rows[torch.randint(0, blobs.n, (CFG.batch_size,), generator=peek)]
        (x_a, c_a, t_a, n_a), (x_b, c_b, t_b, n_b) = plain._batch(), treated._batch()
        assert torch.equal(c_a, c_b) and torch.equal(n_a, n_b)
        assert torch.equal(t_a[~is_new], t_b[~is_new]) and torch.equal(x_a[~is_new], x_b[~is_new])
        new_t += t_b[is_new].tolist()
        old_t += t_b[~is_new].tolist()
        moved += int((x_a[is_new] != x_b[is_new]).flatten(1).any(1).sum())
    assert np.mean(new_t) / 500 > 0.7 and abs(np.mean(old_t) / 500 - 0.5) < 0.08  # bias 3: mean 4/5
    assert moved > 0.5 * len(new_t)
    for tr in (plain, treated):
        tr.close()


def test_pixel_shift_moves_every_image_by_at_most_one_pixel_and_draws_nothing_else(blobs, tmp_path):
    """With pixel_shift each image of the batch is its unshifted self moved by -1, 0 or +1 px in each direction
    (edges replicated), every one of the nine moves occurs, and labels, timesteps and noise are the plain batch's."""
    import torch.nn.functional as F

    plain = Trainer(blobs, replace(CFG, hflip=False), tmp_path / "plain", device="cpu")
    shifted = Trainer(blobs, replace(CFG, hflip=False, pixel_shift=True), tmp_path / "shifted", device="cpu")
    seen = set()
    for _ in range(10):
        shifted.gen.set_state(plain.gen.get_state())
        (x_a, c_a, t_a, n_a), (x_b, c_b, t_b, n_b) = plain._batch(), shifted._batch()
        assert torch.equal(c_a, c_b) and torch.equal(t_a, t_b) and torch.equal(n_a, n_b)
        h, w = x_a.shape[2:]
        padded = F.pad(x_a, (1, 1, 1, 1), mode="replicate")
        for i in range(len(x_a)):
            moves = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                     if torch.equal(x_b[i], padded[i, :, 1 - dy:1 - dy + h, 1 - dx:1 - dx + w])]
            assert moves, f"image {i} is not a shift of at most one pixel"
            seen.add(moves[0])
    assert len(seen) == 9
    assert TrainConfig.from_dict({k: v for k, v in CFG.to_dict().items() if k != "pixel_shift"}).pixel_shift is False
    for tr in (plain, shifted):
        tr.close()


@pytest.mark.slow
def test_fp16_keeps_its_loss_scale_across_a_resume(blobs, tmp_path, monkeypatch):
    """fp16 (a GPU without bf16 in hardware) trains with a loss scale that grows over clean steps; a resume
    continues it instead of starting again at 65536 (run here with the CPU's fp16 autocast and GradScaler)."""
    from core.training import trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "resolve_precision", lambda pref, device: "fp16")
    first = Trainer(blobs, CFG, tmp_path, device="cpu")
    assert first.scaler.is_enabled()
    losses = [m.loss for m in _run(first, until=10)]
    first.save()
    saved = (first.scaler.get_scale(), first.scaler.state_dict()["_growth_tracker"])
    assert all(np.isfinite(losses)) and saved != (65536.0, 0)
    first.close()
    resumed = Trainer.from_run(blobs, tmp_path, device="cpu")
    assert (resumed.scaler.get_scale(), resumed.scaler.state_dict()["_growth_tracker"]) == saved
    assert not any("loss scale" in n for n in resumed.notes)
    resumed.close()
