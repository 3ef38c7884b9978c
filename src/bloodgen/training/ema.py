"""Exponential moving average of a network's weights, the weights every family samples with."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen fp32 copy updated as ema += (1 - d) * (w - ema) after every optimiser step.

    The decay ramps up as min(decay, (1 + t) / (10 + t)), so the average is not dominated by the
    random initial weights in short runs (the quick presets) while long runs get the full decay.
    Buffers (e.g. spectral-norm vectors) are copied, not averaged.
    """

    def __init__(self, network: nn.Module, decay: float):
        self.decay = decay
        self.network = copy.deepcopy(network).float().eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, network: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for ema_p, p in zip(self.network.parameters(), network.parameters()):
            ema_p.lerp_(p.detach().float(), 1 - d)
        for ema_b, b in zip(self.network.buffers(), network.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.network.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.network.load_state_dict(state)
