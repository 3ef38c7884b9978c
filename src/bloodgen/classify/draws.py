"""The diffusion classifier's decisions as arithmetic on its draws, and their replay (CytoDiffusion's Table 4
and Fig. 7 without new network evaluations).

A draw of an image is one (t, eps); every candidate class gets an unweighted error on it. All the
classifier decides afterwards is computed from those numbers: the weight of each time step, how a draw's
errors are combined, how many draws count, and when a class is pruned. A run that keeps its draws can
therefore be replayed under other settings. Replaying the pruning of stored unpruned draws gives what a
pruned run with the same seed gives: an image's (t, eps) sequence does not depend on which classes are
still active, and pruning only stops scoring classes.

Kept free of torch: the live classifier (classify.diffusion) and the replays share these functions.
"""

from __future__ import annotations

import re

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax
from scipy.stats import rankdata, ttest_rel

from bloodgen.errors import UserError

# CytoDiffusion's fit of the error scale over t in [0, 1]; the error at t is weighted by 1 / f(t).
PAPER_POLYNOMIAL = (0.927, 9.837, -4.684, 6.019, -9.340)
MIN_SNR_GAMMA = 5.0
AGGREGATIONS = ("mean", "normalised", "rank")
_EXP = re.compile(r"^exp-(\d+(?:\.\d+)?)$")


def draw_weights(weighting: str, t: np.ndarray, alphas_cumprod: np.ndarray, timesteps: int) -> np.ndarray:
    """w(t) (float64, t's shape): uniform, snr, min-snr, paper (1 / the paper's polynomial of t / (T - 1)) or exp-K
    (exp(-K t / (T - 1)), T the number of time steps)."""
    t = np.asarray(t)
    abar = np.asarray(alphas_cumprod, dtype=np.float64)[t]
    snr = abar / (1 - abar)
    if weighting == "uniform":
        return np.ones_like(snr)
    if weighting == "snr":
        return snr
    if weighting == "min-snr":
        return np.minimum(snr, MIN_SNR_GAMMA) / snr
    if weighting == "paper":
        return 1.0 / np.polynomial.Polynomial(PAPER_POLYNOMIAL)(t / (timesteps - 1))
    match = _EXP.match(weighting)
    if match:
        return np.exp(-float(match.group(1)) * t / (timesteps - 1))
    raise UserError(f"unknown weighting {weighting!r}: uniform, snr, min-snr, paper or exp-K (K a number)")


def prune_classes(errors: np.ndarray, active: np.ndarray, p_value: float) -> np.ndarray:
    """The active mask after dropping classes whose paired errors are significantly above the best class's.

    errors: (C, n) per-draw errors (only rows of active classes are read); active: (C,) bool.
    """
    idx = np.flatnonzero(active)
    best = idx[np.argmin(errors[idx].mean(1))]
    others = idx[idx != best]
    keep = active.copy()
    if len(others):
        # One-sided: is class c's error larger than the best's, draw by draw?
        p = ttest_rel(errors[others], np.broadcast_to(errors[best], errors[others].shape), axis=1,
                      alternative="greater").pvalue
        keep[others[np.nan_to_num(p, nan=1.0) < p_value]] = False
    return keep


def paired_gaps(errors: np.ndarray, class_draws: np.ndarray, classes: list[int]) -> np.ndarray:
    """(m, C) mean error difference of each class to the winner, over the draws the class took part in.

    Errors swing by orders of magnitude with t, so means over different draws (a class pruned after 20
    draws, the winner after 200) cannot be compared; differences on the same draws can. The winner is
    the lowest mean among the classes that took part in every draw (those never pruned).
    """
    m = len(errors)
    gaps = np.full((m, class_draws.shape[1]), np.nan)
    for i in range(m):
        n = class_draws[i]
        full = [c for c in classes if n[c] == n.max()]
        winner = full[int(np.argmin([errors[i, c, :n[c]].mean() for c in full]))]
        for c in classes:
            gaps[i, c] = (errors[i, c, :n[c]] - errors[i, winner, :n[c]]).mean()
        gaps[i, winner] = 0.0
    return gaps


def winners(gaps: np.ndarray) -> np.ndarray:
    """(N,) the class whose paired gap is zero: the winner of `paired_gaps`."""
    return np.nanargmin(np.where(gaps == 0, 0.0, np.nan), 1)


def replay_pruning(weighted: np.ndarray, classes: list[int], min_draws: int, p_value: float,
                   draws_per_round: int) -> tuple[np.ndarray, np.ndarray]:
    """(predictions (N,), class_draws (N, C)) of a pruned run with at most D draws, from weighted errors (N, C, D)
    of all classes on all D draws: the t-test after every round of `draws_per_round` once `min_draws` are made,
    as the live run. The draws must have been made in rounds of the same size (they decide the draw sequence)."""
    n, n_classes, last = weighted.shape
    class_draws = np.zeros((n, n_classes), dtype=np.int64)
    for i in range(n):
        active = np.zeros(n_classes, dtype=bool)
        active[classes] = True
        done = 0
        while True:
            done = min(done + draws_per_round, last)
            class_draws[i, active] = done
            if done >= min_draws:
                active = prune_classes(weighted[i, :, :done], active, p_value)
            if done >= last or active.sum() == 1:
                break
    return winners(paired_gaps(weighted, class_draws, classes)), class_draws


def combine(weighted: np.ndarray, classes: list[int], aggregation: str) -> np.ndarray:
    """(N, C, D) scores of each class per draw under `aggregation` (lower is better; NaN off the candidates):
    mean: the weighted error itself; normalised: divided by the draw's mean over the candidates, so every
    draw counts alike whatever its t; rank: the class's rank among the candidates within the draw."""
    scores = np.full_like(weighted, np.nan, dtype=np.float64)
    own = weighted[:, classes]
    if aggregation == "mean":
        scores[:, classes] = own
    elif aggregation == "normalised":
        scores[:, classes] = own / own.mean(1, keepdims=True)
    elif aggregation == "rank":
        scores[:, classes] = rankdata(own, axis=1)
    else:
        raise UserError(f"unknown aggregation {aggregation!r}: choose from {', '.join(AGGREGATIONS)}")
    return scores


def predictions_by_draws(scores: np.ndarray, counts: list[int]) -> np.ndarray:
    """(len(counts), N) the lowest mean score over each image's first n draws, for each n in counts."""
    running = np.cumsum(np.nan_to_num(scores, nan=np.inf), axis=2)
    return np.stack([np.argmin(running[:, :, n - 1], axis=1) for n in counts])


def bin_features(raw: np.ndarray, t: np.ndarray, classes: list[int], timesteps: int, bins: int) -> np.ndarray:
    """(N, C, bins) per image and class: the mean over the draws whose t falls in each of `bins` equal ranges of
    the error minus the draw's mean over the candidates (the paired part); 0 where a range has no draw."""
    centred = np.zeros_like(raw, dtype=np.float64)
    centred[:, classes] = raw[:, classes] - raw[:, classes].mean(1, keepdims=True)
    which = np.minimum(np.asarray(t) * bins // timesteps, bins - 1)  # (N, D)
    onehot = np.eye(bins)[which]  # (N, D, bins)
    counts = onehot.sum(1)  # (N, bins)
    sums = np.einsum("ncd,ndb->ncb", centred, onehot)
    return np.divide(sums, counts[:, None, :], out=np.zeros_like(sums), where=counts[:, None, :] > 0)


def fit_bin_weights(features: np.ndarray, labels: np.ndarray, classes: list[int], l2: float = 1e-3) -> np.ndarray:
    """(bins,) beta maximising the log-likelihood of `labels` under softmax over the candidates of
    -sum_b beta_b f_cb (features (N, C, bins), each bin standardised), with an L2 penalty: the logistic
    weighting of the draws' time ranges. Returned on the standardised scale times 1 / std (raw scale)."""
    known = np.isin(labels, classes)  # an image of a class the model cannot score teaches nothing here
    scale = features[known][:, classes].std(axis=(0, 1))
    scale[scale == 0] = 1.0
    f = features[known][:, classes] / scale
    target = np.searchsorted(classes, np.asarray(labels)[known])

    def loss(beta: np.ndarray) -> tuple[float, np.ndarray]:
        logp = log_softmax(-f @ beta, axis=1)  # (N, C')
        p = np.exp(logp)
        nll = -logp[np.arange(len(target)), target].mean() + l2 * beta @ beta
        # d(-log p_y)/d beta = f_y - sum_c p_c f_c
        grad = (f[np.arange(len(target)), target] - np.einsum("nc,ncb->nb", p, f)).mean(0) + 2 * l2 * beta
        return float(nll), grad

    beta = minimize(loss, np.ones(f.shape[2]), jac=True, method="L-BFGS-B").x
    return beta / scale


def cross_fitted_predictions(features: np.ndarray, labels: np.ndarray, classes: list[int], folds: int = 5,
                             seed: int = 0) -> np.ndarray:
    """(N,) each image classified by bin weights fitted on the other folds (no image scores its own fit)."""
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    fold = np.empty(len(labels), dtype=np.int64)
    fold[order] = np.arange(len(labels)) % folds
    predictions = np.empty(len(labels), dtype=np.int64)
    for k in range(folds):
        train, test = fold != k, fold == k
        beta = fit_bin_weights(features[train], labels[train], classes)
        logits = -features[test][:, classes] @ beta
        predictions[test] = np.asarray(classes)[logits.argmax(1)]
    return predictions
