"""Precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020).

Each real (or generated) feature gets a ball reaching its k-th nearest neighbour in its own set.
precision: share of generated features inside at least one real ball;
recall: share of real features inside at least one generated ball;
density: mean number of real balls holding a generated feature, divided by k (about 1 for matching
  distributions, more when generated images crowd where real ones are dense);
coverage: share of real balls holding at least one generated feature.

Published figures use two definitions, so both are computed from the same distances:
- precision/recall: Kynkäänniemi's own code, k=3 (`nearest_k_pr`), closed balls (distance <= radius);
- precision_prdc/recall_prdc, density, coverage: the `prdc` library (clovaai/generative-evaluation-prdc,
  Naeem's code, what most papers that report density/coverage ran), k=5 (`nearest_k_dc`), open balls
  (distance < radius). Open balls keep density at 1 for identical sets: with closed ones every k-th
  neighbour sitting exactly on a radius would be counted too.
The distance matrices are computed in row blocks, so memory stays O(block x N) at any N.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_BLOCK = 2048


class PRDC(NamedTuple):
    """The six figures: k=3 closed-ball precision/recall and the prdc library's k=5 open-ball four."""

    precision: float
    recall: float
    precision_prdc: float
    recall_prdc: float
    density: float
    coverage: float


def _squared_distances(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    return np.maximum(a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T), 0.0)


def _kth_neighbour_sq(x: np.ndarray, x_sq: np.ndarray, ks: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Squared distance from each row to its k-th nearest other row, for each k in ks."""
    # Position k of the partitioned row is the (k+1)-th smallest: the point itself is at distance 0.
    radii = {k: np.empty(len(x), dtype=x.dtype) for k in ks}
    for start in range(0, len(x), _BLOCK):
        part = np.partition(_squared_distances(x[start:start + _BLOCK], x_sq[start:start + _BLOCK], x, x_sq),
                            sorted(ks), axis=1)
        for k in ks:
            radii[k][start:start + _BLOCK] = part[:, k]
    return radii


def prdc(real: np.ndarray, fake: np.ndarray, nearest_k_pr: int = 3, nearest_k_dc: int = 5) -> PRDC:
    """The six figures for features (N, d) and (M, d); needs N and M larger than both k."""
    k_pr, k_dc = nearest_k_pr, nearest_k_dc
    if min(len(real), len(fake)) <= max(k_pr, k_dc):
        raise ValueError(f"precision/recall/density/coverage need more than {max(k_pr, k_dc)} images per set, "
                         f"got {len(real)} and {len(fake)}")
    # Distances do not change under a shift; centring first keeps float32 |a|^2 + |b|^2 - 2ab accurate.
    centre = np.asarray(real, dtype=np.float64).mean(axis=0)
    r = (np.asarray(real, dtype=np.float64) - centre).astype(np.float32)
    f = (np.asarray(fake, dtype=np.float64) - centre).astype(np.float32)
    r_sq, f_sq = np.einsum("ij,ij->i", r, r), np.einsum("ij,ij->i", f, f)
    real_radii = _kth_neighbour_sq(r, r_sq, (k_pr, k_dc))
    fake_radii = _kth_neighbour_sq(f, f_sq, (k_pr, k_dc))

    fake_in_real = np.zeros(len(f), dtype=bool)
    fake_in_real_open = np.zeros(len(f), dtype=bool)
    real_balls_per_fake = np.zeros(len(f), dtype=np.int64)
    real_in_fake = np.zeros(len(r), dtype=bool)
    real_in_fake_open = np.zeros(len(r), dtype=bool)
    real_covered = np.zeros(len(r), dtype=bool)
    for start in range(0, len(r), _BLOCK):
        stop = start + _BLOCK
        d = _squared_distances(r[start:stop], r_sq[start:stop], f, f_sq)
        inside_dc = d < real_radii[k_dc][start:stop, None]
        fake_in_real |= (d <= real_radii[k_pr][start:stop, None]).any(axis=0)
        fake_in_real_open |= inside_dc.any(axis=0)
        real_balls_per_fake += inside_dc.sum(axis=0)
        real_in_fake[start:stop] = (d <= fake_radii[k_pr][None, :]).any(axis=1)
        real_in_fake_open[start:stop] = (d < fake_radii[k_dc][None, :]).any(axis=1)
        real_covered[start:stop] = inside_dc.any(axis=1)
    return PRDC(precision=float(fake_in_real.mean()), recall=float(real_in_fake.mean()),
                precision_prdc=float(fake_in_real_open.mean()), recall_prdc=float(real_in_fake_open.mean()),
                density=float(real_balls_per_fake.sum() / (k_dc * len(f))), coverage=float(real_covered.mean()))
