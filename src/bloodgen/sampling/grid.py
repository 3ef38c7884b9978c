"""Image grids as PNG, pixel-exact (no resampling or colour maps), upscaled by whole pixels for viewing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloodgen.provenance import atomic_path

PAD = 2
BACKGROUND = 255


def grid_image(images: np.ndarray, ncol: int, scale: int = 2) -> np.ndarray:
    """uint8 (N, H, W, 3) -> one uint8 (rows*(H+PAD)+PAD, ...) mosaic, row-major, white padding."""
    n, h, w, c = images.shape
    nrow = max(1, -(-n // ncol))
    out = np.full((nrow * (h + PAD) + PAD, ncol * (w + PAD) + PAD, c), BACKGROUND, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        out[PAD + r * (h + PAD):PAD + r * (h + PAD) + h, PAD + col * (w + PAD):PAD + col * (w + PAD) + w] = img
    return out.repeat(scale, axis=0).repeat(scale, axis=1)


def save_grid(images: np.ndarray, path: str | Path, ncol: int, scale: int = 2) -> Path:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(grid_image(np.asarray(images, dtype=np.uint8), ncol, scale)).save(tmp, format="PNG")
    return Path(path)


def reconstruction_picks(labels: np.ndarray, n_classes: int, per_class: int = 4) -> np.ndarray:
    """Indices of the first `per_class` images of each class, class by class."""
    return np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in range(n_classes)])


def save_reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray, path: str | Path,
                             ncol: int = 16) -> Path:
    """Rows alternate `ncol` originals and their `ncol` reconstructions (uint8 (N, H, W, 3) each)."""
    rows = [block for i in range(0, len(originals), ncol)
            for block in (originals[i:i + ncol], reconstructions[i:i + ncol])]
    return save_grid(np.concatenate(rows), path, ncol=ncol)
