"""The AE-CFE autoencoder and its losses.

An encoder of 6 linear layers with GroupNorm takes the cell's feature vector h down to a bottleneck of b
dimensions; a mirrored decoder rebuilds h, and an image decoder draws the cell from the rebuilt h, so
the bottleneck must keep what the picture needs. The loss is MSE on the (standardised) features plus
(1 - SSIM) on the image, or MSE on both (the study's MSE-vs-SSIM comparison). The widths shrink
geometrically from h to b: the study fixes the depth, not the widths.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import nn

LAYERS = 6
IMAGE_SIZE = 28


def widths(in_dim: int, bottleneck: int, layers: int = LAYERS) -> list[int]:
    """in_dim, then each layer's output width, ending at the bottleneck."""
    ratio = bottleneck / in_dim
    return [in_dim] + [max(bottleneck, round(in_dim * ratio ** (i / layers))) for i in range(1, layers)] + [bottleneck]


def _groups(width: int) -> int:
    return math.gcd(width, 8)


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers along `sizes`, each but the last followed by GroupNorm and SiLU."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.GroupNorm(_groups(b), b), nn.SiLU()]
    return nn.Sequential(*layers)


def _image_decoder(in_dim: int) -> nn.Sequential:
    """h -> a (3, 28, 28) image in [0, 1]: 7 x 7 features upsampled twice."""
    return nn.Sequential(
        nn.Linear(in_dim, 64 * 7 * 7), nn.SiLU(), nn.Unflatten(1, (64, 7, 7)),
        nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.GroupNorm(8, 32), nn.SiLU(),
        nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.GroupNorm(8, 16), nn.SiLU(),
        nn.Conv2d(16, 3, 3, padding=1), nn.Sigmoid())


class CellAutoencoder(nn.Module):
    """h (N, in_dim) -> bottleneck z (N, b), rebuilt h (N, in_dim), image (N, 3, 28, 28). The features are
    standardised with the source training set's mean and std, kept as buffers so the weights carry them."""

    def __init__(self, in_dim: int, bottleneck: int):
        super().__init__()
        sizes = widths(in_dim, bottleneck)
        self.encoder = _mlp(sizes)
        self.decoder = _mlp(sizes[::-1])
        self.image_decoder = _image_decoder(in_dim)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))

    def fit_scale(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(0))
        # The floor keeps a feature that is constant in the source (a black border of the cell view) from
        # being scaled up a millionfold in a target domain where it varies.
        self.std.copy_(features.std(0).clamp_min(1e-2))

    def standardise(self, h: torch.Tensor) -> torch.Tensor:
        return (h - self.mean) / self.std

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.standardise(h))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encode(h)
        rebuilt = self.decoder(z)
        return z, rebuilt, self.image_decoder(rebuilt)


def reconstruction_loss(model: CellAutoencoder, h: torch.Tensor, images: torch.Tensor, rebuilt: torch.Tensor,
                        drawn: torch.Tensor, image_loss: str) -> tuple[torch.Tensor, dict[str, float]]:
    """Feature MSE plus the image term; images are float (N, 3, 28, 28) in [0, 1]. Returns the loss and
    its parts for the log."""
    features = F.mse_loss(rebuilt, model.standardise(h))
    if image_loss == "ssim":
        image = 1 - ssim(drawn, images, data_range=1.0, size_average=True, win_size=7)
    else:
        image = F.mse_loss(drawn, images)
    return features + image, {"feature_mse": features.item(), f"image_{image_loss}": image.item()}
