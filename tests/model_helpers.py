"""Tiny configs and a quiet `train` wrapper shared by the model, training and sampling tests."""

from __future__ import annotations

import warnings
from pathlib import Path

from bloodgen.models.registry import study_families

FAMILIES = study_families()

# The trainer's tiny settings; each family's own tiny network is its FamilySpec's `tiny_config`.
COMMON = {"batch_size": 16, "steps": 4, "log_every": 2, "ckpt_every": 1000, "sample_every": 0, "warmup_steps": 2}


def tiny_config(model: str, **extra) -> dict:
    from bloodgen.models.registry import get_spec

    return {**COMMON, **get_spec(model).tiny_config, **extra}


def train_tiny(model: str, data: Path, out: Path, max_minutes: float | None = None, **kwargs):
    """`train` on the tiny file, quiet, with the tiny config plus `overrides`."""
    from bloodgen.training import RunOptions, train

    overrides = tiny_config(model, **kwargs.pop("overrides", {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny file is "not the official BloodMNIST"
        return train(model, overrides=overrides, out=out, options=RunOptions(data, max_minutes, progress=False),
                     **kwargs)


def resume_tiny(run: Path, data: Path, max_minutes: float | None = None, steps: int | None = None):
    from bloodgen.training import RunOptions, resume

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return resume(run, steps=steps, options=RunOptions(data, max_minutes, progress=False))


def sample_then_evaluate(checkpoint: Path, data: Path, tmp_path: Path, monkeypatch) -> dict:
    """`bloodgen sample` a run to .npz, then `bloodgen evaluate` that file (a projection stands in for
    InceptionV3); returns the evaluation JSON. The tool's own output must be accepted by its own commands."""
    import json

    from bloodgen.cli import main
    from bloodgen.metrics import inception
    from test_metrics_protocol import ProjectionExtractor

    monkeypatch.setattr(inception, "inception_extractor", lambda *args, **kwargs: ProjectionExtractor())
    samples = tmp_path / "samples.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["sample", str(checkpoint), "-n", "24", "--balanced", "--seed", "1", "--out", str(samples)]) == 0
        assert main(["evaluate", str(samples), "--data", str(data), "--n", "20", "--seeds", "1", "--kid-subsets", "2",
                     "--cache-dir", str(tmp_path / "cache"), "--quiet", "--json", str(tmp_path / "eval.json")]) == 0
    return json.loads((tmp_path / "eval.json").read_text())


def check_conformance(name: str, **extra) -> None:
    """A registered family's spec loads a Family whose networks build from its tiny config and sample images
    in [-1, 1], one per generator, with the sampler options it declares resolved and checked."""
    import torch

    from bloodgen.models.base import Family
    from bloodgen.models.config import resolve_config
    from bloodgen.models.registry import get_spec
    from bloodgen.sampling.api import noise_generators

    spec = get_spec(name)
    cls = spec.load()
    assert issubclass(cls, Family) and spec.summary
    assert not spec.in_study or (spec.quick_study_steps or 0) > 0
    family = cls(name, resolve_config(name, "quick", None, tiny_config(name, **extra)), 8)
    assert not spec.noise_classifier or family.conditional
    network = family.build()[family.sampling_network].eval()
    options = family.check_sampler_options({})
    assert set(options) <= set(family.sampler_options) and family.sampler_steps(options) >= 1
    labels = torch.arange(2) if family.conditional else None
    steps = []
    with torch.no_grad():
        x = family.sample(network, labels, noise_generators(0, 0, 2), on_step=lambda: steps.append(1), **options)
    assert x.shape == (2, 3, 28, 28) and float(x.abs().max()) <= 1 + 1e-6
    assert len(steps) in (0, family.sampler_steps(options))
