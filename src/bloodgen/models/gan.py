"""GANs for 28x28: a ResNet generator and a spectrally normalised ResNet discriminator (the SNGAN recipe).

`gan` is the unconditional DCGAN-style model. `cgan` conditions the generator through class-conditional
normalisation and the discriminator through a projection (Miyato & Koyama 2018):
D(x, y) = psi(h(x)) + <embed(y), h(x)>.

What keeps it stable on 17k small images: spectral norm in D, hinge (or non-saturating) loss, Adam with
beta1 = 0 and a faster D (two time-scale rule), an EMA generator for sampling, and optional DiffAugment
(Zhao et al. 2020): the same differentiable augmentation of real and fake images before D, so D cannot
memorise the few real images while G still learns the un-augmented distribution.

The generator normalises with GroupNorm, not BatchNorm: without batch statistics the EMA generator is
exact, a sample does not depend on the batch it was drawn in, and DDP ranks stay bit-identical.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from bloodgen.models.base import Family, StepContext, norm_groups, randn
from bloodgen.models.config import require

LOSSES = ("hinge", "ns")
DIFFAUG_POLICIES = ("color", "translation", "cutout")


class CondNorm(nn.Module):
    """GroupNorm whose scale and shift are looked up per class, or learned constants when unconditional."""

    def __init__(self, ch: int, n_classes: int | None):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups(ch), ch, affine=not n_classes)
        self.embed = None
        if n_classes:
            self.embed = nn.Embedding(n_classes, 2 * ch)
            nn.init.ones_(self.embed.weight[:, :ch])
            nn.init.zeros_(self.embed.weight[:, ch:])

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        x = self.norm(x)
        if self.embed is None:
            return x
        scale, shift = self.embed(y)[:, :, None, None].chunk(2, dim=1)
        return x * scale + shift


class GBlock(nn.Module):
    """Pre-activation residual block that doubles the resolution."""

    def __init__(self, c_in: int, c_out: int, n_classes: int | None):
        super().__init__()
        self.norm1, self.norm2 = CondNorm(c_in, n_classes), CondNorm(c_out, n_classes)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.interpolate(F.relu(self.norm1(x, y)), scale_factor=2))
        h = self.conv2(F.relu(self.norm2(h, y)))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class Generator(nn.Module):
    """z (and class) -> 7x7 -> 14x14 -> 28x28 image in [-1, 1]."""

    def __init__(self, z_dim: int, channels: int, n_classes: int | None):
        super().__init__()
        c = channels
        self.z_dim = z_dim
        self.fc = nn.Linear(z_dim, 4 * c * 49)
        self.blocks = nn.ModuleList([GBlock(4 * c, 2 * c, n_classes), GBlock(2 * c, c, n_classes)])
        self.out = nn.Sequential(nn.GroupNorm(norm_groups(c), c), nn.ReLU(), nn.Conv2d(c, 3, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(z).unflatten(1, (-1, 7, 7))
        for block in self.blocks:
            h = block(h, y)
        return self.out(h)


class DBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, down: bool, first: bool = False):
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = spectral_norm(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = spectral_norm(nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The first block sees the image itself: a ReLU there would discard its negative half.
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        skip = self.skip(x)
        if self.down:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return h + skip


class Discriminator(nn.Module):
    """28 -> 14 -> 7, ReLU, global sum pool; a linear score plus, if conditional, the class projection."""

    def __init__(self, channels: int, n_classes: int | None):
        super().__init__()
        c = channels
        self.blocks = nn.Sequential(DBlock(3, c, down=True, first=True), DBlock(c, 2 * c, down=True),
                                    DBlock(2 * c, 4 * c, down=False))
        self.linear = spectral_norm(nn.Linear(4 * c, 1))
        self.embed = spectral_norm(nn.Embedding(n_classes, 4 * c)) if n_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        score = self.linear(h).squeeze(1)
        if self.embed is not None:
            score = score + (self.embed(y) * h).sum(1)
        return score


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """Differentiable colour / translation / cutout, random per image (global torch RNG, so resumable)."""
    n, _, h, w = x.shape
    dev = x.device
    if "color" in policy:
        x = x + (torch.rand(n, 1, 1, 1, device=dev) - 0.5)
        mean = x.mean(1, keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, device=dev) * 2) + mean
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, device=dev) + 0.5) + mean
    if "translation" in policy:  # shift by up to 1/8 of the size, zero fill
        s = max(1, round(h / 8))
        dy, dx = torch.randint(-s, s + 1, (2, n, 1, 1), device=dev)
        rows = torch.arange(h, device=dev)[None, :, None] + dy + s
        cols = torch.arange(w, device=dev)[None, None, :] + dx + s
        x = F.pad(x, [s, s, s, s])[torch.arange(n, device=dev)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if "cutout" in policy:  # zero one square of half the size
        half = h // 4
        cy, cx = torch.randint(0, h, (2, n, 1, 1), device=dev)
        rows = torch.arange(h, device=dev)[None, :, None]
        cols = torch.arange(w, device=dev)[None, None, :]
        keep = ((rows - cy).abs() > half) | ((cols - cx).abs() > half)
        x = x * keep[:, None].to(x.dtype)
    return x


class GAN(Family):
    sampling_network = "generator"
    choices = {"loss": LOSSES}

    def check(self) -> None:
        c = self.config
        for key in ("z_dim", "channels"):
            require(c[key] >= 1, key, "must be >= 1", c)
        require(c["lr_d"] > 0, "lr_d", "must be > 0", c)
        require(all(p in DIFFAUG_POLICIES for p in self.policy), "diffaug",
                f"must be empty or a comma-separated subset of {','.join(DIFFAUG_POLICIES)}", c)

    @property
    def policy(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.config["diffaug"].split(",") if p.strip())

    def build(self) -> dict[str, nn.Module]:
        c, k = self.config, (self.n_classes if self.conditional else None)
        return {"generator": Generator(c["z_dim"], c["channels"], k), "discriminator": Discriminator(c["channels"], k)}

    def optimizers(self, networks):
        # Two time-scale update rule: D gets its own (usually larger) learning rate.
        c = self.config
        t = self.trainer
        return {name: torch.optim.Adam(networks[name].parameters(), lr=lr, betas=t.betas, weight_decay=t.weight_decay)
                for name, lr in (("generator", c["lr"]), ("discriminator", c["lr_d"]))}

    def train_step(self, networks, x, y, ctx: StepContext) -> dict[str, torch.Tensor]:
        G, D = networks["generator"], networks["discriminator"]
        y = y if self.conditional else None
        # Fakes take the real batch's labels, so D compares like with like and classes keep their frequencies.
        fake = G(torch.randn(x.shape[0], self.config["z_dim"], device=x.device), y)

        # One D call on real and fake together: under DDP a module must run forward once per backward.
        both = self.augment(torch.cat([x, fake.detach()]))
        d_real, d_fake = D(both, None if y is None else torch.cat([y, y])).chunk(2)
        if self.config["loss"] == "hinge":
            loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        else:
            loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        ctx.update(loss_d, "discriminator")

        # D's gradients from the G loss are discarded (zeroed before D's next update), so skip their all-reduce.
        with ctx.no_sync("discriminator"):
            g_score = D(self.augment(fake), y)
            loss_g = -g_score.mean() if self.config["loss"] == "hinge" else F.softplus(-g_score).mean()
            ctx.update(loss_g, "generator")
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
                "d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()}

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.policy) if self.policy else x

    @torch.no_grad()
    def sample(self, network: Generator, labels, generators, on_step=None) -> torch.Tensor:
        device = next(network.parameters()).device
        z = randn(generators, (network.z_dim,), device)
        return network(z, labels.to(device) if self.conditional else None)
