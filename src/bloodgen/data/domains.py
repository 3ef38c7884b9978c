"""Shifted domains built from BloodMNIST itself: the same cells as another lab would image them.

No second blood-cell dataset can be installed here, so each domain is a deterministic transform of
BloodMNIST images, documented by its parameters:

- `artificial`: inverted, then blurred (the AGGAN study's artificial domain);
- `stain`: a haematoxylin/eosin shift by colour deconvolution (scikit-image's Ruifrok-Johnston HED
  matrix): more haematoxylin, less eosin, as from another staining protocol;
- `scope`: another microscope and camera: warmer illumination, lower contrast, a softer optic and a
  coarser sensor (resampled down to 20 x 20 pixels and back).

`make_domains` cuts the official train split, class by class with a seeded permutation, into disjoint
parts: part 0 stays domain A (the original images), part j becomes the j-th shifted domain, so a
translation model never sees the same cell in two domains. Val and test are transformed whole, so the
same test cells exist in every domain and their labels are known. Each domain is written as a
BloodMNIST-format .npz that every command accepts, with a JSON sidecar that says how it was made.

`normalise_file` is the classical answer to such a shift, and the baseline a translation model must beat:
a domain's images moved to domain A's colours by Reinhard's L*a*b* statistics or by histogram matching.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from bloodgen.data.bloodmnist import CLASS_NAMES, N_CLASSES, SPLITS, BloodMNIST, load_bloodmnist
from bloodgen.data.subset import write_splits
from bloodgen.errors import UserError
from bloodgen.provenance import write_json

SOURCE_DOMAIN = "A"


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of (N, H, W, C) floats over the two image axes only."""
    return gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest")


ARTIFICIAL = {"blur_sigma": 1.0}


def artificial(images: np.ndarray) -> np.ndarray:
    return _to_uint8(_blur(1.0 - images / 255.0, ARTIFICIAL["blur_sigma"]))


STAIN = {"haematoxylin_scale": 1.6, "eosin_scale": 0.45}


def stain(images: np.ndarray) -> np.ndarray:
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(images)  # optical densities of haematoxylin, eosin and DAB
    hed[..., 0] *= STAIN["haematoxylin_scale"]
    hed[..., 1] *= STAIN["eosin_scale"]
    return _to_uint8(hed2rgb(hed))


SCOPE = {"rgb_gain": (1.06, 1.0, 0.86), "contrast": 0.8, "blur_sigma": 0.6, "sensor_pixels": 20}


def scope(images: np.ndarray) -> np.ndarray:
    from skimage.transform import resize

    x = images / 255.0 * np.asarray(SCOPE["rgb_gain"])
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = _blur(mean + SCOPE["contrast"] * (x - mean), SCOPE["blur_sigma"])
    n, h, w, c = x.shape
    small = resize(x, (n, SCOPE["sensor_pixels"], SCOPE["sensor_pixels"], c), order=1, anti_aliasing=True)
    return _to_uint8(resize(small, (n, h, w, c), order=1))


@dataclass(frozen=True)
class Domain:
    """A shifted domain: a deterministic transform of uint8 (N, 28, 28, 3) images and its parameters."""

    name: str
    description: str
    transform: Callable[[np.ndarray], np.ndarray]
    parameters: dict[str, Any]


DOMAINS: dict[str, Domain] = {d.name: d for d in (
    Domain("artificial", "inverted, then Gaussian blur (the AGGAN study's artificial domain)", artificial, ARTIFICIAL),
    Domain("stain", "haematoxylin up, eosin down by colour deconvolution (another staining protocol)", stain, STAIN),
    Domain("scope", "warmer light, lower contrast, softer optic, coarser sensor (another microscope and camera)",
           scope, SCOPE),
)}


def read_domain(path: str | Path | None) -> BloodMNIST:
    """A BloodMNIST-format file (None: the official one), read without the warnings that it is not the official
    BloodMNIST: a domain file is not, by design. Callers check that the file exists, each with its own advice."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_bloodmnist(path)


def get_domains(names: Sequence[str]) -> list[Domain]:
    unknown = [n for n in names if n not in DOMAINS]
    if unknown or not names:
        raise UserError(f"unknown domain(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(DOMAINS)}")
    if len(set(names)) != len(names):
        raise UserError(f"a domain is named twice in {', '.join(names)}")
    return [DOMAINS[n] for n in names]


def train_parts(labels: np.ndarray, parts: int, seed: int) -> list[np.ndarray]:
    """`parts` disjoint, sorted index sets covering `labels`, each holding about 1/parts of every class."""
    rng = np.random.default_rng(seed)
    pieces: list[list[np.ndarray]] = [[] for _ in range(parts)]
    for c in range(N_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for j, chunk in enumerate(np.array_split(idx, parts)):
            pieces[j].append(chunk)
    return [np.sort(np.concatenate(p)) for p in pieces]


def make_domains(data: BloodMNIST, out: str | Path, names: Sequence[str], seed: int = 0) -> dict[str, Path]:
    """Write domain A and every named domain into `out` (A.npz, <name>.npz, each with its .json); returns
    their paths by domain name."""
    domains = get_domains(names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = data.split("train")
    parts = train_parts(train_labels, 1 + len(domains), seed)
    paths = {}
    for j, domain in enumerate([None, *domains]):
        name = SOURCE_DOMAIN if domain is None else domain.name
        transform = (lambda x: x) if domain is None else domain.transform
        splits = {"train": (transform(train_images[parts[j]]), train_labels[parts[j]])}
        splits.update({s: (transform(data.split(s)[0]), data.split(s)[1]) for s in SPLITS if s != "train"})
        paths[name] = out / f"{name}.npz"
        write_splits(paths[name], splits, train_source_indices=parts[j])
        write_json(paths[name].with_suffix(".json"), {
            "domain": name, "description": "the original images" if domain is None else domain.description,
            "parameters": {} if domain is None else domain.parameters, "source": data.provenance(),
            "train": f"part {j} of {len(parts)} of the official train split, cut class by class with "
                     f"numpy.random.default_rng({seed}).permutation; its official indices in train_source_indices",
            "val_test": "the whole official val and test splits, transformed alike in every domain",
            "seed": seed, "split_sizes": {s: int(len(v[1])) for s, v in splits.items()},
        })
    return paths


def domains_figure(paths: dict[str, Path], out: Path, per_class: int = 3) -> Path:
    """The same test cells in every domain: one panel per domain, one row per class."""
    from bloodgen.report.plots import class_rows, plot_side_by_side

    panels = {}
    for name, path in paths.items():
        images, labels = read_domain(path).split("test")
        panels[name] = class_rows(images, labels, N_CLASSES, per_class, np.random.default_rng(0))
    figure = out / "domains.png"
    plot_side_by_side(panels, per_class, list(CLASS_NAMES), figure,
                      title="The same test cells in every domain")
    return figure


# ---- colour normalisation: the classical answer to a stain or scope shift ------------------------------

def _lab_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from skimage.color import rgb2lab

    lab = rgb2lab(images)
    return lab.mean(axis=(0, 1, 2)), lab.std(axis=(0, 1, 2))


def reinhard(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Reinhard et al. (2001): each image's L*a*b* channels moved to the reference images' mean and spread."""
    from skimage.color import lab2rgb, rgb2lab

    target_mean, target_std = _lab_statistics(reference)
    lab = rgb2lab(images)
    mean = lab.mean(axis=(1, 2), keepdims=True)
    std = lab.std(axis=(1, 2), keepdims=True)
    lab = (lab - mean) / np.maximum(std, 1e-6) * target_std + target_mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # colours moved outside sRGB are clipped, as Reinhard's method implies
        return _to_uint8(lab2rgb(lab))


def histogram_match(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each image's channel histograms mapped onto the pooled histograms of the reference images.

    What skimage.exposure.match_histograms does for one image pair, written out because here the reference
    is thousands of images: its 256-level CDF per channel is computed once, not once per image.
    """
    levels = np.arange(256)
    out = np.empty_like(images)
    for c in range(images.shape[-1]):
        ref_cdf = np.cumsum(np.bincount(reference[..., c].ravel(), minlength=256)) / reference[..., c].size
        for i, image in enumerate(images[..., c]):
            cdf = np.cumsum(np.bincount(image.ravel(), minlength=256)) / image.size
            out[i, ..., c] = np.rint(np.interp(cdf, ref_cdf, levels))[image]
    return out


NORMALISERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "reinhard": reinhard, "histogram": histogram_match}


def normalise_file(source: BloodMNIST, reference: BloodMNIST, method: str, path: str | Path) -> Path:
    """Every split of `source` normalised to the colours of `reference`'s train images, as a BloodMNIST file
    with a JSON sidecar."""
    if method not in NORMALISERS:
        raise UserError(f"unknown normalisation {method!r}: choose from {', '.join(NORMALISERS)}")
    target = reference.images("train")
    splits = {s: (NORMALISERS[method](source.images(s), target), source.labels(s)) for s in SPLITS}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_splits(path, splits)
    write_json(path.with_suffix(".json"), {
        "normalisation": method, "source": source.provenance(), "reference": reference.provenance(),
        "what": f"every split of the source, {method} colour normalisation to the reference's train images",
        "split_sizes": {s: int(len(v[1])) for s, v in splits.items()}})
    return path
