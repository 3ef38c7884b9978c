"""Convolutional VAE: encoder q(z|x), decoder p(x|z, y); beta-weighted KL with a linear warm-up.

The encoder never sees the label, so its latent means are label-free features of the image. That is
what the random-forest probe measures (the unsupervised-feature evaluation of autoencoders), and
conditioning the decoder alone is enough for class-conditional sampling.

`recon_loss: mse` is a Gaussian likelihood with the variance fixed at 1/2, which weights the KL term so
heavily against 28x28x3 pixels that samples come out blurred. `gaussian` is the optimal-sigma VAE
(Rybkin et al. 2021): one shared decoder variance, set in closed form to the batch's mean squared error
(the maximum-likelihood sigma^2), so the reconstruction/KL balance follows the data instead of a constant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.ensemble import RandomForestClassifier
from torch import nn

from bloodgen.data import to_model_range, to_uint8
from bloodgen.errors import UserError
from bloodgen.models.base import Family, StepContext, norm_groups, randn
from bloodgen.models.config import require
from bloodgen.report.grid import reconstruction_picks, save_grid, save_reconstruction_grid

RECON_LOSSES = ("mse", "l1", "bce", "gaussian")
PROBE_ACCURACY = "latent_probe_test_accuracy"
INTERPOLATION_STEPS = 10


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(norm_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                  nn.GroupNorm(norm_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def conv_stage(c_in: int, c_out: int, blocks: int, resample: str | None) -> list[nn.Module]:
    """Resample 28<->14<->7 between widths, then `blocks` residual blocks."""
    if resample == "down":
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)]
    elif resample == "up":
        layers = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1)]
    else:
        layers = [nn.Conv2d(c_in, c_out, 3, padding=1)]
    return layers + [ResBlock(c_out) for _ in range(blocks)]


class ConvVAE(nn.Module):
    def __init__(self, latent_dim: int, channels: int, blocks: int, n_classes: int | None):
        super().__init__()
        c1, c2, c3 = channels, 2 * channels, 4 * channels
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            *conv_stage(3, c1, blocks, None), *conv_stage(c1, c2, blocks, "down"), *conv_stage(c2, c3, blocks, "down"),
            nn.GroupNorm(norm_groups(c3), c3), nn.SiLU(), nn.Flatten(), nn.Linear(c3 * 49, 2 * latent_dim))
        self.label_embedding = nn.Embedding(n_classes, latent_dim) if n_classes else None
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim * (2 if n_classes else 1), c3 * 49), nn.Unflatten(1, (c3, 7, 7)),
            *conv_stage(c3, c3, blocks, None), *conv_stage(c3, c2, blocks, "up"), *conv_stage(c2, c1, blocks, "up"),
            nn.GroupNorm(norm_groups(c1), c1), nn.SiLU(), nn.Conv2d(c1, 3, 3, padding=1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30, 20)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Decoder output before the likelihood's link function (see `VAE.to_image`)."""
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(y)], dim=1)
        return self.decoder(z)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        mean, logvar = self.encode(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        return self.decode(z, y), mean, logvar


class VAE(Family):
    sampling_network = "vae"
    choices = {"recon_loss": RECON_LOSSES}

    def check(self) -> None:
        c = self.config
        for key in ("latent_dim", "channels"):
            require(c[key] >= 1, key, "must be >= 1", c)
        for key in ("blocks", "kl_warmup_steps", "probe_trees"):
            require(c[key] >= 0, key, "must be >= 0", c)
        require(c["beta"] > 0, "beta", "must be > 0", c)
        require(c["temperature"] > 0, "temperature", "must be > 0", c)

    def build(self) -> dict[str, nn.Module]:
        c = self.config
        return {"vae": ConvVAE(c["latent_dim"], c["channels"], c["blocks"],
                               self.n_classes if self.conditional else None)}

    def to_image(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output -> image in [-1, 1]: the mean of the chosen likelihood."""
        return torch.sigmoid(out) * 2 - 1 if self.config["recon_loss"] == "bce" else out.clamp(-1, 1)

    def reconstruction_loss(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-image sum over pixels (a negative log-likelihood up to constants), averaged over the batch."""
        kind = self.config["recon_loss"]
        if kind == "gaussian":
            # Optimal shared sigma^2 = the batch MSE; the NLL is then D/2 (log 2 pi sigma^2 + 1) per image.
            # Its gradient through sigma^2 is zero at the optimum, so sigma^2 is a constant of the step.
            sq = (out - x).square().flatten(1)
            sigma2 = sq.mean().detach().clamp_min(1e-6)
            return (sq.sum(1) / (2 * sigma2)).mean() + 0.5 * sq.shape[1] * torch.log(2 * torch.pi * sigma2)
        if kind == "bce":
            per_pixel = F.binary_cross_entropy_with_logits(out, (x + 1) / 2, reduction="none")
        elif kind == "l1":
            per_pixel = (out - x).abs()
        else:
            per_pixel = (out - x).square()
        return per_pixel.flatten(1).sum(1).mean()

    def train_step(self, networks, x, y, ctx: StepContext) -> dict[str, torch.Tensor]:
        c = self.config
        out, mean, logvar = networks["vae"](x, y if self.conditional else None)
        recon = self.reconstruction_loss(out, x)
        kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(1).mean()
        warm = min(1.0, (ctx.step + 1) / c["kl_warmup_steps"]) if c["kl_warmup_steps"] else 1.0
        loss = recon + c["beta"] * warm * kl
        ctx.update(loss, "vae")
        return {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def check_sampler_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The temperature, the config's unless given; it scales the prior's spread, so it must be > 0."""
        temperature = super().check_sampler_options(options).get("temperature", self.config["temperature"])
        if not temperature > 0:
            raise UserError(f"--temperature must be > 0 (it scales the latent prior's spread), got {temperature}")
        return {"temperature": temperature}

    def sample(self, network: ConvVAE, labels, generators, on_step=None, temperature: float | None = None) -> torch.Tensor:
        device = next(network.parameters()).device
        temperature = self.check_sampler_options({"temperature": temperature})["temperature"]
        z = randn(generators, (network.latent_dim,), device) * temperature
        return self.to_image(network.decode(z, labels.to(device) if self.conditional else None))

    def extras(self, network: ConvVAE, data, out_dir: Path, seed: int) -> dict[str, Any]:
        test_x, test_y = data.split("test")
        device = next(network.parameters()).device
        pick = reconstruction_picks(test_y, self.n_classes)
        x = self._tensor(test_x[pick], device)
        y = torch.as_tensor(test_y[pick], device=device) if self.conditional else None
        with torch.no_grad():  # reconstructions from the latent mean
            recon = to_uint8(self.to_image(network.decode(network.encode(x)[0], y)))
        save_reconstruction_grid(test_x[pick], recon, out_dir / "reconstructions.png")
        save_grid(self.interpolations(network, test_x, test_y), out_dir / "interpolations.png",
                  ncol=INTERPOLATION_STEPS)
        figures: dict[str, Any] = {"reconstructions": "reconstructions.png", "interpolations": "interpolations.png"}
        if self.config["probe_trees"]:
            figures[PROBE_ACCURACY] = latent_probe_accuracy(network, data, self.config["probe_trees"], seed)
            figures["latent_probe"] = (f"RandomForestClassifier(n_estimators={self.config['probe_trees']}) fit on "
                                       f"the encoder's latent means of the train split, scored on the test split")
        return figures

    @torch.no_grad()
    def interpolations(self, network: ConvVAE, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per class, the decoded straight line between the latent means of two test images of that class."""
        device = next(network.parameters()).device
        rows = []
        for k in range(self.n_classes):
            a, b = np.flatnonzero(labels == k)[:2]
            mean = network.encode(self._tensor(images[[a, b]], device))[0]
            w = torch.linspace(0, 1, INTERPOLATION_STEPS, device=device)[:, None]
            z = (1 - w) * mean[0] + w * mean[1]
            y = torch.full((INTERPOLATION_STEPS,), k, device=device) if self.conditional else None
            rows.append(to_uint8(self.to_image(network.decode(z, y))))
        return np.concatenate(rows)

    @staticmethod
    def _tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
        return to_model_range(images).to(device)


@torch.no_grad()
def latent_means(network: ConvVAE, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    device = next(network.parameters()).device
    out = [network.encode(to_model_range(images[i:i + batch_size]).to(device))[0].float().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def latent_probe_accuracy(network: ConvVAE, data, trees: int = 100, seed: int = 0) -> float:
    """Test accuracy of a random forest trained on the encoder's latent means of the train split."""
    network.eval()
    forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=-1)
    forest.fit(latent_means(network, data.images("train")), data.labels("train"))
    return float(forest.score(latent_means(network, data.images("test")), data.labels("test")))
