"""Latent diffusion: each phase trains its own part only, the autoencoder learns, a run samples and records
its reconstructions, and bad configs fail in one line."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from bloodgen.cli import main
from bloodgen.errors import UserError
from bloodgen.models.config import resolve_config
from bloodgen.models.ldm import LDM, RECONSTRUCTION_PSNR
from model_helpers import tiny_config, train_tiny
from test_models_families import build, first, last, mean, one_batch, overfit


def parameters(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


@pytest.mark.parametrize("phase_step, trained, frozen", [(0, "autoencoder", "unet"), (5, "unet", "autoencoder")])
def test_each_phase_updates_its_part_only(phase_step, trained, frozen, tiny_data):
    family, nets = build("ldm", ae_steps=5, steps=10)
    x, y = one_batch(tiny_data)
    network = nets["ldm"]
    before = {part: parameters(getattr(network, part)) for part in ("autoencoder", "unet")}
    from test_models_families import stepper

    ctx = stepper(nets, family.optimizers(nets))
    for step in range(phase_step, phase_step + 3):
        ctx.step = step
        losses = family.train_step(nets, x, y, ctx)
    assert set(losses) == ({"recon_l1"} if trained == "autoencoder" else {"loss"})
    assert not torch.equal(parameters(getattr(network, trained)), before[trained])
    assert torch.equal(parameters(getattr(network, frozen)), before[frozen])


def test_autoencoder_and_latent_unet_each_overfit_one_batch(tiny_data):
    x, y = one_batch(tiny_data)
    family, nets = build("ldm", ae_steps=40, steps=80)
    history = overfit(family, nets, x, y, steps=80)
    ae, diffusion = history[:40], history[40:]
    assert mean(ae, "recon_l1", last) < 0.5 * mean(ae, "recon_l1", first)
    assert mean(diffusion, "loss", last) < mean(diffusion, "loss", first)


def test_latents_have_the_scale_the_noise_schedule_assumes(tiny_data):
    family, nets = build("ldm")
    x, _ = one_batch(tiny_data)
    z = nets["ldm"].autoencoder.encode(x)
    assert z.shape == (16, *family.sample_shape) == (16, 4, 14, 14)
    per_image = z.flatten(1)
    assert torch.allclose(per_image.mean(1), torch.zeros(16), atol=1e-5)
    assert torch.allclose(per_image.var(1, unbiased=False), torch.ones(16), atol=1e-3)


def test_run_records_reconstructions_and_samples_reproducibly(tiny_npz, tmp_path):
    run = train_tiny("ldm", tiny_npz, tmp_path / "runs")
    assert run.status == "completed" and run.step == 4
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert (run.run_dir / "extras" / "reconstructions.png").is_file()
    assert 0 < summary["extras"][RECONSTRUCTION_PSNR] < 60
    paths = [tmp_path / f"s{i}.npz" for i in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path, seed in zip(paths, (7, 7, 8)):
            assert main(["sample", str(run.run_dir), "-n", "6", "--seed", str(seed), "--steps", "3",
                         "--out", str(path)]) == 0
    a, b, c = (np.load(p)["images"] for p in paths)
    assert a.shape == (6, 28, 28, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1


@pytest.mark.parametrize("overrides, match", [
    ({"ae_steps": 4}, "'ae_steps' must be in 0..steps-1"),
    ({"channels": [16, 32, 64], "attention": [False, False, True]}, "must list 2 widths (14x14, 7x7)"),
    ({"latent_channels": 0}, "'latent_channels' must be >= 1"),
    ({"latent_noise": -0.1}, "'latent_noise' must be >= 0"),
])
def test_bad_config_is_a_one_line_error(overrides, match):
    with pytest.raises(UserError, match=match.replace("(", r"\(").replace(")", r"\)")):
        resolve_config("ldm", "quick", overrides=tiny_config("ldm", **overrides))


def test_ddpm_check_names_its_own_resolutions():
    assert LDM.levels == (14, 7)
    with pytest.raises(UserError, match=r"must list 3 widths \(28x28, 14x14, 7x7\)"):
        resolve_config("ddpm", "quick", overrides={"channels": [16, 32], "attention": [False, True]})
