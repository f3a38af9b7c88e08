"""Samplers against closed-form cases: a model that returns the exact noise for data from a known
Gaussian (or a single point), where the clean image and the sample statistics are known."""
import math
import threading

import numpy as np
import pytest
import torch
import torch.nn as nn

from core.catalog import SAMPLER_CATALOG, model_calls
from core.samplers import (SAMPLERS, Denoiser, SamplingCancelled, generate, initial_noise, sample_ddim,
                           sample_dpmpp_2m, sample_dpmpp_3m, sample_heun)
from core.schedule import Schedule, ScheduleConfig, sampling_timesteps, spaced_timesteps
from core.unet import ContextUnet, UNetConfig


class ExactGaussianEps(nn.Module):
    """The optimal prediction when every pixel of x0 is N(mu, s^2), independent, at any (fractional) t:
    E[eps | x_t] = sigma / (a^2 s^2 + sigma^2) * (x_t - a mu), a = sqrt(ab_t), sigma = sqrt(1 - ab_t),
    E[x0 | x_t] = mu + a s^2 / (a^2 s^2 + sigma^2) * (x_t - a mu), and v = a eps - sigma x0.
    `target` is what it outputs, as a network trained with that prediction target would."""

    def __init__(self, schedule: Schedule, mu: float, s: float, target: str = "eps"):
        super().__init__()
        self.config = UNetConfig(n_feat=8, n_cfeat=1, height=4)
        self.schedule, self.target = schedule, target
        self.T, self.mu, self.s = schedule.T, mu, s
        self.dummy = nn.Parameter(torch.zeros(1))  # gives the sampler a device
        self.calls = 0

    def forward(self, x, t_frac, c=None):
        self.calls += 1
        ab = self.schedule.ab_at(float(t_frac.reshape(-1)[0]) * self.T)
        a, sig = math.sqrt(ab), math.sqrt(1 - ab)
        denom = a * a * self.s**2 + sig * sig
        eps = sig / denom * (x - a * self.mu)
        x0 = self.mu + a * self.s**2 / denom * (x - a * self.mu)
        return {"eps": eps, "x0": x0, "v": a * eps - sig * x0}[self.target]


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


def test_a_negative_label_of_zeros_is_todays_cfg_and_another_label_guides_against_it(tiny_net, schedule):
    ctx = np.eye(3, dtype=np.float32)
    kw = dict(sampler="dpmpp2m", steps=6, n=3, context=ctx, guidance=3.0, seed=4)
    cfg = generate(tiny_net, schedule, **kw)
    zeros = generate(tiny_net, schedule, negative_context=np.zeros((3, 3), np.float32), **kw)
    assert np.array_equal(cfg.images, zeros.images) and zeros.nfe == cfg.nfe == 12
    x, c, neg = torch.randn(3, 3, 8, 8), torch.eye(3), torch.eye(3)[[1, 2, 0]]
    with torch.no_grad():
        t = torch.tensor([300 / 500])
        out_c, out_n = tiny_net(x, t, c), tiny_net(x, t, neg)
        eps, _ = Denoiser(tiny_net, schedule, c, guidance=2.0, negative=neg).predict(x, 300)
    assert torch.allclose(eps, out_n + 2.0 * (out_c - out_n), atol=1e-5)


def test_autoguidance_with_the_model_itself_is_the_unguided_result_and_a_guide_counts_its_calls(tiny_net, schedule):
    ctx = np.eye(3, dtype=np.float32)
    kw = dict(sampler="dpmpp3m", steps=6, n=3, context=ctx, seed=2)
    plain = generate(tiny_net, schedule, **kw)
    self_guided = generate(tiny_net, schedule, guidance=2.5, guide_net=tiny_net, **kw)
    assert np.array_equal(plain.images, self_guided.images) and self_guided.nfe == 2 * plain.nfe
    torch.manual_seed(1)
    weaker = ContextUnet(UNetConfig(n_feat=8, n_cfeat=3, height=8)).eval()
    x, c = torch.randn(3, 3, 8, 8), torch.eye(3)
    with torch.no_grad():
        t = torch.tensor([250 / 500])
        eps, _ = Denoiser(tiny_net, schedule, c, guidance=2.0, guide_net=weaker).predict(x, 250)
        assert torch.allclose(eps, weaker(x, t, c) + 2.0 * (tiny_net(x, t, c) - weaker(x, t, c)), atol=1e-5)
    other = ContextUnet(UNetConfig(n_feat=8, n_cfeat=2, height=8)).eval()
    with pytest.raises(ValueError, match="a guide must match the model"):
        generate(tiny_net, schedule, guidance=2.0, guide_net=other, **kw)


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


def test_registry_follows_the_torch_free_catalogue():
    assert list(SAMPLERS) == [c.name for c in SAMPLER_CATALOG]
    assert set(SAMPLERS) >= {"ddpm", "ddim", "dpmpp2m", "dpmpp3m", "heun", "euler_a"}
    assert SAMPLERS["ddpm"].default_steps == 500 and SAMPLERS["ddim"].has_eta
    assert all(info.summary for info in SAMPLERS.values())
    with pytest.raises(ValueError, match="unknown sampler"):
        generate(None, Schedule(), sampler="euler")


# --- prediction targets, spacings, new solvers, zero terminal SNR, guidance options -----------------

ALL = ["ddpm", "ddim", "dpmpp2m", "dpmpp3m", "heun", "euler_a"]


@pytest.mark.parametrize("target", ["eps", "v", "x0"])
def test_every_target_converts_to_the_same_eps_and_x0(target):
    sched = Schedule(ScheduleConfig(prediction=target))
    ref = Denoiser(ExactGaussianEps(Schedule(), 0.2, 0.5), Schedule())
    den = Denoiser(ExactGaussianEps(sched, 0.2, 0.5, target=target), sched)
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    for t in [1, 37, 250, 499, 500, 123.4]:
        (e1, x1), (e2, x2) = ref.predict(x, t), den.predict(x, t)
        assert torch.allclose(e1, e2, atol=2e-5) and torch.allclose(x1, x2, atol=2e-4), (target, t)


@pytest.mark.parametrize("spacing", ["trailing", "logsnr", "karras"])
@pytest.mark.parametrize("kind,target", [("linear", "eps"), ("cosine", "eps"), ("linear_zsnr", "v")])
def test_spacings_are_strictly_decreasing_from_T_to_0_for_every_step_count(spacing, kind, target):
    sched = Schedule(ScheduleConfig(kind=kind, prediction=target))
    for steps in range(1, 501):
        ts = spaced_timesteps(steps, sched, spacing)
        assert len(ts) == steps + 1 and ts[0] == 500 and ts[-1] == 0, (steps, ts[:3])
        assert all(a > b for a, b in zip(ts, ts[1:])), steps
    with pytest.raises(ValueError, match="between 1 and 500"):
        spaced_timesteps(501, sched, spacing)


def test_karras_and_logsnr_spacings_have_their_closed_forms():
    sched = Schedule()
    sig = lambda t: math.sqrt((1 - sched.ab_at(t)) / sched.ab_at(t))  # noqa: E731
    ts = spaced_timesteps(6, sched, "karras")[:-1]
    smax, smin = sig(500), sig(1)
    expected = [(smax ** (1 / 7) + i / 5 * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7 for i in range(6)]
    assert [sig(t) for t in ts] == pytest.approx(expected, rel=1e-6)
    lam = [math.log(sched.ab_at(t) / (1 - sched.ab_at(t))) for t in spaced_timesteps(6, sched, "logsnr")[:-1]]
    assert np.diff(lam) == pytest.approx([np.diff(lam)[0]] * 5, rel=1e-6)  # evenly spaced in log-SNR


@pytest.mark.parametrize("sampler", [n for n in ALL if n != "ddpm"])  # DDPM's sigma^2 = beta is for 1-step hops
@pytest.mark.parametrize("spacing", ["trailing", "karras"])
def test_point_mass_is_recovered_by_every_sampler_and_spacing(sampler, spacing, schedule):
    model = ExactGaussianEps(schedule, mu=-0.4, s=0.0)
    x_T = initial_noise(4, (3, 4, 4), seed=0, device="cpu")
    for steps in [1, 2, 3, 10, 25]:
        res = generate(model, schedule, sampler=sampler, steps=steps, noise=x_T, spacing=spacing)
        x = res.images.astype(np.float64) / 127.5 - 1
        assert np.abs(x + 0.4).max() <= 1 / 127.5 + 1e-9, (sampler, spacing, steps)
        assert res.nfe == model_calls(sampler, steps)


def _ode_solution(schedule, mu, s, x_T):
    aT, sT = math.sqrt(schedule.ab_t[-1]), math.sqrt(1 - schedule.ab_t[-1])
    return mu + s / math.sqrt(aT**2 * s**2 + sT**2) * (x_T - aT * mu)


# measured max errors on Karras spacing: 3M-20 0.003, Heun-20 (39 calls) 0.025, DDIM-20 0.146
@pytest.mark.parametrize("fn,steps,tol", [(sample_dpmpp_3m, 20, 0.01), (sample_heun, 20, 0.035)])
def test_new_ode_solvers_follow_the_probability_flow_of_a_gaussian(schedule, fn, steps, tol):
    mu, s = 0.2, 0.5
    x_T = initial_noise(8, (3, 4, 4), seed=1, device="cpu")
    expected = _ode_solution(schedule, mu, s, x_T)
    out = fn(Denoiser(ExactGaussianEps(schedule, mu, s), schedule), x_T.clone(), spaced_timesteps(steps, schedule, "karras"))
    ddim = sample_ddim(Denoiser(ExactGaussianEps(schedule, mu, s), schedule), x_T.clone(),
                       spaced_timesteps(20, schedule, "karras"))
    err, err_ddim = (out - expected).abs().max().item(), (ddim - expected).abs().max().item()
    assert err < tol and err < err_ddim / 3, (err, err_ddim)


def test_euler_ancestral_samples_have_the_data_statistics(schedule):
    mu, s = 0.1, 0.3
    res = generate(ExactGaussianEps(schedule, mu, s), schedule, sampler="euler_a", steps=100, n=250, seed=4)
    x = res.images.astype(np.float64) / 127.5 - 1  # 8-bit rounding adds ~0.002 of std
    assert x.mean() == pytest.approx(mu, abs=0.02) and x.std() == pytest.approx(s, abs=0.02)


def test_zero_terminal_snr_schedule_is_pure_noise_at_T_and_every_sampler_copes():
    sched = Schedule(ScheduleConfig(kind="linear_zsnr", prediction="v"))
    assert sched.ab_t[-1].item() == 0.0 and sched.zero_terminal and sched.ab_t[0].item() == 1.0
    assert torch.all(sched.ab_t[1:] < sched.ab_t[:-1])
    # sqrt(ab) is the course's shifted and scaled: the same at t = 0, zero at T
    course = Schedule().ab_t.sqrt()
    expected = (course - course[-1]) / (1 - course[-1])
    assert torch.allclose(sched.ab_t.sqrt(), expected, atol=1e-12)
    mu, s = 0.3, 0.4
    x_T = initial_noise(200, (3, 4, 4), seed=2, device="cpu")
    for name in ALL:
        for spacing in ["trailing", "logsnr", "karras"]:
            res = generate(ExactGaussianEps(sched, mu, s, target="v"), sched, sampler=name, steps=100,
                           noise=x_T, spacing=spacing, seed=3)
            x = res.images.astype(np.float64) / 127.5 - 1
            assert x.mean() == pytest.approx(mu, abs=0.02), (name, spacing)
            # x_T carries no information, so the samples must be N(mu, s^2); first-order samplers shrink the
            # std at 100 steps on either schedule (measured: Euler-a 0.365, DDIM 0.377, DDPM 0.389 for s = 0.4)
            assert x.std() == pytest.approx(s, abs=0.04), (name, spacing, x.std())


def test_eps_prediction_is_refused_on_a_zero_terminal_snr_schedule():
    with pytest.raises(ValueError, match="use prediction v or x0"):
        ScheduleConfig(kind="linear_zsnr", prediction="eps")


def test_guidance_interval_guides_only_inside_it(tiny_net, schedule):
    ctx = np.eye(3, dtype=np.float32)
    res = generate(tiny_net, schedule, sampler="ddim", steps=10, n=3, context=ctx, guidance=3.0,
                   guidance_interval=(0.25, 0.75))
    inside = sum(0.25 <= t / 500 <= 0.75 for t in res.timesteps[:-1])  # t = 350 ... 150: 5 of 10 steps
    assert inside == 5 and res.nfe == 10 + inside
    full = generate(tiny_net, schedule, sampler="ddim", steps=10, n=3, context=ctx, guidance=3.0)
    assert full.nfe == 20


class ContextShift(nn.Module):
    """eps = 0.5 x + a pattern scaled by the context: the conditional and unconditional passes differ."""

    def __init__(self):
        super().__init__()
        self.config = UNetConfig(n_feat=8, n_cfeat=3, height=8)
        self.pattern = nn.Parameter(torch.linspace(-1, 1, 3 * 8 * 8).reshape(1, 3, 8, 8), requires_grad=False)

    def forward(self, x, t, c):
        return 0.5 * x + c.sum(1).view(-1, 1, 1, 1) * self.pattern


@pytest.mark.parametrize("target", ["eps", "v"])
def test_cfg_rescale_matches_the_conditional_std_and_phi_zero_is_plain_cfg(target):
    sched = Schedule(ScheduleConfig(prediction=target))
    net = ContextShift()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    c = torch.tensor([[1.0, 0, 0], [0, 0.5, 0]])
    with torch.no_grad():
        _, x0_c = Denoiser(net, sched, c).predict(x, 200)
        _, x0_g = Denoiser(net, sched, c, guidance=4.0).predict(x, 200)
        _, x0_r = Denoiser(net, sched, c, guidance=4.0, guidance_rescale=1.0).predict(x, 200)
        _, x0_h = Denoiser(net, sched, c, guidance=4.0, guidance_rescale=0.5).predict(x, 200)
        _, x0_0 = Denoiser(net, sched, c, guidance=4.0, guidance_rescale=0.0).predict(x, 200)
    std = lambda t: t.std(dim=(1, 2, 3))  # noqa: E731
    assert torch.allclose(std(x0_r), std(x0_c), rtol=1e-4)
    assert not torch.allclose(std(x0_g), std(x0_c), rtol=1e-2)
    assert torch.equal(x0_0, x0_g)
    ratio = (std(x0_c) / std(x0_g)).view(-1, 1, 1, 1)
    assert torch.allclose(x0_h, 0.5 * x0_g * ratio + 0.5 * x0_g, atol=1e-5)  # phi mixes the two


@pytest.mark.parametrize("sampler", ALL)
def test_the_catalogues_model_calls_match_the_samplers_on_every_schedule(sampler, tiny_net):
    from core.catalog import SIGMA_T_BEYOND_RAMP

    for kind in ("linear", "linear_zsnr", "cosine"):
        sched = Schedule(ScheduleConfig(kind=kind, prediction="v"))
        for steps in (1, 2, 10):
            res = generate(tiny_net, sched, sampler=sampler, steps=steps, n=1, seed=0)
            assert res.nfe == model_calls(sampler, steps, zero_terminal=kind in SIGMA_T_BEYOND_RAMP), (kind, steps)


@pytest.mark.parametrize("sampler", ALL)
def test_an_eps_model_with_a_small_error_samples_sanely_on_the_cosine_schedule(sampler):
    """sqrt(ab_T) = 1e-4 on cosine: without the x0 clip a 1% eps error became a 100x x0 error (saturated noise)."""
    sched = Schedule(ScheduleConfig(kind="cosine"))
    exact = ExactGaussianEps(sched, mu=0.2, s=0.3)

    class Off(nn.Module):
        config = exact.config

        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, x, t, c=None):
            return exact(x, t, c) * 1.01 + 0.01

    x_T = initial_noise(64, (3, 4, 4), seed=0, device="cpu")
    res = generate(Off(), sched, sampler=sampler, steps=20 if sampler != "ddpm" else None, noise=x_T)
    x = res.images.astype(np.float64) / 127.5 - 1
    assert abs(x.mean() - 0.2) < 0.15 and 0.15 < x.std() < 0.6, (x.mean(), x.std())


@pytest.mark.parametrize("steps", [5, 6, 8, 10])
def test_ipndm_follows_the_probability_flow_of_a_gaussian_at_few_steps(schedule, steps):
    """iPNDM's 4th-order multistep beats DPM-Solver++(3M) at 5-10 calls on the Gaussian flow map (the case
    with a closed form), each on its best spacing (at 4 calls 3M on Karras is the closer one)."""
    from core.samplers import sample_ipndm

    mu, s = 0.2, 0.5
    x_T = initial_noise(8, (3, 4, 4), seed=1, device="cpu")
    expected = _ode_solution(schedule, mu, s, x_T)

    def err(fn, spacing):
        out = fn(Denoiser(ExactGaussianEps(schedule, mu, s), schedule), x_T.clone(),
                 spaced_timesteps(steps, schedule, spacing))
        return (out - expected).abs().max().item()

    best = {fn: min(err(fn, sp) for sp in ("trailing", "logsnr", "karras")) for fn in (sample_ipndm, sample_dpmpp_3m)}
    assert best[sample_ipndm] < best[sample_dpmpp_3m] / 2, best
    assert best[sample_ipndm] < 0.07
    model = Denoiser(ExactGaussianEps(schedule, mu, s), schedule)
    sample_ipndm(model, x_T.clone(), spaced_timesteps(steps, schedule, "karras"))
    assert model.nfe == steps == model_calls("ipndm", steps)  # one call per step, none extra
