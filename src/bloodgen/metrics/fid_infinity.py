"""FID extrapolated to infinitely many images, FID_inf (Chong & Forsyth, "Effectively Unbiased FID and
Inception Score and where to find them", CVPR 2020).

FID is biased upwards by an amount that shrinks as 1/N, so a figure at N is only comparable with others at
the same N. FID_inf removes the bias: FID is measured on seeded random subsets of m images from both
sides for several m up to N, a line FID(m) = FID_inf + c / m is fitted by least squares, and its
intercept is reported. The paper fits subsets of the generated side against fixed real statistics; here
both sides are drawn at N, so both are subset to m and the fitted slope holds the two sides' bias
together. Subsets run from N/2 to N: below about the feature dimension the covariance is rank-deficient
and the 1/m law no longer holds. Written here because neither pytorch-fid nor torch-fidelity has it.
"""

from __future__ import annotations

import numpy as np

from bloodgen.metrics.fid import fid_from_features

DEFAULT_POINTS = 6
SMALLEST_FRACTION = 0.5


def subset_sizes(n: int, points: int = DEFAULT_POINTS) -> np.ndarray:
    """The distinct subset sizes m, from n * SMALLEST_FRACTION to n (at least 2 images each)."""
    return np.unique(np.linspace(max(2, int(np.ceil(n * SMALLEST_FRACTION))), n, points).round().astype(int))


def fit_intercept(sizes: np.ndarray, values: np.ndarray) -> float:
    """Intercept a of the least-squares line values = a + b / sizes."""
    design = np.stack([np.ones(len(sizes)), 1.0 / np.asarray(sizes, dtype=np.float64)], axis=1)
    (intercept, _), *_ = np.linalg.lstsq(design, np.asarray(values, dtype=np.float64), rcond=None)
    return float(intercept)


def fid_infinity(real: np.ndarray, fake: np.ndarray, rng: np.random.Generator,
                 points: int = DEFAULT_POINTS) -> float:
    """FID_inf of two feature sets of equal size N (the protocol's), from subsets drawn with `rng`."""
    n = min(len(real), len(fake))
    sizes = subset_sizes(n, points)
    if len(sizes) < 2:
        raise ValueError(f"FID_inf needs at least 2 distinct subset sizes; N = {n} is too small")
    values = [fid_from_features(real[rng.choice(len(real), m, replace=False)],
                                fake[rng.choice(len(fake), m, replace=False)]) for m in sizes]
    return fit_intercept(sizes, np.array(values))
