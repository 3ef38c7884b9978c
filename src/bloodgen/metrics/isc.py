"""Inception Score (Salimans et al. 2016) from pool3 features and the network's logits layer, and the same
score from any classifier's class probabilities.

The logits are pool3 @ W' without the bias, as in the original TensorFlow code (and torch-fidelity's
"logits_unbiased"); the score is exp(E_x KL(p(y|x) || p(y))) per split, reported as mean and std over
splits. With ImageNet's classes it says nothing about BloodMNIST realism, and it needs a weights file whose
logits layer is real: `InceptionV3Features.logits_weight()` refuses a zeroed one. With a BloodMNIST
classifier's probabilities (`classifier_score`) it reads as "confidently one of the 8 types, all types
present": at most 8.
"""

from __future__ import annotations

import numpy as np


def score_from_log_probabilities(log_p: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) of (N, C) log-probabilities, mean and std over `splits` parts."""
    scores = []
    for part in np.array_split(np.asarray(log_p, dtype=np.float64), splits):
        log_marginal = np.log(np.exp(part).mean(axis=0))
        scores.append(np.exp((np.exp(part) * (part - log_marginal)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores, ddof=1)) if splits > 1 else 0.0


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def inception_score(features: np.ndarray, logits_weight: np.ndarray, splits: int = 10) -> tuple[float, float]:
    logits = np.asarray(features, dtype=np.float64) @ np.asarray(logits_weight, dtype=np.float64).T
    return score_from_log_probabilities(log_softmax(logits), splits)


def classifier_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """The Inception Score's formula on a domain classifier's logits (N, C)."""
    return score_from_log_probabilities(log_softmax(logits), splits)
