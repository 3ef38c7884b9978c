"""Shared fixtures: a tiny BloodMNIST-shaped file built on the fly, and the real files when present.

The tiny file has 8 classes that differ in colour and shape, so a model or classifier can learn them
in a few steps; tests that need the real data or the FID weights skip when the variables are unset.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

TINY_SIZES = {"train": 80, "val": 24, "test": 40}


def make_tiny_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class c: a disc of radius 4 + c/2 in a class-specific colour on a light, noisy background."""
    labels = np.arange(n) % 8
    rng.shuffle(labels)
    yy, xx = np.mgrid[:28, :28]
    images = np.empty((n, 28, 28, 3), dtype=np.uint8)
    for i, c in enumerate(labels):
        colour = np.array([40 + 25 * c, 200 - 20 * c, 120 + 15 * (c % 3)], dtype=np.float64)
        cy, cx = 14 + rng.integers(-2, 3), 14 + rng.integers(-2, 3)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (4 + c / 2) ** 2
        img = np.full((28, 28, 3), 225.0) + rng.normal(0, 8, (28, 28, 3))
        img[disc] = colour + rng.normal(0, 8, (disc.sum(), 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.astype(np.uint8)[:, None]


def write_tiny_npz(path: Path, seed: int = 0, sizes: dict[str, int] = TINY_SIZES) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in sizes.items():
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = make_tiny_images(n, rng)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    """Path of a tiny BloodMNIST-shaped file (train 80 / val 24 / test 40, all 8 classes)."""
    return write_tiny_npz(tmp_path_factory.mktemp("tiny") / "bloodmnist.npz")


@pytest.fixture
def tiny_data(tiny_npz):
    """The tiny file loaded through the data layer (its 'not official' warnings silenced)."""
    import warnings

    from bloodgen.data import load_bloodmnist

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_bloodmnist(tiny_npz)


@pytest.fixture
def no_download(monkeypatch):
    """Make medmnist's download fail at once, as it does offline, and hide any default-root file."""
    from bloodgen.data import bloodmnist

    monkeypatch.setattr(bloodmnist, "_download", lambda root: "failed: offline (test)")
    monkeypatch.setattr(bloodmnist, "default_root", lambda: Path("/nonexistent-medmnist-root"))
    monkeypatch.delenv(bloodmnist.DATA_ENV, raising=False)


@pytest.fixture(scope="session")
def real_npz() -> Path:
    """The real BloodMNIST file from $BLOODGEN_DATA; skips when it is not set or absent."""
    value = os.environ.get("BLOODGEN_DATA")
    if not value:
        pytest.skip("real BloodMNIST not available: set BLOODGEN_DATA to run this test")
    path = Path(value)
    path = path / "bloodmnist.npz" if path.is_dir() else path
    if not path.is_file():
        pytest.skip(f"real BloodMNIST not found at {path}")
    return path


@pytest.fixture(scope="session")
def inception_weights() -> Path:
    """The pytorch-fid InceptionV3 weights from $BLOODGEN_INCEPTION_WEIGHTS; skips when absent."""
    value = os.environ.get("BLOODGEN_INCEPTION_WEIGHTS")
    if not value or not Path(value).is_file():
        pytest.skip("FID weights not available: set BLOODGEN_INCEPTION_WEIGHTS to run this test")
    return Path(value)
