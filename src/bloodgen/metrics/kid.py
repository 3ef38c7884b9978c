"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel.

k(x, y) = (x.y / d + 1)^3, estimated on random subsets (as in the original code and torch-fidelity:
100 subsets of 1000 images by default) and reported as the mean and std over subsets. The estimator is
unbiased, so two draws of one distribution give values scattered around 0, negative ones included.
"""

from __future__ import annotations

import numpy as np


def _polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # float32 products (fast BLAS) made float64 before the cube and the sums, where precision matters.
    gram = (a @ b.T).astype(np.float64)
    return (gram / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equally sized sets under the polynomial kernel (diagonals of Kxx, Kyy left out)."""
    m = len(x)
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid(real: np.ndarray, fake: np.ndarray, rng: np.random.Generator, n_subsets: int = 100,
        subset_size: int = 1000) -> tuple[float, float]:
    """KID mean and std (ddof=1, 0 for one subset) over `n_subsets` subsets of min(subset_size, N_real, N_fake)
    images each."""
    real = np.asarray(real, dtype=np.float32)
    fake = np.asarray(fake, dtype=np.float32)
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(real)} and {len(fake)}")
    if m == len(real) == len(fake):
        n_subsets = 1  # every "subset" would be both whole sets: one value, no spread
    values = np.array([
        mmd2_unbiased(real[rng.choice(len(real), m, replace=False)], fake[rng.choice(len(fake), m, replace=False)])
        for _ in range(n_subsets)
    ])
    return float(values.mean()), float(values.std(ddof=1)) if n_subsets > 1 else 0.0
