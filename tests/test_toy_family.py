"""A new family is one module and one record: a toy family defined here alone, registered in the family
registry (no file of bloodgen changes), gets its own `bloodgen sample` flag, trains, samples and runs in a
quick study."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bloodgen.cli import main
from bloodgen.errors import UserError
from bloodgen.models.base import Family, randn
from bloodgen.models.config import PRESETS
from bloodgen.models.registry import REGISTRY, FamilySpec, SamplerOption
from model_helpers import check_conformance, tiny_config, train_tiny


class ClassMeans(nn.Module):
    def __init__(self, n_classes: int):
        super().__init__()
        self.means = nn.Parameter(torch.zeros(n_classes, 3, 28, 28))

    def forward(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        if labels is None:
            return self.means.mean(0, keepdim=True).expand(n, -1, -1, -1)
        return self.means[labels]


class ToyFamily(Family):
    """Each class's mean image plus Gaussian noise: the smallest model the machinery can train."""

    sampling_network = "means"

    def build(self) -> dict[str, nn.Module]:
        return {"means": ClassMeans(self.n_classes)}

    def train_step(self, networks, x, y, ctx):
        loss = F.mse_loss(networks["means"](y if self.conditional else None, len(x)), x)
        ctx.update(loss, "means")
        return {"loss": loss.detach()}

    def check_sampler_options(self, options):
        scale = super().check_sampler_options(options).get("noise_scale", self.config["noise_scale"])
        if scale < 0:
            raise UserError(f"--noise-scale must be >= 0, got {scale}")
        return {"noise_scale": scale}

    def sample(self, network, labels, generators, on_step=None, **options):
        scale = self.check_sampler_options(options)["noise_scale"]
        mean = network(labels, len(generators))
        return (mean + scale * randn(generators, (3, 28, 28), mean.device)).clamp(-1, 1)


TRAINER = {"steps": 200, "batch_size": 64, "warmup_steps": 0, "ema_decay": 0.9, "log_every": 50, "sample_every": 0,
           "ckpt_every": 100}
TOY_PRESETS = {"shared": {"conditional": True, "lr": 0.05, "betas": [0.9, 0.999], "weight_decay": 0.0,
                          "lr_schedule": "constant", "grad_clip": 0.0, "augment": False, "mixed_precision": "auto",
                          "noise_scale": 0.3},
               "presets": {name: TRAINER for name in PRESETS}}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    presets = tmp_path / "toy.json"
    presets.write_text(json.dumps(TOY_PRESETS))
    monkeypatch.setitem(REGISTRY, "toy", FamilySpec(
        "toy", f"{__name__}:ToyFamily", "class means plus noise (a test family)", in_study=True,
        quick_study_steps=20, presets_file=str(presets),
        sampler_options=(SamplerOption("noise_scale", float, "toy: noise around the class mean"),)))
    return "toy"


def test_the_toy_family_conforms(toy):
    check_conformance(toy)


def test_the_toy_family_trains_and_samples_with_its_own_flag(toy, tiny_npz, tmp_path, capsys):
    run = train_tiny(toy, tiny_npz, tmp_path / "runs")
    assert run.status == "completed" and run.summary.model == "toy" and run.export.is_file()
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    assert "--noise-scale NOISE_SCALE" in capsys.readouterr().out
    plain = tmp_path / "plain.npz"
    assert main(["sample", str(run.run_dir), "-n", "16", "--balanced", "--noise-scale", "0", "--out", str(plain),
                 "--quiet"]) == 0
    with np.load(plain) as f:
        images, labels = f["images"], f["labels"]
    for c in np.unique(labels):  # no noise: every image of a class is that class's mean
        assert (images[labels == c] == images[labels == c][0]).all()
    noisy = tmp_path / "noisy.npz"
    assert main(["sample", str(run.run_dir), "-n", "16", "--balanced", "--noise-scale", "0.5", "--out", str(noisy),
                 "--quiet"]) == 0
    with np.load(noisy) as f:
        assert (f["images"] != images).any()
    assert main(["sample", str(run.run_dir), "-n", "4", "--guidance", "2", "--out", str(tmp_path / "x.npz")]) == 2
    assert "no sampler option(s) guidance" in capsys.readouterr().err


def test_the_toy_family_runs_in_a_quick_study(toy, tiny_npz, tmp_path):
    from test_study import TINY_STUDY, run_tiny

    preset = replace(TINY_STUDY, config_overrides={toy: tiny_config(toy)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_tiny(tmp_path, tiny_npz, preset, models=[toy])
    evaluation = results.families[toy].runs[0].eval
    assert evaluation["fid"]["mean"] > 0 and "fid_per_class" in evaluation
    assert f"| **{toy}** |" in (tmp_path / "report.md").read_text()
