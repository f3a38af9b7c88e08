"""Tune the steps: the search's pieces on cases with known answers, and the named spacing's round trip."""
import math

import numpy as np
import pytest

from core.checkpoint import load_checkpoint, save_checkpoint
from core.samplers import generate, initial_noise
from core.schedule import Schedule, ScheduleConfig, karras_ramp, spaced_timesteps, spacing_names
from core.step_search import (RampSearchConfig, StepSearchConfig, _cheapest_path, search_ramp, search_steps,
                              spacing_name, steps_for_calls)
from core.unet import ContextUnet, UNetConfig

from test_samplers import ExactGaussianEps, _ode_solution

ZSNR = ScheduleConfig(kind="linear_zsnr", prediction="v")


def test_cheapest_path_spreads_hops_evenly_when_cost_is_the_square_of_the_jump():
    """cost(i, j) = (j - i)^2 is convex in the jump: the least total over k hops is k equal hops."""
    M = 12
    cost = np.full((M + 1, M + 1), np.inf)
    for i in range(M):
        for j in range(i + 1, M + 1):
            cost[i, j] = (j - i) ** 2
    assert _cheapest_path(cost, 4) == [0, 3, 6, 9, 12]
    assert _cheapest_path(cost, 3) == [0, 4, 8, 12]
    assert _cheapest_path(cost, 12) == list(range(13))


def test_cheapest_path_takes_the_free_hops():
    """Two free hops 0 -> 5 -> 9, everything else costs: a 3-hop path must use both and one more hop."""
    M = 10
    cost = np.full((M + 1, M + 1), np.inf)
    for i in range(M):
        for j in range(i + 1, M + 1):
            cost[i, j] = 1.0
    cost[0, 5] = cost[5, 9] = 0.0
    assert _cheapest_path(cost, 3) == [0, 5, 9, 10]


def test_steps_for_calls_counts_heuns_two_calls_a_step():
    assert steps_for_calls("dpmpp3m", 5, False) == 5
    assert steps_for_calls("heun", 5, False) == 3  # 2 * 3 - 1
    assert steps_for_calls("heun", 4, True) == 3  # from pure noise the first step is Euler only
    with pytest.raises(ValueError, match="cannot make exactly 4"):
        steps_for_calls("heun", 4, False)
    with pytest.raises(ValueError, match="deterministic"):
        StepSearchConfig(sampler="ddpm")


@pytest.mark.parametrize("config", [ScheduleConfig(), ZSNR], ids=["linear", "linear_zsnr"])
@pytest.mark.parametrize("sampler,calls", [("ddim", 4), ("dpmpp3m", 5), ("ipndm", 5)])
def test_search_beats_every_built_in_spacing_on_a_gaussian(config, sampler, calls):
    """Data N(0.2, 0.1^2) per pixel, the exact denoiser: its flow map is known in closed form, and most of
    the work happens at low noise, where uniform spacing puts few steps. The tuned timesteps fall strictly
    from T to 0, and land closer to the exact answer than uniform (trailing) spacing and every other
    built-in spacing, on noise the search never saw."""
    schedule = Schedule(config)
    model = ExactGaussianEps(schedule, 0.2, 0.1, target=config.prediction)
    res = search_steps(model, schedule, StepSearchConfig(calls=calls, sampler=sampler, trajectories=16, held_out=16,
                                                         grid=60, batch=32, distance="pixel"))
    ts = res.timesteps
    assert len(ts) == calls + 1 and ts[0] == schedule.T and ts[-1] == 0
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert res.name == spacing_name(sampler, calls) and res.steps == calls
    assert res.error <= min(res.baselines.values()), (res.error, res.baselines)

    x_T = initial_noise(24, (3, 4, 4), seed=11, device="cpu")  # other noise than the search's
    exact = _ode_solution(schedule, 0.2, 0.1, x_T)
    tuned = Schedule(config.with_spacing(res.name, ts))

    def err(spacing, sch):
        from core.denoiser import Denoiser
        from core.samplers import get_sampler

        out = get_sampler(sampler).fn(Denoiser(model, sch), x_T.clone(), spaced_timesteps(calls, sch, spacing))
        return (out - exact).pow(2).mean().sqrt().item()

    assert err(res.name, tuned) < err("trailing", schedule) / 2
    assert err(res.name, tuned) <= 1.05 * min(err(sp, schedule) for sp in ("logsnr", "karras"))


def test_named_spacing_round_trips_through_a_checkpoint_and_samples(tmp_path):
    net = ContextUnet(UNetConfig(n_feat=8, n_cfeat=3, height=8))
    cfg = ZSNR.with_spacing("tuned-3", [500, 321.5, 40.25, 0])
    path = save_checkpoint(tmp_path / "m.safetensors", net.state_dict(), unet_config=net.config,
                           schedule_config=cfg, label_names=["a", "b", "c"])
    b = load_checkpoint(path)
    assert b.schedule_config.spacings == (("tuned-3", (500.0, 321.5, 40.25, 0.0)),)
    assert spacing_names(b.schedule_config)[-1] == "tuned-3"
    res = generate(b.net, Schedule(b.schedule_config), sampler="dpmpp3m", steps=3, n=3, spacing="tuned-3", seed=1,
                   context=np.eye(3, dtype=np.float32))
    assert res.timesteps == [500, 321.5, 40.25, 0] and res.nfe == 3
    with pytest.raises(ValueError, match="has 3 steps, not 5"):
        generate(b.net, Schedule(b.schedule_config), sampler="dpmpp3m", steps=5, n=1, spacing="tuned-3")
    with pytest.raises(ValueError, match="unknown spacing 'tuned-4'.*tuned-3"):
        spaced_timesteps(4, Schedule(b.schedule_config), "tuned-4")


@pytest.mark.parametrize("bad,message", [
    ([["tuned-3", [400, 10, 0]]], "fall strictly from 500"),
    ([["tuned-3", [500, 10, 10, 0]]], "fall strictly"),
    ([["tuned-2", [500, math.nan, 0]]], "fall strictly"),
    ([["../../x", [500, 0]]], "must look like tuned-5"),
    ([["tuned-1", [500, True]]], "needs 2 to 501"),
    ([["tuned-1"]], "pair"),
    ("tuned-5", "list"),
    ([["tuned-1", [500, 0]]] * 40, "at most 32"),
])
def test_damaged_named_spacings_are_refused_in_one_line(bad, message):
    with pytest.raises(ValueError, match=message):
        ScheduleConfig.from_dict({**ZSNR.to_dict(), "spacings": bad})


@pytest.mark.parametrize("distance", ["perceptual", "distribution"])
def test_classifier_distances_judge_16px_models_and_fall_back_to_pixels_elsewhere(distance):
    """On a 16 px RGB model the polish compares with the evaluation classifier; a model that classifier cannot
    read (4 px here) is judged in pixels, and the result says which."""
    pytest.importorskip("core.metrics")
    schedule = Schedule(ZSNR)
    net = ContextUnet(UNetConfig(n_feat=8, n_cfeat=3, height=16))
    cfg = StepSearchConfig(calls=3, trajectories=16, held_out=16, grid=30, batch=32, distance=distance)
    res = search_steps(net, schedule, cfg)
    assert res.distance == distance and len(res.timesteps) == 4
    assert res.error <= min(res.baselines.values()) + 1e-9
    toy = search_steps(ExactGaussianEps(schedule, 0.2, 0.1, target="v"), schedule, cfg)
    assert toy.distance == "pixel"


@pytest.mark.parametrize("config", [ScheduleConfig(), ZSNR], ids=["linear", "linear_zsnr"])
def test_karras_ramp_with_its_defaults_is_the_karras_spacing_and_its_knobs_move_the_steps(config):
    schedule = Schedule(config)
    for steps in (3, 5, 10):
        assert karras_ramp(steps, schedule) == pytest.approx(spaced_timesteps(steps, schedule, "karras"))
    low = karras_ramp(5, schedule, sigma_max=12.0)
    assert low[1] < karras_ramp(5, schedule)[1]  # a lower largest sigma: the first jump from pure noise is longer
    late = karras_ramp(5, schedule, t_last=6.0)
    assert late[-2] == pytest.approx(6.0) and late[-1] == 0 and late[0] == schedule.T
    for ts in (low, late, karras_ramp(6, schedule, rho=3.5, sigma_max=30.0, t_last=3.0)):
        assert all(a > b for a, b in zip(ts, ts[1:]))
    for bad in ({"rho": 0.0}, {"sigma_max": -1.0}, {"t_last": 0.0}, {"t_last": float(schedule.T)}):
        with pytest.raises(ValueError, match="ramp"):
            karras_ramp(5, schedule, **bad)


def test_the_ramp_search_minimises_the_feature_fid_of_its_own_images(emoji_small):
    """The search's distance is the benchmarks' feature-FID of its n images against the data set (the same
    noise and label mix as `generate` from its seed); it returns the ramp it scored best, or a built-in spacing
    that beat every ramp (never worse than one), and the same answer for the same seed."""
    import torch

    from core import metrics

    schedule = Schedule(ZSNR)
    torch.manual_seed(0)
    net = ContextUnet(UNetConfig(n_feat=8, n_cfeat=emoji_small.n_labels, height=16)).eval()
    cfg = RampSearchConfig(calls=4, n=48, batch=48, seed=3)
    done = []
    res = search_ramp(net, schedule, cfg, emoji_small, progress=lambda d, t: done.append((d, t)))
    assert res.distance == "data" and res.name == "tuned-4" and res.steps == 4
    chosen = (spaced_timesteps(4, schedule, res.ramp["built_in"]) if "built_in" in res.ramp
              else karras_ramp(4, schedule, **res.ramp))
    assert res.timesteps == pytest.approx(chosen)
    assert res.error <= min(res.baselines.values()) and set(res.baselines) == {"trailing", "logsnr", "karras"}
    assert done[-1][0] == done[-1][1] > 20
    targets = metrics.reference_targets(emoji_small, cfg.n, cfg.seed)
    ctx = np.eye(emoji_small.n_labels, dtype=np.float32)[targets]
    sch = Schedule(ZSNR.with_spacing(res.name, res.timesteps))
    images = generate(net, sch, sampler="dpmpp3m", steps=4, n=cfg.n, context=ctx, seed=cfg.seed, spacing=res.name,
                      precision="fp32").images
    assert metrics.evaluate(images, reference=emoji_small).fid == pytest.approx(res.error, rel=1e-4)
    again = search_ramp(net, schedule, cfg, emoji_small)
    assert again.timesteps == res.timesteps and again.error == res.error
    with pytest.raises(ValueError, match="labels"):
        search_ramp(ContextUnet(UNetConfig(n_feat=8, n_cfeat=3, height=16)), schedule, cfg, emoji_small)
    with pytest.raises(ValueError, match="between 2 and 50"):
        RampSearchConfig(calls=1)
