"""The course schedule's numbers, the cosine option, and timestep selection for every step count."""
import math

import pytest
import torch

from core.schedule import Schedule, ScheduleConfig, sampling_timesteps


def test_course_linear_schedule_values():
    s = Schedule()
    assert s.T == 500 and s.ab_t.shape == (501,)
    assert s.b_t[0].item() == pytest.approx(1e-4) and s.b_t[500].item() == pytest.approx(0.02)
    assert s.b_t[250].item() == pytest.approx(1e-4 + 0.5 * (0.02 - 1e-4))
    assert s.ab_t[0].item() == 1.0
    # ab_t[1] = (1 - b_0)(1 - b_1), as the course's cumsum-of-logs computes it (index 0 then forced to 1)
    b1 = 1e-4 + (0.02 - 1e-4) / 500
    assert s.ab_t[1].item() == pytest.approx((1 - 1e-4) * (1 - b1), rel=1e-12)
    # the course schedule leaves terminal signal sqrt(ab_T) = 0.079, SNR_T = 0.0063
    assert math.sqrt(s.ab_t[500].item()) == pytest.approx(0.079, abs=5e-4)
    assert s.snr()[500].item() == pytest.approx(0.0063, abs=1e-4)
    assert torch.all(s.ab_t[1:] < s.ab_t[:-1])


def test_cosine_schedule_is_monotone_and_near_zero_at_T():
    s = Schedule(ScheduleConfig(kind="cosine"))
    assert s.ab_t[0].item() == 1.0
    assert torch.all(s.ab_t[1:] < s.ab_t[:-1])
    assert s.ab_t[500].item() < 1e-4
    assert s.b_t.max().item() <= 0.999 + 1e-12
    # near t=T/2 the cosine schedule keeps more signal than the course's linear one
    assert s.ab_t[250] > Schedule().ab_t[250]


def test_q_sample_uses_sqrt_of_one_minus_alpha_bar():
    s = Schedule()
    x0, noise = torch.ones(2, 3, 4, 4), torch.full((2, 3, 4, 4), 2.0)
    t = torch.tensor([0, 500])
    xt = s.q_sample(x0, t, noise)
    ab = s.ab_t[500].item()
    assert torch.allclose(xt[0], x0[0])
    assert xt[1, 0, 0, 0].item() == pytest.approx(math.sqrt(ab) + math.sqrt(1 - ab) * 2.0, rel=1e-5)


def test_every_step_count_gives_a_valid_decreasing_grid():
    for steps in range(1, 501):
        ts = sampling_timesteps(steps, 500)
        assert len(ts) == steps + 1 and ts[0] == 500 and ts[-1] == 0, steps
        assert all(a > b for a, b in zip(ts, ts[1:])), steps


def test_known_grids():
    assert sampling_timesteps(1, 500) == [500, 0]
    assert sampling_timesteps(25, 500)[:3] == [500, 480, 460]
    assert sampling_timesteps(30, 500)[:4] == [500, 483, 467, 450]  # 30 does not divide 500
    assert sampling_timesteps(500, 500) == list(range(500, -1, -1))
    with pytest.raises(ValueError):
        sampling_timesteps(0, 500)
    with pytest.raises(ValueError):
        sampling_timesteps(501, 500)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="unknown schedule"):
        ScheduleConfig(kind="quadratic")
