"""Shifted domains (data/domains.py, `bloodgen domains make`): disjoint train parts, the same val and test
cells everywhere, deterministic transforms that move the images the way their names say. Its refusals of
bad input are cases of test_cli_bad_inputs.py."""

from __future__ import annotations

import json
import warnings

import numpy as np

from bloodgen.cli import main
from bloodgen.data import load_bloodmnist
from bloodgen.data.domains import DOMAINS, artificial, scope, stain, train_parts


def test_train_parts_are_disjoint_cover_the_split_and_keep_every_class(tiny_data):
    labels = tiny_data.labels("train")
    parts = train_parts(labels, 4, seed=0)
    joined = np.concatenate(parts)
    assert len(joined) == len(labels) and len(np.unique(joined)) == len(labels)
    for part in parts:  # 10 images per class in the tiny split: 2 or 3 of each class per part
        assert set(np.bincount(labels[part], minlength=8)) <= {2, 3}
    assert all((a == b).all() for a, b in zip(parts, train_parts(labels, 4, seed=0)))
    assert any((a != b).any() for a, b in zip(parts, train_parts(labels, 4, seed=1)))


def test_each_transform_is_deterministic_and_moves_the_images_its_way(tiny_data):
    from skimage.color import rgb2hed

    x = tiny_data.images("test")
    for domain in DOMAINS.values():
        y = domain.transform(x)
        assert y.dtype == np.uint8 and y.shape == x.shape and (y == domain.transform(x)).all()
    dark = artificial(x)  # inverted: the bright background becomes dark
    assert x.mean() > 150 and dark.mean() < 255 - x.mean() + 10
    hed_x, hed_y = rgb2hed(x), rgb2hed(stain(x))
    assert hed_y[..., 0].mean() > 1.2 * hed_x[..., 0].mean() and hed_y[..., 1].mean() < 0.8 * hed_x[..., 1].mean()
    soft = scope(x).astype(float)  # lower contrast and a blurred optic: less pixel-to-pixel variation
    assert soft.std() < x.std() and np.abs(np.diff(soft, axis=2)).mean() < 0.8 * np.abs(np.diff(x.astype(float), axis=2)).mean()


def test_domains_make_writes_loadable_files_with_the_same_test_cells(tiny_npz, tmp_path, capsys):
    out = tmp_path / "domains"
    assert main(["domains", "make", "--data", str(tiny_npz), "--out", str(out), "--seed", "3"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = load_bloodmnist(tiny_npz)
        domains = {name: load_bloodmnist(out / f"{name}.npz") for name in ["A", *DOMAINS]}
    seen = []
    for name, data in domains.items():
        record = json.loads((out / f"{name}.json").read_text())
        assert record["seed"] == 3 and record["split_sizes"]["test"] == 40
        with np.load(out / f"{name}.npz") as f:
            idx = f["train_source_indices"]
        seen.append(idx)
        assert (data.labels("train") == source.labels("train")[idx]).all()
        assert (data.labels("test") == source.labels("test")).all()
        expected = source.images("test") if name == "A" else DOMAINS[name].transform(source.images("test"))
        assert (data.images("test") == expected).all()
    assert len(np.unique(np.concatenate(seen))) == sum(len(s) for s in seen) == 80  # disjoint, all of train
    assert (out / "domains.png").stat().st_size > 10_000 and "domains.png" in capsys.readouterr().out


def test_normalisation_moves_a_shifted_domain_back_towards_the_reference_colours(tiny_data, tmp_path):
    from skimage.color import rgb2lab

    from bloodgen.data.domains import histogram_match, reinhard

    reference = tiny_data.images("train")
    shifted = stain(tiny_data.images("test"))
    gap = lambda x: np.abs(x.mean(axis=(0, 1, 2)) - reference.mean(axis=(0, 1, 2))).max()
    lab_gap = lambda x: np.abs(rgb2lab(x).mean(axis=(0, 1, 2)) - rgb2lab(reference).mean(axis=(0, 1, 2))).max()
    for method in (reinhard, histogram_match):
        moved = method(shifted, reference)
        assert moved.dtype == np.uint8 and moved.shape == shifted.shape and (moved == method(shifted, reference)).all()
        assert gap(moved) < 0.5 * gap(shifted) and lab_gap(moved) < 0.5 * lab_gap(shifted), method.__name__


def test_domains_normalise_writes_a_loadable_file_of_the_same_cells(tiny_npz, tmp_path, capsys):
    out = tmp_path / "domains"
    assert main(["domains", "make", "--data", str(tiny_npz), "--out", str(out), "--domains", "scope"]) == 0
    target = tmp_path / "scope-histogram.npz"
    assert main(["domains", "normalise", str(out / "scope.npz"), "--to", str(out / "A.npz"), "--method",
                 "histogram", "--out", str(target)]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scope_data, normalised = load_bloodmnist(out / "scope.npz"), load_bloodmnist(target)
    assert normalised.split_sizes == scope_data.split_sizes
    assert (normalised.labels("test") == scope_data.labels("test")).all()
    assert not (normalised.images("test") == scope_data.images("test")).all()
    record = json.loads(target.with_suffix(".json").read_text())
    assert record["normalisation"] == "histogram" and record["reference"]["sha256"] != record["source"]["sha256"]


def test_domain_shift_study_scores_the_same_cells_in_every_domain(tiny_npz, tmp_path):
    from dataclasses import replace

    from bloodgen.classify.domain_shift import domain_shift_study, markdown_table
    from bloodgen.classify.recipe import RECIPES

    folder = tmp_path / "domains"
    assert main(["domains", "make", "--data", str(tiny_npz), "--out", str(folder), "--domains", "stain",
                 "artificial"]) == 0
    recipe = replace(RECIPES["cpu"], epochs=1, width=8, batch_size=16)
    study = domain_shift_study(folder, ("stain", "artificial"), (0, 1), recipe, cache_dir=tmp_path / "cache")
    results = study["results"]
    assert set(results) == {"A", "stain", "artificial"}
    for name in ("stain", "artificial"):
        assert set(results[name]) == {"before", "reinhard", "histogram", "oracle"}
        for row in results[name].values():
            assert 0 <= row["macro_f1"]["mean"] <= 1 and len(row["macro_f1"]["per_seed"]) == 2
        assert 0 <= results[name]["before"]["class_flips"]["mean"] <= 1 and "class_flips" not in results[name]["oracle"]
    assert len(list((tmp_path / "cache" / "classifier").iterdir())) == 2 * 3  # S_A and two oracles, per seed
    table = markdown_table(study)
    assert "| stain |" in table and "| artificial |" in table and "S_A reinhard" in table
    again = domain_shift_study(folder, ("stain",), (0,), recipe, cache_dir=tmp_path / "cache")  # all cached
    assert again["results"]["stain"]["before"]["macro_f1"]["per_seed"][0] == results["stain"]["before"]["macro_f1"]["per_seed"][0]
