"""The random forest on cell features: the AE-CFE study's classifier, trained on one domain's labelled
features and scored on every domain's test cells (accuracy and balanced accuracy over forest seeds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from bloodgen.metrics.records import Figure

TREES = 100  # scikit-learn's default forest


@dataclass(frozen=True)
class ProbeScores:
    """One test set's scores over the forest seeds."""

    accuracy: Figure
    balanced_accuracy: Figure

    def to_json(self) -> dict:
        return {"accuracy": self.accuracy.to_json(), "balanced_accuracy": self.balanced_accuracy.to_json()}

    @classmethod
    def from_json(cls, record: dict) -> ProbeScores:
        return cls(Figure.from_json(record["accuracy"]), Figure.from_json(record["balanced_accuracy"]))


def forest_probe(train: tuple[np.ndarray, np.ndarray], tests: dict[str, tuple[np.ndarray, np.ndarray]],
                 seeds: int = 5, trees: int = TREES) -> dict[str, ProbeScores]:
    """A forest per seed fitted on `train` (features, labels), scored on each named test set."""
    per_seed: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in tests}
    for seed in range(seeds):
        forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=1).fit(*train)
        for name, (features, labels) in tests.items():
            per_seed[name].append((labels, forest.predict(features)))
    return scores_over_seeds(per_seed)


def scores_over_seeds(per_seed: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> dict[str, ProbeScores]:
    """Each named test set's (labels, predictions) of every seed, as accuracy and balanced accuracy over seeds."""
    return {name: ProbeScores(Figure.of([float(accuracy_score(y, p)) for y, p in pairs]),
                              Figure.of([float(balanced_accuracy_score(y, p)) for y, p in pairs]))
            for name, pairs in per_seed.items()}
