"""core.editing: variation noise, SDEdit and RePaint inpainting against their defining limits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.editing import inpaint, sdedit, sdedit_start, slerp_noise
from core.samplers import generate, initial_noise, to_uint8
from core.schedule import Schedule, ScheduleConfig, spaced_timesteps
from core.unet import ContextUnet, UNetConfig


@pytest.fixture(scope="module")
def zsnr():
    return Schedule(ScheduleConfig(kind="linear_zsnr", prediction="v"))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return ContextUnet(UNetConfig(n_feat=8, n_cfeat=3, height=8)).eval()


def _images(n=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, 8, 8), generator=g) * 2 - 1


def test_slerp_gives_its_ends_and_keeps_the_norm_between():
    a, b = initial_noise(3, (3, 8, 8), 1, "cpu"), initial_noise(3, (3, 8, 8), 2, "cpu")
    assert torch.equal(slerp_noise(a, b, 0.0), a) and torch.equal(slerp_noise(a, b, 1.0), b)
    mid = slerp_noise(a, b, 0.5)
    assert torch.allclose(mid.flatten(1).norm(dim=1), (a.flatten(1).norm(dim=1) + b.flatten(1).norm(dim=1)) / 2,
                          rtol=0.05)  # a straight average would have ~0.71 of the norm
    assert torch.allclose(slerp_noise(a, a, 0.3), a, atol=1e-6)  # the same noise stays itself


def test_sdedit_at_full_strength_is_plain_sampling_and_at_zero_returns_the_input(net, zsnr):
    x0 = _images()
    ctx = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    full = sdedit(net, zsnr, x0, 1.0, seed=5, sampler="dpmpp2m", steps=6, context=ctx)
    plain = generate(net, zsnr, sampler="dpmpp2m", steps=6, n=4, context=ctx, seed=5)
    assert np.array_equal(full.images, plain.images)  # x_T = z exactly where ab_T = 0
    assert np.array_equal(sdedit(net, zsnr, x0, 0.0, seed=5).images, to_uint8(x0))
    half = sdedit(net, zsnr, x0, 0.5, seed=5, sampler="ddim", steps=5, context=ctx)
    assert half.nfe == 5 and half.timesteps[0] == pytest.approx(250) and half.timesteps[-1] == 0


def test_partial_spacings_start_at_t_max_and_decrease(zsnr):
    for spacing in ("trailing", "logsnr", "karras"):
        ts = spaced_timesteps(8, zsnr, spacing, t_max=300)
        assert ts[0] == 300 and ts[-1] == 0 and len(ts) == 9
        assert all(a > b for a, b in zip(ts, ts[1:])), (spacing, ts)
    assert spaced_timesteps(8, zsnr, "karras", t_max=500) == spaced_timesteps(8, zsnr, "karras")


def test_inpainting_keeps_what_is_not_redrawn_and_redraws_everything_like_ddim_eta_1(net, zsnr):
    x0 = _images()
    ctx = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    kept = inpaint(net, zsnr, x0, torch.zeros(8, 8), steps=6, resample=2, seed=4, context=ctx)
    assert np.array_equal(kept.images, to_uint8(x0))
    full = inpaint(net, zsnr, x0, torch.ones(8, 8), steps=6, resample=1, seed=4, context=ctx)
    plain = generate(net, zsnr, sampler="ddim", eta=1.0, steps=6, n=4, context=ctx, seed=4)
    assert np.array_equal(full.images, plain.images)
    left = torch.zeros(8, 8)
    left[:, :4] = 1
    half = inpaint(net, zsnr, x0, left, steps=6, resample=3, seed=4, context=ctx)
    assert np.array_equal(half.images[:, :, 4:], to_uint8(x0)[:, :, 4:])  # the right half is the input's
    assert not np.array_equal(half.images[:, :, :4], to_uint8(x0)[:, :, :4])
    assert half.nfe == 6 * 3  # every step repeated resample times


def test_inpainting_with_jumps_keeps_the_limits_and_visits_every_step_resample_times(net, zsnr):
    x0 = _images()
    ctx = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    for jump in (2, 4, 6, 10):  # 4 does not divide 6 steps: a last, shorter block; 6 and 10: one block
        kept = inpaint(net, zsnr, x0, torch.zeros(8, 8), steps=6, resample=3, jump=jump, seed=4, context=ctx)
        assert np.array_equal(kept.images, to_uint8(x0)), jump
        assert kept.nfe == 6 * 3 and kept.settings["jump"] == jump
        # without resampling no jump is taken: everything redrawn is DDIM eta = 1 exactly, as for jump 1
        full = inpaint(net, zsnr, x0, torch.ones(8, 8), steps=6, resample=1, jump=jump, seed=4, context=ctx)
        plain = generate(net, zsnr, sampler="ddim", eta=1.0, steps=6, n=4, context=ctx, seed=4)
        assert np.array_equal(full.images, plain.images), jump
    # with resampling the redrawn chain is a longer one (not plain sampling), and the jump length changes it
    j1 = inpaint(net, zsnr, x0, torch.ones(8, 8), steps=6, resample=2, jump=1, seed=4, context=ctx)
    j3 = inpaint(net, zsnr, x0, torch.ones(8, 8), steps=6, resample=2, jump=3, seed=4, context=ctx)
    assert not np.array_equal(j1.images, j3.images)


def test_inpainting_callback_sees_every_pass_and_marks_the_final_ones(net, zsnr):
    seen = []
    inpaint(net, zsnr, _images(1), torch.ones(8, 8), steps=6, resample=3, jump=4, seed=1,
            callback=lambda info: seen.append((info["i"], info["pass"], info["final"])))
    assert len(seen) == 6 * 3
    # blocks of 4 then 2 steps, each walked 3 times; the final pass of each block is what stays
    assert [i for i, _, final in seen if final] == list(range(6))
    assert seen[:5] == [(0, 0, False), (1, 0, False), (2, 0, False), (3, 0, False), (0, 1, False)]


def test_sdedit_starts_from_the_sketch_noised_to_t0(net, zsnr):
    x0 = _images(2)
    x_t0, t0 = sdedit_start(zsnr, x0, 0.4, seed=9)
    ab = zsnr.ab_at(0.4 * zsnr.T)
    assert t0 == pytest.approx(200)
    expected = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * initial_noise(2, (3, 8, 8), 9, "cpu")
    assert torch.allclose(x_t0, expected, atol=1e-6)
    with pytest.raises(ValueError):
        sdedit_start(zsnr, x0, 0.0)
