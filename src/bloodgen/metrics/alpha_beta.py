"""alpha-precision, beta-recall and authenticity (Alaa et al., "How Faithful is your Synthetic Data?",
ICML 2022), in a given feature space.

alpha-precision asks whether generated samples fall in the alpha-support of the real distribution (the
ball around the real features' centre holding a fraction alpha of the real samples), for every alpha; a
faithful generator puts a fraction alpha of its samples there, and the integrated score
1 - 2 * integral |P(alpha) - alpha| is 1. beta-recall asks the same of real samples against the
generated beta-supports: a real sample counts as covered when its nearest generated sample is closer than
its nearest real neighbour and lies in the generated beta-support. Authenticity is the fraction of
generated samples that are farther from their nearest real sample than that sample is from its own
nearest real neighbour: a copy or a near-copy of a training image is not authentic.

As in the authors' reference code the supports are balls around the mean of the plain features (the paper
can also learn a one-class embedding first; with ImageNet features on 28x28 cells that network would be
another model to train and report). Authenticity follows the paper's definition per generated sample.
Written here because the maintained implementation (synthcity) pulls in a large tabular-data stack.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.neighbors import NearestNeighbors

LEVELS = np.linspace(0.0, 1.0, 30)  # the reference code's 30 levels of alpha and beta


def _integrated(curve: np.ndarray) -> float:
    """1 - 2 * integral over the levels of |curve(level) - level| (Riemann sum, as the reference code)."""
    return float(1.0 - 2.0 * np.abs(curve - LEVELS).sum() * (LEVELS[1] - LEVELS[0]))


def _nearest(reference: np.ndarray, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    distances, indices = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(reference).kneighbors(queries)
    return distances[:, k - 1], indices[:, k - 1]


class AlphaBeta(NamedTuple):
    alpha_precision: float
    beta_recall: float
    authenticity: float


def alpha_beta(real: np.ndarray, fake: np.ndarray) -> AlphaBeta:
    """The three scores between real and generated features (N, d), each in [0, 1] for authenticity and
    <= 1 for the integrated precision and recall (1: the supports match at every level)."""
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    real_centre, fake_centre = real.mean(axis=0), fake.mean(axis=0)
    real_radii = np.quantile(np.linalg.norm(real - real_centre, axis=1), LEVELS)
    fake_to_real_centre = np.linalg.norm(fake - real_centre, axis=1)
    precision = np.array([(fake_to_real_centre <= r).mean() for r in real_radii])

    real_to_real, _ = _nearest(real, real, k=2)  # k=2: the nearest other real sample
    real_to_fake, nearest_fake = _nearest(fake, real)
    closest_fake_to_centre = np.linalg.norm(fake[nearest_fake] - fake_centre, axis=1)
    fake_radii = np.quantile(closest_fake_to_centre, LEVELS)
    closer = real_to_fake <= real_to_real
    recall = np.array([(closer & (closest_fake_to_centre <= r)).mean() for r in fake_radii])

    fake_to_real, nearest_real = _nearest(real, fake)
    authentic = fake_to_real > real_to_real[nearest_real]
    return AlphaBeta(_integrated(precision), _integrated(recall), float(authentic.mean()))
