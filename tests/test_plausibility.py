"""The automated plausibility check (metrics/plausibility.py): real cells pass, wrong labels, blur and noise do not."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from bloodgen.metrics.plausibility import CRITERIA, PlausibleRanges, cell_measurements, evaluate_plausibility


def test_ranges_take_each_class_central_95_percent_and_judge_labelled_and_unlabelled_images():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 1000)
    measurements = rng.normal(size=(2000, len(CRITERIA))) + 10 * labels[:, None]  # class 1 sits 10 higher
    ranges = PlausibleRanges.fit(measurements, labels, n_classes=3)
    assert np.allclose(ranges.low[0], -1.96, atol=0.2) and np.allclose(ranges.high[1], 11.96, atol=0.2)
    assert np.isnan(ranges.low[2]).all() and ranges.counts.tolist() == [1000, 1000, 0]
    typical = np.array([np.zeros(len(CRITERIA)), np.full(len(CRITERIA), 10.0)])
    assert ranges.plausible(typical, np.array([0, 1])).tolist() == [True, True]
    assert ranges.plausible(typical, np.array([1, 0])).tolist() == [False, False]  # the other class's cell
    assert ranges.plausible(typical, None).tolist() == [True, True]  # unlabelled: some class accepts it
    assert not ranges.plausible(np.full((1, len(CRITERIA)), 5.0), None)[0]  # between the classes: none


def test_real_cells_are_plausible_and_wrong_labels_blur_and_noise_are_not(real_npz, tmp_path):
    from bloodgen.data import load_bloodmnist
    from bloodgen.metrics.report import plausibility_markdown

    data = load_bloodmnist(real_npz)
    images, labels = data.split("val")
    images, labels = images[:400], labels[:400]
    result = evaluate_plausibility(images, labels, data, cache_dir=tmp_path)
    assert 0.6 < result["plausible"] < 0.9 and 0.6 < result["real_test_plausible"] < 0.9
    assert all(0.005 < f < 0.15 for f in result["criterion_failure"].values())
    rng = np.random.default_rng(0)
    shuffled = evaluate_plausibility(images, rng.permutation(labels), data, cache_dir=tmp_path)["plausible"]
    blurred = np.stack([gaussian_filter(i.astype(float), (1.5, 1.5, 0)) for i in images]).round().astype(np.uint8)
    blur = evaluate_plausibility(blurred, labels, data, cache_dir=tmp_path)["plausible"]
    noise = evaluate_plausibility(rng.integers(0, 256, images.shape, dtype=np.uint8), labels, data,
                                  cache_dir=tmp_path)["plausible"]
    assert result["plausible"] > shuffled + 0.3 and result["plausible"] > blur + 0.3 and noise < 0.05
    assert len(list(tmp_path.glob("plausibility-*.npz"))) == 1  # the real measurements, computed once
    unlabelled = evaluate_plausibility(images, np.full(len(images), -1), data, cache_dir=tmp_path)
    assert not unlabelled["labelled"] and "per_class" not in unlabelled
    table = plausibility_markdown(result)
    assert "| neutrophil |" in table and "real test plausible %" in table


def test_measurements_have_one_row_per_image_and_finite_values():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 28, 28, 3), dtype=np.uint8)
    images[0] = 255  # a blank image: no cell at all
    measured = cell_measurements(images)
    assert measured.shape == (5, len(CRITERIA)) and np.isfinite(measured).all()
    assert measured[0, 0] == 0  # no cell pixels
