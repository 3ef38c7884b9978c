"""The classifier training recipe, kept free of torch so `--help` can show its defaults instantly."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ClassifierRecipe:
    """How a classifier is trained. Every field is part of the cache key.

    The defaults are the MedMNIST v2 benchmark's ResNet-18 (width 64) at a GPU budget; `RECIPES`
    names them and a CPU-sized variant.
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: bool = True  # random flips/rot90: label-preserving for blood-cell crops
    label_smoothing: float = 0.0
    seed: int = 0
    width: int = 64  # channels of the first stage; 64 is the standard ResNet-18

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


# "full": ResNet-18 as benchmarked by MedMNIST v2. "cpu": the same network at half width for 6 epochs,
# because one full-width training step at batch 128 takes ~8 s on 2 CPU cores (an epoch ~12 min).
RECIPES = {
    "full": ClassifierRecipe(),
    "cpu": ClassifierRecipe(epochs=6, width=32),
}


def add_recipe_argument(parser, role: str) -> None:
    """The --classifier-recipe option of every command that trains a ResNet-18; `role` says what it trains."""
    parser.add_argument("--classifier-recipe", choices=tuple(RECIPES), default=None,
                        help=f"{role} (default: full with a GPU, cpu without)")
