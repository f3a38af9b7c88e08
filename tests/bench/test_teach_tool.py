"""The teach measurement's own parts: which emoji a --match takes, the carved data set, the copy distance."""
from __future__ import annotations

import numpy as np


def test_match_takes_whole_names_and_name_endings_only():
    from benchmarks.teach_new_label import matches

    names = np.array(["moon", "full_moon", "moon_cake", "honeymoon", "apple", "pineapple", "green_apple"])
    assert matches(names, ["moon"]).tolist() == [True, True, False, False, False, False, False]
    assert matches(names, ["apple", "cake"]).tolist() == [False, False, True, False, True, False, True]


def test_the_carved_label_takes_its_images_off_every_other_label():
    from benchmarks.teach_new_label import carve

    ds, is_new = carve("moon", ["moon"])
    assert ds.label_names[-1] == "moon" and ds.n_labels == 7 and is_new.sum() == 18
    assert (ds.labels[is_new, -1] == 1).all() and (ds.labels[is_new, :-1] == 0).all()
    assert (ds.labels[~is_new, -1] == 0).all()


def test_copy_distance_is_zero_for_a_copy_and_twins_are_not_neighbours():
    from benchmarks.teach_new_label import copy_distance, real_copy_distance

    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 4, 4, 3)).astype(np.uint8)
    shifted = np.clip(train[:2].astype(int) + 10, 0, 255).astype(np.uint8)
    d = copy_distance(np.concatenate([train[:2], shifted]), train)
    assert d[:2].tolist() == [0.0, 0.0] and (d[2:] > 0).all() and (d[2:] <= 10).all()
    twins = np.concatenate([train, train[:1]])  # an exact twin of image 0
    near = real_copy_distance(twins)
    assert near[0] > 0 and near[-1] > 0
