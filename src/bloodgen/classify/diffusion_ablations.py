"""classify-eval's ablations part: the accuracy part's unpruned draws, stored once in parts/draws.npz, replayed
under other error weightings, aggregations, numbers of draws and pruning settings (CytoDiffusion's Table 4 and
Fig. 7). The replays cost no network evaluation (bloodgen.classify.draws says why they are exact)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from bloodgen.classify.diffusion_results import AblationsPart, PruningScore, ReplayScore
from bloodgen.classify.draws import (AGGREGATIONS, bin_features, combine, cross_fitted_predictions, draw_weights,
                                     fit_bin_weights, predictions_by_draws, replay_pruning)
from bloodgen.errors import UserError
from bloodgen.provenance import atomic_path
from bloodgen.report.plots import pyplot

REPLAY_WEIGHTINGS = ("uniform", "snr", "min-snr", "paper", "exp-1", "exp-3", "exp-10")
DRAW_COUNTS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
PRUNE_MIN_DRAWS = (10, 20, 50)
PRUNE_P_VALUES = (0.05, 0.01, 2e-3, 2e-4)
TIME_BINS = 10
FIGURE = "figures/ablations.png"


def save_draws(path: Path, result, labels: np.ndarray, test_indices: np.ndarray, alphas_cumprod: np.ndarray,
               timesteps: int) -> None:
    """parts/draws.npz: an unpruned ClassifyResult's draws (kept with keep_draws), the options that made them
    (draws per round decides the draw sequence a replayed pruning must follow) and what replays need."""
    if result.draw_errors is None:
        raise ValueError("the result holds no draws: classify with keep_draws=True")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, errors=result.draw_errors, timesteps=result.draw_timesteps, labels=labels,
                            test_indices=test_indices, candidates=np.asarray(result.candidates),
                            alphas_cumprod=np.asarray(alphas_cumprod, dtype=np.float64), n_timesteps=timesteps,
                            options=np.array(json.dumps(result.options, sort_keys=True)))


def _score(labels: np.ndarray, predictions: np.ndarray, evaluations: float) -> ReplayScore:
    return ReplayScore(accuracy=float(accuracy_score(labels, predictions)),
                       balanced_accuracy=float(balanced_accuracy_score(labels, predictions)),
                       evaluations_per_image=float(evaluations))


def replay_ablations(draws_path: Path, out: Path, weighting: str) -> AblationsPart:
    """Every replay of the stored draws, the pruning ones with `weighting`; the figure goes to out/FIGURE."""
    if not draws_path.is_file():
        raise UserError(f"the ablations part replays the accuracy part's stored draws: run --parts accuracy "
                        f"first ({draws_path} not found; results made before draws were stored need it again)")
    with np.load(draws_path) as f:
        raw, t, labels = f["errors"], f["timesteps"], f["labels"]
        classes, abar, n_t = f["candidates"].tolist(), f["alphas_cumprod"], int(f["n_timesteps"])
        draws_per_round = json.loads(str(f["options"]))["draws_per_round"]
    n, _, stored = raw.shape
    if (t < 0).any() or np.isnan(raw[:, classes]).any():
        raise UserError(f"{draws_path} holds a pruned run's draws: only unpruned draws can be replayed")
    n_classes = len(classes)
    counts = [c for c in DRAW_COUNTS if c < stored] + [stored]
    table, curves = {}, {}
    for w in REPLAY_WEIGHTINGS:  # one weighting's errors at a time: each is the size of the stored draws
        weighted = raw * draw_weights(w, t, abar, n_t)[:, None, :]
        table[w] = {a: _score(labels, predictions_by_draws(combine(weighted, classes, a), [stored])[0],
                              n_classes * stored) for a in AGGREGATIONS}
        curves[w] = [float(accuracy_score(labels, p)) for p in predictions_by_draws(weighted, counts)]
    features = bin_features(raw, t, classes, n_t, TIME_BINS)
    fitted = _score(labels, cross_fitted_predictions(features, labels, classes), n_classes * stored)
    beta = fit_bin_weights(features, labels, classes)
    pruning = []
    live = raw * draw_weights(weighting, t, abar, n_t)[:, None, :]
    for min_draws in (m for m in PRUNE_MIN_DRAWS if m <= stored):
        for p_value in PRUNE_P_VALUES:
            predictions, class_draws = replay_pruning(live, classes, min_draws, p_value, draws_per_round)
            score = _score(labels, predictions, class_draws.sum(1).mean())
            pruning.append(PruningScore(**asdict(score), min_draws=min_draws, p_value=p_value))
    part = AblationsPart(n_images=int(n), stored_draws=int(stored), weightings=table, fitted=fitted,
                         fitted_bins=TIME_BINS, fitted_bin_weights=(beta / np.abs(beta).max()).tolist(),
                         draw_counts=counts, accuracy_by_draws=curves, weighting=weighting,
                         draws_per_round=draws_per_round, pruning=pruning, figures={"ablations": FIGURE})
    _plot(part, table[weighting]["mean"], abar, n_t, out / FIGURE)
    return part


def _plot(part: AblationsPart, unpruned: ReplayScore, abar: np.ndarray, n_t: int, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, accuracy in part.accuracy_by_draws.items():
        axes[0].plot(part.draw_counts, 100 * np.asarray(accuracy), marker=".", label=name)
    axes[0].set(xscale="log", xlabel="draws per image (every class scored)", ylabel="accuracy %",
                title="Accuracy against draws, by weighting")
    axes[0].legend(fontsize=7)
    for s in part.pruning:
        axes[1].scatter(s.evaluations_per_image, 100 * s.accuracy, s=14)
        axes[1].annotate(f"{s.min_draws}/{s.p_value:g}", (s.evaluations_per_image, 100 * s.accuracy), fontsize=6)
    axes[1].scatter(unpruned.evaluations_per_image, 100 * unpruned.accuracy, marker="*", s=60, c="k",
                    label="no pruning")
    axes[1].set(xscale="log", xlabel="network evaluations per image", ylabel="accuracy %",
                title=f"Pruning (min draws / p), weighting {part.weighting}")
    axes[1].legend(fontsize=7)
    centres = (np.arange(part.fitted_bins) + 0.5) / part.fitted_bins
    axes[2].bar(centres, part.fitted_bin_weights, width=0.8 / part.fitted_bins, label="fitted (logistic)")
    t = np.arange(n_t)
    for name in ("paper", "uniform"):
        w = draw_weights(name, t, abar, n_t)
        axes[2].plot(t / (n_t - 1), w / np.abs(w).max(), label=f"{name} (scaled)")
    axes[2].set(xlabel="t / T", ylabel="weight (largest = 1)", title="Weight of the error over time")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
