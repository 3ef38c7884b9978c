"""A classifier's scores on labelled images, the record every classification report stores. Kept free of
torch so that records and reports read it without loading a network."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ClassificationScores:
    """Accuracy, balanced accuracy, macro precision/recall/F1, one-vs-rest AUC (None where a class is missing
    among the true labels, or where the scores are one-hot), per-class recall and the confusion matrix
    (true x predicted). Each field is its JSON key."""

    accuracy: float
    balanced_accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    auc_ovr: float | None
    per_class_recall: list[float]
    confusion_matrix: list[list[int]]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> ClassificationScores:
        """The scores of a stored report; other keys stored beside them (seconds, sizes) are ignored."""
        return cls(**{f.name: record[f.name] for f in fields(cls)})
