"""The few-shot augmentation experiment's arithmetic: step-matched arms and the paired gain."""

import numpy as np
import pytest

from bloodgen.classify.few_shot import AUGMENTED, REAL, augmented_set, balanced_labels, step_matched, summarise
from bloodgen.classify.recipe import RECIPES


def test_both_arms_get_at_least_the_same_optimiser_steps_whatever_their_size():
    recipe = RECIPES["cpu"]
    few = step_matched(recipe, n_train=80, steps=300, seed=2)  # batch cut to 80: one step per epoch
    many = step_matched(recipe, n_train=4080, steps=300, seed=2)  # 32 batches per epoch
    assert (few.epochs, many.epochs) == (300, 10)
    assert few.seed == many.seed == 2 and few.width == recipe.width


def test_the_synthetic_set_has_exactly_the_asked_count_of_every_class():
    labels = balanced_labels(7)
    assert np.bincount(labels).tolist() == [7] * 8
    real = (np.zeros((3, 28, 28, 3), np.uint8), np.array([0, 1, 2]))
    images, joined = augmented_set(real, (np.ones((8, 28, 28, 3), np.uint8), balanced_labels(1)))
    assert images.shape == (11, 28, 28, 3) and joined.tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 5, 6, 7]


def report(value: float) -> dict:
    return {"accuracy": value, "balanced_accuracy": value, "macro_f1": value}


def test_the_gain_is_paired_by_classifier_seed():
    real = [report(v) for v in (0.50, 0.60, 0.70)]
    augmented = [report(v) for v in (0.55, 0.65, 0.75)]  # +0.05 on every seed
    s = summarise(real, augmented)["balanced_accuracy"]
    assert s["gain"]["mean"] == pytest.approx(0.05) and s["gain"]["std"] == pytest.approx(0.0, abs=1e-12)
    assert s[REAL]["std"] == pytest.approx(0.1)  # the arms' own spread is much larger than the paired one
    assert s[AUGMENTED]["per_seed"] == pytest.approx([0.55, 0.65, 0.75])
    with pytest.raises(ValueError, match="cannot be paired"):
        summarise(real, augmented[:2])
