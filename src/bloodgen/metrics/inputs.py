"""What can be evaluated: an `.npz` of images, a folder of PNG files, arrays, or a generator function.

Every input ends up as uint8 (N, 28, 28, 3) RGB, the dataset's own format, checked here so a wrong value
range (the classic [-1, 1] model output), a channels-first array or a short file fails with a message
that says what was found and how to fix it, before any network is loaded.

Generator contract (used by sampling code to evaluate without writing files):
    sample_fn(n: int, seed: int) -> (images, labels)
images uint8 (n, 28, 28, 3); labels int (n,) in 0..7, or None for unconditional models. The same
(n, seed) must give the same images, so an evaluation can be repeated.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from bloodgen import checks
from bloodgen.data.bloodmnist import IMAGE_SHAPE, N_CLASSES
from bloodgen.errors import UserError
from bloodgen.provenance import portable_path
from bloodgen.samplefile import IMAGES, LABELS, UNLABELLED

SampleFn = Callable[[int, int], tuple[np.ndarray, Optional[np.ndarray]]]


def validate_images(images, source: str) -> np.ndarray:
    """Return `images` if it is uint8 (N, 28, 28, 3) with N >= 1; otherwise raise a UserError saying why."""
    if not isinstance(images, np.ndarray):
        raise UserError(f"{source}: images must be a NumPy array, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        hint = ""
        if images.ndim == 4 and images.shape[1] == 3 and images.shape[2:] == IMAGE_SHAPE[:2]:
            hint = " (channels first: use images.transpose(0, 2, 3, 1))"
        raise UserError(f"{source}: images must have shape (N, 28, 28, 3), got {images.shape}{hint}")
    if len(images) == 0:
        raise UserError(f"{source}: holds no images")
    if images.dtype != np.uint8:
        raise UserError(f"{source}: images must be uint8 with values 0..255, got {images.dtype}"
                        f"{_range_hint(images)}")
    return images


def _range_hint(images: np.ndarray) -> str:
    if not (np.issubdtype(images.dtype, np.number) or images.dtype == bool):
        return ""
    if np.issubdtype(images.dtype, np.floating) and np.isnan(images).any():
        return f" holding {int(np.isnan(images).sum())} NaN values; generate or convert them again"
    lo, hi = float(images.min()), float(images.max())
    found = f" with values in [{lo:g}, {hi:g}]"
    if lo < 0 or hi > 255:
        return (f"{found}, outside 0..255; if they are in [-1, 1], convert with "
                f"((x + 1) * 127.5).round().clip(0, 255).astype(np.uint8)")
    if np.issubdtype(images.dtype, np.floating) and hi <= 1:
        return f"{found}; if they are in [0, 1], convert with (x * 255).round().astype(np.uint8)"
    return f"{found}; convert with .astype(np.uint8) if they are pixel values"


def validate_labels(labels, n: int, source: str) -> np.ndarray | None:
    """None stays None; otherwise int64 (n,) in 0..7, accepting the dataset's own (n, 1) shape.

    All labels UNLABELLED (-1, what `bloodgen sample` writes for unconditional models) means no labels.
    """
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (n,):
        raise UserError(f"{source}: labels must have shape ({n},) to match the images, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{source}: labels must be integers 0..{N_CLASSES - 1}, got {labels.dtype}")
    unlabelled = labels == UNLABELLED
    if unlabelled.all():
        return None
    if unlabelled.any():
        raise UserError(f"{source}: {int(unlabelled.sum())} of {n} labels are {UNLABELLED} (unlabelled) and the rest "
                        f"are classes; label every image 0..{N_CLASSES - 1}, or all {UNLABELLED} for none")
    if labels.min() < 0 or labels.max() >= N_CLASSES:
        raise UserError(f"{source}: labels must lie in 0..{N_CLASSES - 1}, found {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def content_sha256(images: np.ndarray, labels: np.ndarray | None) -> str:
    """A hash of the pixels (and labels), the same whether they came from an .npz or from PNG files."""
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    if labels is not None:
        h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ImageSet:
    """A fixed set of images (and optional labels): an evaluation draws its N images from it."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    kind: str  # "npz", "png" or "array"

    @classmethod
    def from_arrays(cls, images, labels=None, source: str = "arrays") -> "ImageSet":
        images = validate_images(images, source)
        return cls(images, validate_labels(labels, len(images), source), source, "array")

    def __len__(self) -> int:
        return len(self.images)

    def provenance(self) -> dict:
        return {"source": portable_path(self.source), "kind": self.kind, "n_images": len(self),
                "has_labels": self.labels is not None, "content_sha256": content_sha256(self.images, self.labels)}


@dataclass(frozen=True)
class Generator:
    """Images made on demand by `sample_fn(n, seed)` (see the module doc for the contract)."""

    sample_fn: SampleFn
    name: str = "generator"

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        source = f"{self.name}: sample_fn({n}, seed={seed})"
        result = self.sample_fn(n, seed)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise UserError(f"{source} must return a tuple (images, labels or None), got {type(result).__name__}")
        images = validate_images(result[0], source)
        if len(images) != n:
            qualifier = "fewer than" if len(images) < n else "not"
            raise UserError(f"{source} returned {len(images)} images, {qualifier} the {n} requested")
        return images, validate_labels(result[1], n, source)

    def provenance(self) -> dict:
        return {"source": self.name, "kind": "generator"}


Samples = Union[ImageSet, Generator]


def load_images(path: str | os.PathLike, role: str = "samples") -> ImageSet:
    """Load an `.npz` (key `images`, optional `labels`) or a folder of PNG files."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _load_png_folder(path, role)
    if not path.exists():
        raise UserError(f"{role} not found: {path} (give an .npz file or a folder of PNG files)")
    if path.suffix.lower() != ".npz":
        raise UserError(f"{role} {path} is neither an .npz file nor a folder of PNG files")
    return _load_npz(path, role)


def _load_npz(path: Path, role: str) -> ImageSet:
    source = f"{role} {path}"
    checks.npz_archive(path, source)
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            if IMAGES not in keys:
                raise UserError(f"{source} has no '{IMAGES}' array (keys: {', '.join(keys) or 'none'}); save it "
                                f"with np.savez(path, {IMAGES}=uint8 (N, 28, 28, 3)[, {LABELS}=(N,) ints])")
            images = np.asarray(npz[IMAGES])
            labels = np.asarray(npz[LABELS]) if LABELS in keys else None
    except UserError:
        raise
    except Exception as err:  # zip, zlib and format errors all mean "not a usable .npz"
        raise UserError(f"{source} is not a readable .npz file ({type(err).__name__}: {err})") from None
    images = validate_images(images, source)
    return ImageSet(images, validate_labels(labels, len(images), source), str(path), "npz")


def _load_png_folder(folder: Path, role: str) -> ImageSet:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise UserError(f"{role} folder {folder} holds no .png files")
    images = np.empty((len(files), *IMAGE_SHAPE), dtype=np.uint8)
    converted: dict[str, int] = {}
    for i, file in enumerate(files):
        try:
            with Image.open(file) as img:
                if img.mode != "RGB":
                    converted[img.mode] = converted.get(img.mode, 0) + 1
                # The conversion pytorch-fid applies to every file it reads (grey or RGBA become RGB).
                rgb = img.convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise UserError(f"{role} {file} is not a readable PNG file ({err})") from None
        if rgb.size != IMAGE_SHAPE[:2]:
            raise UserError(f"{role} {file} is {rgb.size[0]}x{rgb.size[1]} pixels; BloodMNIST images are 28x28")
        images[i] = np.asarray(rgb)
    if converted:
        modes = ", ".join(f"{n} {mode}" for mode, n in sorted(converted.items()))
        warnings.warn(f"{role} folder {folder}: {sum(converted.values())} of {len(files)} PNG files are not RGB "
                      f"({modes}) and were converted to RGB as pytorch-fid does; BloodMNIST cells are RGB, so grey "
                      f"or transparent images score far from them")
    return ImageSet(images, None, str(folder), "png")


def as_samples(obj, role: str = "samples") -> Samples:
    """A path, an ImageSet, a uint8 array, or a `sample_fn` callable, as something the protocol can draw from."""
    if isinstance(obj, (ImageSet, Generator)):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return load_images(obj, role)
    if isinstance(obj, np.ndarray):
        return ImageSet.from_arrays(obj, source=role)
    if callable(obj):
        return Generator(obj, name=getattr(obj, "__name__", "generator"))
    raise UserError(f"{role} must be a path, a uint8 array, an ImageSet or a sample_fn(n, seed), "
                    f"got {type(obj).__name__}")
