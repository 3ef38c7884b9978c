"""Model names -> families. A new family is one module implementing `Family` plus one entry here
and its presets in `bloodgen/configs/<name>.json`.

Entries name the class as "module:Class" so listing the families (for `--help`) imports no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bloodgen.errors import UserError

if TYPE_CHECKING:
    from bloodgen.models.base import Family

FAMILIES: dict[str, tuple[str, str]] = {
    "vae": ("bloodgen.models.vae:VAE", "convolutional VAE, class-conditional decoder, beta + KL warm-up"),
    "gan": ("bloodgen.models.gan:GAN", "DCGAN-style ResNet GAN, spectral norm, hinge loss, EMA generator"),
    "cgan": ("bloodgen.models.gan:GAN", "conditional GAN: conditional-norm generator, projection discriminator"),
    "ddpm": ("bloodgen.models.ddpm:DDPM", "diffusion: diffusers U-Net, DDPM/DDIM/DPM-Solver, classifier-free guidance"),
    "ldm": ("bloodgen.models.ldm:LDM", "latent diffusion: the ddpm in the 14x14 latent space of an autoencoder "
                                       "trained first, in the same run"),
    "proto-ddpm": ("bloodgen.models.proto_ddpm:ProtoDDPM",
                   "diffusion conditioned on frozen learned class prototypes (IMPROVE), or a learned-embedding baseline"),
}


# Families that need inputs of their own to train (proto-ddpm: a prototypes file).
NEEDS_INPUTS = ("proto-ddpm",)


def standalone_families() -> tuple[str, ...]:
    """The families that train from the data alone."""
    return tuple(name for name in FAMILIES if name not in NEEDS_INPUTS)


def model_names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def get_family(name: str) -> type[Family]:
    if name not in FAMILIES:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(FAMILIES)}")
    module_name, class_name = FAMILIES[name][0].split(":")
    return getattr(importlib.import_module(module_name), class_name)
