"""bloodgen for notebooks and scripts: load a model, sample arrays, evaluate arrays in memory.

    import bloodgen.api as bg

    model = bg.load("pretrained:ddpm")                      # or a run folder, a checkpoint, an export
    cells = model.sample(400, seed=0, classes="balanced")    # Samples: uint8 (400, 28, 28, 3) and labels
    cells.grid()                                             # a PIL image, one row per class
    result = bg.evaluate(cells.images, cells.labels, seeds=3)
    result.samples.fid, result.floor_disjoint.fid            # Figure(mean, std, per_seed)

The same code paths as the commands: `bloodgen sample` draws the same images for the same model, seed,
classes and sampler options, and `evaluate` runs `bloodgen evaluate`'s protocol (`calculate_metrics`),
so a figure from here and one from the CLI are comparable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from bloodgen.classify.features import classifier_extractor
from bloodgen.data import CLASS_NAMES, load_bloodmnist
from bloodgen.metrics.inputs import ImageSet
from bloodgen.metrics.protocol import calculate_metrics
from bloodgen.metrics.records import Figure, Floor, Scores
from bloodgen.metrics.registry import CLASSIFIER, METRICS, Options, default_metrics
from bloodgen.provenance import write_json
from bloodgen.report.grid import class_grid, grid_image
from bloodgen.samplefile import write_samples
from bloodgen.sampling.api import load_model, sample

__all__ = ["Evaluation", "Figure", "Model", "Samples", "Scores", "Setup", "evaluate", "load"]


@dataclass(frozen=True)
class Samples:
    """Generated images (uint8 (n, 28, 28, 3)) and the class each was drawn for (None: unconditional)."""

    images: np.ndarray
    labels: np.ndarray | None
    seed: int
    model: str

    def __len__(self) -> int:
        return len(self.images)

    def grid(self, per_class: int = 8, scale: int = 3):
        """A PIL image (shown inline by Jupyter): one labelled row per class, or 8 columns if unconditional."""
        if self.labels is None:
            return Image.fromarray(grid_image(self.images[:8 * per_class], ncol=8, scale=scale))
        return class_grid(self.images, self.labels, CLASS_NAMES, per_class=per_class, scale=scale)

    def save(self, path: str | os.PathLike) -> Path:
        """An .npz that `bloodgen evaluate` and `bloodgen evaluate --utility` read."""
        write_samples(Path(path), self.images, self.labels)
        return Path(path)


@dataclass
class Model:
    """A trained generator ready to sample; `load` makes one."""

    loaded: Any  # bloodgen.sampling.api.LoadedModel

    @property
    def family(self) -> str:
        return self.loaded.spec.model

    @property
    def conditional(self) -> bool:
        return self.loaded.conditional

    @property
    def sampler_options(self) -> dict:
        """The sampler options this model accepts, with their defaults (its recipe's sampler)."""
        return dict(self.loaded.family.check_sampler_options({}))

    def sample(self, n: int, seed: int = 0, classes: int | str | Sequence[float] = "prior",
               batch_size: int | None = None, progress: bool = False, **sampler: Any) -> Samples:
        """n images drawn with `seed`. classes: 'prior' (the training mix), 'balanced', one class (index or
        name such as 'neutrophil') or 8 proportions; sampler: the family's options, e.g. guidance=2.0."""
        images, labels = sample(self.loaded, n, seed, classes=classes, batch_size=batch_size, progress=progress,
                                **sampler)
        return Samples(images, labels, seed, self.family)


def load(model: str | os.PathLike, device: str | None = None) -> Model:
    """`pretrained:NAME` (shipped weights), a run folder, a checkpoint (.pt) or an export (.safetensors)."""
    return Model(load_model(model, device))


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` measured: the samples' scores beside the two real-vs-real floors at the same N and
    seeds, and `record`, the full JSON-ready protocol record that `bloodgen evaluate --json` writes."""

    samples: Scores | None
    floor_same_pool: Scores | None
    floor_disjoint: Scores | None
    n: int
    seeds: tuple[int, ...]
    record: dict

    @classmethod
    def from_record(cls, record: dict) -> "Evaluation":
        floor = Floor.of(record)
        protocol = record["protocol"]
        has_samples = record.get("samples") is not None
        return cls(samples=Scores.from_record(record) if has_samples else None,
                   floor_same_pool=Scores.from_record(floor.same_pool) if floor else None,
                   floor_disjoint=Scores.from_record(floor.disjoint) if floor else None,
                   n=protocol["n"], seeds=tuple(protocol["seeds"]), record=record)

    def save(self, path: str | os.PathLike) -> Path:
        return write_json(path, self.record)


@dataclass(frozen=True)
class Setup:
    """Where an evaluation finds its data and networks and what runs them; None: the defaults of `bloodgen
    evaluate` (environment variables, then the usual locations). extractor: a ready feature extractor in
    place of the FID InceptionV3 (`bloodgen.metrics.features`)."""

    data: str | os.PathLike | None = None
    inception_weights: str | os.PathLike | None = None
    device: str | None = None
    cache_dir: str | os.PathLike | None = None
    progress: bool = True
    extractor: Any = None


def evaluate(images: np.ndarray | None, labels: np.ndarray | None = None, *, n: int | None = None,
             seeds: int | Sequence[int] = 5, floor: bool = True, metrics: Sequence[str] | None = None,
             setup: Setup = Setup()) -> Evaluation:
    """`images` (uint8 (N, 28, 28, 3), labels optional) against the real BloodMNIST images with the protocol
    of `bloodgen evaluate`, in memory. n: images per side and seed (default: all given images, at most
    10,000); seeds: S for seeds 0..S-1 or the seeds; images None with floor=True: the floor alone;
    metrics: names from `bloodgen.metrics.registry.METRICS` (default fid, kid, prdc, per-class; 'classifier'
    loads the reference classifier for its feature space)."""
    samples = None if images is None else ImageSet.from_arrays(images, labels, source="arrays")
    if n is None:
        n = min(len(samples), Options.n) if samples is not None else Options.n
    metrics = tuple(metrics or default_metrics())
    extractors = {}
    if any(name in METRICS and METRICS[name].space == CLASSIFIER for name in metrics):
        extractors[CLASSIFIER] = classifier_extractor(load_bloodmnist(setup.data), cache_dir=setup.cache_dir,
                                                      device=setup.device, progress=setup.progress)
    record = calculate_metrics(samples, n=n, seeds=seeds, floor=floor, metrics=metrics, data=setup.data,
                               inception_weights=setup.inception_weights, device=setup.device,
                               cache_dir=setup.cache_dir, progress=setup.progress, extractor=setup.extractor,
                               extractors=extractors)
    return Evaluation.from_record(record)
