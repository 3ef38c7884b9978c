"""Load a trained model (checkpoint, run folder or export) and draw reproducible samples from it.

Reproducibility: sample i of a call with seed s draws its noise only from its own generator, seeded
from (s, i), and the class labels come from a separate stream of s. So the same model, seed, device and
batch size give identical images, and another batch size gives the same images up to float rounding
(the CPU kernels block their sums by batch size: a rare pixel moves by one level of 255 in a many-step
diffusion sampler).

The evaluation engine and the study use the `sample_fn(n, seed) -> (images, labels)` contract:
images uint8 (n, 28, 28, 3), labels int64 (n,) for class-conditional models and None otherwise.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bloodgen import checks
from bloodgen.data import CLASS_NAMES, N_CLASSES, to_uint8
from bloodgen.errors import UserError
from bloodgen.models.config import validate
from bloodgen.models.registry import get_family
from bloodgen.samplefile import IMAGES, write_samples
from bloodgen.sampling.pretrained import resolve_model_path
from bloodgen.training import checkpoint as ck
from bloodgen.training.checkpoint import RunSpec

PRIOR, BALANCED = "prior", "balanced"
# Images per forward pass when the caller gives none. On 2 CPU cores the record ddpm's U-Net costs 1.3-1.8x
# more per image at 256 (512 rows under classifier-free guidance) than at 32-64, its activations outgrowing
# the cache (benchmarks/sample_time.py, docs/study.md). A GPU wants large batches.
DEFAULT_BATCH_SIZE = {"cpu": 64, "cuda": 256}


def default_batch_size(device: torch.device | str) -> int:
    return DEFAULT_BATCH_SIZE.get(torch.device(device).type, DEFAULT_BATCH_SIZE["cuda"])

SampleFn = Callable[[int, int], "tuple[np.ndarray, np.ndarray | None]"]


@dataclass
class LoadedModel:
    """A family with its EMA sampling network on a device, plus what the run recorded about itself."""

    family: Any  # bloodgen.models.base.Family
    network: nn.Module
    spec: RunSpec
    class_counts: np.ndarray
    step: int
    source: Path

    @property
    def conditional(self) -> bool:
        return self.family.conditional

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device


def load_model(path: str | Path, device: str | torch.device | None = None) -> LoadedModel:
    """A checkpoint (.pt), an export (.safetensors or its .json), a run folder (its export if the run
    finished, else its latest checkpoint) or `pretrained:NAME` (weights shipped with bloodgen)."""
    path = resolve_model_path(path)
    if path.is_dir():  # the file actually read is the model's source (its hash goes into sample records)
        path = path / ck.EXPORT_WEIGHTS if (path / ck.EXPORT_WEIGHTS).is_file() else ck.find_checkpoint(path)
    if path.suffix in (".safetensors", ".json"):
        meta, state = ck.load_export(path)
    else:
        meta = ck.load_checkpoint(path)
        state = meta.ema
    spec = meta.spec
    try:
        validate(spec.model, spec.config)
    except UserError as err:
        raise UserError(f"{path}: the model's saved config is not valid for this bloodgen ({err})") from None
    family = get_family(spec.model)(spec.model, spec.config, N_CLASSES)
    network = family.build()[family.sampling_network]
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit the {spec.model} network its config describes "
                        f"({str(err).splitlines()[0]})") from None
    network.to(checks.device(device)).eval().requires_grad_(False)
    return LoadedModel(family=family, network=network, spec=spec, step=int(meta.step), source=path,
                       class_counts=np.asarray(meta.class_counts, dtype=np.int64))


def parse_class(value: int | str, class_names: tuple[str, ...] | None = None) -> int:
    """A class index (0-7) or a class name such as 'neutrophil' -> index; anything else is a UserError."""
    names = class_names or CLASS_NAMES
    text = str(value).strip().lower()
    if text.lstrip("-").isdigit():
        k = int(text)
        if 0 <= k < len(names):
            return k
    elif text in names:
        return names.index(text)
    choices = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    raise UserError(f"unknown class {value!r}: give an index or a name ({choices})")


def draw_labels(n: int, seed: int, classes: int | str | Sequence[float], class_counts: np.ndarray) -> np.ndarray:
    """n class labels: all one class, equal counts ('balanced'), the training class proportions ('prior')
    or given proportions (one non-negative weight per class).

    Proportions, 'prior' included, use exact quotas (largest remainders), shuffled: every sample set then
    has the requested class mix, which removes one source of spread between evaluation seeds.
    """
    k = len(class_counts)
    if isinstance(classes, str) and classes == BALANCED:
        labels = np.arange(n) % k
    elif isinstance(classes, str) and classes == PRIOR or not isinstance(classes, (str, int, np.integer)):
        weights = class_counts if isinstance(classes, str) else class_proportions(classes, k)
        share = n * weights / weights.sum()
        quota = np.floor(share).astype(np.int64)
        quota[np.argsort(-(share - quota), kind="stable")[: n - quota.sum()]] += 1
        labels = np.repeat(np.arange(k), quota)
    else:
        labels = np.full(n, parse_class(classes))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    return rng.permutation(labels).astype(np.int64)


def class_proportions(weights: Sequence[float], k: int) -> np.ndarray:
    """`weights` as a float array of k non-negative numbers with a positive sum, else a UserError."""
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        w = None
    if w is None or w.shape != (k,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise UserError(f"class proportions must be {k} non-negative numbers with a positive sum, one per class "
                        f"in class-index order; got {weights!r}")
    return w


def noise_generators(seed: int, start: int, stop: int) -> list[torch.Generator]:
    """CPU generators for samples start..stop-1 of seed `seed`; sample i's depends on (seed, i) only."""
    return [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0, i]).generate_state(1, np.uint64)[0]))
            for i in range(start, stop)]


@contextlib.contextmanager
def deterministic_kernels() -> Iterator[None]:
    """cuDNN picks the same algorithms every call, so the same device repeats its results exactly."""
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


def generate(family, network: nn.Module, labels: np.ndarray | None, n: int, seed: int,
             batch_size: int | None = None, progress: bool = False, **options: Any) -> np.ndarray:
    """uint8 (n, 28, 28, 3) images from `network` (labels ignored by unconditional families); the batch size
    changes speed only (default: `default_batch_size` of the network's device)."""
    if batch_size is None:
        batch_size = default_batch_size(next(network.parameters()).device)
    options = family.check_sampler_options(options)
    steps = family.sampler_steps(options)
    out = np.empty((n, 28, 28, 3), dtype=np.uint8)
    was_training = network.training
    network.eval()

    # The bar moves on every network pass (a diffusion batch takes many): it counts image-steps, in
    # integers, and shows them scaled to images.
    bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} img [{elapsed}<{remaining}]"
    with deterministic_kernels(), tqdm(total=n * steps, desc="sampling", dynamic_ncols=True, disable=not progress,
                                       bar_format=bar_format, unit_scale=1 / steps) as bar:
        try:
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                y = torch.as_tensor(labels[start:stop]) if labels is not None else None
                x = family.sample(network, y, noise_generators(seed, start, stop),
                                  on_step=lambda size=stop - start: bar.update(size), **options)
                out[start:stop] = to_uint8(x)
                bar.update(stop * steps - bar.n)
        finally:
            network.train(was_training)
    return out


def generate_indices(family, network: nn.Module, labels: np.ndarray | None, indices: Sequence[int], seed: int,
                     **options: Any) -> np.ndarray:
    """Images `indices` of the draw `generate(..., labels, n, seed)` makes, without the others: a sample's
    noise depends on (seed, index) only, so a few images of a long diffusion draw come back in seconds.
    Equal to that draw's images up to the rounding of other batch sizes."""
    options = family.check_sampler_options(options)
    generators = [noise_generators(seed, i, i + 1)[0] for i in indices]
    y = torch.as_tensor(labels[np.asarray(indices, dtype=np.int64)]) if labels is not None else None
    was_training = network.training
    network.eval()
    try:
        with deterministic_kernels():
            return to_uint8(family.sample(network, y, generators, **options))
    finally:
        network.train(was_training)


def sample_resumably(model: LoadedModel, labels: np.ndarray | None, n: int, seed: int, path: str | Path,
                     chunk: int = 250, desc: str = "sampling", **options: Any) -> np.ndarray:
    """The n images `generate` draws for `labels` with `seed`, made `chunk` at a time into path's .partial.npz
    (image i's noise depends on (seed, i) only, so the pieces are one draw), then written to `path`: a long
    draw cut by the end of a session resumes where it stopped. An existing `path` is read back: callers name
    the file by what defines the draw (model, labels, seed, n)."""
    path = Path(path)
    if path.is_file():
        with np.load(path) as f:
            return f[IMAGES]
    partial = path.with_name(path.stem + ".partial.npz")
    done = []
    if partial.is_file():
        with np.load(partial) as f:
            done = [f[IMAGES][:n]]
    path.parent.mkdir(parents=True, exist_ok=True)
    for start in tqdm(range(sum(map(len, done)), n, chunk), desc=f"{desc}, pieces of {chunk}"):
        stop = min(n, start + chunk)
        done.append(generate_indices(model.family, model.network, labels, range(start, stop), seed, **options))
        write_samples(partial, np.concatenate(done), None if labels is None else labels[:stop])
    images = np.concatenate(done)
    write_samples(path, images, labels)
    partial.unlink(missing_ok=True)
    return images


def sample(model: LoadedModel, n: int, seed: int, classes: int | str | Sequence[float] = PRIOR,
           batch_size: int | None = None, progress: bool = False,
           **options: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(images uint8 (n, 28, 28, 3), labels int64 (n,) or None for unconditional models)."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise UserError(f"the number of samples must be an integer >= 1, got {n!r}")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    checks.seed(seed, "the sampling seed")
    labels = None
    if model.conditional:
        labels = draw_labels(int(n), seed, classes, model.class_counts)
    elif not (isinstance(classes, str) and classes in (PRIOR, BALANCED)):
        raise UserError(f"{model.spec.model} model in {model.source} is unconditional: it cannot sample "
                        f"a given class (drop --class)")
    images = generate(model.family, model.network, labels, int(n), seed, batch_size, progress, **options)
    return images, labels


def make_sample_fn(model: str | Path | LoadedModel, classes: int | str = PRIOR, batch_size: int | None = None,
                   device: str | torch.device | None = None, **options: Any) -> SampleFn:
    """`sample_fn(n, seed) -> (images, labels | None)` for the evaluation engine and the study.

    Sampler options (e.g. sampler='ddim', steps=50, guidance=2.0 for diffusion) are checked now, so a
    bad option fails before any evaluation starts.
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device)
    loaded.family.check_sampler_options(options)
    if loaded.conditional and classes not in (PRIOR, BALANCED):
        parse_class(classes)

    def sample_fn(n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        return sample(loaded, n, seed, classes=classes, batch_size=batch_size, **options)

    return sample_fn
