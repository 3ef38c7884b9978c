"""Class prototypes by convolutional prototype learning (Yang et al., 2018), for prototype-guided diffusion.

An image encoder f (frozen) maps an image to a feature vector; a small trainable head g projects it to
the prototype space, which holds K prototypes m_ij per class i. Classification is by distance:

    p(y = i | x) = sum_j exp(-gamma d_ij) / sum_kl exp(-gamma d_kl),   d_ij = ||g(f(x)) - m_ij||^2

trained with the distance-based cross-entropy plus lambda times the prototype loss, the squared distance
to the closest prototype of the true class (it pulls features onto their class's prototypes, so the
prototypes become class centres rather than mere decision boundaries).

IMPROVE uses CLIP as f. Here f is one of: "clip[:ARCH[:WEIGHTS]]", a CLIP image tower from a user's weights
file (classify/clip_encoder.py); "reference", the reference classifier's ResNet-18 backbone (its
512-d penultimate features; it saw the labels of the file it was trained on, which the record says);
"inception", the FID InceptionV3's 2048-d pool3 features (ImageNet-trained, it never saw BloodMNIST; the
features come from the evaluation's feature cache); or "module:function", a callable that returns a torch
module mapping float images (N, 3, 28, 28) in [-1, 1] to vectors (N, D). Since f is frozen, its features
are computed once and only g and the prototypes train, which is cheap on a CPU.

Output: `prototypes.safetensors` (the prototypes (C, K, dim), the head and the feature standardisation)
and `prototypes.json` beside it (options, encoder, accuracies, data hash, versions: a `PrototypeRecord`).
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from bloodgen.classify.clip_encoder import clip_encoder, is_clip_spec, recorded_encoder_spec
from bloodgen.classify.prototype_options import EpochLog, PrototypeEncoder, PrototypeOptions, PrototypeRecord
from bloodgen.classify.reference import reference_classifier
from bloodgen.data import N_CLASSES, to_model_range
from bloodgen.data.subset import subset_indices
from bloodgen.errors import UserError
from bloodgen.metrics.features import dataset_feature_store
from bloodgen.metrics.inception import inception_extractor
from bloodgen.models.prototype_file import PROTOTYPES_FILE, prototypes_path
from bloodgen.provenance import atomic_path, environment, write_json

REFERENCE_ENCODER = "reference"
INCEPTION_ENCODER = "inception"


@dataclass(frozen=True)
class PrototypeFit:
    """How `fit_prototypes` went: the kept epoch's val accuracy, the train accuracy, every epoch."""

    val_accuracy: float
    train_accuracy: float
    history: list[EpochLog]


class PrototypeClassifier(nn.Module):
    """Standardised encoder features -> head g -> squared distances to K prototypes per class."""

    def __init__(self, in_dim: int, n_classes: int, options: PrototypeOptions):
        super().__init__()
        self.gamma = options.gamma
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.head = nn.Sequential(nn.Linear(in_dim, options.hidden), nn.ReLU(), nn.Linear(options.hidden, options.dim))
        self.prototypes = nn.Parameter(torch.randn(n_classes, options.per_class, options.dim))

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, K) squared distances d_ij."""
        z = self.head((features - self.feature_mean) / self.feature_std)
        return (z[:, None, None, :] - self.prototypes[None]).pow(2).sum(-1)

    def logits(self, distances: torch.Tensor) -> torch.Tensor:
        """(N, C) log of the summed exp(-gamma d_ij) of each class: softmax of it is p(y | x)."""
        return torch.logsumexp(-self.gamma * distances, dim=2)


def prototype_loss(model: PrototypeClassifier, features: torch.Tensor, labels: torch.Tensor,
                   lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance-based cross-entropy + lam * prototype loss, the logits)."""
    d = model.distances(features)
    logits = model.logits(d)
    dce = nn.functional.cross_entropy(logits, labels)
    closest_true = d[torch.arange(len(labels)), labels].min(dim=1).values
    return dce + lam * closest_true.mean(), logits


@torch.no_grad()
def prototype_accuracy(model: PrototypeClassifier, features: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    pred = model.logits(model.distances(torch.as_tensor(features, dtype=torch.float32))).argmax(1).numpy()
    return float((pred == labels).mean()) if len(labels) else float("nan")


def fit_prototypes(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], n_classes: int,
                   options: PrototypeOptions = PrototypeOptions()) -> tuple[PrototypeClassifier, PrototypeFit]:
    """Train head and prototypes on features (N, D) with Adam; keep the epoch with the best val accuracy."""
    options.check()
    x, y = (torch.as_tensor(train[0], dtype=torch.float32), torch.as_tensor(train[1], dtype=torch.long))
    if len(x) == 0 or x.ndim != 2:
        raise UserError(f"prototype learning needs a non-empty (N, D) feature array, got shape {tuple(x.shape)}")
    torch.manual_seed(options.seed)
    model = PrototypeClassifier(x.shape[1], n_classes, options)
    model.feature_mean.copy_(x.mean(0))
    model.feature_std.copy_(x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones(x.shape[1]))
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    generator = torch.Generator().manual_seed(options.seed)
    best, best_state, history = -1.0, None, []
    for epoch in range(options.epochs):
        model.train()
        losses = []
        for idx in torch.randperm(len(x), generator=generator).split(options.batch_size):
            loss, _ = prototype_loss(model, x[idx], y[idx], options.lam)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        val_acc = prototype_accuracy(model, *val)
        history.append(EpochLog(epoch + 1, float(np.mean(losses)), val_acc))
        if val_acc > best or best_state is None:
            best, best_state = val_acc, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    return model, PrototypeFit(best, prototype_accuracy(model, *train), history)


# ---- encoders ---------------------------------------------------------------------------------------

def load_encoder(spec: str, data=None, recipe=None, cache_dir: str | Path | None = None) -> nn.Module:
    """The frozen image encoder as a torch module: 'reference' (the backbone of the reference classifier
    trained with `recipe`, by default `default_recipe()`), 'clip[:ARCH[:WEIGHTS]]' or 'module:function'.
    ('inception' is read from the feature cache by `learn_prototypes`, not run here.)"""
    if is_clip_spec(spec):
        return clip_encoder(spec)[0]
    if spec == REFERENCE_ENCODER:
        model, _ = reference_classifier(data, recipe, cache_dir=cache_dir)
        model.fc = nn.Identity()  # the penultimate features (512-d for the full-width ResNet-18)
        return model.eval().requires_grad_(False)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"--encoder must be 'reference', '{INCEPTION_ENCODER}', 'clip[:ARCH[:WEIGHTS]]' or "
                        f"'module:function', got {spec!r}")
    try:
        factory: Callable[[], Any] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UserError(f"cannot load encoder {spec!r}: {err}") from None
    encoder = factory()
    if not isinstance(encoder, nn.Module):
        raise UserError(f"encoder {spec!r} must return a torch module, got {type(encoder).__name__}")
    return encoder.eval().requires_grad_(False)


@torch.no_grad()
def encode(encoder: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, D) float32 features of uint8 images (N, 28, 28, 3)."""
    out = []
    for start in range(0, len(images), batch_size):
        features = encoder(to_model_range(images[start:start + batch_size]))
        if features.ndim != 2:
            raise UserError(f"the encoder must return (N, D) vectors, got shape {tuple(features.shape)}")
        out.append(features.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# ---- files ------------------------------------------------------------------------------------------

def write_prototypes(model: PrototypeClassifier, info: dict, path: str | Path) -> Path:
    """The model's tensors in `path` and `info` (a JSON object, normally a `PrototypeRecord`'s) beside it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    write_json(path.with_suffix(".json"), info)
    return path


def learn_prototypes(data, out: str | Path, options: PrototypeOptions = PrototypeOptions(),
                     encoder: str = REFERENCE_ENCODER, encoder_data=None, classifier_recipe=None,
                     cache_dir: str | Path | None = None,
                     max_per_class: int | None = None) -> tuple[Path, PrototypeRecord]:
    """Learn prototypes on `data`'s train split (val for selection, test for the reported accuracy).

    encoder_data: the file the reference encoder is trained on (default `data`); the study uses the full
    file for it so both data regimes share one encoder, as both would share CLIP. max_per_class caps the
    training images whose features are computed (a CPU budget). Writes `out` (a .safetensors path or a
    folder) and its .json; returns the prototypes file's path and the record in the .json.
    """
    options.check()
    path = Path(out) if Path(out).suffix == ".safetensors" else Path(out) / PROTOTYPES_FILE
    started = time.perf_counter()
    encoder_data = encoder_data if encoder_data is not None else data
    embed, trained_on = _embedder(encoder, data, encoder_data, classifier_recipe, cache_dir)
    splits = {}
    for split in ("train", "val", "test"):
        index = np.arange(data.split_sizes[split])
        if split == "train" and max_per_class is not None:
            index = subset_indices(data.labels(split), per_class=max_per_class, seed=options.seed)
        splits[split] = (embed(split, index), data.labels(split)[index].astype(np.int64))
    model, fit = fit_prototypes(splits["train"], splits["val"], N_CLASSES, options)
    record = PrototypeRecord(
        prototypes_shape=list(model.prototypes.shape),
        train_accuracy=fit.train_accuracy, val_accuracy=fit.val_accuracy,
        test_accuracy=prototype_accuracy(model, *splits["test"]),
        options=options,
        encoder=PrototypeEncoder(recorded_encoder_spec(encoder), int(splits["train"][0].shape[1]),
                                 classifier_recipe, trained_on),
        data={**data.provenance(), "n_train_used": int(len(splits["train"][1])), "max_per_class": max_per_class},
        history=fit.history,
        seconds=round(time.perf_counter() - started, 1),
        environment=environment(),
    )
    write_prototypes(model, record.to_json(), path)
    return path, record


def _embedder(encoder: str, data, encoder_data, recipe, cache_dir) -> tuple[Callable, Any]:
    """`embed(split, indices) -> (n, D) features` of `data`'s images, and what the encoder was trained on."""
    if encoder == INCEPTION_ENCODER:
        extractor = inception_extractor(progress=False)
        store = dataset_feature_store(data, extractor, cache_dir)  # rows in "all" order: train, val, test
        offsets = {"train": 0, "val": data.split_sizes["train"],
                   "test": data.split_sizes["train"] + data.split_sizes["val"]}
        return (lambda split, index: store.features(offsets[split] + index),
                {"images": "ImageNet (pytorch-fid's InceptionV3 weights): no BloodMNIST image or label",
                 "weights_sha256": extractor.weights_sha256})
    if is_clip_spec(encoder):
        tower, trained_on = clip_encoder(encoder)
        return lambda split, index: encode(tower, data.split(split)[0][index], batch_size=32), trained_on
    net = load_encoder(encoder, encoder_data, recipe, cache_dir)
    trained_on = encoder_data.provenance() if encoder == REFERENCE_ENCODER else None
    return lambda split, index: encode(net, data.split(split)[0][index]), trained_on


def read_info(path: str | Path) -> PrototypeRecord:
    return PrototypeRecord.from_json(json.loads(prototypes_path(path).with_suffix(".json").read_text()))
