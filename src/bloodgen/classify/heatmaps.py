"""Counterfactual heat maps (classify.diffusion.counterfactual_maps): whether they are faithful, and their figures.

Faithfulness: the signed map of an image towards class c is a direction in image space. Moving the image along
it should make an independent classifier (the ResNet-18) answer c far more often than moving it the same
distance in a random direction; if it does not, the map shows what the diffusion model attends to, not what
would make the cell another class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from bloodgen.classify.diffusion_results import Faithfulness
from bloodgen.report.plots import pyplot

STEPS = (0.05, 0.1, 0.2)  # root-mean-square change of a pixel value, in [0, 1] units
RANDOM_DIRECTIONS = 10
OVERLAY_PERCENTILE = 90  # the overlay marks the pixels whose map magnitude is above this percentile of the map's


def moved(image: np.ndarray, direction: np.ndarray, step: float) -> np.ndarray:
    """uint8 image (28, 28, 3) moved by `step` (RMS, [0, 1] units) along direction (3, 28, 28), clipped."""
    unit = direction / np.sqrt(np.mean(direction ** 2))
    x = image.astype(np.float64) / 255 + step * unit.transpose(1, 2, 0)
    return np.clip(np.round(255 * x), 0, 255).astype(np.uint8)


def faithfulness(images: np.ndarray, predicted: list[int], maps: np.ndarray, classes: list[int],
                 predict: Callable[[np.ndarray], np.ndarray], seed: int = 0, steps=STEPS,
                 n_random: int = RANDOM_DIRECTIONS) -> Faithfulness:
    """How often `predict` (uint8 images -> class probabilities) says the target class c after each image is moved
    along its signed map towards c, against random directions of the same size; over every (image, c) pair
    with c a candidate other than the image's predicted class and a non-zero map."""
    rng = np.random.default_rng(seed)
    pairs = [(i, c) for i in range(len(images)) for c in classes
             if c != predicted[i] and np.isfinite(maps[i, c]).all() and np.abs(maps[i, c]).max() > 0]
    if not pairs:
        raise ValueError("no image has a non-zero signed map towards another class")
    targets = np.array([c for _, c in pairs])
    before = predict(images[[i for i, _ in pairs]])[np.arange(len(pairs)), targets]
    noise = rng.standard_normal((len(pairs), n_random, 3, 28, 28))
    out = {"map_to_target": [], "random_to_target": [], "map_gain": [], "random_gain": []}
    for step in steps:
        along = predict(np.stack([moved(images[i], maps[i, c], step) for i, c in pairs]))
        rand = predict(np.stack([moved(images[i], noise[k, r], step) for k, (i, _) in enumerate(pairs)
                                 for r in range(n_random)])).reshape(len(pairs), n_random, -1)
        p_along, p_rand = along[np.arange(len(pairs)), targets], rand[np.arange(len(pairs)), :, targets]
        out["map_to_target"].append(float((along.argmax(1) == targets).mean()))
        out["random_to_target"].append(float((rand.argmax(2) == targets[:, None]).mean()))
        out["map_gain"].append(float((p_along - before).mean()))
        out["random_gain"].append(float((p_rand - before[:, None]).mean()))
    return Faithfulness(steps=list(steps), pairs=len(pairs), random_directions=n_random, **out)


def plot_signed(images: np.ndarray, classes: list[int], maps: np.ndarray, predicted: list[int], names: list[str],
                path: Path) -> None:
    """Rows: a test image of each class; diagonal: the image; off it: the signed map towards the column class
    as RGB (grey: no change; each map scaled by its largest magnitude)."""
    def show(ax, r: int, c: int) -> None:
        m = maps[r, c]
        scale = np.abs(m).max() if np.abs(m).max() > 0 else 1.0  # zero under the image's own predicted class
        ax.imshow(np.clip(0.5 + 0.5 * m.transpose(1, 2, 0) / scale, 0, 1), interpolation="nearest")

    _grid(images, classes, predicted, names, path, show,
          "Signed counterfactual maps (eqs. 10-12): predicted noise under the predicted class minus under the "
          "column class,\nas RGB around grey: the change that moves the cell towards the column class")


def plot_overlay(images: np.ndarray, classes: list[int], maps: np.ndarray, predicted: list[int], names: list[str],
                 path: Path) -> None:
    """As plot_signed, with the image shown under its map's strongest pixels (above the 90th percentile) in red."""
    def show(ax, r: int, c: int) -> None:
        magnitude = np.sqrt((maps[r, c] ** 2).sum(0))
        mask = magnitude > np.percentile(magnitude, OVERLAY_PERCENTILE)  # none where the map is zero
        overlay = images[r].astype(np.float64) / 255
        overlay[mask] = 0.4 * overlay[mask] + 0.6 * np.array([1.0, 0.0, 0.0])
        ax.imshow(overlay, interpolation="nearest")

    _grid(images, classes, predicted, names, path, show,
          f"Thresholded overlays: the pixels where the signed map is strongest (top {100 - OVERLAY_PERCENTILE} %) "
          f"in red")


def plot_squared(images: np.ndarray, classes: list[int], maps: np.ndarray, predicted: list[int], names: list[str],
                 path: Path) -> None:
    """The unsigned maps: per-pixel weighted squared error of the column class minus the predicted class's."""
    def show(ax, r: int, c: int) -> None:
        finite = maps[r][np.isfinite(maps[r])]
        scale = np.abs(finite).max() if finite.size and np.abs(finite).max() > 0 else 1.0
        ax.imshow(maps[r, c], cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")

    _grid(images, classes, predicted, names, path, show,
          "Counterfactual heat maps: error of the column class minus the predicted class's\n"
          "(red: the column class explains the pixel worse)")


def _grid(images, classes, predicted, names, path: Path, show, title: str) -> None:
    plt = pyplot()
    k = len(classes)
    fig, axes = plt.subplots(k, k, figsize=(max(1.25 * k + 0.8, 5.5), 1.25 * k + 0.8), squeeze=False)
    for r, c_img in enumerate(classes):
        for col, c_target in enumerate(classes):
            ax = axes[r, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == col:
                ax.imshow(images[r], interpolation="nearest")
                ax.set_xlabel(f"pred: {names[predicted[r]][:10]}", fontsize=6)
            else:
                show(ax, r, c_target)
            if r == 0:
                ax.set_title(names[c_target][:12], fontsize=7)
            if col == 0:
                ax.set_ylabel(names[c_img][:12], fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
