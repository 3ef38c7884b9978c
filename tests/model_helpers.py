"""Tiny configs and a quiet `train` wrapper shared by the model, training and sampling tests."""

from __future__ import annotations

import warnings
from pathlib import Path

FAMILIES = ("vae", "gan", "cgan", "ddpm")

COMMON = {"batch_size": 16, "steps": 4, "log_every": 2, "ckpt_every": 1000, "sample_every": 0, "warmup_steps": 2}
TINY = {
    "vae": {"latent_dim": 8, "channels": 8, "blocks": 1, "probe_trees": 5},
    "gan": {"z_dim": 16, "channels": 8},
    "cgan": {"z_dim": 16, "channels": 8, "diffaug": "color,translation,cutout"},
    "ddpm": {"channels": [16, 16, 32], "attention": [False, False, True], "attention_head_dim": 16,
             "layers_per_block": 1, "timesteps": 100, "sample_steps": 4},
}
# Not in FAMILIES: proto-ddpm needs a prototypes file, so tests/test_prototypes.py covers it with its own.
TINY["proto-ddpm"] = {**TINY["ddpm"], "class_dim": 8}
# Not in FAMILIES (the study's four): tests/test_ldm.py and the machinery tests name it. Of the 4 tiny
# steps, 2 train the autoencoder and 2 the U-Net.
TINY["ldm"] = {"channels": [16, 32], "attention": [False, True], "attention_head_dim": 16, "layers_per_block": 1,
               "timesteps": 100, "sample_steps": 4, "ae_channels": 8, "ae_steps": 2}


def tiny_config(model: str, **extra) -> dict:
    return {**COMMON, **TINY[model], **extra}


def train_tiny(model: str, data: Path, out: Path, **kwargs):
    """`train` on the tiny file, quiet, with the tiny config plus `overrides`."""
    from bloodgen.training import train

    overrides = tiny_config(model, **kwargs.pop("overrides", {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny file is "not the official BloodMNIST"
        return train(model, overrides=overrides, data=data, out=out, progress=False, **kwargs)


def resume_tiny(resume: Path, data: Path, **kwargs):
    from bloodgen.training import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(resume=resume, data=data, progress=False, **kwargs)


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
