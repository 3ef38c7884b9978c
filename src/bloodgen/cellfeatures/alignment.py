"""Domain losses on the bottleneck: what makes the features of two labs' cells alike.

- `mmd`: the AE-CFE study's loss, the distance between the two domains' bottleneck means plus that between
  their covariances (a linear-kernel MMD with a second-moment term);
- `normal`: each domain's bottleneck pulled to a standard normal (mean 0, covariance I), the study's
  "normal distribution" comparison;
- `adversarial`: a domain discriminator on the bottleneck trained through a gradient-reversal layer
  (Ganin and Lempitsky 2015), the study's adversarial comparison.

Each takes the source and target bottlenecks of a batch and returns a scalar to add, times beta.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = z.mean(0)
    centred = z - mean
    return mean, centred.T @ centred / max(len(z) - 1, 1)


def moment_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|mean_a - mean_b|^2 / v + |cov_a - cov_b|_F^2 / (d v^2), over the bottleneck's d dimensions, v being
    the pooled variance per dimension. Divided by v so that shrinking the bottleneck (which the decoder
    undoes for free) cannot lower it: unscaled, an autoencoder drove it to 1e-5 within 200 steps that way."""
    (mean_a, cov_a), (mean_b, cov_b) = _moments(a), _moments(b)
    v = torch.cat([a, b]).var(0).mean().clamp_min(1e-12)
    return (mean_a - mean_b).pow(2).sum() / v + (cov_a - cov_b).pow(2).sum() / (a.shape[1] * v * v)


def normal_distance(z: torch.Tensor) -> torch.Tensor:
    """The moment distance of z to a standard normal."""
    mean, cov = _moments(z)
    eye = torch.eye(z.shape[1], device=z.device, dtype=z.dtype)
    return mean.pow(2).sum() + (cov - eye).pow(2).sum() / z.shape[1]


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class DomainDiscriminator(nn.Module):
    """Which domain a bottleneck came from; its gradient reaches the encoder reversed, so minimising one
    loss trains the discriminator to tell the domains apart and the encoder to hide them."""

    def __init__(self, bottleneck: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(bottleneck, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 1))

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = _Reverse.apply(torch.cat([source, target]))
        truth = torch.cat([torch.ones(len(source)), torch.zeros(len(target))]).to(z)
        return F.binary_cross_entropy_with_logits(self.net(z).squeeze(1), truth)


def alignment_loss(kind: str, source: torch.Tensor, target: torch.Tensor,
                   discriminator: DomainDiscriminator | None = None) -> torch.Tensor:
    if kind == "mmd":
        return moment_distance(source, target)
    if kind == "normal":
        return normal_distance(source) + normal_distance(target)
    if kind == "adversarial":
        return discriminator(source, target)
    return source.new_zeros(())
