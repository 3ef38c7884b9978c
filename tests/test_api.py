"""The Python API: load, sample into arrays with classes or proportions, evaluate arrays in memory into typed
figures that agree with the protocol record."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import bloodgen.api as bg
from bloodgen.errors import UserError
from test_metrics_protocol import ProjectionExtractor


@pytest.fixture(scope="module")
def cgan():
    return bg.load("pretrained:cgan")


def test_sampling_is_seeded_and_follows_classes_and_proportions(cgan):
    gan = cgan
    a = gan.sample(24, seed=3, classes="balanced")
    assert a.images.dtype == np.uint8 and a.images.shape == (24, 28, 28, 3) and len(a) == 24
    assert np.bincount(a.labels, minlength=8).tolist() == [3] * 8
    assert np.array_equal(a.images, gan.sample(24, seed=3, classes="balanced").images)
    assert not np.array_equal(a.images, gan.sample(24, seed=4, classes="balanced").images)
    mix = gan.sample(10, seed=0, classes=[1, 1, 0, 0, 0, 0, 0, 3])
    assert np.bincount(mix.labels, minlength=8).tolist() == [2, 2, 0, 0, 0, 0, 0, 6]
    assert set(gan.sample(5, seed=0, classes="neutrophil").labels) == {6}
    grid = a.grid(per_class=3)
    assert grid.size[0] > 3 * 28 * 3 and grid.size[1] == 8 * (28 + 2) * 3 + 2 * 3


@pytest.mark.parametrize("bad", [[1, 2], [1, -1, 0, 0, 0, 0, 0, 0], [0] * 8, ["a"] * 8])
def test_bad_proportions_are_one_line_errors(cgan, bad):
    with pytest.raises(UserError, match="class proportions must be 8 non-negative numbers"):
        cgan.sample(4, classes=bad)


def test_unconditional_model_samples_without_labels_and_refuses_a_class():
    gan = bg.load("pretrained:gan")
    assert gan.family == "gan" and gan.conditional is False and isinstance(gan.sampler_options, dict)
    cells = gan.sample(16, seed=1)
    assert cells.labels is None and cells.grid(per_class=2).size == ((8 * 30 + 2) * 3, (2 * 30 + 2) * 3)
    with pytest.raises(UserError, match="unconditional"):
        gan.sample(2, classes="neutrophil")
    with pytest.raises(UserError):
        gan.sample(2, guidance=2.0)


def test_evaluate_in_memory_gives_typed_figures_matching_the_record(tiny_data, tmp_path):
    images, labels = tiny_data.split("all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setup = bg.Setup(data=tiny_data.path, cache_dir=tmp_path, extractor=ProjectionExtractor(), progress=False)
        result = bg.evaluate(images[:60], labels[:60], n=30, seeds=2, metrics=["fid", "kid", "per-class"],
                             setup=setup)
    record = result.record
    assert result.n == 30 and result.seeds == (0, 1)
    assert result.samples.fid.per_seed == tuple(record["fid"]["per_seed"]) and result.samples.fid.mean > 0
    assert result.samples.fid.std == pytest.approx(np.std(result.samples.fid.per_seed, ddof=1))
    assert result.floor_disjoint.fid.mean == record["floor"]["disjoint"]["fid"]["mean"]
    assert result.samples.precision is None and "kid" not in result.samples.other
    assert set(result.samples.fid_per_class) == set(record["fid_per_class"]["classes"])
    assert bg.Evaluation.from_record(json.loads(json.dumps(record))) == result
    assert json.loads(result.save(tmp_path / "eval.json").read_text())["fid"] == record["fid"]
    assert str(result.samples.fid).count("±") == 1
