"""Metrics beyond Inception FID: FID extrapolated to infinite N, alpha-precision/beta-recall/authenticity,
distances in the reference classifier's features, and the overlap of a fixed sample file's draws."""

from __future__ import annotations

import numpy as np
import pytest

from bloodgen.errors import UserError
from bloodgen.metrics.alpha_beta import alpha_beta
from bloodgen.metrics.fid import fid_from_features
from bloodgen.metrics.fid_infinity import fid_infinity, fit_intercept, subset_sizes
from bloodgen.metrics.report import to_markdown_report
from test_metrics_protocol import ProjectionExtractor, evaluate  # noqa: F401  (fixture)


def gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_fit_recovers_a_known_line_and_sizes_span_half_to_full():
    sizes = subset_sizes(1000)
    assert sizes[0] == 500 and sizes[-1] == 1000 and len(sizes) == 6
    assert fit_intercept(sizes, 3.0 + 700.0 / sizes) == pytest.approx(3.0, abs=1e-9)


def test_fid_infinity_removes_the_small_sample_bias():
    real, fake = gaussian(1500, 16, 0), gaussian(1500, 16, 1)
    at_n = fid_from_features(real, fake)
    inf = fid_infinity(real, fake, np.random.default_rng(0))
    assert at_n > 0.05 and abs(inf) < 0.5 * at_n  # same distribution: the bias is nearly all of FID at N
    shifted = gaussian(1500, 16, 2, shift=0.5)  # true FID = 16 * 0.25 = 4
    assert fid_infinity(real, shifted, np.random.default_rng(0)) == pytest.approx(4.0, abs=0.7)


def test_alpha_beta_scores_faithful_copied_and_collapsed_samples():
    real = gaussian(800, 8, 0)
    faithful = alpha_beta(real, gaussian(800, 8, 1))
    assert faithful.alpha_precision > 0.85 and faithful.beta_recall > 0.4
    assert 0.3 < faithful.authenticity < 0.8
    assert alpha_beta(real, real.copy()).authenticity == 0.0  # every sample is a copy
    collapsed = alpha_beta(real, gaussian(800, 8, 2) * 0.05)
    assert collapsed.alpha_precision < 0.3 and collapsed.beta_recall < faithful.beta_recall - 0.3


class SecondSpace(ProjectionExtractor):
    name = "test-classifier-space"
    weights_sha256 = "cd" * 32

    def __init__(self):
        super().__init__()
        self.weight = np.random.default_rng(1).normal(size=self.weight.shape).astype(np.float32) / 20


def test_new_metrics_run_in_the_protocol_with_floors_and_their_method_recorded(evaluate, tiny_data):
    result = evaluate(tiny_data.images("train"), metrics=["fid", "fid-inf", "alpha-beta", "classifier"],
                      extractors={"classifier": SecondSpace()})
    for block in (result, result["floor"]["same_pool"], result["floor"]["disjoint"]):
        for key in ("fid_infinity", "alpha_precision", "beta_recall", "authenticity", "fd_classifier",
                    "kid_classifier"):
            assert len(block[key]["per_seed"]) == 2 and block[key]["mean"] is not None
    assert result["fd_classifier"]["mean"] != result["fid"]["mean"]
    assert set(result["networks"]) == {"inception", "classifier"}
    assert "Chong & Forsyth" in result["protocol"]["fid-inf"]
    report = to_markdown_report(result)
    assert "FID extrapolated to infinite N" in report and "reference-classifier features (not FID)" in report


def test_classifier_metric_without_its_extractor_is_a_one_line_error(evaluate, tiny_data):
    with pytest.raises(UserError, match="reads classifier features"):
        evaluate(tiny_data.images("train"), metrics=["classifier"])


def test_fixed_file_of_exactly_n_images_warns_and_labels_the_spread(evaluate, tiny_data, tmp_path):
    import warnings

    from bloodgen.metrics.protocol import OVERLAP_WARNING, calculate_metrics

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = calculate_metrics(tiny_data.images("train")[:30], n=30, seeds=2, metrics=["fid"],
                                   data=tiny_data.path, cache_dir=tmp_path, progress=False,
                                   extractor=ProjectionExtractor())
    assert any("every seed scores the same images" in str(w.message) for w in caught)
    assert result["spread"]["sample_draw_overlap"] == 1.0 and "real draws' spread only" in result["spread"]["note"]
    assert "real draws' spread only" in to_markdown_report(result)
    larger = evaluate(tiny_data.images("train"), metrics=["fid"])  # 80 images, draws of 30: partial overlap
    assert 0 < larger["spread"]["sample_draw_overlap"] < OVERLAP_WARNING
