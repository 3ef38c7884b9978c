"""Unpaired image-to-image translation between two blood-cell domains: CycleGAN and its attention-guided
variant (AGGAN), one class serving both families.

A run's data file (`--data`) is domain A, the application's domain; the config key `source_domain` names
the other domain's BloodMNIST-format file, B (e.g. one written by `bloodgen domains make`). Two generators
learn G: B -> A (`to_a`, the "stylizer" that puts another lab's images in front of a classifier built for
A) and F: A -> B (`to_b`); two discriminators judge each domain. The losses are CycleGAN's (Zhu et al.
2017): least-squares adversarial terms, cycle consistency ||F(G(b)) - b||_1 + ||G(F(a)) - a||_1 weighted
by `cycle_weight`, identity ||G(a) - a||_1 + ||F(b) - b||_1 weighted by `identity_weight * cycle_weight`,
and discriminators that see a history of 50 earlier fakes (Shrivastava et al. 2017).

AGGAN (`attention_masks` n > 0, Tang et al.'s AttentionGAN): each generator also outputs n attention
masks with a softmax over them, and n - 1 content images; G(x) = sum_f C_f * A_f + x * A_b, so what the
masks leave to the background passes through unchanged.

28 x 28 cells keep the study's networks with two adaptations: the ResNet generator downsamples twice to
7 x 7 as in the original, and the PatchGAN discriminator has `d_layers` = 2 stride-2 layers (the third of
the 256-pixel original would leave a 1 x 1 map); each of its 5 x 5 outputs sees a 34-pixel patch.

The exported model holds both generators; sampling translates random test images of the source domain
into A (`bloodgen sample`), and `bloodgen translate` translates any file in either direction.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bloodgen.data import N_CLASSES, random_dihedral, to_model_range, to_uint8
from bloodgen.data.domains import read_domain
from bloodgen.errors import UserError
from bloodgen.models.base import Family, StepContext
from bloodgen.models.config import require
from bloodgen.report.grid import reconstruction_picks, save_grid

TO_A, TO_B = "to_a", "to_b"
# The history pool's random choices come from a generator seeded by (this, step, pool): every DDP process
# makes the same choices on the same gathered fakes, so their pools stay identical without saving RNG state.
POOL_SEED = 7919


def _conv_norm_relu(c_in: int, c_out: int, **conv) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, **conv), nn.InstanceNorm2d(c_out), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), *_conv_norm_relu(ch, ch, kernel_size=3),
                                  nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _decoder(ngf: int, out_channels: int) -> nn.Sequential:
    up = [m for c_in, c_out in ((4 * ngf, 2 * ngf), (2 * ngf, ngf))
          for m in (nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
                    nn.InstanceNorm2d(c_out), nn.ReLU(inplace=True))]
    return nn.Sequential(*up, nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7))


class Translator(nn.Module):
    """The ResNet generator (c7s1-ngf, d2ngf, d4ngf, blocks x R4ngf, u2ngf, ungf, c7s1-3); with attention
    masks, a second decoder gives the masks and the first gives n - 1 content images."""

    def __init__(self, ngf: int, blocks: int, attention_masks: int = 0):
        super().__init__()
        self.masks = attention_masks
        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3), *_conv_norm_relu(3, ngf, kernel_size=7),
            *_conv_norm_relu(ngf, 2 * ngf, kernel_size=3, stride=2, padding=1),
            *_conv_norm_relu(2 * ngf, 4 * ngf, kernel_size=3, stride=2, padding=1),
            *[ResidualBlock(4 * ngf) for _ in range(blocks)])
        self.content = _decoder(ngf, 3 * max(attention_masks - 1, 1))
        self.attention = _decoder(ngf, attention_masks) if attention_masks else None

    def forward(self, x: torch.Tensor, with_masks: bool = False):
        h = self.encoder(x)
        content = torch.tanh(self.content(h))
        if self.attention is None:
            return (content, None) if with_masks else content
        n, _, height, width = x.shape
        masks = torch.softmax(self.attention(h), dim=1)
        content = content.view(n, self.masks - 1, 3, height, width)
        out = (content * masks[:, :-1, None]).sum(1) + x * masks[:, -1:]
        return (out, masks) if with_masks else out


class GeneratorPair(nn.Module):
    """G (B -> A) and F (A -> B). `forward` runs every translation a training step needs in one call, as DDP
    wants one forward per backward."""

    def __init__(self, ngf: int, blocks: int, attention_masks: int):
        super().__init__()
        self.to_a = Translator(ngf, blocks, attention_masks)
        self.to_b = Translator(ngf, blocks, attention_masks)

    def forward(self, a: torch.Tensor, b: torch.Tensor, identity: bool = True) -> dict[str, torch.Tensor]:
        n = a.shape[0]
        if identity:  # each generator's identity input rides in the same batch as its translation
            fake_a, idt_a = self.to_a(torch.cat([b, a])).split(n)
            fake_b, idt_b = self.to_b(torch.cat([a, b])).split(n)
        else:
            fake_a, fake_b, idt_a, idt_b = self.to_a(b), self.to_b(a), None, None
        return {"fake_a": fake_a, "fake_b": fake_b, "rec_a": self.to_a(fake_b), "rec_b": self.to_b(fake_a),
                "idt_a": idt_a, "idt_b": idt_b}

    def translate(self, x: torch.Tensor, direction: str, with_masks: bool = False):
        if direction not in (TO_A, TO_B):
            raise UserError(f"unknown translation direction {direction!r}: choose {TO_A} or {TO_B}")
        return getattr(self, direction)(x, with_masks)


def patch_discriminator(ndf: int, layers: int) -> nn.Sequential:
    """PatchGAN: `layers` stride-2 4x4 convolutions, then one stride-1, then a 1-channel patch map."""
    mods: list[nn.Module] = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
    ch = ndf
    for _ in range(layers - 1):
        mods += [nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1), nn.InstanceNorm2d(2 * ch), nn.LeakyReLU(0.2, True)]
        ch *= 2
    mods += [nn.Conv2d(ch, 2 * ch, 4, padding=1), nn.InstanceNorm2d(2 * ch), nn.LeakyReLU(0.2, True),
             nn.Conv2d(2 * ch, 1, 4, padding=1)]
    return nn.Sequential(*mods)


def _gather(x: torch.Tensor) -> tuple[torch.Tensor, slice]:
    """Every process's `x` in rank order, and the slice of it that is this process's own."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, slice(0, len(x))
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    rank = dist.get_rank()
    return torch.cat(parts), slice(rank * len(x), (rank + 1) * len(x))


class DiscriminatorPair(nn.Module):
    """D_A and D_B, and each one's history of earlier fakes, kept as buffers so checkpoints hold them."""

    def __init__(self, ndf: int, layers: int, pool_size: int):
        super().__init__()
        self.d_a, self.d_b = patch_discriminator(ndf, layers), patch_discriminator(ndf, layers)
        self.pool_size = pool_size
        self.register_buffer("pool", torch.zeros(2, pool_size, 3, 28, 28))
        self.register_buffer("pool_filled", torch.zeros(2, dtype=torch.long))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.d_a(a), self.d_b(b)

    @torch.no_grad()
    def from_history(self, fakes: torch.Tensor, which: int, step: int) -> torch.Tensor:
        """Shrivastava et al.'s buffer: each new fake either passes, or (half the time, once the pool is full)
        is swapped for a stored earlier one, which it replaces."""
        if not self.pool_size:
            return fakes
        everyone, mine = _gather(fakes)
        out = everyone.clone()
        pool, rng = self.pool[which], torch.Generator().manual_seed(POOL_SEED * (2 * step + which + 1))
        for i, image in enumerate(everyone):
            filled = int(self.pool_filled[which])
            if filled < self.pool_size:
                pool[filled] = image
                self.pool_filled[which] += 1
            elif float(torch.rand(1, generator=rng)) < 0.5:
                j = int(torch.randint(self.pool_size, (1,), generator=rng))
                out[i] = pool[j].clone()
                pool[j] = image
        return out[mine]


def _unwrapped(network: nn.Module) -> nn.Module:
    return getattr(network, "module", network)  # DDP wraps the module; its own methods live underneath


class Translation(Family):
    sampling_network = "generators"

    def check(self) -> None:
        c = self.config
        require(c["channels"] >= 1, "channels", "must be >= 1", c)
        # A fourth stride-2 layer would leave 1 x 1 of a 28-pixel image for the last two 4 x 4 convolutions.
        require(1 <= c["d_layers"] <= 3, "d_layers", "must be 1, 2 or 3 for 28-pixel images", c)
        for key in ("blocks", "pool_size", "cycle_weight", "identity_weight"):
            require(c[key] >= 0, key, "must be >= 0", c)
        require(c["attention_masks"] == 0 or c["attention_masks"] >= 2, "attention_masks",
                "must be 0 (CycleGAN) or >= 2 (one background mask and at least one content mask)", c)
        require(not c["conditional"], "conditional", "must be false: translation keeps the input's class", c)

    def build(self) -> dict[str, nn.Module]:
        c = self.config
        return {"generators": GeneratorPair(c["channels"], c["blocks"], c["attention_masks"]),
                "discriminators": DiscriminatorPair(c["channels"], c["d_layers"], c["pool_size"])}

    @functools.cached_property
    def source(self):
        """The source domain B (a loaded BloodMNIST-format file); read on first use, so a trained model
        translates other files without it."""
        path = self.config["source_domain"]
        if not path:
            raise UserError(f"model family {self.name!r} translates from a second domain: set its file with "
                            f"--set source_domain=FILE (a BloodMNIST-format .npz, e.g. from bloodgen domains make)")
        if not Path(path).is_file():
            raise UserError(f"source_domain file {path} not found: make the domains with bloodgen domains make "
                            f"--out DIR, or point source_domain at a BloodMNIST-format .npz")
        return read_domain(path)

    @functools.cached_property
    def _source_train(self) -> torch.Tensor:
        return to_model_range(self.source.images("train"))

    def source_batch(self, n: int, device: torch.device) -> torch.Tensor:
        """n images of B's train split, drawn with replacement from the global RNG (checkpointed, so resumable)."""
        images = self._source_train
        b = images[torch.randint(len(images), (n,))].to(device)
        return random_dihedral(b) if self.trainer.augment else b

    def train_step(self, networks, x, y, ctx: StepContext) -> dict[str, torch.Tensor]:
        G, D = networks["generators"], networks["discriminators"]
        c = self.config
        a, b = x, self.source_batch(x.shape[0], x.device)
        out = G(a, b, identity=c["identity_weight"] > 0)
        # D's gradients from the generators' loss are discarded (zeroed before D's update): skip their all-reduce.
        with ctx.no_sync("discriminators"):
            score_a, score_b = D(out["fake_a"], out["fake_b"])
            adversarial = F.mse_loss(score_a, torch.ones_like(score_a)) + F.mse_loss(score_b, torch.ones_like(score_b))
            cycle = F.l1_loss(out["rec_a"], a) + F.l1_loss(out["rec_b"], b)
            identity = (F.l1_loss(out["idt_a"], a) + F.l1_loss(out["idt_b"], b)) if out["idt_a"] is not None \
                else torch.zeros((), device=a.device)
            loss_g = adversarial + c["cycle_weight"] * (cycle + c["identity_weight"] * identity)
            ctx.update(loss_g, "generators")
        history = _unwrapped(D)
        fake_a = history.from_history(out["fake_a"].detach(), 0, ctx.step)
        fake_b = history.from_history(out["fake_b"].detach(), 1, ctx.step)
        (real_a, old_a), (real_b, old_b) = (s.chunk(2) for s in D(torch.cat([a, fake_a]), torch.cat([b, fake_b])))
        loss_d = 0.5 * sum(F.mse_loss(r, torch.ones_like(r)) + F.mse_loss(f, torch.zeros_like(f))
                           for r, f in ((real_a, old_a), (real_b, old_b)))
        ctx.update(loss_d, "discriminators")
        return {"loss_g": loss_g.detach(), "loss_d": loss_d.detach(), "adversarial": adversarial.detach(),
                "cycle": cycle.detach(), "identity": identity.detach()}

    @torch.no_grad()
    def sample(self, network: GeneratorPair, labels, generators, on_step=None) -> torch.Tensor:
        """G(b) for a random test image b of the source domain per generator."""
        device = next(network.parameters()).device
        images = self.source.images("test")
        picks = [int(torch.randint(len(images), (1,), generator=g)) for g in generators]
        return network.translate(to_model_range(images[picks]).to(device), TO_A)

    def extras(self, network: GeneratorPair, data, out_dir: Path, seed: int) -> dict[str, Any]:
        """Grids of x | G(x) | F(G(x)) for both domains' test cells (four per class), and AGGAN's masks."""
        figures: dict[str, Any] = {}
        for name, (images, labels), there, back in (
                ("cycle-b", self.source.split("test"), TO_A, TO_B), ("cycle-a", data.split("test"), TO_B, TO_A)):
            x = images[reconstruction_picks(labels, N_CLASSES)]
            translated, masks = translate_array(network, x, there, with_masks=True)
            returned = translate_array(network, translated, back)[0]
            save_grid(np.stack([x, translated, returned], axis=1).reshape(-1, *x.shape[1:]),
                      out_dir / f"{name}.png", ncol=12)
            figures[name] = f"{name}.png"
            if masks is not None:
                save_grid(masks.reshape(-1, *masks.shape[2:]), out_dir / f"{name}-masks.png", ncol=masks.shape[1])
                figures[f"{name}-masks"] = f"{name}-masks.png"
        return figures


@torch.no_grad()
def translate_array(network: GeneratorPair, images: np.ndarray, direction: str, batch_size: int = 256,
                    with_masks: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 (N, 28, 28, 3) images translated; with `with_masks`, AGGAN's attention masks too, as uint8 grey
    images (N, n_masks, 28, 28, 3) (None for CycleGAN)."""
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    out, masks = np.empty_like(images), []
    try:
        for start in range(0, len(images), batch_size):
            x = to_model_range(images[start:start + batch_size]).to(device)
            y, m = network.translate(x, direction, with_masks=True)
            out[start:start + len(x)] = to_uint8(y)
            if with_masks and m is not None:
                grey = (m * 2 - 1).flatten(0, 1)[:, None].expand(-1, 3, -1, -1)
                masks.append(to_uint8(grey).reshape(len(x), m.shape[1], 28, 28, 3))
    finally:
        network.train(was_training)
    return out, (np.concatenate(masks) if masks else None)
