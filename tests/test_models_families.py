"""Each model family: a few training steps, over-fitting one batch, sampling, and config validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bloodgen.errors import UserError
from bloodgen.models.config import PRESETS, resolve_config, upgrade
from bloodgen.models.registry import REGISTRY
from bloodgen.models.registry import get_family
from bloodgen.training.records import RunSummary
from model_helpers import FAMILIES, check_conformance, tiny_config, train_tiny


def build(model: str, **extra):
    config = resolve_config(model, "quick", overrides=tiny_config(model, **extra))
    family = get_family(model)(model, config, 8)
    torch.manual_seed(0)
    return family, family.build()


def one_batch(tiny_data, n=16):
    from bloodgen.data import to_model_range

    images, labels = tiny_data.split("train")
    return to_model_range(images[:n]), torch.as_tensor(labels[:n])


def stepper(networks, optimizers, frozen=()):
    """The training loop's own step machinery; `frozen` optimisers get a learning rate of 0."""
    from bloodgen.training.loop import Stepper, make_accelerator

    schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, lambda s, f=(name in frozen): 0.0 if f else 1.0)
                  for name, opt in optimizers.items()}
    return Stepper(make_accelerator(True, "no"), networks, optimizers, schedulers, grad_clip=0.0)


def overfit(family, networks, x, y, steps, frozen=()):
    ctx = stepper(networks, family.optimizers(networks), frozen)
    history = []
    for step in range(steps):
        ctx.step = step
        history.append({k: float(v) for k, v in family.train_step(networks, x, y, ctx).items()})
    return history


def mean(history, key, part):
    return float(np.mean([h[key] for h in part(history)]))


def first(h):
    return h[:5]


def last(h):
    return h[-5:]


def test_registry_has_every_family_and_presets_share_keys():
    from bloodgen.models.config import load_presets

    assert set(FAMILIES) <= set(REGISTRY)
    for model in REGISTRY:
        presets = load_presets(model)
        assert set(presets) == set(PRESETS)
        assert all(set(presets[name]) == set(presets["full"]) for name in presets), model
        for name in presets:
            resolve_config(model, name)  # every shipped preset validates


@pytest.mark.parametrize("model", FAMILIES)
def test_few_steps_give_finite_losses_and_a_run_folder(model, tiny_npz, tmp_path):
    result = train_tiny(model, tiny_npz, tmp_path)
    assert result.status == "completed" and result.step == 4
    rows = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    losses = {k: v for r in rows for k, v in r.items() if k.startswith(("loss", "recon", "kl"))}
    assert losses and all(math.isfinite(v) for v in losses.values())
    for name in ("config.json", "environment.json", "log.csv", "summary.json", "model.safetensors", "model.json",
                 "checkpoints/checkpoint.pt", "samples/step-0000004.png", "snapshots.jsonl"):
        assert (result.run_dir / name).is_file(), name
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["sampling_parameters"] > 0
    # Portable: the weights relative to the run folder, no absolute path of this machine.
    assert summary["export"] == "model.safetensors" and summary["checkpoint"] == "checkpoints/checkpoint.pt"
    assert not Path(summary["run_dir"]).is_absolute() and RunSummary.from_dict(summary) == result.summary
    env = json.loads((result.run_dir / "environment.json").read_text())
    assert len(env["data"]["sha256"]) == 64 and env["versions"]["torch"]
    assert env["cpu_model"] and env["torch_cpu_capability"]  # what a timing was measured on


def test_vae_overfits_one_batch(tiny_data):
    family, nets = build("vae", kl_warmup_steps=0)
    x, y = one_batch(tiny_data)
    history = overfit(family, nets, x, y, steps=40)
    assert mean(history, "loss", last) < 0.5 * mean(history, "loss", first)


@pytest.mark.parametrize("model", ["gan", "cgan"])
def test_gan_discriminator_and_generator_each_learn_one_batch(model, tiny_data):
    x, y = one_batch(tiny_data)
    family, nets = build(model, diffaug="")
    d_history = overfit(family, nets, x, y, steps=30, frozen=("generator",))
    assert mean(d_history, "loss_d", last) < 0.5 * mean(d_history, "loss_d", first)
    family, nets = build(model, diffaug="")
    g_history = overfit(family, nets, x, y, steps=30, frozen=("discriminator",))
    assert mean(g_history, "loss_g", last) < mean(g_history, "loss_g", first) - 0.5


def test_ddpm_overfits_one_batch(tiny_data):
    family, nets = build("ddpm")
    x, y = one_batch(tiny_data)
    history = overfit(family, nets, x, y, steps=40)
    assert mean(history, "loss", last) < 0.6 * mean(history, "loss", first)


def test_ddpm_v_prediction_with_min_snr_overfits_one_batch(tiny_data):
    family, nets = build("ddpm", prediction="v", snr_gamma=5.0)
    x, y = one_batch(tiny_data)
    history = overfit(family, nets, x, y, steps=40)
    assert mean(history, "loss", last) < 0.6 * mean(history, "loss", first)


@pytest.mark.parametrize("prediction, factor", [("epsilon", lambda snr: snr), ("v", lambda snr: snr + 1)])
def test_min_snr_weights_give_every_step_the_x0_weight_min_snr_gamma(prediction, factor):
    # An epsilon loss is SNR x the x0 loss, a v loss (SNR + 1) x it: weight x factor must be min(SNR, gamma).
    family, _ = build("ddpm", prediction=prediction, snr_gamma=5.0)
    scheduler = family.noise_scheduler()
    t = torch.arange(family.config["timesteps"])
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    weights = family.loss_weights(scheduler, t)
    torch.testing.assert_close(weights * factor(snr), snr.clamp(max=5.0), rtol=1e-4, atol=1e-6)
    last = 1.0 if prediction == "epsilon" else snr[-1] / (snr[-1] + 1)
    assert weights[0] < 0.01 and weights[-1] == pytest.approx(last)
    uniform, _ = build("ddpm", prediction=prediction, snr_gamma=0.0)
    assert torch.equal(uniform.loss_weights(scheduler, t), torch.ones(len(t)))


def test_vae_gaussian_likelihood_uses_the_maximum_likelihood_variance():
    family, _ = build("vae", recon_loss="gaussian")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 28, 28, generator=gen) * 2 - 1
    noise = 0.1 * torch.randn(8, 3, 28, 28, generator=gen)
    out = (x + noise).requires_grad_()
    loss = family.reconstruction_loss(out, x)
    sigma2 = noise.square().mean()
    d = 3 * 28 * 28
    # Closed form at sigma^2 = MSE: D/2 (log 2 pi sigma^2 + 1) per image.
    assert loss.item() == pytest.approx(0.5 * d * (math.log(2 * math.pi * sigma2) + 1), rel=1e-4)
    # The fixed-variance loss (mse, sigma^2 = 1/2) is far flatter: its gradient is 2 sigma^2 (= 0.02) times it.
    loss.backward()
    mse_grad = torch.autograd.grad(build("vae", recon_loss="mse")[0].reconstruction_loss(out, x), out)[0]
    torch.testing.assert_close(mse_grad, out.grad * 2 * sigma2, rtol=1e-4, atol=1e-7)


def test_diffusion_unet_output_depends_on_time_and_class():
    family, nets = build("ddpm")
    unet = nets["unet"].eval()
    x = torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        base = family.denoise(unet, x, torch.tensor(50), y)
        other_t = family.denoise(unet, x, torch.tensor(900), y)
        other_y = family.denoise(unet, x, torch.tensor(50), torch.tensor([5, 6, 7, 4]))
        null_y = family.denoise(unet, x, torch.tensor(50), torch.full((4,), family.null_class))
    for other in (other_t, other_y, null_y):
        assert (other - base).abs().mean() > 1e-3 * base.abs().mean()
    # ... and the sampler passes the labels through: the same noise with another class is another image.
    from bloodgen.sampling.api import noise_generators

    a = family.sample(unet, torch.zeros(2, dtype=torch.long), noise_generators(0, 0, 2))
    b = family.sample(unet, torch.full((2,), 5), noise_generators(0, 0, 2))
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("model", FAMILIES)
def test_family_samples_are_images_in_range(model):
    from bloodgen.sampling.api import noise_generators

    family, nets = build(model)
    network = nets[family.sampling_network].eval()
    x = family.sample(network, torch.arange(6) % 8, noise_generators(3, 0, 6))
    assert x.shape == (6, 3, 28, 28) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1


def test_ddpm_samplers_and_guidance_options():
    from bloodgen.sampling.api import noise_generators

    family, nets = build("ddpm")
    unet = nets["unet"].eval()
    y = torch.tensor([1, 2])
    outs = {s: family.sample(unet, y, noise_generators(0, 0, 2), sampler=s, steps=3) for s in ("ddpm", "ddim", "dpm")}
    assert all(o.shape == (2, 3, 28, 28) for o in outs.values())
    plain = family.sample(unet, y, noise_generators(0, 0, 2), sampler="ddim", steps=3, guidance=1.0)
    guided = family.sample(unet, y, noise_generators(0, 0, 2), sampler="ddim", steps=3, guidance=3.0)
    assert (plain - guided).abs().max() > 1e-4
    with pytest.raises(UserError, match="sampler"):
        family.sample(unet, y, noise_generators(0, 0, 2), sampler="euler")


def test_ddim_eta_adds_per_sample_noise_and_old_configs_stay_deterministic():
    from bloodgen.models.ddpm import DDPM
    from bloodgen.sampling.api import noise_generators

    family, nets = build("ddpm")
    unet = nets["unet"].eval()
    y = torch.tensor([1, 2, 3])
    run = lambda gens, **o: family.sample(unet, y, gens, sampler="ddim", steps=4, **o)
    assert family.check_sampler_options({"sampler": "ddim"})["eta"] == 1.0  # the presets' default
    stochastic, deterministic = run(noise_generators(0, 0, 3)), run(noise_generators(0, 0, 3), eta=0.0)
    assert (stochastic - deterministic).abs().max() > 1e-3
    assert torch.equal(stochastic, run(noise_generators(0, 0, 3)))  # same seed, same samples
    # Sample i depends on its own generator only, also through the added noise.
    tail = family.sample(unet, y[1:], noise_generators(0, 1, 3), sampler="ddim", steps=4)
    assert torch.allclose(tail, stochastic[1:], atol=1e-4)
    saved = {k: v for k, v in family.config.items() if k != "eta"}  # an export from before eta existed
    assert DDPM("ddpm", upgrade("ddpm", saved), 8).check_sampler_options({"sampler": "ddim"})["eta"] == 0.0
    assert "eta" not in family.check_sampler_options({"sampler": "dpm"})
    with pytest.raises(UserError, match="eta must be in"):
        family.check_sampler_options({"sampler": "ddim", "eta": 1.5})
    with pytest.raises(UserError, match="ddim sampler's noise"):
        family.check_sampler_options({"sampler": "ddpm", "eta": 1.0})


def test_vae_latent_probe_and_figures(tiny_data, tmp_path):
    from bloodgen.models.vae import PROBE_ACCURACY

    family, nets = build("vae")
    figures = family.extras(nets["vae"].eval(), tiny_data, tmp_path, seed=0)
    assert 0.0 <= figures[PROBE_ACCURACY] <= 1.0
    assert (tmp_path / "reconstructions.png").is_file() and (tmp_path / "interpolations.png").is_file()


@pytest.mark.parametrize("overrides, match", [
    ({"no_such_key": 1}, "unknown config key.*no_such_key"),
    ({"lr": "fast"}, "'lr'.*must be a number"),
    ({"lr": -1.0}, "'lr'.*> 0"),
    ({"steps": 0}, "'steps'.*>= 1"),
    ({"steps": 2.5}, "'steps'.*integer"),
    ({"conditional": 1}, "'conditional'.*true or false"),
    ({"mixed_precision": "fp8"}, "'mixed_precision'.*one of"),
    ({"betas": [0.9]}, "'betas'"),
])
def test_bad_config_values_name_the_key(overrides, match):
    with pytest.raises(UserError, match=match):
        resolve_config("vae", "quick", overrides=overrides)


@pytest.mark.parametrize("model, overrides, match", [
    ("vae", {"recon_loss": "ssim"}, "'recon_loss'"),
    ("cgan", {"diffaug": "color,blur"}, "'diffaug'"),
    ("cgan", {"loss": "wasserstein"}, "'loss'"),
    ("ddpm", {"attention": [True]}, "'attention'"),
    ("ddpm", {"prediction": "x0"}, "'prediction'"),
    ("ddpm", {"sample_steps": 5000}, "'sample_steps'"),
])
def test_bad_family_values_name_the_key(model, overrides, match):
    with pytest.raises(UserError, match=match):
        resolve_config(model, "quick", overrides=overrides)


def test_unknown_model_and_preset_and_config_file(tmp_path):
    with pytest.raises(UserError, match="unknown model 'flow'.*vae"):
        resolve_config("flow")
    with pytest.raises(UserError, match="unknown preset"):
        resolve_config("vae", "huge")
    with pytest.raises(UserError, match="not found"):
        resolve_config("vae", file=tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        resolve_config("vae", file=bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"beta": 0.25, "lr": 1}))
    config = resolve_config("vae", file=good)
    assert config["beta"] == 0.25 and config["lr"] == 1.0 and isinstance(config["lr"], float)


# What a family may need beyond its tiny config to build without other inputs.
CONFORMANCE_EXTRA = {"proto-ddpm": {"class_embedding": "learned"}}


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_registered_family_conforms(name, tiny_npz):
    """The whole registry, through the one conformance check a new family also passes (test_toy_family.py)."""
    extra = {"source_domain": str(tiny_npz)} if REGISTRY[name].translates else {}
    check_conformance(name, **CONFORMANCE_EXTRA.get(name, {}), **extra)


def test_a_summary_written_with_absolute_paths_still_finds_its_weights(tmp_path):
    """Summaries written before the portable record held the paths of the machine that trained them."""
    record = {"status": "completed", "run_dir": "/elsewhere/runs/ddpm-s0", "model": "ddpm", "preset": "record",
              "seed": 0, "step": 10, "steps": 10, "train_time_s": 1.0, "steps_per_s": 10.0, "parameters": {},
              "sampling_parameters": 5, "device": "cpu", "processes": 1, "mixed_precision": "no", "last_log": None,
              "extras": {}, "checkpoint": "/elsewhere/runs/ddpm-s0/checkpoints/checkpoint.pt",
              "export": "/elsewhere/runs/ddpm-s0/model.safetensors"}
    summary = RunSummary.from_dict(record)
    assert summary.export_in(tmp_path) == tmp_path / "model.safetensors"
    assert summary.checkpoint == "checkpoints/checkpoint.pt"


def test_a_config_saved_before_a_key_existed_gets_the_value_it_was_trained_with():
    from bloodgen.training.checkpoint import RunSpec

    old = {k: v for k, v in resolve_config("ddpm", "record").items() if k not in ("eta", "snr_gamma")}
    spec = RunSpec.from_dict({"model": "ddpm", "preset": "record", "seed": 1, "config": old})
    assert spec.config["eta"] == 0.0 and spec.config["snr_gamma"] == 0.0 and spec.seed == 1
    kept = RunSpec.from_dict({"model": "ddpm", "preset": "record", "seed": 1, "config": {**old, "eta": 0.5}})
    assert kept.config["eta"] == 0.5
    gan = resolve_config("gan", "quick")
    assert RunSpec.from_dict({"model": "gan", "preset": "quick", "seed": 0, "config": gan}).config == gan


def test_paper_augmentation_rotates_jitters_and_mixes_per_image(tiny_data):
    from bloodgen.data import random_colour_jitter, random_rotation, to_model_range
    from bloodgen.models.ddpm import MixableEmbedding

    x = to_model_range(tiny_data.images("test")[:1]).repeat(4, 1, 1, 1)
    torch.manual_seed(0)
    turned = random_rotation(x)
    assert turned.shape == x.shape and not torch.allclose(turned[0], turned[1])  # each image its own angle
    flat = torch.full((2, 3, 28, 28), 0.3)
    assert torch.allclose(random_rotation(flat), flat, atol=1e-5)  # reflection padding: no black corners
    jittered = random_colour_jitter(x, (0.25, 0.25, 0.25, 0.125))
    assert jittered.min() >= -1 and jittered.max() <= 1 and not torch.allclose(jittered[0], jittered[1])
    embedding = MixableEmbedding(9, 5)
    labels = torch.tensor([1, 4])
    one_hot = torch.nn.functional.one_hot(labels, 9).float()
    assert torch.allclose(embedding(one_hot), embedding(labels))
    mixed = 0.3 * one_hot[0] + 0.7 * one_hot[1]
    assert torch.allclose(embedding(mixed[None])[0], 0.3 * embedding.weight[1] + 0.7 * embedding.weight[4])


def test_a_ddpm_trains_with_the_paper_augmentation_deterministically(tiny_npz, tmp_path):
    paper = {"rotate": True, "colour_jitter": [0.25, 0.25, 0.25, 0.125], "cond_mixup": 0.3}
    runs = [train_tiny("ddpm", tiny_npz, tmp_path / str(i), overrides=paper) for i in range(2)]
    logs = [[json.loads(line) for line in (r.run_dir / "log.jsonl").read_text().splitlines()] for r in runs]
    assert runs[0].status == "completed" and all(math.isfinite(row["loss"]) for row in logs[0])
    assert [row["loss"] for row in logs[0]] == [row["loss"] for row in logs[1]]  # same seed, same run
    with pytest.raises(UserError, match="cond_mixup"):
        resolve_config("proto-ddpm", "quick", None, tiny_config("proto-ddpm", cond_mixup=0.3))
    with pytest.raises(UserError, match="rotate"):
        resolve_config("ldm", "quick", None, {"rotate": True})
    with pytest.raises(UserError, match="colour_jitter"):
        resolve_config("ddpm", "quick", None, {"colour_jitter": [0.1, 0.1]})
