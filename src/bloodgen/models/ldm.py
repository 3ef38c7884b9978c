"""Latent diffusion (Rombach et al. 2022): the `ddpm` family run in the 14x14 latent space of an autoencoder.

One run trains both parts, one after the other, on the same batches:

  steps 0 .. ae_steps - 1   the autoencoder alone: 28x28x3 -> 14x14 x latent_channels -> 28x28x3, L1 loss.
                            The encoder ends in a parameter-free layer norm, so every image's latent has
                            mean 0 and variance 1: the scale the noise schedule assumes, with no scale
                            factor to estimate. The decoder reconstructs from latents with Gaussian noise
                            of std `latent_noise` added, which keeps it smooth around the latents the
                            diffusion will produce (which are never exactly an encoder's output).
  steps ae_steps .. steps   the U-Net alone, denoising the frozen encoder's latents of the (augmented)
                            training batch, with everything `ddpm` offers: epsilon/v targets, Min-SNR
                            weighting, class dropout for classifier-free guidance, DDPM/DDIM/DPM samplers.

Sampling runs the reverse process on latents, then one decoder pass. Both parts live in one network
(`LatentDiffusion`), so the EMA, the checkpoint and the export hold the complete model. Its forward
serves both phases, so that under DDP every gradient goes through the wrapper's hooks; each phase leaves
the other part's parameters unused, which DDP is told to expect (`ddp_find_unused_parameters`).

Why a latent model: a 14x14x4 latent has 784 values against an image's 2,352 and the U-Net on it a
quarter of the activations per channel, so a U-Net of twice the width costs about what the pixel model
costs (the issue's "if it wins per CPU-hour"; per-step times in docs/models.md, sample quality at scale
not yet measured).

The latent is 14x14 (one halving), not the 7x7 of a 4x autoencoder: at 28x28 the cells' granules are a
few pixels wide, and a 7x7 latent cannot keep them without an adversarial or perceptual loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bloodgen.data import to_model_range, to_uint8
from bloodgen.models.base import StepContext, norm_groups
from bloodgen.models.config import require
from bloodgen.models.ddpm import DDPM
from bloodgen.models.vae import ResBlock, conv_stage
from bloodgen.report.grid import reconstruction_picks, save_reconstruction_grid

RECONSTRUCTION_L1 = "reconstruction_test_l1"
RECONSTRUCTION_PSNR = "reconstruction_test_psnr_db"


class Autoencoder(nn.Module):
    """28x28x3 <-> 14x14 x latent_channels; the latent is layer-normalised per image."""

    def __init__(self, channels: int, latent_channels: int, blocks: int):
        super().__init__()
        c1, c2 = channels, 2 * channels
        self.encoder = nn.Sequential(
            *conv_stage(3, c1, blocks, None), *conv_stage(c1, c2, blocks, "down"),
            nn.GroupNorm(norm_groups(c2), c2), nn.SiLU(), nn.Conv2d(c2, latent_channels, 1))
        self.decoder = nn.Sequential(
            *conv_stage(latent_channels, c2, blocks, None), ResBlock(c2), *conv_stage(c2, c1, blocks, "up"),
            nn.GroupNorm(norm_groups(c1), c1), nn.SiLU(), nn.Conv2d(c1, 3, 3, padding=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        return F.layer_norm(h, h.shape[1:])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


class LatentDiffusion(nn.Module):
    def __init__(self, autoencoder: Autoencoder, unet: nn.Module):
        super().__init__()
        self.autoencoder, self.unet = autoencoder, unet

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, class_labels: torch.Tensor | None = None,
                latent_noise: float = 0.0) -> torch.Tensor:
        """Without t: the reconstruction of images x through latents perturbed by `latent_noise`.
        With t: the U-Net's prediction for the noisy latents x at time t."""
        if t is None:
            z = self.autoencoder.encode(x)
            return self.autoencoder.decode(z + latent_noise * torch.randn_like(z))
        return self.unet(x, t, class_labels=class_labels).sample


class LDM(DDPM):
    sampling_network = "ldm"
    levels = (14, 7)
    clip_sample = False  # latents are unit-variance, not bounded to [-1, 1]
    ddp_find_unused_parameters = True

    @property
    def sample_channels(self) -> int:
        return self.config["latent_channels"]

    def check(self) -> None:
        super().check()
        c = self.config
        for key in ("rotate", "colour_jitter", "cond_mixup"):  # image-space options of the pixel ddpm
            require(not any(c[key]) if isinstance(c[key], list) else not c[key], key,
                    "is a ddpm option: the latent model does not apply it", c)
        require(0 <= c["ae_steps"] < c["steps"], "ae_steps",
                f"must be in 0..steps-1 ({c['steps'] - 1}): the U-Net needs steps after the autoencoder's", c)
        for key in ("ae_channels", "latent_channels"):
            require(c[key] >= 1, key, "must be >= 1", c)
        require(c["ae_blocks"] >= 0, "ae_blocks", "must be >= 0", c)
        require(c["latent_noise"] >= 0, "latent_noise", "must be >= 0", c)

    def build(self) -> dict[str, nn.Module]:
        c = self.config
        autoencoder = Autoencoder(c["ae_channels"], c["latent_channels"], c["ae_blocks"])
        unet = self.unet(num_class_embeds=self.n_classes + 1 if self.conditional else None)
        return {"ldm": LatentDiffusion(autoencoder, unet)}

    @torch.no_grad()
    def diffusion_input(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's latents of images x: what the U-Net was trained to denoise."""
        return getattr(network, "module", network).autoencoder.encode(x)

    def denoise(self, network: nn.Module, x: torch.Tensor, t: torch.Tensor,
                labels: torch.Tensor | None) -> torch.Tensor:
        return network(x, t, labels if self.conditional else None)

    def train_step(self, networks, x, y, ctx: StepContext) -> dict[str, torch.Tensor]:
        network = networks["ldm"]
        if ctx.step < self.config["ae_steps"]:
            loss = (network(x, latent_noise=self.config["latent_noise"]) - x).abs().mean()
            ctx.update(loss, "ldm")
            return {"recon_l1": loss.detach()}
        with torch.no_grad():  # the frozen encoder; outside DDP's forward, which only gradients need
            z = getattr(network, "module", network).autoencoder.encode(x)
        loss = self.diffusion_loss(network, z, y)
        ctx.update(loss, "ldm")
        return {"loss": loss.detach()}

    @torch.no_grad()
    def sample(self, network: LatentDiffusion, labels, generators, on_step=None, **options: Any) -> torch.Tensor:
        z = self.reverse_process(network, labels, generators, options, on_step)
        return network.autoencoder.decode(z).clamp(-1, 1)

    def extras(self, network: LatentDiffusion, data, out_dir: Path, seed: int) -> dict[str, Any]:
        """The autoencoder's test-split reconstructions: a grid and their L1 / PSNR, the bound on the samples."""
        test_x, test_y = data.split("test")
        device = next(network.parameters()).device
        errors, mse, images = [], [], []
        with torch.no_grad():
            for i in range(0, len(test_x), 256):
                x = to_model_range(test_x[i:i + 256]).to(device)
                recon = network.autoencoder.decode(network.autoencoder.encode(x)).clamp(-1, 1)
                errors.append((recon - x).abs().mean((1, 2, 3)).cpu())
                mse.append(((recon - x) / 2).square().mean((1, 2, 3)).cpu())  # on the [0, 1] scale
                images.append(to_uint8(recon))
        pick = reconstruction_picks(test_y, self.n_classes)
        save_reconstruction_grid(test_x[pick], np.concatenate(images)[pick], out_dir / "reconstructions.png")
        return {"reconstructions": "reconstructions.png",
                RECONSTRUCTION_L1: float(torch.cat(errors).mean()),
                RECONSTRUCTION_PSNR: float((-10 * torch.log10(torch.cat(mse).clamp_min(1e-10))).mean())}
