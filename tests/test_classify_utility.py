"""Reference classifier and utility metrics on the tiny fixture: fidelity, TSTR, memorisation."""

from __future__ import annotations

import numpy as np
import pytest

from bloodgen.classify.reference import (KEY_ACCURACY, KEY_AUC, ClassifierRecipe, classification_report,
                                         load_classifier, predict_proba, reference_classifier)
from bloodgen.classify.utility import (KEY_EXACT_COPIES, KEY_FIDELITY_MACRO, KEY_MEMORISATION_FLAG,
                                       KEY_MEMORISED_FRACTION, class_fidelity, memorisation, minority_top_up,
                                       pixel_vectors, take_per_class, utility_report)
from bloodgen.errors import UserError

TINY_RECIPE = ClassifierRecipe(epochs=15, batch_size=16, lr=3e-3, width=16)


@pytest.fixture(scope="module")
def trained(tiny_npz, tmp_path_factory):
    import warnings

    from bloodgen.data import load_bloodmnist

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_bloodmnist(tiny_npz)
    cache = tmp_path_factory.mktemp("cache")
    model, info = reference_classifier(data, TINY_RECIPE, cache_dir=cache)
    return data, model, info, cache


def test_classification_report_of_perfect_and_wrong_predictions():
    y = np.arange(8).repeat(3)
    perfect = np.eye(8)[y]
    report = classification_report(y, perfect)
    assert report[KEY_ACCURACY] == 1.0 and report[KEY_AUC] == 1.0
    wrong = classification_report(y, np.eye(8)[(y + 1) % 8])
    assert wrong[KEY_ACCURACY] == 0.0 and np.trace(np.array(wrong["confusion_matrix"])) == 0


def test_reference_classifier_learns_and_is_cached(trained):
    data, model, info, cache = trained
    assert info["test"][KEY_ACCURACY] >= 0.8, info["history"]
    again, info_again = reference_classifier(data, TINY_RECIPE, cache_dir=cache)  # from the cache: no training
    assert info_again["train_seconds"] == info["train_seconds"]
    x = data.images("test")
    assert np.allclose(predict_proba(model, x), predict_proba(again, x), atol=1e-5)
    folder = next((cache / "classifier").iterdir())
    assert np.allclose(predict_proba(load_classifier(folder), x), predict_proba(model, x), atol=1e-5)


def test_fidelity_is_high_for_true_labels_and_chance_for_shuffled(trained):
    data, model, _, _ = trained
    images, labels = data.images("all"), data.labels("all")
    assert class_fidelity(model, images, labels)[KEY_FIDELITY_MACRO] >= 0.8
    shuffled = np.random.default_rng(0).permutation(labels)
    assert class_fidelity(model, images, shuffled)[KEY_FIDELITY_MACRO] <= 0.35  # chance is 1/8


def test_copies_of_training_images_are_flagged_and_fresh_images_are_not(tiny_data):
    train, test = tiny_data.images("train"), tiny_data.images("test")
    copies = memorisation(pixel_vectors(train[:20]), pixel_vectors(train), pixel_vectors(test))
    assert copies[KEY_MEMORISATION_FLAG] and copies[KEY_EXACT_COPIES] == 20 and copies[KEY_MEMORISED_FRACTION] == 1.0
    fresh = memorisation(pixel_vectors(tiny_data.images("val")), pixel_vectors(train), pixel_vectors(test))
    assert not fresh[KEY_MEMORISATION_FLAG] and fresh[KEY_EXACT_COPIES] == 0


def test_take_per_class_draws_exact_counts_and_refuses_too_few(tiny_data):
    images, labels = tiny_data.split("all")
    assert minority_top_up(np.array([0, 0, 1, 1, 1, 2])).tolist() == [1, 0, 2, 3, 3, 3, 3, 3]
    x, y = take_per_class(images, labels, np.full(8, 3), np.random.default_rng(0))
    assert np.bincount(y, minlength=8).tolist() == [3] * 8 and len(x) == 24
    with pytest.raises(UserError, match="need 1000 synthetic images of class 0"):
        take_per_class(images, labels, np.full(8, 1000), np.random.default_rng(0))


def test_utility_report_runs_end_to_end(trained):
    data, model, info, _ = trained
    # "Synthetic" stand-in: the val+test images, more than the tiny train split needs per class.
    images = np.concatenate([data.images("all")] * 3)
    labels = np.concatenate([data.labels("all")] * 3)
    quick_info = dict(info, recipe=dict(info["recipe"], epochs=2))  # the pipeline, not the accuracy, is tested here
    report = utility_report(model, quick_info, (images, labels), data)
    assert report["tstr"]["n_train"] == len(data.labels("train"))
    assert report["augmented"]["n_train"] == len(data.labels("train")) + minority_top_up(data.labels("train")).sum()
    for key in ("tstr", "augmented"):
        assert 0.0 <= report[key][KEY_ACCURACY] <= 1.0
    assert report["train_on_real"] is info["test"]
    assert report["memorisation"]["pixels"][KEY_MEMORISATION_FLAG]  # the stand-in contains the training images


def test_evaluate_utility_cli_writes_report_figures_and_json(tiny_data, tmp_path, monkeypatch, capsys):
    import json
    import warnings

    from bloodgen.classify import reference
    from bloodgen.cli import main
    from bloodgen.metrics import inception
    from test_metrics_protocol import ProjectionExtractor

    monkeypatch.setattr(inception, "inception_extractor", lambda *args, **kwargs: ProjectionExtractor())
    monkeypatch.setattr(reference, "default_recipe", lambda: ClassifierRecipe(epochs=2, batch_size=16, width=8))
    samples = tmp_path / "samples.npz"  # every image of the tiny file: 18 per class, the training ones included
    np.savez(samples, images=tiny_data.images("all"), labels=tiny_data.labels("all"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["evaluate", str(samples), "--data", str(tiny_data.path), "--n", "40", "--seeds", "1",
                     "--kid-subsets", "2", "--cache-dir", str(tmp_path / "cache"), "--quiet", "--utility",
                     "--utility-dir", str(tmp_path / "util"), "--json", str(tmp_path / "eval.json")])
    assert code == 0
    utility = json.loads((tmp_path / "eval.json").read_text())["utility"]
    assert utility["tstr"]["n_train"] == len(tiny_data.labels("train"))
    assert utility["memorisation"]["pixels"][KEY_MEMORISATION_FLAG]  # the training images are in the samples
    assert utility["memorisation"]["inception"][KEY_EXACT_COPIES] > 0
    report = (tmp_path / "util" / "utility.md").read_text()
    assert "copies training images" in report and "real images (train on real)" in report
    for png in ("fidelity_confusion.png", "nearest_pixels.png", "nearest_inception.png"):
        assert (tmp_path / "util" / png).stat().st_size > 2000


def test_utility_needs_samples(tmp_path, capsys):
    from bloodgen.cli import main

    assert main(["evaluate", "--floor", "--utility"]) == 2
    assert "--utility judges generated images" in capsys.readouterr().err
