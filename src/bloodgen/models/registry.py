"""Model names -> families, as typed records. A new family is one module implementing `Family`, its presets
in `bloodgen/configs/<name>.json` and one `FamilySpec` here; everything above (the CLI's help, the study,
the demo, the diffusion classifier) reads what it needs from the spec, never from the family's name.

Specs name the class as "module:Class" so listing the families (for `--help`) imports no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bloodgen.errors import UserError

if TYPE_CHECKING:
    from bloodgen.models.base import Family


@dataclass(frozen=True)
class SamplerOption:
    """A keyword `Family.sample` accepts beyond labels and noise; `bloodgen sample` offers it as --NAME."""

    name: str
    type: type
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


DIFFUSION_SAMPLING = (
    SamplerOption("sampler", str, "diffusion sampler: ddpm, ddim or dpm (default: the model's config)"),
    SamplerOption("steps", int, "diffusion sampling steps (default: the config's sample_steps; all for ddpm)"),
    SamplerOption("guidance", float, "classifier-free guidance scale, 1 = none (default: the model's config)"),
    SamplerOption("eta", float, "ddim sampler's noise: 0 deterministic, 1 ancestral (default: the model's config)"),
)

TINY_TRANSLATION = {"channels": 4, "blocks": 1, "pool_size": 4}

TINY_DIFFUSION = {"channels": [16, 16, 32], "attention": [False, False, True], "attention_head_dim": 16,
                  "layers_per_block": 1, "timesteps": 100, "sample_steps": 4}


@dataclass(frozen=True)
class FamilySpec:
    name: str
    implementation: str  # "module:Class"; one class may serve several families (gan, cgan)
    summary: str  # one line for `bloodgen train --help`
    in_study: bool = False  # compared by `bloodgen study` unless --models names others
    quick_study_steps: int | None = None  # training steps of the quick study (about a minute on 2 CPU cores)
    noise_classifier: bool = False  # a class-conditional denoiser (of pixels or latents): a diffusion classifier
    needs_inputs: bool = False  # trains only with inputs of its own (a prototypes file), not from the data alone
    translates: bool = False  # translates images of a source domain into the data's (bloodgen translate)
    sampler_options: tuple[SamplerOption, ...] = ()
    # Its presets file (see bloodgen.models.config); None: bloodgen/configs/<name>.json.
    presets_file: str | None = None
    # Overrides of the quick preset that make a network of seconds for the tests (the trainer's own tiny
    # settings are the tests' business: tests/model_helpers.py).
    tiny_config: dict[str, Any] = field(default_factory=dict, compare=False)

    def load(self) -> type[Family]:
        module_name, class_name = self.implementation.split(":")
        return getattr(importlib.import_module(module_name), class_name)


REGISTRY: dict[str, FamilySpec] = {spec.name: spec for spec in (
    FamilySpec("vae", "bloodgen.models.vae:VAE", "convolutional VAE, class-conditional decoder, beta + KL warm-up",
               in_study=True, quick_study_steps=1000,
               tiny_config={"latent_dim": 8, "channels": 8, "blocks": 1, "probe_trees": 5},
               sampler_options=(SamplerOption("temperature", float, "VAE latent temperature, > 0 (default: the "
                                                                    "model's config)"),)),
    FamilySpec("gan", "bloodgen.models.gan:GAN", "DCGAN-style ResNet GAN, spectral norm, hinge loss, EMA generator",
               in_study=True, quick_study_steps=400, tiny_config={"z_dim": 16, "channels": 8}),
    FamilySpec("cgan", "bloodgen.models.gan:GAN",
               "conditional GAN: conditional-norm generator, projection discriminator", in_study=True,
               quick_study_steps=350,
               tiny_config={"z_dim": 16, "channels": 8, "diffaug": "color,translation,cutout"}),
    FamilySpec("ddpm", "bloodgen.models.ddpm:DDPM",
               "diffusion: diffusers U-Net, DDPM/DDIM/DPM-Solver, classifier-free guidance", in_study=True,
               quick_study_steps=400, noise_classifier=True, sampler_options=DIFFUSION_SAMPLING,
               tiny_config=TINY_DIFFUSION),
    # Of its 4 tiny test steps, 2 train the autoencoder and 2 the U-Net.
    FamilySpec("ldm", "bloodgen.models.ldm:LDM",
               "latent diffusion: the ddpm in the 14x14 latent space of an autoencoder trained first, in the same run",
               noise_classifier=True, sampler_options=DIFFUSION_SAMPLING,
               tiny_config={**TINY_DIFFUSION, "channels": [16, 32], "attention": [False, True], "ae_channels": 8,
                            "ae_steps": 2}),
    FamilySpec("proto-ddpm", "bloodgen.models.proto_ddpm:ProtoDDPM",
               "diffusion conditioned on frozen learned class prototypes (IMPROVE), or a learned-embedding baseline",
               needs_inputs=True, sampler_options=DIFFUSION_SAMPLING, tiny_config={**TINY_DIFFUSION, "class_dim": 8}),
    FamilySpec("cyclegan", "bloodgen.models.translation:Translation",
               "unpaired translation from a source domain (--set source_domain=FILE) into the data's: CycleGAN",
               needs_inputs=True, translates=True, tiny_config=TINY_TRANSLATION),
    FamilySpec("aggan", "bloodgen.models.translation:Translation",
               "CycleGAN whose generators also output attention masks (AttentionGAN): G(x) = sum C_f A_f + x A_b",
               needs_inputs=True, translates=True, tiny_config={**TINY_TRANSLATION, "attention_masks": 3}),
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


def translation_families() -> tuple[str, ...]:
    return tuple(name for name, spec in REGISTRY.items() if spec.translates)


def noise_classifiers() -> tuple[str, ...]:
    return tuple(name for name, spec in REGISTRY.items() if spec.noise_classifier)


def get_spec(name: str) -> FamilySpec:
    if name not in REGISTRY:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def get_family(name: str) -> type[Family]:
    return get_spec(name).load()


def sampler_flags() -> dict[str, SamplerOption]:
    """Every family's sampler options by name, once each (families that share an option share its meaning)."""
    flags: dict[str, SamplerOption] = {}
    for spec in REGISTRY.values():
        for option in spec.sampler_options:
            if flags.setdefault(option.name, option).type is not option.type:
                raise ValueError(f"sampler option {option.name!r} has two types in the family registry")
    return flags


def families_with(option: str) -> tuple[str, ...]:
    return tuple(name for name, spec in REGISTRY.items() if option in {o.name for o in spec.sampler_options})
