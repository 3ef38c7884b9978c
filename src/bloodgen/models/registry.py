"""Model names -> families, as typed records. A new family is one module implementing `Family`, its presets
in `bloodgen/configs/<name>.json` and one `FamilySpec` here; everything above (the CLI's help, the study,
the demo, the diffusion classifier) reads what it needs from the spec, never from the family's name.

Specs name the class as "module:Class" so listing the families (for `--help`) imports no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bloodgen.errors import UserError

if TYPE_CHECKING:
    from bloodgen.models.base import Family


@dataclass(frozen=True)
class FamilySpec:
    name: str
    implementation: str  # "module:Class"; one class may serve several families (gan, cgan)
    summary: str  # one line for `bloodgen train --help`
    in_study: bool = False  # compared by `bloodgen study` unless --models names others
    quick_study_steps: int | None = None  # training steps of the quick study (about a minute on 2 CPU cores)
    noise_classifier: bool = False  # a class-conditional pixel denoiser: usable as a diffusion classifier
    needs_inputs: bool = False  # trains only with inputs of its own (a prototypes file), not from the data alone

    def load(self) -> type[Family]:
        module_name, class_name = self.implementation.split(":")
        return getattr(importlib.import_module(module_name), class_name)


REGISTRY: dict[str, FamilySpec] = {spec.name: spec for spec in (
    FamilySpec("vae", "bloodgen.models.vae:VAE", "convolutional VAE, class-conditional decoder, beta + KL warm-up",
               in_study=True, quick_study_steps=1000),
    FamilySpec("gan", "bloodgen.models.gan:GAN", "DCGAN-style ResNet GAN, spectral norm, hinge loss, EMA generator",
               in_study=True, quick_study_steps=400),
    FamilySpec("cgan", "bloodgen.models.gan:GAN",
               "conditional GAN: conditional-norm generator, projection discriminator", in_study=True,
               quick_study_steps=350),
    FamilySpec("ddpm", "bloodgen.models.ddpm:DDPM",
               "diffusion: diffusers U-Net, DDPM/DDIM/DPM-Solver, classifier-free guidance", in_study=True,
               quick_study_steps=400, noise_classifier=True),
    FamilySpec("ldm", "bloodgen.models.ldm:LDM",
               "latent diffusion: the ddpm in the 14x14 latent space of an autoencoder trained first, in the same run"),
    FamilySpec("proto-ddpm", "bloodgen.models.proto_ddpm:ProtoDDPM",
               "diffusion conditioned on frozen learned class prototypes (IMPROVE), or a learned-embedding baseline",
               needs_inputs=True),
)}

# The family the prototypes experiment (bloodgen.improve) trains in both arms.
PROTOTYPE_FAMILY = "proto-ddpm"


def model_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def study_families() -> tuple[str, ...]:
    return tuple(name for name, spec in REGISTRY.items() if spec.in_study)


def standalone_families() -> tuple[str, ...]:
    """The families that train from the data alone."""
    return tuple(name for name, spec in REGISTRY.items() if not spec.needs_inputs)


def noise_classifiers() -> tuple[str, ...]:
    return tuple(name for name, spec in REGISTRY.items() if spec.noise_classifier)


def get_spec(name: str) -> FamilySpec:
    if name not in REGISTRY:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def get_family(name: str) -> type[Family]:
    return get_spec(name).load()
