"""Correctness against confidence as a psychometric function (CytoDiffusion's eq. 9), fitted with psignifit.

psi(x) = gamma + (1 - gamma - lambda) * S(x; threshold, width): gamma, the guess rate, is fixed at 1 / the
number of classes (an n-alternative forced choice); lambda, the lapse rate, has psignifit's Beta(1, 10) prior,
the paper's; S is psignifit's default cumulative normal; the threshold is the confidence where S = 1/2, the
width the distance from S = 0.05 to S = 0.95; the stimulus range, which sets psignifit's priors, is the
possible range of a top-class probability, [1 / classes, 1]. Images are grouped into bins of equal count by confidence
(ties split by order), each bin a (mean confidence, correct, trials) row, as psignifit expects.
"""

from __future__ import annotations

import warnings

import numpy as np
import psignifit
from scipy.stats import norm

from bloodgen.classify.diffusion_results import PsychometricFit

BINS = 25


def binned(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> np.ndarray:
    """(k, 3) rows of (mean confidence, number correct, number of images), k = min(bins, N) equal-count bins."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
    groups = np.array_split(np.argsort(confidence, kind="stable"), min(bins, len(confidence)))
    return np.array([[confidence[g].mean(), correct[g].sum(), len(g)] for g in groups])


def fit_psychometric(confidence: np.ndarray, correct: np.ndarray, n_classes: int,
                     bins: int = BINS) -> PsychometricFit | None:
    """The fitted function (MAP estimates, 95 % credible intervals) and the bins it was fitted to; None when every
    bin has the same mean confidence (a saturated classifier): no sigmoid can be placed then."""
    data = binned(confidence, correct, bins)
    if np.ptp(data[:, 0]) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # psignifit's advice on stimulus ranges and bin sizes: the bins are ours
        # The top-class probability lies in [1 / classes, 1] whatever the data: a fixed range keeps the priors
        # the same for every classifier and allows a fit when the confidences barely spread.
        result = psignifit.psignifit(data, experiment_type=f"{n_classes}AFC", stimulus_range=(1 / n_classes, 1.0),
                                     verbose=False)
    estimate, intervals = result.parameter_estimate_MAP, result.confidence_intervals

    def ci(name: str) -> list[float]:
        return [float(v) for v in intervals[name]["0.95"]]

    return PsychometricFit(threshold=float(estimate["threshold"]), threshold_ci95=ci("threshold"),
                           width=float(estimate["width"]), width_ci95=ci("width"), lapse=float(estimate["lambda"]),
                           lapse_ci95=ci("lambda"), guess=float(estimate["gamma"]), sigmoid="norm",
                           bins=data.tolist())


def curve(fit: PsychometricFit, x: np.ndarray) -> np.ndarray:
    """psi(x) of a fit: S is the cumulative normal whose 5-95 % range is the width (psignifit's 'norm')."""
    sigma = fit.width / (2 * norm.ppf(0.95))
    return fit.guess + (1 - fit.guess - fit.lapse) * norm.cdf((np.asarray(x) - fit.threshold) / sigma)
