"""What a run shows while it trains: a fixed-noise sample grid and per-class sample diversity.

Diversity is the mean pairwise RMS pixel distance between samples of one class, divided by the same
figure for real training images of that class. A ratio far below 1 for a class is the signature of
mode collapse (every sample of the class alike); GANs are the family it guards, but it is cheap and
logged for all.
"""

from __future__ import annotations

import numpy as np

GRID_SEED = 0
GRID_PER_CLASS = 8
UNCONDITIONAL_GRID = 64
COLLAPSE_RATIO = 0.3  # below this, warn: real classes are far more varied than the samples


def mean_pairwise_distance(images: np.ndarray) -> float:
    """Mean RMS distance (pixels in [0, 1]) over all pairs of images."""
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0) / x.shape[1]
    iu = np.triu_indices(len(x), k=1)
    return float(np.sqrt(d2[iu]).mean()) if len(iu[0]) else 0.0


def real_diversity(images: np.ndarray, labels: np.ndarray, n_classes: int, per_class: int = 64,
                   seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_classes):
        idx = np.flatnonzero(labels == k)
        out.append(mean_pairwise_distance(images[rng.permutation(idx)[:per_class]]) if len(idx) > 1 else 0.0)
    return out


def diversity_ratios(samples: np.ndarray, labels: np.ndarray | None, reference: list[float]) -> list[float | None]:
    """Per class (or one overall value for unlabelled samples): sample diversity / real diversity."""
    if labels is None:
        real = float(np.mean(reference))
        return [mean_pairwise_distance(samples) / real if real else None]
    return [mean_pairwise_distance(samples[labels == k]) / reference[k] if reference[k] and (labels == k).sum() > 1
            else None for k in range(len(reference))]


def grid_labels(conditional: bool, n_classes: int) -> np.ndarray | None:
    return np.repeat(np.arange(n_classes), GRID_PER_CLASS) if conditional else None

