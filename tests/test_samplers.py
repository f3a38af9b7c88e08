"""Samplers against closed-form cases: a model that returns the exact noise for data from a known
Gaussian (or a single point), where the clean image and the sample statistics are known."""
import math
import threading

import numpy as np
import pytest
import torch
import torch.nn as nn

from core.samplers import (SAMPLERS, Denoiser, SamplingCancelled, generate, initial_noise, sample_ddim,
                           sample_dpmpp_2m)
from core.schedule import Schedule, ScheduleConfig, sampling_timesteps
from core.unet import ContextUnet, UNetConfig


class ExactGaussianEps(nn.Module):
    """The optimal noise prediction when every pixel of x0 is N(mu, s^2), independent:
    E[eps | x_t] = sigma / (a^2 s^2 + sigma^2) * (x_t - a mu), a = sqrt(ab_t), sigma = sqrt(1 - ab_t)."""

    def __init__(self, schedule: Schedule, mu: float, s: float):
        super().__init__()
        self.config = UNetConfig(n_feat=8, n_cfeat=1, height=4)
        self.ab = schedule.ab_t
        self.T, self.mu, self.s = schedule.T, mu, s
        self.dummy = nn.Parameter(torch.zeros(1))  # gives the sampler a device
        self.calls = 0

    def forward(self, x, t_frac, c=None):
        self.calls += 1
        t = int(round(float(t_frac.reshape(-1)[0]) * self.T))
        a, sig = math.sqrt(self.ab[t]), math.sqrt(1 - self.ab[t])
        return sig / (a * a * self.s**2 + sig * sig) * (x - a * self.mu)


@pytest.fixture
def schedule():
    return Schedule()


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp2m"])
def test_point_mass_is_recovered_exactly_for_every_step_count(schedule, sampler):
    """With s = 0 the predicted x0 is the point itself at every t, so deterministic samplers land on it."""
    model = ExactGaussianEps(schedule, mu=0.3, s=0.0)
    x_T = initial_noise(4, (3, 4, 4), seed=0, device="cpu")
    for steps in [1, 2, 3, 7, 10, 25, 30, 49, 123, 333, 499, 500]:
        res = generate(model, schedule, sampler=sampler, steps=steps, noise=x_T)
        x = res.images.astype(np.float64) / 127.5 - 1
        assert np.abs(x - 0.3).max() <= 1 / 127.5 + 1e-9, (sampler, steps)
        assert res.nfe == steps


def test_ddim_matches_the_probability_flow_map_of_a_gaussian(schedule):
    """For Gaussian data the ODE maps x_T to mu + s / sqrt(a_T^2 s^2 + sigma_T^2) (x_T - a_T mu)."""
    mu, s = 0.2, 0.5
    model = ExactGaussianEps(schedule, mu, s)
    x_T = initial_noise(8, (3, 4, 4), seed=1, device="cpu").double().float()
    den = Denoiser(model, schedule)
    out = sample_ddim(den, x_T.clone(), sampling_timesteps(500, 500))
    aT, sT = math.sqrt(schedule.ab_t[500]), math.sqrt(1 - schedule.ab_t[500])
    expected = mu + s / math.sqrt(aT**2 * s**2 + sT**2) * (x_T - aT * mu)
    assert (out - expected).abs().max().item() < 1e-2  # DDIM-500's discretisation error is ~5e-3
    # DPM-Solver++(2M) at 20 calls is close to the 500-step solution; DDIM at 20 less so
    dpm = sample_dpmpp_2m(Denoiser(model, schedule), x_T.clone(), sampling_timesteps(20, 500))
    ddim20 = sample_ddim(Denoiser(model, schedule), x_T.clone(), sampling_timesteps(20, 500))
    err_dpm, err_ddim = (dpm - expected).abs().max().item(), (ddim20 - expected).abs().max().item()
    assert err_dpm < 0.03 and err_dpm < err_ddim / 4, (err_dpm, err_ddim)  # measured 0.023 vs 0.165


def test_ddpm_samples_have_the_data_statistics(schedule):
    """Ancestral sampling from the exact model draws from N(mu, s^2): check mean and std on 12k pixels."""
    mu, s = -0.3, 0.4
    model = ExactGaussianEps(schedule, mu, s)
    x_T = initial_noise(250, (3, 4, 4), seed=2, device="cpu")
    den = Denoiser(model, schedule)
    g = torch.Generator().manual_seed(3)
    out = SAMPLERS["ddpm"].fn(den, x_T, sampling_timesteps(500, 500), generator=g)
    assert out.mean().item() == pytest.approx(mu, abs=0.02)
    assert out.std().item() == pytest.approx(s, abs=0.02)
    assert den.nfe == 500


def test_ddim_eta_one_is_stochastic_and_eta_zero_is_not(schedule):
    model = ExactGaussianEps(schedule, 0.0, 0.5)
    x_T = initial_noise(2, (3, 4, 4), seed=0, device="cpu")
    a = generate(model, schedule, sampler="ddim", steps=10, noise=x_T, eta=0.0, seed=1).images
    b = generate(model, schedule, sampler="ddim", steps=10, noise=x_T, eta=0.0, seed=2).images
    c = generate(model, schedule, sampler="ddim", steps=10, noise=x_T, eta=1.0, seed=1).images
    d = generate(model, schedule, sampler="ddim", steps=10, noise=x_T, eta=1.0, seed=2).images
    assert np.array_equal(a, b) and not np.array_equal(c, d)


def test_cosine_schedule_samples_stay_finite():
    schedule = Schedule(ScheduleConfig(kind="cosine"))
    model = ExactGaussianEps(schedule, 0.3, 0.0)
    for name in SAMPLERS:
        res = generate(model, schedule, sampler=name, steps=20, n=2)
        assert np.abs(res.images.astype(float) / 127.5 - 1 - 0.3).max() < 0.05, name


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    return ContextUnet(UNetConfig(n_feat=8, n_cfeat=3, height=8)).eval()


def test_guidance_doubles_model_calls_and_is_batched(tiny_net, schedule):
    ctx = np.eye(3, dtype=np.float32)
    plain = generate(tiny_net, schedule, sampler="ddim", steps=7, n=6, context=ctx, guidance=1.0)
    guided = generate(tiny_net, schedule, sampler="ddim", steps=7, n=6, context=ctx, guidance=3.0)
    assert plain.nfe == 7 and guided.nfe == 14
    assert guided.images.shape == (6, 8, 8, 3)


def test_guidance_combines_conditional_and_unconditional_predictions(tiny_net, schedule):
    x = torch.randn(2, 3, 8, 8)
    c = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    with torch.no_grad():
        t = torch.tensor([300 / 500])
        eps_c, eps_u = tiny_net(x, t, c), tiny_net(x, t, torch.zeros_like(c))
        eps, _ = Denoiser(tiny_net, schedule, c, guidance=2.5).predict(x, 300)
    assert torch.allclose(eps, eps_u + 2.5 * (eps_c - eps_u), atol=1e-5)


def test_same_seed_same_images_and_noise(tiny_net, schedule):
    a = generate(tiny_net, schedule, sampler="ddpm", steps=20, n=3, seed=5)
    b = generate(tiny_net, schedule, sampler="ddpm", steps=20, n=3, seed=5)
    c = generate(tiny_net, schedule, sampler="ddpm", steps=20, n=3, seed=6)
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    assert torch.equal(initial_noise(2, (3, 8, 8), 9, "cpu"), initial_noise(2, (3, 8, 8), 9, "cpu"))


def test_callback_sees_every_step_with_x_and_denoised(tiny_net, schedule):
    seen = []
    generate(tiny_net, schedule, sampler="dpmpp2m", steps=6, n=2,
             callback=lambda d: seen.append((d["i"], d["t"], d["s"], tuple(d["x"].shape), tuple(d["denoised"].shape))))
    assert [s[0] for s in seen] == list(range(6))
    assert seen[0][1] == 500 and seen[-1][2] == 0
    assert all(s[3] == s[4] == (2, 3, 8, 8) for s in seen)


def test_cancel_stops_between_model_calls(tiny_net, schedule):
    stop = threading.Event()
    calls = []

    def cb(d):
        calls.append(d["i"])
        if d["i"] == 2:
            stop.set()

    with pytest.raises(SamplingCancelled):
        generate(tiny_net, schedule, sampler="ddpm", steps=50, n=2, callback=cb, cancel=stop)
    assert calls == [0, 1, 2]


def test_registry_lists_the_three_samplers():
    assert set(SAMPLERS) == {"ddpm", "ddim", "dpmpp2m"}
    assert SAMPLERS["ddpm"].default_steps == 500 and SAMPLERS["ddim"].has_eta
    with pytest.raises(ValueError, match="unknown sampler"):
        generate(None, Schedule(), sampler="euler")
