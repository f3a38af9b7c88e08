"""Tune the steps: the search's pieces on cases with known answers, and the named spacing's round trip."""
import math

import numpy as np
import pytest

from core.checkpoint import load_checkpoint, save_checkpoint
from core.samplers import generate, initial_noise
from core.schedule import Schedule, ScheduleConfig, spaced_timesteps, spacing_names
from core.step_search import (StepSearchConfig, _cheapest_path, search_steps, spacing_name, steps_for_calls)
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
