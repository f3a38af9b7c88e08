"""The desk network (DeskUnet): shapes, label conditioning in every block, attention, and the network choice
through training, checkpoints, fine-tuning and every sampler."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from toy_data import blob_squares

from core.catalog import SAMPLER_NAMES, model_calls
from core.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from core.data import ImageDataset
from core.desk_unet import DeskUnet, ResBlock, SelfAttention, level_channels
from core.samplers import generate
from core.schedule import Schedule, ScheduleConfig
from core.training import TRAIN_PRESETS, Trainer, remap_context_inputs
from core.unet import ContextUnet, UNetConfig, build_network


def _randomised(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A new DeskUnet predicts 0 (zero-initialised output and residual branches): give every weight a value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net.eval()


def _desk(height=16, n_cfeat=4, n_feat=8, **kw):
    return build_network(UNetConfig(network="desk", n_feat=n_feat, n_cfeat=n_cfeat, height=height, **kw))


@pytest.mark.parametrize("height", [8, 16, 32])
def test_forward_shapes_at_16_and_32_px(height):
    net = _randomised(_desk(height))
    x = torch.randn(3, 3, height, height)
    assert net(x, torch.rand(3), torch.rand(3, 4)).shape == x.shape
    assert net(x, torch.tensor([0.5])).shape == x.shape  # broadcast time, no context
    assert isinstance(net, DeskUnet)


def test_capacity_sits_at_the_low_resolutions():
    assert level_channels(32, 16) == [(16, 32), (8, 64), (4, 96)]
    assert level_channels(32, 32) == [(32, 32), (16, 32), (8, 64), (4, 96)]


def test_a_new_network_predicts_zero_and_every_block_starts_as_the_identity():
    net = _desk()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(net(x, torch.rand(2), torch.rand(2, 4)), torch.zeros_like(x))
    block = ResBlock(8, 8, 32, 0.0)
    assert torch.equal(block(x[:, :1].expand(2, 8, 16, 16), torch.randn(2, 32)), x[:, :1].expand(2, 8, 16, 16))


def test_the_label_reaches_every_residual_block():
    """Changing only the label changes each block's output (AdaGN scale and shift everywhere)."""
    net = _randomised(_desk())
    outputs: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: outputs.setdefault(name, []).append(out))
             for name, m in net.named_modules() if isinstance(m, ResBlock)]
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.4])
    with torch.no_grad():
        a = net(x, t, torch.eye(4)[[0, 0]])
        b = net(x, t, torch.eye(4)[[1, 1]])
    for h in hooks:
        h.remove()
    assert len(outputs) == 7  # one block per level down (3), the middle one, one per level up (3)
    assert not torch.allclose(a, b)
    for name, (out_a, out_b) in outputs.items():
        assert not torch.allclose(out_a, out_b), name


def test_no_label_embeds_to_zero_and_mixes_are_linear():
    net = _randomised(_desk())
    t = torch.tensor([0.3])
    with torch.no_grad():
        zero = net.embedding(t, torch.zeros(1, 4), 1, torch.float32)
        none = net.embedding(t, None, 1, torch.float32)
        assert torch.equal(zero, none)  # the all-zero context is "no label", as for the course network
        mix = net.label_embed(torch.tensor([[1.0, 0.6, 0, 0]]))
        assert torch.allclose(mix, net.label_embed(torch.eye(4)[[0]]) + 0.6 * net.label_embed(torch.eye(4)[[1]]))


def test_attention_masks_nothing():
    """Every position's output depends on every other position's input."""
    attn = _randomised(SelfAttention(32))
    x = torch.randn(1, 32, 4, 4, requires_grad=True)
    attn(x)[0, :, 0, 0].sum().backward()
    reach = x.grad.abs().sum(dim=1)[0]  # (4, 4)
    assert (reach > 0).all()


def test_network_choice_round_trips_through_a_checkpoint(tmp_path):
    cfg = UNetConfig(network="desk", n_feat=8, n_cfeat=3, height=8, dropout=0.1)
    net = _randomised(build_network(cfg))
    path = save_checkpoint(tmp_path / "m.safetensors", net.state_dict(), unet_config=cfg,
                           schedule_config=ScheduleConfig(), label_names=["a", "b", "c"])
    bundle = load_checkpoint(path)
    assert isinstance(bundle.net, DeskUnet) and bundle.net.config == cfg
    assert "desk network" in bundle.description
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        # the loaded net runs in the convolutions' fast memory layout: equal to rounding
        loaded, own = bundle.net(x, torch.tensor([0.5]), torch.eye(3)[:2]), net(x, torch.tensor([0.5]), torch.eye(3)[:2])
        assert torch.allclose(loaded, own, atol=1e-5) and own.abs().max() > 0.1


def test_a_checkpoint_without_a_network_field_is_the_course_network(tmp_path):
    cfg = UNetConfig(n_feat=8, n_cfeat=3, height=8)
    meta_cfg = {k: v for k, v in cfg.to_dict().items() if k not in ("network", "dropout")}  # written before 'desk'
    assert UNetConfig.from_dict(meta_cfg) == cfg
    assert isinstance(build_network(UNetConfig.from_dict(meta_cfg)), ContextUnet)


def test_bad_desk_configs_are_refused():
    with pytest.raises(ValueError, match="down to 4x4"):
        UNetConfig(network="desk", height=12)
    with pytest.raises(ValueError, match="network must be one of"):
        UNetConfig(network="transformer")
    with pytest.raises(ValueError, match="course network only"):
        UNetConfig(network="desk", course_compat=True)


@pytest.mark.parametrize("network", ["course", "desk"])
@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_both_networks_run_every_sampler_guided(network, sampler):
    torch.manual_seed(0)
    net = build_network(UNetConfig(network=network, n_feat=8, n_cfeat=3, height=8))
    net = _randomised(net) if network == "desk" else net.eval()
    schedule = Schedule(ScheduleConfig(kind="linear_zsnr", prediction="v"))
    steps = 20 if sampler == "ddpm" else 4
    res = generate(net, schedule, sampler=sampler, steps=steps, n=3, context=np.eye(3, dtype=np.float32), guidance=2.0)
    assert res.images.shape == (3, 8, 8, 3) and res.finite
    assert res.nfe == model_calls(sampler, steps, guided=True, zero_terminal=True)


@pytest.fixture
def blobs() -> ImageDataset:
    return blob_squares(24)


CFG = replace(TRAIN_PRESETS["tiny"], network="desk", steps=6, batch_size=8, checkpoint_every=3, precision="fp32",
              seed=1, prediction="v", schedule="linear_zsnr", loss_weighting="min_snr")


def test_desk_training_resumes_exactly_and_saves_the_network(blobs, tmp_path):
    full = Trainer(blobs, CFG, tmp_path / "full", device="cpu")
    losses = [m.loss for m in full.run()]
    full.close()
    half = Trainer(blobs, CFG, tmp_path / "half", device="cpu")
    first = [m.loss for _, m in zip(range(3), half.run())]
    half.close()
    resumed = Trainer.from_run(blobs, tmp_path / "half", device="cpu")
    rest = [m.loss for m in resumed.run()]
    resumed.close()
    assert first + rest == losses and losses[-1] < losses[0] * 5
    meta = read_metadata(tmp_path / "full" / "model.safetensors")
    assert meta["unet_config"]["network"] == "desk" and meta["train_config"]["network"] == "desk"
    assert isinstance(load_checkpoint(tmp_path / "full" / "model.safetensors").net, DeskUnet)


def test_desk_fine_tune_keeps_known_labels_and_starts_a_new_one_as_no_label(blobs, tmp_path):
    base = Trainer(blobs, CFG, tmp_path / "base", device="cpu")
    for _ in base.run():
        pass
    base.close()
    ckpt = tmp_path / "base" / "model.safetensors"
    edited = ImageDataset(blobs.images, np.stack([blobs.labels[:, 2], blobs.labels[:, 0], blobs.labels[:, 1]], 1),
                          ["blue", "red", "yellow"], "blobs-edited")
    tr = Trainer(edited, replace(TRAIN_PRESETS["tiny"], steps=2, batch_size=8, precision="fp32", init=str(ckpt)),
                 tmp_path / "ft", device="cpu")
    assert tr.config.network == "desk" and any("network course -> desk" in n for n in tr.notes)
    old = load_checkpoint(ckpt).net
    x, t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0.3])
    eye = torch.eye(3)
    with torch.no_grad():
        tr.net.eval()
        assert torch.equal(tr.net(x, t, eye[[0, 0]]), old(x, t, eye[[2, 2]]))  # blue was old column 2
        assert torch.equal(tr.net(x, t, eye[[2, 2]]), old(x, t, torch.zeros(2, 3)))  # yellow: "no label"
    tr.close()


def test_remap_moves_the_desk_label_embedding_by_name():
    w = torch.arange(6.0).reshape(2, 3)  # (emb, labels a b c)
    out, report = remap_context_inputs({"label_embed.weight": w}, ["a", "b", "c"], ["c", "new", "a"])
    assert torch.equal(out["label_embed.weight"], torch.tensor([[2.0, 0, 0], [5.0, 0, 3.0]]))
    assert "new: new" in report and "dropped: b" in report
