"""The interface every model family implements, and the few pieces the families share.

A family owns its networks, its losses and its sampler; the training loop (`bloodgen.training`) owns
everything else: devices, precision, optimiser steps, gradient clipping, EMA, checkpoints and logs.
So a family module reads top to bottom as "what the networks are, how one step updates them, how
they sample", and a new family is one module plus one line in `registry.py`.
"""

from __future__ import annotations

import abc
import math
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

import torch
from torch import nn

from bloodgen.errors import UserError
from bloodgen.models.config import TrainerConfig
from bloodgen.models.registry import get_spec


class StepContext(Protocol):
    """What a family's `train_step` may ask of the training loop."""

    step: int  # optimiser steps completed before this one

    def update(self, loss: torch.Tensor, optimizer: str) -> None:
        """Backward `loss`, clip, step the named optimiser and its LR schedule (precision and DDP handled)."""

    def no_sync(self, network: str) -> AbstractContextManager:
        """Skip DDP's gradient all-reduce for `network` (for gradients that are thrown away)."""


class Family(abc.ABC):
    """A generative model family, configured by a validated config dict (see `bloodgen.models.config`)."""

    # The network that generates images: it gets EMA weights, is sampled from and is exported.
    sampling_network: ClassVar[str]
    # Config keys whose value must be one of a fixed set.
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {}
    # True when some steps leave parameters of a network unused (training it in phases): DDP must then
    # look for them every step, or it waits forever for their gradients.
    ddp_find_unused_parameters: ClassVar[bool] = False

    def __init__(self, name: str, config: dict[str, Any], n_classes: int):
        self.name = name  # the registry name; one class may serve several (gan, cgan)
        self.config = config
        self.n_classes = n_classes

    @property
    def sampler_options(self) -> tuple[str, ...]:
        """The keyword options `sample` accepts beyond labels and noise, as its `FamilySpec` declares them."""
        return tuple(option.name for option in get_spec(self.name).sampler_options)

    @property
    def conditional(self) -> bool:
        return bool(self.config["conditional"])

    def check(self) -> None:
        """Raise `UserError` naming the key for values the types and `choices` cannot catch."""

    @abc.abstractmethod
    def build(self) -> dict[str, nn.Module]:
        """Fresh networks by name; the global torch RNG decides their initial weights."""

    @property
    def trainer(self) -> TrainerConfig:
        """The config's training-loop keys (learning rate, betas, steps, ...)."""
        return TrainerConfig.of(self.config)

    def optimizers(self, networks: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """One Adam per network by default, named after it."""
        t = self.trainer
        return {name: torch.optim.Adam(net.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
                for name, net in networks.items()}

    @abc.abstractmethod
    def train_step(self, networks: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
                   ctx: StepContext) -> dict[str, torch.Tensor]:
        """Update the networks on one batch (x in [-1, 1], NCHW; y class indices); return detached losses."""

    @abc.abstractmethod
    def sample(self, network: nn.Module, labels: torch.Tensor | None, generators: list[torch.Generator],
               on_step: Callable[[], None] | None = None, **options: Any) -> torch.Tensor:
        """Images in [-1, 1] (N, 3, 28, 28), one per generator; sample i draws its noise only from
        generators[i], so a sample does not depend on the batch it was drawn in. Multi-step samplers call
        `on_step` after each of their `sampler_steps(options)` network passes (for progress bars)."""

    def sampler_steps(self, options: dict[str, Any]) -> int:
        """Network passes per `sample` call with these (checked) options."""
        return 1

    def extras(self, network: nn.Module, data, out_dir: Path, seed: int) -> dict[str, Any]:
        """Family-specific outputs written once training ends (figures, probes); returns their figures."""
        return {}

    def check_sampler_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Drop options left as None and reject the ones this family does not know."""
        options = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(options) - set(self.sampler_options))
        if unknown:
            allowed = ", ".join(self.sampler_options) or "none"
            raise UserError(f"model family {self.name!r} has no sampler option(s) {', '.join(unknown)} "
                            f"(its options: {allowed})")
        return options


def randn(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(len(generators), *shape) standard normals; row i comes from generators[i] alone (CPU generators)."""
    rows = [torch.randn(shape, generator=g) for g in generators]
    return torch.stack(rows).to(device)


def norm_groups(channels: int) -> int:
    """GroupNorm groups of about 4-8 channels; always a divisor of `channels`."""
    return math.gcd(32, max(1, channels // 4))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
