"""The protocol (seeded draws, floor, JSON contract) and the real-feature cache, with a cheap stand-in network."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from bloodgen.cli import main
from bloodgen.data.bloodmnist import ALL
from bloodgen.errors import UserError
from bloodgen.metrics import calculate_metrics
from bloodgen.metrics import protocol
from bloodgen.metrics.features import dataset_feature_store
from bloodgen.metrics.report import to_markdown_report


class ProjectionExtractor:
    """A fixed random projection of the pixels: fast, deterministic, and records what it was asked for."""

    name = "test-projection-v1"
    dim = 12
    weights_sha256 = "ab" * 32

    def __init__(self):
        self.weight = np.random.default_rng(0).normal(size=(28 * 28 * 3, self.dim)).astype(np.float32) / 20
        self.calls: list[int] = []

    def __call__(self, images, desc=""):
        self.calls.append(len(images))
        return (images.reshape(len(images), -1).astype(np.float32) / 255) @ self.weight

    def logits_weight(self):
        raise UserError("no logits layer in the test projection")

    def provenance(self):
        return {"name": self.name, "sha256": self.weights_sha256, "device": "cpu"}


@pytest.fixture
def evaluate(tiny_data, tmp_path):
    """calculate_metrics on the tiny data set with the projection network and a private cache."""

    def run(samples=None, extractor=None, **kwargs):
        kwargs = {"n": 30, "seeds": 2, "kid_subsets": 5, "kid_subset_size": 20, "data": tiny_data.path,
                  "cache_dir": tmp_path / "cache", "progress": False, **kwargs}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tiny file is not the official one
            return calculate_metrics(samples, extractor=extractor or ProjectionExtractor(), **kwargs)

    return run


def test_draws_are_reproducible_and_follow_the_documented_recipe():
    assert np.array_equal(protocol.real_draw(17092, 100, 3), np.random.default_rng(3).choice(17092, 100, replace=False))
    assert not np.array_equal(protocol.real_draw(17092, 100, 3), protocol.real_draw(17092, 100, 4))
    assert np.array_equal(protocol.same_pool_draw(500, 50, 1), protocol.same_pool_draw(500, 50, 1))
    assert len(np.unique(protocol.real_draw(100, 100, 0))) == 100


def test_disjoint_halves_share_no_image_and_are_capped_at_half_the_pool():
    a, b = protocol.disjoint_halves(17092, 10_000, 0)
    assert len(a) == len(b) == 8546 and not set(a.tolist()) & set(b.tolist())
    a, b = protocol.disjoint_halves(17092, 1000, 0)
    assert len(a) == len(b) == 1000 and not set(a.tolist()) & set(b.tolist())


def test_results_have_the_contract_keys_and_are_reproducible(evaluate, tiny_data):
    samples = tiny_data.images("train")
    first = evaluate(samples)
    second = evaluate(samples)
    for key in ("fid", "kid", "precision", "recall", "density", "coverage"):
        assert set(first[key]) >= {"mean", "std", "per_seed"} and len(first[key]["per_seed"]) == 2
        assert first[key] == second[key]
    assert first["floor"] == second["floor"]
    assert first["floor"]["disjoint"]["n_per_side"] == 30 and not first["floor"]["disjoint"]["capped"]
    assert first["protocol"]["n"] == 30 and first["protocol"]["seeds"] == [0, 1]
    assert first["reference"]["sha256"] == tiny_data.sha256
    assert first["network"]["sha256"] == ProjectionExtractor.weights_sha256
    assert "fid_per_class" not in first  # unlabelled samples
    json.dumps(first)  # JSON-ready as it is


def test_a_generator_that_returns_the_real_draw_scores_zero(evaluate, tiny_data):
    pool, labels = tiny_data.images(ALL), tiny_data.labels(ALL)
    asked = []

    def sample_fn(n, seed):
        asked.append((n, seed))
        idx = protocol.real_draw(len(pool), n, seed)
        return pool[idx], labels[idx]

    result = evaluate(sample_fn, metrics=["fid", "prdc", "per-class"])
    assert asked == [(30, 0), (30, 1)]
    assert max(abs(v) for v in result["fid"]["per_seed"]) < 1e-6
    assert result["precision"]["mean"] == result["recall"]["mean"] == 1.0
    assert all(v is None or abs(v) < 1e-6 for seed in result["fid_per_class"]["per_seed"] for v in seed)


def test_floor_only_and_disjoint_cap_is_reported(evaluate):
    result = evaluate(None, n=100, seeds=1)
    assert "fid" not in result
    disjoint = result["floor"]["disjoint"]
    assert disjoint["capped"] and disjoint["n_per_side"] == 72 and "72" in disjoint["cap_note"]
    assert result["floor"]["same_pool"]["n"] == 100
    assert result["floor"]["same_pool"]["fid"]["std"] is None  # one seed: no spread
    assert "fid_per_class" in result["floor"]["same_pool"]  # the dataset has labels


def test_fixed_samples_smaller_than_n_and_n_larger_than_the_reference_are_refused(evaluate, tiny_data):
    with pytest.raises(UserError, match="hold 20 images, fewer than the 30 requested"):
        evaluate(tiny_data.images("train")[:20])
    with pytest.raises(UserError, match="larger than the reference, which has 144 images"):
        evaluate(None, n=145)
    with pytest.raises(UserError, match="unknown metric"):
        evaluate(None, metrics=["fid", "is"])


def test_inception_score_is_refused_before_any_work_when_there_are_no_logits(evaluate, tiny_data):
    extractor = ProjectionExtractor()
    with pytest.raises(UserError, match="no logits"):
        evaluate(tiny_data.images("train"), extractor=extractor, isc=True)
    assert extractor.calls == []


def test_cache_computes_only_what_is_needed_then_nothing(evaluate, tiny_data):
    extractor = ProjectionExtractor()
    evaluate(None, extractor=extractor, n=10, seeds=1)
    needed = {*protocol.real_draw(144, 10, 0), *protocol.same_pool_draw(144, 10, 0),
              *np.concatenate(protocol.disjoint_halves(144, 10, 0))}
    assert extractor.calls == [len(needed)] and len(needed) < 144
    result = evaluate(None, extractor=extractor, n=10, seeds=1)
    assert extractor.calls == [len(needed)]  # all from the cache
    assert result["timing"]["reference_images_computed"] == 0
    assert result["timing"]["reference_images_from_cache"] == len(needed)


def test_cached_features_equal_fresh_ones(tiny_data, tmp_path):
    extractor = ProjectionExtractor()
    store = dataset_feature_store(tiny_data, extractor, tmp_path)
    idx = np.array([5, 1, 5, 100])
    first = store.features(idx)
    again = dataset_feature_store(tiny_data, extractor, tmp_path).features(idx)
    assert np.array_equal(first, again)
    assert np.allclose(first, extractor(tiny_data.images(ALL)[idx]), atol=1e-5)


def test_cache_of_other_weights_or_a_corrupt_file_is_ignored_and_rebuilt(tiny_data, tmp_path):
    extractor = ProjectionExtractor()
    store = dataset_feature_store(tiny_data, extractor, tmp_path)
    store.features(np.arange(10))
    path = store.cache_path

    other = ProjectionExtractor()
    other.weights_sha256 = "cd" * 32  # other weights: another file name, so no clash at all
    assert dataset_feature_store(tiny_data, other, tmp_path).cache_path != path

    # Same name, foreign key (as if renamed by hand): ignored with a warning, then rebuilt.
    foreign = dataset_feature_store(tiny_data, other, tmp_path)
    foreign.features(np.arange(3))
    foreign.cache_path.replace(path)
    with pytest.warns(UserWarning, match="ignoring feature cache"):
        rebuilt = dataset_feature_store(tiny_data, extractor, tmp_path)
    assert not rebuilt.computed.any()

    path.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="ignoring feature cache"):
        rebuilt = dataset_feature_store(tiny_data, extractor, tmp_path)
    rebuilt.features(np.arange(4))
    assert extractor.calls[-1] == 4
    assert dataset_feature_store(tiny_data, extractor, tmp_path).computed.sum() == 4
    assert not list(path.parent.glob(".*.tmp"))  # atomic writes leave no temporary files behind


def test_cache_keeps_features_written_by_another_process(tiny_data, tmp_path):
    extractor = ProjectionExtractor()
    mine = dataset_feature_store(tiny_data, extractor, tmp_path)
    theirs = dataset_feature_store(tiny_data, extractor, tmp_path)
    theirs.features(np.arange(0, 5))
    mine.features(np.arange(5, 8))
    assert dataset_feature_store(tiny_data, extractor, tmp_path).computed.sum() == 8


def test_markdown_report_shows_samples_and_both_floors(evaluate, tiny_data):
    text = to_markdown_report(evaluate(tiny_data.images("train"), n=60, seeds=2))
    assert "| FID ↓ |" in text and "floor: same-pool" in text and "floor: disjoint (N=60)" in text
    assert "Same-pool floor" in text and "FID per seed" in text


def test_cli_writes_the_json_contract_and_markdown(tiny_data, tmp_path, monkeypatch, capsys):
    from bloodgen.metrics import inception

    monkeypatch.setattr(inception, "inception_extractor", lambda *args, **kwargs: ProjectionExtractor())
    samples = tmp_path / "samples.npz"
    np.savez(samples, images=tiny_data.images("train"), labels=tiny_data.labels("train"))
    out = tmp_path / "eval.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["evaluate", str(samples), "--data", str(tiny_data.path), "--n", "40", "--seeds", "2",
                     "--kid-subsets", "3", "--json", str(out), "--markdown", str(tmp_path / "eval.md"),
                     "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["fid"]) >= {"mean", "std", "per_seed"} and set(result["kid"]) >= {"mean", "std", "per_seed"}
    assert len(result["fid_per_class"]["mean"]) == 8 and "fid_class_averaged" in result
    assert result["samples"]["has_labels"] and result["protocol"]["kid_subsets"] == 3
    assert result["environment"]["versions"]["numpy"] == np.__version__
    printed = capsys.readouterr().out
    assert "| FID ↓ |" in printed and (tmp_path / "eval.md").read_text() in printed


def test_an_interrupted_extraction_keeps_the_parts_already_done(tiny_data, tmp_path, monkeypatch):
    from bloodgen.metrics import features

    class InterruptedInThirdPart(ProjectionExtractor):
        def __call__(self, images, desc=""):
            if len(self.calls) == 2:
                raise KeyboardInterrupt
            return super().__call__(images, desc)

    monkeypatch.setattr(features, "CACHE_WRITE_EVERY", 4)
    with pytest.raises(KeyboardInterrupt):
        dataset_feature_store(tiny_data, InterruptedInThirdPart(), tmp_path).features(np.arange(12))
    assert dataset_feature_store(tiny_data, ProjectionExtractor(), tmp_path).computed.sum() == 8


def test_a_registered_metric_reaches_the_json_and_both_reports(evaluate, tiny_data, monkeypatch):
    """One MetricSpec added to the registry alone: selectable by name, computed per seed and summarised, a row
    in `bloodgen evaluate`'s table (higher-is-better scores shown with their own decimals), and a default
    metric is computed when no selection is given. The study side is in test_study.py."""
    from bloodgen.metrics.registry import METRICS, Column, MetricSpec, default_metrics

    def spread(real, fake, options, seed):
        return {"toy_spread": float(fake.features.std() / real.features.std())}

    spec = MetricSpec("toy", spread, (Column("toy_spread", "toy spread ratio", decimals=5, lower_is_better=False),),
                      "feature spread ratio", default=True)
    monkeypatch.setitem(METRICS, "toy", spec)
    assert default_metrics()[-1] == "toy"
    result = evaluate(tiny_data.images("test")[:60])
    block = result["toy_spread"]
    assert len(block["per_seed"]) == 2 and block["mean"] == pytest.approx(np.mean(block["per_seed"]))
    assert "toy_spread" in result["floor"]["disjoint"] and result["protocol"]["metrics"][-1] == "toy"
    row = next(line for line in to_markdown_report(result).splitlines() if line.startswith("| toy spread ratio ↑ |"))
    assert f"{block['mean']:.5f} ± {block['std']:.5f}" in row
    only = evaluate(tiny_data.images("test")[:60], metrics=["toy"])
    assert "toy_spread" in only and "fid" not in only
