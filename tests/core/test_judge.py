"""The judge that knows the user's labels: a class-balanced linear probe on the evaluation classifier's features."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def classifier():
    from core.metrics import load_classifier

    return load_classifier()


def toy_set(n_per: tuple[int, ...] = (60, 60, 12), seed: int = 0):
    """Separable toy images: label 0 a red disc, 1 a green square, 2 a blue bar (few images), each on white with
    its own pixel noise and a random ±2 px shift."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    shapes = [((yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 25, (220, 40, 50)), ((abs(yy - 8) < 5) & (abs(xx - 8) < 5), (60, 180, 70)),
              ((abs(yy - 8) < 2) & (xx > 1) & (xx < 14), (40, 70, 220))]
    images, labels = [], []
    for k, n in enumerate(n_per):
        mask, colour = shapes[k]
        for _ in range(n):
            img = np.full((16, 16, 3), 255.0)
            img[np.roll(mask, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))] = colour
            images.append(np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8))
            labels.append(np.eye(len(n_per), dtype=np.float32)[k])
    return np.stack(images), np.stack(labels)


def test_the_probe_separates_a_separable_toy_set_even_for_a_small_label(classifier):
    from core.judge import fit_judge

    images, labels = toy_set()
    judge = fit_judge(images, labels, ["disc", "square", "bar"], classifier)
    assert judge.counts == {"disc": 60, "square": 60, "bar": 12}
    assert all(c >= 0.95 for c in judge.ceiling.values()), judge.ceiling
    fresh, fresh_labels = toy_set((20, 20, 20), seed=1)
    assert (judge.predict(fresh) == fresh_labels.argmax(1)).mean() >= 0.95
    assert judge.called(fresh[40:], "bar") >= 0.95 and judge.called(fresh[40:], 0) <= 0.05


def test_the_ceiling_is_held_out_and_unlabelled_images_are_left_out(classifier):
    from core.judge import fit_judge, single_labels

    images, labels = toy_set((30, 30, 1))
    labels = np.concatenate([labels, np.zeros((5, 3), np.float32)])  # five unlabelled images
    images = np.concatenate([images, np.full((5, 16, 16, 3), 255, np.uint8)])
    assert list(single_labels(labels[-8:])) == [1, 1, 2, -1, -1, -1, -1, -1]
    judge = fit_judge(images, labels, ["disc", "square", "bar"], classifier)
    assert judge.counts["bar"] == 1 and "bar" not in judge.ceiling  # one image: nothing to hold out
    # random labels: a held-out ceiling stays near chance, a probe scored on its own fitting set would not
    rng = np.random.default_rng(3)
    shuffled = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 61)]
    chance = fit_judge(images[:61], shuffled, ["a", "b", "c"], classifier)
    assert np.mean(list(chance.ceiling.values())) < 0.6


def test_a_32px_image_is_judged_at_the_classifiers_size(classifier):
    from core.judge import fit_judge

    images, labels = toy_set((20, 20, 20))
    judge = fit_judge(images, labels, ["disc", "square", "bar"], classifier)
    big = images.repeat(2, axis=1).repeat(2, axis=2)  # (n, 32, 32, 3)
    assert (judge.predict(big) == judge.predict(images)).mean() >= 0.9
