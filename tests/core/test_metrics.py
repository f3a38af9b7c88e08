"""Tests for core.metrics: the Frechet distance, the shipped classifier, feature-FID and label accuracy."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from core import metrics
from core.data import load_builtin
from core.paths import resource_path

EMOJI_LABELS = ["face", "person", "animal & nature", "food", "object", "symbol & flag"]


@pytest.fixture(scope="module")
def clf():
    return metrics.load_classifier()


@pytest.fixture(scope="module")
def emoji():
    return load_builtin("emoji16")


# --- the Frechet distance ----------------------------------------------------------------------------------

def test_frechet_distance_closed_form_diagonal():
    mu1, mu2 = np.zeros(3), np.array([1.0, -2.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = mu2 @ mu2 + np.sum(a + b - 2 * np.sqrt(a * b))  # (sqrt(a) - sqrt(b))^2 per axis
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_rotated_covariance_and_symmetry():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    b = np.array([0.5, 1.0, 2.0, 3.0, 0.1])
    s2 = q @ np.diag(b) @ q.T  # not diagonal; S1 = c I commutes with it
    c = 2.0
    expected = 5 * c + b.sum() - 2 * np.sqrt(c) * np.sqrt(b).sum()
    d12 = metrics.frechet_distance(np.zeros(5), c * np.eye(5), np.zeros(5), s2)
    d21 = metrics.frechet_distance(np.zeros(5), s2, np.zeros(5), c * np.eye(5))
    assert d12 == pytest.approx(expected, rel=1e-9)
    assert d21 == pytest.approx(d12, rel=1e-9)


def test_fid_of_sampled_shifted_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(1)
    shift = np.array([1.0, 0.0, -1.0, 0.5])
    x = rng.normal(size=(20000, 4))
    y = rng.normal(size=(20000, 4)) + shift
    # same covariance: FID = |shift|^2 = 2.25 (sampling error ~ a few 1e-3 at this n)
    assert metrics.fid_from_features(x, y) == pytest.approx(shift @ shift, abs=0.03)


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(2).normal(size=(500, 8))
    assert metrics.fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_handles_singular_covariances():
    s = np.zeros((3, 3))
    s[0, 0] = 1.0  # rank 1: a plain sqrtm would need care, eigh clips
    d = metrics.frechet_distance(np.zeros(3), s, np.ones(3), s)
    assert d == pytest.approx(3.0, abs=1e-9)


# --- the shipped classifier ------------------------------------------------------------------------------

def test_shipped_classifier_metadata(clf):
    assert clf.label_names == EMOJI_LABELS
    assert clf.image_size == 16
    assert 0.7 < clf.held_out_accuracy <= 1.0  # measured on a held-out split by tools/train_classifier.py
    assert clf.meta["n_held_out"] > 400
    assert not clf.training


def test_features_shape_and_determinism(clf, emoji):
    f1 = metrics.features(emoji.images[:100], clf, batch=32)
    f2 = metrics.features(emoji.images[:100], clf, batch=100)
    assert f1.shape == (100, clf.config.feature_dim) and f1.dtype == np.float32
    np.testing.assert_allclose(f1, f2, rtol=1e-4, atol=1e-5)  # batching does not change features


def test_features_refuse_the_wrong_size(clf):
    with pytest.raises(ValueError, match="16x16"):
        metrics.features(np.zeros((2, 32, 32, 3), np.uint8), clf)
    with pytest.raises(ValueError, match="uint8"):
        metrics.features(np.zeros((2, 16, 16, 3), np.float32), clf)


def test_label_accuracy_on_real_images_is_high_and_on_wrong_labels_low(clf, emoji):
    sub = emoji.subset(np.arange(0, emoji.n, 8))  # ~480 images, every label
    y = sub.labels.argmax(1)
    assert metrics.label_accuracy(sub.images, y, clf) > 0.85
    assert metrics.label_accuracy(sub.images, (y + 1) % 6, clf) < 0.15
    with pytest.raises(ValueError, match="target labels"):
        metrics.label_accuracy(sub.images, y[:-1], clf)


def test_feature_fid_separates_real_from_noise(clf, emoji):
    real = emoji.images[:600]
    noise = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
    assert metrics.feature_fid(real, real, clf) == pytest.approx(0.0, abs=1e-6)
    floor = metrics.real_vs_real_fid(emoji, clf, seed=0)
    assert 0 < floor < metrics.feature_fid(real, noise, clf) / 10


def test_real_vs_real_is_deterministic_from_the_seed(clf, emoji):
    a = metrics.real_vs_real_fid(emoji, clf, seed=3, n=500)
    assert a == metrics.real_vs_real_fid(emoji, clf, seed=3, n=500)
    assert a != metrics.real_vs_real_fid(emoji, clf, seed=4, n=500)
    with pytest.raises(ValueError):
        metrics.real_vs_real_fid(emoji, clf, seed=0, n=emoji.n)


def test_evaluate_reports_fid_accuracy_and_count(clf, emoji):
    sub = emoji.subset(np.arange(1, emoji.n, 10))
    rep = metrics.evaluate(sub.images, sub.labels.argmax(1), reference=emoji, classifier=clf)
    assert rep.n == sub.n and rep.accuracy > 0.85 and rep.fid > 0
    rep2 = metrics.evaluate(sub.images, reference=emoji.images, classifier=clf)
    assert rep2.accuracy is None and rep2.fid == pytest.approx(rep.fid)


def test_reference_targets_follow_the_label_proportions(emoji):
    t = metrics.reference_targets(emoji, 1000, seed=0)
    counts = np.bincount(t, minlength=6)
    expected = emoji.label_counts() / emoji.n * 1000
    assert counts.sum() == 1000 and np.all(np.abs(counts - expected) < 1)
    np.testing.assert_array_equal(t, metrics.reference_targets(emoji, 1000, seed=0))
    assert not np.array_equal(t, metrics.reference_targets(emoji, 1000, seed=1))


# --- files -----------------------------------------------------------------------------------------------

def test_classifier_round_trip_and_bad_files(tmp_path):
    net = metrics.Classifier(metrics.ClassifierConfig(n_classes=3, image_size=8, widths=(8, 8, 16), feature_dim=4),
                             {"label_names": ["a", "b", "c"], "held_out_accuracy": 0.5})
    path = metrics.save_classifier(tmp_path / "c.safetensors", net.eval())
    back = metrics.load_classifier(path)
    assert back.label_names == ["a", "b", "c"] and back.held_out_accuracy == 0.5
    x = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_allclose(metrics.features(x, back), metrics.features(x, net), rtol=1e-6)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(metrics.ClassifierError, match="junk.safetensors"):
        metrics.load_classifier(tmp_path / "junk.safetensors")
    with pytest.raises(metrics.ClassifierError, match="not found"):
        metrics.load_classifier(tmp_path / "missing.safetensors")


def test_shipped_file_is_in_resources():
    assert resource_path(metrics.CLASSIFIER_FILE).is_file()


def test_metrics_never_imports_qt():
    code = "import sys, core.metrics; sys.exit(any(m.startswith(('PySide6', 'PyQt', 'pyqtgraph')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=resource_path().parent).returncode == 0


def test_perceptual_distance_counts_blur_as_far_where_pixels_do_not():
    """A 3x3 blur and added noise with a larger pixel RMS: pixels call the blur the nearer, the perceptual
    distance (early classifier maps) the further. Identical images are at 0."""
    import torch
    import torch.nn.functional as F

    from core.data import load_builtin
    from core.metrics import load_classifier, perceptual_distance

    clf = load_classifier()
    x = torch.from_numpy(load_builtin("emoji16").images[:128]).permute(0, 3, 1, 2).float() / 127.5 - 1
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    noisy = (x + 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    rms = lambda y: float((y - x).pow(2).flatten(1).mean(1).sqrt().mean())  # noqa: E731
    assert rms(noisy) > rms(blur)
    d_blur, d_noise = perceptual_distance(blur, x, clf), perceptual_distance(noisy, x, clf)
    assert d_blur.shape == (128,) and float(d_blur.mean()) > 1.5 * float(d_noise.mean())
    assert float(perceptual_distance(x, x, clf).abs().max()) == 0.0
