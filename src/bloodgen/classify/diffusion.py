"""A class-conditional diffusion model used as a classifier (CytoDiffusion).

For an image x0, each draw picks a time step t and a noise eps, forms x_t once and asks the U-Net for
its noise prediction under every remaining candidate class c; the draw's error for c is the weighted
mean squared error w(t) * |eps - eps_c|^2. The class with the smallest mean error over the draws wins.
Because every class sees the same (t, eps) in a draw, the errors are paired, so after `min_draws` a
one-sided paired t-test (scipy.stats.ttest_rel) drops any class whose errors are significantly larger
than the current best's; an image stops when one class is left or after `max_draws` draws.

The prediction is the lowest mean error among the classes never pruned; the confidence is the smallest
paired gap (mean error difference on the same draws) of another class; the per-pixel mean error of a
class minus that of the predicted class is the counterfactual heat map ("what would have to change").

Reproducibility: image i of a call draws its (t, eps) only from its own CPU generator, seeded from
(seed, i), in rounds of `draws_per_round`; so the draws do not depend on the device or on how images
are batched (batched kernels can move the errors in the last float digits only).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from tqdm.auto import tqdm

from bloodgen.classify.diffusion_options import ClassifierOptions
from bloodgen.classify.draws import draw_weights, paired_gaps, prune_classes, winners
from bloodgen.data import N_CLASSES, to_model_range
from bloodgen.data.dataset import dihedral
from bloodgen.errors import UserError
from bloodgen.models.registry import noise_classifiers
from bloodgen.provenance import atomic_path, portable_path


@dataclass
class ClassifyResult:
    """Per-image outputs; classes that are not candidates have NaN errors and 0 draws."""

    predictions: np.ndarray  # (N,) int64: the class with the lowest mean error among those never pruned
    mean_errors: np.ndarray  # (N, C) float64: mean weighted error over the draws the class took part in
    error_gaps: np.ndarray  # (N, C) float64: mean of (error of c - error of the prediction) over c's draws
    draws: np.ndarray  # (N, C) int64: draws each class took part in (its first draws)
    confidence: np.ndarray  # (N,) smallest error gap of another class
    candidates: list[int]
    seconds: float
    options: dict = field(default_factory=dict)
    # With keep_draws: every draw's unweighted error per class (N, C, D; NaN where a class was not scored)
    # and its time step (N, D; -1 past an image's last draw), for bloodgen.classify.draws' replays.
    draw_errors: np.ndarray | None = None
    draw_timesteps: np.ndarray | None = None

    @property
    def draws_used(self) -> np.ndarray:
        """(N,) draws made for each image (those of its winning class)."""
        return self.draws.max(1)

    @property
    def evaluations(self) -> np.ndarray:
        """(N,) network evaluations spent on each image."""
        return self.draws.sum(1)


def candidate_classes(loaded) -> list[int]:
    """Classes the model can score: conditional models only, classes it saw in training only."""
    if not loaded.conditional:
        raise UserError(f"{loaded.spec.model} model in {loaded.source} is unconditional: a diffusion classifier "
                        f"needs a class-conditional model (train with --set conditional=true)")
    if loaded.spec.model not in noise_classifiers():
        raise UserError(f"{loaded.source} is a {loaded.spec.model} model: only {', '.join(noise_classifiers())} "
                        f"models can classify")
    classes = [int(c) for c in np.flatnonzero(loaded.class_counts > 0)]
    if len(classes) < 2:
        raise UserError(f"{loaded.source} was trained on fewer than 2 classes: nothing to choose between")
    return classes


def disc_mask(shape: tuple[int, int], radius: float) -> torch.Tensor:
    """(H, W) float mask: 1 within `radius` pixels of the centre, 0 outside; all ones for radius 0."""
    if radius <= 0:
        return torch.ones(shape)
    rows, cols = torch.meshgrid(torch.arange(shape[0]) - (shape[0] - 1) / 2,
                                torch.arange(shape[1]) - (shape[1] - 1) / 2, indexing="ij")
    mask = (rows ** 2 + cols ** 2 <= radius ** 2).float()
    if mask.sum() == 0:
        raise UserError(f"--disc-radius {radius} holds no pixel: use at least 1")
    return mask


class NoiseErrors:
    """Weighted noise-prediction errors of one loaded model (epsilon or v-prediction), on what its diffusion
    runs on: the pixels, or a latent model's latents of them (the disc then scaled to the latent's size)."""

    def __init__(self, loaded, weighting: str, disc_radius: float = 0.0):
        self.family, self.network = loaded.family, loaded.network
        size = self.family.sample_shape[1]
        self.mask = disc_mask(self.family.sample_shape[1:], disc_radius * size / 28)
        self.device = loaded.device
        self.scheduler = self.family.noise_scheduler()
        self.abar = self.scheduler.alphas_cumprod.to(self.device)
        self.weight_abar = self.scheduler.alphas_cumprod.double().numpy()  # w(t) is computed on the CPU, every round
        self.timesteps = int(self.family.config["timesteps"])
        self.v_prediction = self.family.config["prediction"] == "v"
        self.weighting = weighting

    def draw(self, generator: torch.Generator, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k draws of (t, eps) for one image, from that image's own generator (on the CPU, so any device repeats them)."""
        t = torch.randint(0, self.timesteps, (k,), generator=generator)
        eps = torch.randn((k, *self.family.sample_shape), generator=generator)
        return t, eps

    @torch.inference_mode()
    def residuals(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """eps - eps_pred (float32, on the CPU) for noisy images x_t under class `labels`."""
        x_t, t, labels = x_t.to(self.device), t.to(self.device), labels.to(self.device)
        out = self.family.denoise(self.network, x_t, t, labels).float()
        if self.v_prediction:  # v = sqrt(abar) eps - sqrt(1 - abar) x0  =>  eps = sqrt(abar) v + sqrt(1 - abar) x_t
            abar = self.abar[t].float().view(-1, 1, 1, 1)
            out = abar.sqrt() * out + (1 - abar).sqrt() * x_t
        return eps - out.cpu()

    def error(self, residuals: torch.Tensor) -> torch.Tensor:
        """(B,) mean squared residual of each image over its channels and the pixels of the mask."""
        return (residuals.pow(2).mean(1) * self.mask).sum((1, 2)) / self.mask.sum()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (CPU) as the diffusion sees them (CPU): themselves, or a latent model's latents."""
        return self.family.diffusion_input(self.network, images.to(self.device)).float().cpu()

    def noisy(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(x0, eps, t)

    def weights(self, t: torch.Tensor) -> torch.Tensor:
        """(k,) float64 w(t) of draws at CPU time steps t."""
        return torch.as_tensor(draw_weights(self.weighting, t.numpy(), self.weight_abar, self.timesteps))


def image_generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 2, index]).generate_state(1, np.uint64)[0]))


def check_images(images: np.ndarray, what: str = "images") -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (28, 28, 3):
        raise UserError(f"{what} must be uint8 (N, 28, 28, 3) BloodMNIST images, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise UserError(f"{what} must be uint8 (0-255), got {images.dtype}")
    if len(images) == 0:
        raise UserError(f"{what} holds no images")
    return images


def classify_images(loaded, images: np.ndarray, options: ClassifierOptions = ClassifierOptions(),
                    progress: bool = False, chunk: int = 64, partial: Path | None = None,
                    keep_draws: bool = False) -> ClassifyResult:
    """Classify uint8 images (N, 28, 28, 3) with a loaded conditional ddpm (see the module docstring).

    `chunk` images advance together so that one network batch holds many images' draws; it changes
    the speed, and the errors only by float rounding (batched kernels sum in another order). With
    `partial`, the finished chunks are saved there as they finish and a call on the same images, model
    and options continues after them (a finished file answers at once; whoever keeps the result removes
    it): image i's draws come from its own generator, so the result is the one an uninterrupted call gives.
    With `keep_draws`, the result holds every draw's unweighted errors and time step.
    """
    options = options.check()
    images = check_images(images)
    classes = candidate_classes(loaded)
    scorer = NoiseErrors(loaded, options.weighting, options.disc_radius)
    n = len(images)
    saved = _Partial(partial, images, loaded, options, chunk, keep_draws)
    mean_errors, gaps, draws = saved.mean_errors, saved.gaps, saved.draws
    start_time = time.perf_counter() - saved.seconds
    with tqdm(total=n, initial=saved.done, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for lo in range(saved.done, n, chunk):
            hi = min(n, lo + chunk)
            state = _ChunkState(to_model_range(images[lo:hi]), [image_generator(options.seed, i) for i in range(lo, hi)],
                                classes, options.max_draws, scorer)
            while not state.finished.all():
                rows = np.flatnonzero(~state.finished)
                state.score_round(scorer, rows, options)
                for i in rows:
                    if options.prune and state.done[i] >= options.min_draws:
                        state.active[i] = prune_classes(state.errors[i, :, :state.done[i]], state.active[i],
                                                        options.p_value)
                    if state.done[i] >= options.max_draws or state.active[i].sum() == 1:
                        state.finished[i] = True
                        bar.update(1)
            draws[lo:hi] = state.class_draws
            # A class pruned early keeps the draws it took part in: its mean is over those.
            mean_errors[lo:hi, classes] = state.errors.sum(2)[:, classes] / state.class_draws[:, classes]
            gaps[lo:hi] = paired_gaps(state.errors, state.class_draws, classes)
            if keep_draws:
                saved.draw_errors[lo:hi], saved.draw_timesteps[lo:hi] = state.raw, state.timesteps
            saved.save(hi, time.perf_counter() - start_time)
    return ClassifyResult(predictions=winners(gaps), mean_errors=mean_errors, error_gaps=gaps, draws=draws,
                          confidence=error_gap(gaps), candidates=classes, seconds=time.perf_counter() - start_time,
                          options=options.to_dict(), draw_errors=saved.draw_errors, draw_timesteps=saved.draw_timesteps)


class _Partial:
    """The finished chunks of one `classify_images` call, kept in an .npz with what they depend on (the
    model by its portable path, so a partial file committed from one checkout continues in another)."""

    ARRAYS = ("mean_errors", "gaps", "draws", "draw_errors", "draw_timesteps")

    def __init__(self, path: Path | None, images: np.ndarray, loaded, options: ClassifierOptions, chunk: int,
                 keep_draws: bool):
        n = len(images)
        self.path = None if path is None else Path(path)
        key = {"images": hashlib.sha256(images.tobytes()).hexdigest(), "step": int(loaded.step),
               "source": portable_path(str(loaded.source)), "options": options.to_dict(), "chunk": chunk}
        # Named only when kept, so partial files written before draws could be kept still resume.
        self.key = json.dumps({**key, "keep_draws": True} if keep_draws else key, sort_keys=True, default=str)
        self.mean_errors, self.gaps = np.full((n, N_CLASSES), np.nan), np.full((n, N_CLASSES), np.nan)
        self.draws = np.zeros((n, N_CLASSES), dtype=np.int64)
        self.draw_errors = np.full((n, N_CLASSES, options.max_draws), np.nan) if keep_draws else None
        self.draw_timesteps = np.full((n, options.max_draws), -1, dtype=np.int64) if keep_draws else None
        self.done, self.seconds = 0, 0.0
        if self.path is not None and self.path.is_file():
            with np.load(self.path) as f:
                if str(f["key"]) == self.key:
                    self.done, self.seconds = int(f["done"]), float(f["seconds"])
                    for name in self.ARRAYS:
                        if getattr(self, name) is not None:
                            getattr(self, name)[:] = f[name]

    def save(self, done: int, seconds: float) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, key=np.array(self.key), done=done, seconds=seconds,
                     **{name: getattr(self, name) for name in self.ARRAYS if getattr(self, name) is not None})


class _ChunkState:
    """The draws of a chunk of images so far: per-draw errors, active classes, draw counts."""

    def __init__(self, images: torch.Tensor, generators: list[torch.Generator], classes: list[int], max_draws: int,
                 scorer: NoiseErrors):
        m = len(images)
        self.images, self.generators = images, generators
        self.x0 = scorer.encode(images)  # what is noised: the images, or a latent model's latents of them
        self.errors = np.zeros((m, N_CLASSES, max_draws))
        self.raw = np.full((m, N_CLASSES, max_draws), np.nan)  # unweighted: what replays re-weight
        self.timesteps = np.full((m, max_draws), -1, dtype=np.int64)
        self.active = np.zeros((m, N_CLASSES), dtype=bool)
        self.active[:, classes] = True
        self.class_draws = np.zeros((m, N_CLASSES), dtype=np.int64)
        self.done = np.zeros(m, dtype=np.int64)
        self.finished = np.zeros(m, dtype=bool)
        self.max_draws = max_draws

    def score_round(self, scorer: NoiseErrors, rows: np.ndarray, options: ClassifierOptions) -> None:
        """One more round of draws for images `rows`: every draw scored under every active class."""
        x_parts, t_parts, eps_parts, label_parts, where = [], [], [], [], []
        for i in rows:
            k = min(options.draws_per_round, self.max_draws - self.done[i])
            t, eps = scorer.draw(self.generators[i], k)
            x0 = self.x0[i:i + 1].expand(k, -1, -1, -1)
            if options.tta:  # drawn after (t, eps), so runs without it keep their draws; flipped before encoding
                turns = torch.randint(0, 8, (k,), generator=self.generators[i])
                x0 = scorer.encode(dihedral(self.images[i:i + 1].expand(k, -1, -1, -1), turns))
            x_t = scorer.noisy(x0, t, eps)
            cls = np.flatnonzero(self.active[i])
            # The same (t, eps, x_t) goes to every class: the errors are paired across classes.
            x_parts.append(x_t.repeat_interleave(len(cls), 0))
            t_parts.append(t.repeat_interleave(len(cls)))
            eps_parts.append(eps.repeat_interleave(len(cls), 0))
            label_parts.append(torch.as_tensor(cls).repeat(k))
            d = self.done[i] + np.arange(k)
            self.timesteps[i, d] = t.numpy()
            where.append(np.stack([np.full(k * len(cls), i), np.tile(cls, k), np.repeat(d, len(cls))]))
            self.class_draws[i, cls] += k
            self.done[i] += k
        x_t, t, eps, labels = (torch.cat(p) for p in (x_parts, t_parts, eps_parts, label_parts))
        where = np.concatenate(where, axis=1)
        weights = scorer.weights(t).numpy()
        for s in range(0, len(t), options.batch_size):
            b = slice(s, s + options.batch_size)
            res = scorer.residuals(x_t[b], t[b], eps[b], labels[b])
            error = scorer.error(res).double().numpy()
            self.raw[tuple(where[:, b])] = error
            self.errors[tuple(where[:, b])] = error * weights[b]


def error_gap(mean_errors: np.ndarray) -> np.ndarray:
    """(N,) second-smallest minus smallest entry (NaN entries are not candidates)."""
    ordered = np.sort(np.where(np.isnan(mean_errors), np.inf, mean_errors), axis=1)
    return ordered[:, 1] - ordered[:, 0]


def error_probabilities(mean_errors: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(-errors / T) over the candidate classes; non-candidates get probability 0.

    Pass `error_gaps` (comparable across classes even after pruning); without pruning they are the
    mean errors shifted by a constant, which the softmax ignores."""
    logits = np.where(np.isnan(mean_errors), -np.inf, -mean_errors / temperature)
    return softmax(logits, axis=1)


def fit_temperature(mean_errors: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the negative log-likelihood of `labels` under `error_probabilities` (fit on val)."""
    labels = np.asarray(labels, dtype=np.int64)
    if not np.isfinite(mean_errors[np.arange(len(labels)), labels]).all():
        raise UserError("calibration labels include classes the model does not score")

    def nll(log_t: float) -> float:
        logits = np.where(np.isnan(mean_errors), -np.inf, -mean_errors / 10.0 ** log_t)
        return -float(log_softmax(logits, axis=1)[np.arange(len(labels)), labels].mean())

    # Errors differ between classes by ~1e-4..1e-1, so T is searched on a wide log scale.
    return float(10.0 ** minimize_scalar(nll, bounds=(-7, 2), method="bounded").x)


@dataclass
class CounterfactualMaps:
    """Heat maps of one image against every class, from the same draws; NaN for non-candidate classes."""

    predicted: int  # the class with the smallest weighted error over the draws
    # (C, 28, 28): per-pixel weighted squared error of class c minus the predicted class's (> 0: c explains the
    # pixel worse); zero for the predicted class.
    squared: np.ndarray
    # (C, 3, 28, 28), CytoDiffusion's eqs. 10-12: the plain mean over the draws (no weighting, no disc) of the
    # predicted noise under the predicted class minus that under class c, per channel, in the model's [-1, 1]
    # units. Within a draw the x0 estimates of the two classes differ by sqrt((1 - abar) / abar) times this
    # difference, so the map points from the image towards class c.
    signed: np.ndarray


def counterfactual_maps(loaded, image: np.ndarray, draws: int = 100, options: ClassifierOptions = ClassifierOptions(),
                        index: int = 0) -> CounterfactualMaps:
    """Both kinds of counterfactual heat map of one uint8 image (28, 28, 3) against every candidate class.

    Every candidate class is scored on all `draws` draws (no pruning). The squared map and the prediction use
    the options' weighting and disc; the signed map does not. v-predictions are turned into noise predictions
    first (NoiseErrors.residuals).
    """
    options = options.check()
    if draws < 1:
        raise UserError(f"heat-map draws must be >= 1, got {draws}")
    image = check_images(np.asarray(image)[None], "the heat-map image")
    classes = candidate_classes(loaded)
    if tuple(loaded.family.sample_shape) != (3, 28, 28):
        raise UserError(f"{loaded.source} is a {loaded.spec.model} model, whose diffusion runs on latents: heat maps "
                        f"are pixel maps, so they need a pixel-space model (ddpm)")
    scorer = NoiseErrors(loaded, options.weighting, options.disc_radius)
    t, eps = scorer.draw(image_generator(options.seed, index), draws)
    x_t = scorer.noisy(to_model_range(image).expand(draws, -1, -1, -1), t, eps)
    weights = scorer.weights(t).float().view(-1, 1, 1)
    squared = np.full((N_CLASSES, 28, 28), np.nan)
    residual = np.full((N_CLASSES, 3, 28, 28), np.nan)  # mean of eps - eps_c = the negated mean prediction + const
    for c in classes:
        pixel, mean = torch.zeros(28, 28, dtype=torch.float64), torch.zeros(3, 28, 28, dtype=torch.float64)
        for s in range(0, draws, options.batch_size):
            b = slice(s, s + options.batch_size)
            res = scorer.residuals(x_t[b], t[b], eps[b], torch.full((len(t[b]),), c))
            pixel += (res.pow(2).mean(1) * weights[b] * scorer.mask).sum(0).double()
            mean += res.sum(0).double()
        squared[c], residual[c] = (pixel / draws).numpy(), (mean / draws).numpy()
    predicted = int(np.nanargmin(squared.mean((1, 2))))
    # eps_pred(predicted) - eps_pred(c) = (eps - eps_c) - (eps - eps_pred) = residual_c - residual_pred
    return CounterfactualMaps(predicted=predicted, squared=squared - squared[predicted],
                              signed=residual - residual[predicted])
