"""Denoising diffusion (DDPM) with diffusers' U-Net and noise schedulers, and classifier-free guidance.

The network is `diffusers.UNet2DModel` (28 -> 14 -> 7, self-attention at the levels the config marks
and in the 7x7 middle block); the time step enters through its sinusoidal embedding, the class through
`num_class_embeds` (added to the time embedding), with one extra "null" class that label dropout
trains for the unconditional half of classifier-free guidance.

The forward process and the samplers are diffusers schedulers built from one config: DDPMScheduler for
training and ancestral sampling, DDIMScheduler and DPMSolverMultistepScheduler for 20-50-step sampling
("trailing" timestep spacing, which keeps the last step at t = T - 1 where few steps need it).

DDIM's `eta` (0 = deterministic, 1 = the ancestral variance) defaults to 1: with epsilon prediction and
the cosine schedule the first steps turn the noise estimate into an x0 estimate through 1/sqrt(abar)
(20,000 at t = T - 1, 16 at the next 25-step time), and the deterministic sampler carries those errors
to the end as a whole-tile colour cast (67% of DDIM-25 samples of the cpu study's ddpm lie outside the
real images' mean-colour range, against 8% at eta = 1; benchmarks/ddpm_colour_drift.py). Configs
saved before `eta` existed keep their deterministic sampling. v-prediction (`prediction: v`) removes
that amplification at its root: x0 = sqrt(abar) x_t - sqrt(1 - abar) v needs no division by sqrt(abar).

CytoDiffusion's training augmentation is three options on top of the loop's flips and quarter turns:
`rotate` (any angle), `colour_jitter` (brightness, contrast, saturation, hue; the paper's 0.25, 0.25, 0.25,
0.125) and `cond_mixup` (alpha of mixup, the paper's 0.3: pairs of images mixed with lambda ~ Beta(alpha,
alpha) and their class embeddings mixed with the same lambda, through `MixableEmbedding`).

`snr_gamma` > 0 weights the loss by Min-SNR-gamma (Hang et al. 2023, the weighting CytoDiffusion
trains with): each time step's loss is scaled so that its effective x0-loss weight is min(SNR, gamma),
which stops the many nearly noise-free steps from dominating the gradient and speeds convergence.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from torch import nn

from bloodgen.data import random_colour_jitter, random_rotation
from bloodgen.errors import UserError
from bloodgen.models.base import Family, StepContext, norm_groups, randn
from bloodgen.models.config import require

SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction"}
SAMPLERS = ("ddpm", "ddim", "dpm")


class MixableEmbedding(nn.Embedding):
    """The U-Net's class embedding that also takes mixing weights: integer labels (N,) look rows up as
    nn.Embedding does; float weights (N, classes) return the weighted sums of the rows (mixup of the
    conditioning). Same parameter, same state-dict key as the nn.Embedding it replaces."""

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.is_floating_point():
            return labels.to(self.weight.dtype) @ self.weight
        return super().forward(labels)


class DDPM(Family):
    sampling_network = "unet"
    choices = {"beta_schedule": tuple(SCHEDULES), "prediction": tuple(PREDICTIONS), "sampler": SAMPLERS}
    levels: tuple[int, ...] = (28, 14, 7)  # the U-Net's resolutions, one width each in `channels`
    clip_sample = True  # x0 estimates are clipped to the data range [-1, 1]

    @property
    def sample_channels(self) -> int:
        """Channels of what the diffusion runs on: RGB images here, latents in `ldm`."""
        return 3

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self.sample_channels, self.levels[0], self.levels[0]

    def check(self) -> None:
        c = self.config
        require(all(ch >= 1 for ch in c["channels"]), "channels", "must be positive widths", c)
        require(len(c["attention"]) == len(c["channels"]), "attention",
                f"must have one true/false per level of channels ({len(c['channels'])})", c)
        require(all(ch % c["attention_head_dim"] == 0 for ch, a in zip(c["channels"], c["attention"]) if a)
                and c["channels"][-1] % c["attention_head_dim"] == 0 and c["attention_head_dim"] >= 1,
                "attention_head_dim", "must divide the width of every attention level and of the last level", c)
        require(len(c["channels"]) == len(self.levels), "channels",
                f"must list {len(self.levels)} widths ({', '.join(f'{n}x{n}' for n in self.levels)})", c)
        require(c["layers_per_block"] >= 1, "layers_per_block", "must be >= 1", c)
        require(c["timesteps"] >= 2, "timesteps", "must be >= 2", c)
        require(1 <= c["sample_steps"] <= c["timesteps"], "sample_steps", "must be in 1..timesteps", c)
        require(0 <= c["dropout"] < 1, "dropout", "must be in [0, 1)", c)
        require(0 <= c["cfg_dropout"] < 1, "cfg_dropout", "must be in [0, 1)", c)
        require(c["guidance"] >= 0, "guidance", "must be >= 0", c)
        if "eta" in c:
            require(0 <= c["eta"] <= 1, "eta", "must be in [0, 1]", c)
        if "snr_gamma" in c:
            require(c["snr_gamma"] >= 0, "snr_gamma", "must be >= 0 (0: every time step weighted equally)", c)
        require(len(c["colour_jitter"]) == 4 and all(v >= 0 for v in c["colour_jitter"]) and c["colour_jitter"][3] <= 0.5,
                "colour_jitter", "must be 4 numbers >= 0: brightness, contrast, saturation, hue (hue at most 0.5)", c)
        require(c["cond_mixup"] >= 0, "cond_mixup", "must be >= 0 (the alpha of mixup; 0 turns it off)", c)

    def build(self) -> dict[str, nn.Module]:
        # Class n_classes is the "no label" class of classifier-free guidance.
        unet = self.unet(num_class_embeds=self.n_classes + 1 if self.conditional else None)
        if self.conditional:
            embedding = unet.class_embedding
            unet.class_embedding = MixableEmbedding(embedding.num_embeddings, embedding.embedding_dim)
            unet.class_embedding.load_state_dict(embedding.state_dict())
        return {"unet": unet}

    def unet(self, **class_conditioning: Any) -> nn.Module:
        """The config's U-Net; subclasses (proto-ddpm) pass their own class-conditioning arguments."""
        c = self.config
        widths = c["channels"]
        channels, size, _ = self.sample_shape
        return UNet2DModel(
            sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=tuple(widths),
            layers_per_block=c["layers_per_block"],
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in c["attention"]),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(c["attention"])),
            attention_head_dim=c["attention_head_dim"], norm_num_groups=math.gcd(norm_groups(min(widths)), *widths),
            dropout=c["dropout"], resnet_time_scale_shift="scale_shift", **class_conditioning)

    @property
    def null_class(self) -> int:
        return self.n_classes

    @functools.cached_property
    def train_scheduler(self):
        """One scheduler for every training step: it keeps its alphas on the device after the first step."""
        return self.noise_scheduler()

    def noise_scheduler(self):
        c = self.config
        return DDPMScheduler(num_train_timesteps=c["timesteps"], beta_schedule=SCHEDULES[c["beta_schedule"]],
                             prediction_type=PREDICTIONS[c["prediction"]], clip_sample=self.clip_sample)

    def sampling_scheduler(self, sampler: str):
        base = self.noise_scheduler()
        if sampler == "ddpm":
            return base
        cls = DDIMScheduler if sampler == "ddim" else DPMSolverMultistepScheduler
        return cls.from_config(base.config, timestep_spacing="trailing")

    @torch.no_grad()
    def diffusion_input(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """What the diffusion noises for images x in [-1, 1]: the images themselves here."""
        return x

    def denoise(self, unet: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The U-Net's prediction (epsilon or v) for noisy x at time t; the one place t and labels enter it."""
        return unet(x, t, class_labels=labels if self.conditional else None).sample

    def train_step(self, networks, x, y, ctx: StepContext) -> dict[str, torch.Tensor]:
        x, y = self.augment(x, y)
        loss = self.diffusion_loss(networks["unet"], x, y)
        ctx.update(loss, "unet")
        return {"loss": loss.detach()}

    def augment(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The config's rotation, colour jitter and mixup (see the module doc); y becomes (N, classes + 1)
        mixing weights under mixup."""
        c = self.config
        if c["rotate"]:
            x = random_rotation(x)
        if any(c["colour_jitter"]):
            x = random_colour_jitter(x, tuple(c["colour_jitter"]))
        if c["cond_mixup"] and self.conditional:
            lam = torch.distributions.Beta(c["cond_mixup"], c["cond_mixup"]).sample((x.shape[0],)).to(x.device)
            pair = torch.randperm(x.shape[0], device=x.device)
            x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[pair]
            one_hot = nn.functional.one_hot(y, self.n_classes + 1).float()
            y = lam[:, None] * one_hot + (1 - lam[:, None]) * one_hot[pair]
        return x, y

    def diffusion_loss(self, network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The denoising loss of `network` on clean samples x (images, or latents in `ldm`) of classes y
        (labels (N,), or mixing weights (N, classes + 1))."""
        scheduler = self.train_scheduler
        noise = torch.randn_like(x)
        t = torch.randint(0, self.config["timesteps"], (x.shape[0],), device=x.device)
        x_t = scheduler.add_noise(x, noise, t)
        target = noise if self.config["prediction"] == "epsilon" else scheduler.get_velocity(x, noise, t)
        labels = None
        if self.conditional:
            drop = torch.rand(x.shape[0], device=x.device) < self.config["cfg_dropout"]
            if y.is_floating_point():
                null = nn.functional.one_hot(torch.tensor(self.null_class), y.shape[1]).to(y)
                labels = torch.where(drop[:, None], null, y)
            else:
                labels = torch.where(drop, torch.full_like(y, self.null_class), y)
        per_image = (self.denoise(network, x_t, t, labels).float() - target).square().mean((1, 2, 3))
        return (per_image * self.loss_weights(scheduler, t)).mean()

    def loss_weights(self, scheduler, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma per-sample weights for the config's prediction target (ones when `snr_gamma` is 0).

        With SNR = abar / (1 - abar), an epsilon loss equals SNR times the x0 loss and a v loss (SNR + 1)
        times it, so dividing min(SNR, gamma) by those factors gives every step the x0 weight min(SNR, gamma).
        """
        gamma = self.config["snr_gamma"]
        if not gamma:
            return torch.ones_like(t, dtype=torch.float32)
        abar = scheduler.alphas_cumprod.to(t.device)[t].float()
        snr = abar / (1 - abar)
        return snr.clamp(max=gamma) / (snr if self.config["prediction"] == "epsilon" else snr + 1)

    def guided(self, unet, x, t, labels, guidance: float) -> torch.Tensor:
        """Classifier-free guidance: uncond + w * (cond - uncond); w = 1 is the plain conditional model."""
        if not self.conditional or guidance == 1:
            return self.denoise(unet, x, t, labels)
        null = torch.full_like(labels, self.null_class)
        cond, uncond = self.denoise(unet, torch.cat([x, x]), t, torch.cat([labels, null])).chunk(2)
        return uncond + guidance * (cond - uncond)

    def check_sampler_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Fill in the config's defaults and check the values, before any sampling starts."""
        options = super().check_sampler_options(options)
        c = self.config
        sampler = options.get("sampler", c["sampler"])
        if sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
        # Ancestral DDPM defaults to every training step; the fast samplers to the config's step count.
        steps = options.get("steps")
        if steps is None:
            steps = c["timesteps"] if sampler == "ddpm" else c["sample_steps"]
        if not 1 <= steps <= c["timesteps"]:
            raise UserError(f"--steps must be in 1..{c['timesteps']} (the model's training steps), got {steps}")
        guidance = options.get("guidance", c["guidance"])
        if guidance < 0:
            raise UserError(f"--guidance must be >= 0, got {guidance}")
        if sampler != "ddim":
            if options.get("eta"):
                raise UserError(f"--eta is the ddim sampler's noise level; the {sampler} sampler has none")
            return {"sampler": sampler, "steps": steps, "guidance": guidance}
        eta = options.get("eta", c["eta"])
        if not 0 <= eta <= 1:
            raise UserError(f"--eta must be in [0, 1] (0 deterministic DDIM, 1 ancestral noise), got {eta}")
        return {"sampler": sampler, "steps": steps, "guidance": guidance, "eta": eta}

    @torch.no_grad()
    def sample(self, network, labels, generators, on_step=None, **options: Any) -> torch.Tensor:
        return self.reverse_process(network, labels, generators, options, on_step).clamp(-1, 1)

    def sampler_steps(self, options: dict[str, Any]) -> int:
        return self.check_sampler_options(options)["steps"]

    def reverse_process(self, network, labels, generators, options: dict[str, Any], on_step=None) -> torch.Tensor:
        """Noise of `sample_shape` (one generator per sample) denoised by the chosen sampler."""
        opts = self.check_sampler_options(options)
        device = next(network.parameters()).device
        scheduler = self.sampling_scheduler(opts["sampler"])
        scheduler.set_timesteps(opts["steps"], device=device)
        labels = labels.to(device) if self.conditional else None
        x = randn(generators, self.sample_shape, device) * scheduler.init_noise_sigma
        extra = {"eta": opts["eta"]} if "eta" in opts else {}
        for t in scheduler.timesteps:
            out = self.guided(network, scheduler.scale_model_input(x, t), t, labels, opts["guidance"])
            x = scheduler.step(out, t, x, generator=generators, **extra).prev_sample
            if on_step is not None:
                on_step()
        return x
