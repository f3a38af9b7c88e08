"""The time-left estimate: recent pace only, none of a sitting's warm-up, and a resumed run's clock."""
import pytest

from core.progress import ETA_WARMUP_S, ETA_WINDOW_S, TimeLeft


def feed(tl, start_s, start_step, seconds, steps_per_s, every=0.5):
    t, k = start_s, start_step
    for _ in range(int(seconds / every)):
        t, k = t + every, k + steps_per_s * every
        tl.add(t, int(k))
    return t, int(k)


def test_nothing_until_the_warm_up_is_over():
    tl = TimeLeft()
    assert tl.seconds(1000) is None
    feed(tl, 0.0, 0, ETA_WARMUP_S - 1, 10)
    assert tl.seconds(1000) is None


def test_a_slow_start_does_not_count():
    tl = TimeLeft()
    tl.add(0.5, 1)
    tl.add(ETA_WARMUP_S, 100)  # imports and first allocations: 100 steps in 15 s
    _, step = feed(tl, ETA_WARMUP_S, 100, 30, 10)  # then 10 steps/s
    assert step == 400
    assert tl.seconds(1000) == pytest.approx(60.0)  # 600 steps at 10/s, not the 2 min of the run's mean


def test_a_resumed_run_uses_this_sittings_pace_not_its_clocks_mean():
    # the first sitting took 18 min for 500 steps (a shared CPU); this one goes at 1.6 steps/s
    tl = TimeLeft()
    _, step = feed(tl, 18 * 60.0, 500, ETA_WARMUP_S + ETA_WINDOW_S, 1.6)
    assert tl.seconds(30000) == pytest.approx((30000 - step) / 1.6, rel=0.02)  # about 5 h, not 16 h


def test_only_the_last_window_counts_and_memory_stays_small():
    tl = TimeLeft()
    t, k = feed(tl, 0.0, 0, 600, 2)  # 10 min at 2 steps/s
    t, k = feed(tl, t, k, ETA_WINDOW_S, 8)  # then 8 steps/s for a whole window
    assert tl.seconds(k + 800) == pytest.approx(100.0, rel=0.05)
    assert len(tl._samples) <= ETA_WINDOW_S / 0.5 + 2


def test_a_clock_that_goes_back_starts_afresh_and_clear_forgets():
    tl = TimeLeft()
    feed(tl, 0.0, 0, 60, 5)
    assert tl.seconds(1000) is not None
    tl.add(1.0, 3)  # another run's metrics
    assert tl.seconds(1000) is None
    feed(tl, 1.0, 3, 60, 5)
    tl.clear()
    assert tl.seconds(1000) is None


def test_steps_read_in_groups_count_once_and_rows_without_a_clock_are_ignored():
    # CUDA reports 10 steps at one time: 10 samples with one clock reading are one sample at the last step
    tl = TimeLeft()
    for g in range(1, 41):  # a group of 10 steps every 10 s: 1 step/s
        for j in range(10):
            tl.add(10.0 * g, 10 * (g - 1) + j + 1)
        tl.add(float("nan"), 999_999)  # a loss.csv row read without a clock says nothing
    assert tl.seconds(1400) == pytest.approx(1000.0)  # 1000 steps at 1 step/s; 30% less if groups counted twice
    assert len(tl._samples) <= 5


def test_sparse_reports_still_give_a_rate():
    # one report every 40 s (longer than the window): the sample kept from before the window is the start
    tl = TimeLeft()
    for k in range(8):
        tl.add(40.0 * k, 20 * k)  # 0.5 steps/s
    assert tl.seconds(20 * 7 + 100) == pytest.approx(200.0)
