"""The classifier training recipe, kept free of torch so `--help` can show its defaults instantly."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ClassifierRecipe:
    """How a classifier is trained. Every field is part of the cache key."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: bool = True  # random flips/rot90: label-preserving for blood-cell crops
    label_smoothing: float = 0.0
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]
