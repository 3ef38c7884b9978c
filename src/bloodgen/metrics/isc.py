"""Inception Score (Salimans et al. 2016) from pool3 features and the network's logits layer.

The logits are pool3 @ W' without the bias, as in the original TensorFlow code (and torch-fidelity's
"logits_unbiased"); the score is exp(E_x KL(p(y|x) || p(y))) per split, reported as mean and std over
splits. It says nothing about BloodMNIST realism (ImageNet classes), and needs a weights file whose
logits layer is real: `InceptionV3Features.logits_weight()` refuses a zeroed one.
"""

from __future__ import annotations

import numpy as np


def inception_score(features: np.ndarray, logits_weight: np.ndarray, splits: int = 10) -> tuple[float, float]:
    logits = np.asarray(features, dtype=np.float64) @ np.asarray(logits_weight, dtype=np.float64).T
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    scores = []
    for part in np.array_split(log_p, splits):
        log_marginal = np.log(np.exp(part).mean(axis=0))
        scores.append(np.exp((np.exp(part) * (part - log_marginal)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores, ddof=1)) if splits > 1 else 0.0
