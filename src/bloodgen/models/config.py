"""Configs are data: a preset from `bloodgen/configs/<model>.json`, overridden by a user file or KEY=VALUE
pairs, validated once, then saved in the run folder and in every checkpoint.

A preset file says what differs: `extends` (optional) names the family whose presets it starts from,
`shared` holds the keys every one of its presets sets alike, `presets` what each preset sets on top.
Resolved, a preset lists every key, so it is also the schema: an override may only name keys the preset
has, with a value of the same type. Range checks common to all families live here; a family adds its
own in `Family.check` and `Family.choices`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from bloodgen.data import N_CLASSES
from bloodgen.errors import UserError
from bloodgen.models.registry import get_family, get_spec

PRESETS = ("quick", "cpu", "record", "gpu", "full")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
# "linear-tail": constant for the first half, then linear to 0 (CycleGAN's 100 + 100 epochs).
LR_SCHEDULES = ("constant", "cosine", "linear-tail")
COMMON_CHOICES = {"mixed_precision": MIXED_PRECISION, "lr_schedule": LR_SCHEDULES}


def load_presets(model: str) -> dict[str, dict[str, Any]]:
    """Every preset of `model`, resolved: its parent's preset (`extends`), then `shared`, then its own keys."""
    family = get_spec(model)  # unknown names fail with the list of known ones
    source = (Path(family.presets_file) if family.presets_file
              else resources.files("bloodgen").joinpath("configs", f"{model}.json"))
    spec = json.loads(source.read_text())
    if set(spec["presets"]) != set(PRESETS):
        raise ValueError(f"{source} must define the presets {', '.join(PRESETS)}")
    parent = load_presets(spec["extends"]) if "extends" in spec else {name: {} for name in PRESETS}
    return {name: {**parent[name], **spec["shared"], **spec["presets"][name]} for name in PRESETS}


def resolve_config(model: str, preset: str = "quick", file: str | Path | None = None,
                   overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The preset's config with `file`'s keys, then `overrides`, applied; validated."""
    presets = load_presets(model)
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r} for model {model!r}: choose one of {', '.join(presets)}")
    config = dict(presets[preset])
    if file is not None:
        config = apply_overrides(config, read_config_file(file), source=str(file))
    if overrides:
        config = apply_overrides(config, overrides, source="--set")
    validate(model, config)
    return config


# Keys a family's config gained after runs had been saved without them, with the value that reproduces how
# those runs trained and sampled (snr_gamma 0: the uniform loss weighting; eta 0: deterministic DDIM; no
# rotation, colour jitter or mixup).
_DIFFUSION_UPGRADES = {"snr_gamma": 0.0, "eta": 0.0, "rotate": False, "colour_jitter": [0.0, 0.0, 0.0, 0.0],
                       "cond_mixup": 0.0}
UPGRADES: dict[str, dict[str, Any]] = {"ddpm": _DIFFUSION_UPGRADES, "ldm": _DIFFUSION_UPGRADES,
                                       "proto-ddpm": _DIFFUSION_UPGRADES}


def upgrade(model: str, config: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the keys added since it was saved, at the values it was trained with: the one place
    old configs get defaults, so family code reads every key as present."""
    return {**UPGRADES.get(model, {}), **config}


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"config file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a JSON object of KEY: VALUE pairs")
    return data


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """`["lr=2e-4", "channels=[32,64]", "loss=hinge"]` -> values parsed as JSON, else kept as strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out


def apply_overrides(config: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise UserError(f"unknown config key(s) {', '.join(repr(k) for k in unknown)} in {source}; "
                        f"known keys: {', '.join(sorted(config))}")
    merged = dict(config)
    for key, value in overrides.items():
        merged[key] = _coerce(key, value, config[key], source)
    return merged


def _coerce(key: str, value: Any, reference: Any, source: str) -> Any:
    """`value` converted to the type of the preset's `reference` value, or UserError naming `key`."""
    def fail() -> UserError:
        return UserError(f"config key {key!r} in {source} must be {_type_name(reference)}, got {value!r}")

    if isinstance(reference, bool):
        if not isinstance(value, bool):
            raise fail()
        return value
    if isinstance(reference, int):
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise fail()
        return int(value)
    if isinstance(reference, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        return float(value)
    if isinstance(reference, str):
        if not isinstance(value, str):
            raise fail()
        return value
    if isinstance(reference, list):
        if not isinstance(value, list) or not value:
            raise fail()
        return [_coerce(key, v, reference[0], source) for v in value]
    raise fail()


def _type_name(reference: Any) -> str:
    if isinstance(reference, list):
        return f"a non-empty list of {_type_name(reference[0])} values"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[type(reference)]


@dataclass(frozen=True)
class TrainerConfig:
    """The keys of every family's config that belong to the training loop (the rest is the family's own):
    the same names in every preset file, read through this record by the loop and the optimisers."""

    steps: int
    batch_size: int
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    lr_schedule: str
    warmup_steps: int
    grad_clip: float
    ema_decay: float
    log_every: int
    sample_every: int  # 0: no sample grids during training
    ckpt_every: int
    mixed_precision: str
    augment: bool  # random dihedral transforms of every batch

    @classmethod
    def of(cls, config: dict[str, Any]) -> "TrainerConfig":
        return cls(**{f.name: tuple(config[f.name]) if f.name == "betas" else config[f.name] for f in fields(cls)})

    def check(self, config: dict[str, Any]) -> None:
        for key in ("steps", "batch_size", "log_every", "ckpt_every"):
            require(getattr(self, key) >= 1, key, "must be >= 1", config)
        for key in ("sample_every", "warmup_steps", "weight_decay", "grad_clip"):
            require(getattr(self, key) >= 0, key, "must be >= 0 (0 turns it off)", config)
        require(self.lr > 0, "lr", "must be > 0", config)
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas",
                "must be two numbers in [0, 1)", config)
        require(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1)", config)


def validate(model: str, config: dict[str, Any]) -> None:
    """Check ranges and choices; the family is instantiated (cheaply, no networks) for its own checks."""
    family = get_family(model)(model, config, N_CLASSES)
    for key, allowed in {**COMMON_CHOICES, **family.choices}.items():
        if config[key] not in allowed:
            raise UserError(f"config key {key!r} must be one of {', '.join(map(str, allowed))}, got {config[key]!r}")
    TrainerConfig.of(config).check(config)
    family.check()


def require(ok: bool, key: str, message: str, config: dict[str, Any]) -> None:
    if not ok:
        raise UserError(f"config key {key!r} {message}, got {config[key]!r}")
