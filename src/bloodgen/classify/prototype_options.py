"""Prototype-learning options and the record saved with learned prototypes, free of torch so `--help`
stays instant and the IMPROVE comparison reads the record without it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bloodgen.classify.recipe import ClassifierRecipe
from bloodgen.errors import UserError


@dataclass(frozen=True)
class PrototypeOptions:
    """How prototypes are learned; all of it is saved with them."""

    per_class: int = 1  # K prototypes per class
    dim: int = 64  # prototype (and diffusion class-embedding) dimension
    gamma: float = 1.0  # distance temperature of the distance-based cross-entropy
    lam: float = 0.01  # weight of the prototype loss
    hidden: int = 256  # width of the projection head's hidden layer
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0

    def check(self) -> None:
        for name in ("per_class", "dim", "hidden", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"prototype option {name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("gamma", "lr"):
            if not getattr(self, name) > 0:
                raise UserError(f"prototype option {name} must be > 0, got {getattr(self, name)}")
        if not self.lam >= 0:
            raise UserError(f"prototype option lambda must be >= 0, got {self.lam}")


@dataclass(frozen=True)
class PrototypeEncoder:
    """The frozen encoder the prototypes were learned on, as prototypes.json's "encoder" records it."""

    spec: str  # 'reference', 'inception', 'clip:ARCH:WEIGHTS-FILE-NAME' or 'module:function'
    feature_dim: int
    classifier_recipe: ClassifierRecipe | None  # the reference classifier's recipe when one was given
    trained_on: dict[str, Any] | None  # what the encoder saw: a data file's provenance, ImageNet, or unknown

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "PrototypeEncoder":
        recipe = record["classifier_recipe"]
        return cls(record["spec"], record["feature_dim"], None if recipe is None else ClassifierRecipe(**recipe),
                   record["trained_on"])


@dataclass(frozen=True)
class EpochLog:
    """One epoch of prototype learning."""

    epoch: int
    loss: float  # mean training loss over the epoch's batches
    val_accuracy: float


@dataclass(frozen=True)
class PrototypeRecord:
    """prototypes.json, beside the prototypes file: how they were learned and how well they classify. The
    JSON keys are the field names, in this order."""

    prototypes_shape: list[int]  # (classes, K, dim)
    train_accuracy: float
    val_accuracy: float  # of the kept epoch, the best on val
    test_accuracy: float
    options: PrototypeOptions
    encoder: PrototypeEncoder
    data: dict[str, Any]  # the data file's provenance, with the train images used and the cap per class
    history: list[EpochLog]
    seconds: float
    environment: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "PrototypeRecord":
        return cls(**{**record, "options": PrototypeOptions(**record["options"]),
                      "encoder": PrototypeEncoder.from_json(record["encoder"]),
                      "history": [EpochLog(**epoch) for epoch in record["history"]]})
