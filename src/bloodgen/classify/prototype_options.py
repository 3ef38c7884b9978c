"""Prototype-learning options, free of torch so `--help` stays instant."""

from __future__ import annotations

from dataclasses import dataclass

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
