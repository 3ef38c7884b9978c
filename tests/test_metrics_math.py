"""The metrics on features, checked against independent NumPy/SciPy implementations and known values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from bloodgen.metrics.fid import fid_from_features, fid_per_class, frechet_distance, statistics
from bloodgen.metrics.isc import inception_score
from bloodgen.metrics.kid import kid, mmd2_unbiased
from bloodgen.metrics.prdc import prdc


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy.linalg.sqrtm, as pytorch-fid computes it."""
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def gaussian(rng, n, d, shift=0.0, scale=1.0):
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated features, like real ones
    return (rng.normal(size=(n, d)) @ mixing) * scale + shift


@pytest.mark.parametrize("n1, n2, d", [(400, 300, 24), (20, 35, 64), (64, 500, 48)])
def test_fid_matches_scipy_sqrtm(n1, n2, d):
    rng = np.random.default_rng(n1)
    a = gaussian(rng, n1, d)
    b = gaussian(rng, n2, d, shift=0.3, scale=1.2)
    assert fid_from_features(a, b) == pytest.approx(scipy_fid(a, b), rel=1e-7)


def test_fid_from_statistics_equals_fid_from_features():
    rng = np.random.default_rng(1)
    a, b = gaussian(rng, 300, 16), gaussian(rng, 250, 16, shift=1.0)
    assert frechet_distance(*statistics(a), *statistics(b)) == pytest.approx(fid_from_features(a, b), rel=1e-10)


def test_fid_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(2)
    for n in (50, 500):  # fewer and more images than dimensions take different routes
        x = gaussian(rng, n, 100)
        assert abs(fid_from_features(x, x)) < 1e-8 * np.trace(np.cov(x, rowvar=False))


def test_fid_of_a_shift_is_the_squared_shift():
    rng = np.random.default_rng(3)
    x = gaussian(rng, 200, 10)
    shift = np.arange(10) / 10
    assert fid_from_features(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-8)


def test_fid_per_class_uses_matching_classes_and_refuses_to_average_over_missing_ones():
    rng = np.random.default_rng(4)
    real, fake = gaussian(rng, 90, 8), gaussian(rng, 60, 8)
    real_labels, fake_labels = np.arange(90) % 3, np.arange(60) % 3
    per_class, average = fid_per_class(real, real_labels, fake, fake_labels, 3)
    assert per_class[1] == pytest.approx(fid_from_features(real[real_labels == 1], fake[fake_labels == 1]))
    assert average == pytest.approx(np.mean(per_class))
    per_class, average = fid_per_class(real, real_labels, fake, fake_labels, 4)
    assert per_class[3] is None and average is None


def direct_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The estimator written out term by term in float64."""
    m, d = len(x), x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    off = ~np.eye(m, dtype=bool)
    return float(kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean())


def test_kid_estimator_matches_direct_formula():
    rng = np.random.default_rng(5)
    x, y = rng.random((50, 32)), rng.random((50, 32)) * 1.1
    assert mmd2_unbiased(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(
        direct_mmd2_unbiased(x, y), rel=1e-5)


def test_kid_is_unbiased_for_two_draws_of_one_distribution():
    rng = np.random.default_rng(6)
    unbiased, biased = [], []
    for _ in range(300):
        x, y = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
        unbiased.append(mmd2_unbiased(x, y))
        d = 8
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        biased.append(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    unbiased = np.array(unbiased)
    assert abs(unbiased.mean()) < 3 * unbiased.std() / np.sqrt(len(unbiased))
    assert np.mean(biased) > 10 * unbiased.std() / np.sqrt(len(unbiased))  # the test can tell bias apart


def test_kid_of_a_set_with_itself_is_near_zero_and_far_below_a_shifted_set():
    rng = np.random.default_rng(7)
    x = np.abs(gaussian(rng, 400, 32))
    same, _ = kid(x, x, np.random.default_rng(0), n_subsets=20, subset_size=100)
    shifted, _ = kid(x, x + 0.5, np.random.default_rng(0), n_subsets=20, subset_size=100)
    assert abs(same) < 0.01 * shifted


def test_kid_subsets_are_reproducible_with_a_seed():
    rng = np.random.default_rng(8)
    x, y = rng.random((300, 16)), rng.random((300, 16))
    assert kid(x, y, np.random.default_rng(3), 10, 50) == kid(x, y, np.random.default_rng(3), 10, 50)


def brute_force_prdc(real, fake, k_pr, k_dc):
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=2)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=2)
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=2)
    r_pr, r_dc = np.sort(d_rr, axis=1)[:, k_pr], np.sort(d_rr, axis=1)[:, k_dc]
    f_pr, f_dc = np.sort(d_ff, axis=1)[:, k_pr], np.sort(d_ff, axis=1)[:, k_dc]
    return {
        "precision": (d_rf <= r_pr[:, None]).any(axis=0).mean(),
        "recall": (d_rf <= f_pr[None, :]).any(axis=1).mean(),
        "precision_prdc": (d_rf < r_dc[:, None]).any(axis=0).mean(),
        "recall_prdc": (d_rf < f_dc[None, :]).any(axis=1).mean(),
        "density": (d_rf < r_dc[:, None]).sum() / (k_dc * len(fake)),
        "coverage": (d_rf.min(axis=1) < r_dc).mean(),
    }


def test_prdc_matches_brute_force():
    rng = np.random.default_rng(9)
    real, fake = gaussian(rng, 300, 12), gaussian(rng, 250, 12, shift=0.4, scale=0.8)
    expected = brute_force_prdc(real, fake, 3, 5)
    got = prdc(real, fake, 3, 5)
    for key, value in expected.items():
        assert getattr(got, key) == pytest.approx(value, abs=1 / 250), key  # float32 may flip a boundary point


def test_prdc_matches_the_prdc_library_at_k5():
    library = pytest.importorskip("prdc", reason="the prdc library (dev extra) cross-checks the k=5 definition")
    rng = np.random.default_rng(11)
    real, fake = gaussian(rng, 400, 16), gaussian(rng, 350, 16, shift=0.3, scale=0.9)
    expected = library.compute_prdc(real, fake, nearest_k=5)
    got = prdc(real, fake, 3, 5)
    for ours, theirs in (("precision_prdc", "precision"), ("recall_prdc", "recall"), ("density", "density"),
                         ("coverage", "coverage")):
        assert getattr(got, ours) == pytest.approx(float(expected[theirs]), abs=1 / 350), ours
    assert got.precision != got.precision_prdc  # k=3 and k=5 balls really differ


def test_precision_recall_coverage_of_identical_sets_are_one():
    rng = np.random.default_rng(10)
    x = gaussian(rng, 500, 20)
    got = prdc(x, x.copy())
    for key in ("precision", "recall", "precision_prdc", "recall_prdc", "coverage"):
        assert getattr(got, key) == 1.0, key
    # Open balls: each real ball holds its centre and k-1 neighbours, as in prdc (closed ones would give 1.2);
    # float32 rounding may tip a few k-th neighbours that sit exactly on a radius.
    assert got.density == pytest.approx(1.0, abs=0.01)


def test_inception_score_of_confident_even_predictions_is_the_number_of_classes():
    n_classes, dim = 10, 10
    weight = np.eye(n_classes, dim) * 50  # logits = 50 * one-hot: p(y|x) is almost one-hot
    features = np.eye(dim)[np.arange(1000) % n_classes]
    score, spread = inception_score(features, weight, splits=10)
    assert score == pytest.approx(n_classes, rel=1e-6)
    same_class = np.eye(dim)[np.zeros(1000, dtype=int)]
    assert inception_score(same_class, weight)[0] == pytest.approx(1.0)
