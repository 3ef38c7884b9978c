"""Augmentation where it matters: a classifier trained on a few real images per class, alone and with
synthetic images from a generator trained on those same few images.

Both arms of a classifier seed get the same number of optimiser steps (`step_matched`): with 80 real
images an epoch is one step, so an epoch budget would compare 6 steps against hundreds and measure the
budget, not the synthetic images. The gain is paired per classifier seed (same seed, same steps, same
real images), so its spread is the spread of the differences, not of two independent means.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from bloodgen.classify.recipe import ClassifierRecipe
from bloodgen.classify.utility import train_and_test
from bloodgen.data.bloodmnist import N_CLASSES

REAL, AUGMENTED = "real", "augmented"
# The fields of each classifier's ClassificationScores that the arms are compared on.
FIGURES = ("accuracy", "balanced_accuracy", "macro_f1")
Step = Callable[[str, Callable[[], Any]], Any]


def step_matched(recipe: ClassifierRecipe, n_train: int, steps: int, seed: int) -> ClassifierRecipe:
    """`recipe` with the classifier seed and as many epochs as `steps` optimiser steps need on `n_train` images."""
    batch = min(recipe.batch_size, n_train)
    return replace(recipe, seed=seed, epochs=max(1, math.ceil(steps / math.ceil(n_train / batch))))


def balanced_labels(per_class: int) -> np.ndarray:
    """`per_class` labels of every class, class by class: the synthetic set's exact class mix."""
    return np.repeat(np.arange(N_CLASSES), per_class)


def run_arm(name: str, train: tuple[np.ndarray, np.ndarray], val, test, recipe: ClassifierRecipe, seeds: int,
            steps: int, step: Step) -> list[dict]:
    """One arm's test reports, one per classifier seed, each saved through `step` as it finishes."""
    reports = []
    for seed in range(seeds):
        arm_recipe = step_matched(recipe, len(train[1]), steps, seed)
        reports.append(step(f"{name}-seed{seed}", lambda r=arm_recipe, s=seed: train_and_test(
            train, val, test, r, desc=f"{name} classifier, seed {s}")))
    return reports


def augmented_set(real: tuple[np.ndarray, np.ndarray],
                  synthetic: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([real[0], synthetic[0]]), np.concatenate([real[1], synthetic[1]]).astype(np.int64)


def mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (ddof 1: a handful of seeds; 0 for a single one)."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "per_seed": [float(v) for v in array]}


def summarise(real: list[dict], augmented: list[dict]) -> dict:
    """Per figure: each arm's mean ± std and the paired gain (augmented minus real, seed by seed)."""
    if len(real) != len(augmented):
        raise ValueError(f"arms with {len(real)} and {len(augmented)} classifier seeds cannot be paired")
    out = {}
    for key in FIGURES:
        r = [report[key] for report in real]
        a = [report[key] for report in augmented]
        out[key] = {REAL: mean_std(r), AUGMENTED: mean_std(a),
                    "gain": mean_std([y - x for x, y in zip(r, a)])}
    return out
