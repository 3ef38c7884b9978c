"""Image grids as PNG, pixel-exact (no resampling or colour maps), upscaled by whole pixels for viewing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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
    with atomic_path(path) as tmp:
        Image.fromarray(grid_image(np.asarray(images, dtype=np.uint8), ncol, scale)).save(tmp, format="PNG")
    return Path(path)


def save_class_grid(images: np.ndarray, labels: np.ndarray, path: str | Path, class_names: tuple[str, ...],
                    per_class: int = 8, scale: int = 2) -> Path:
    """`class_grid` saved as PNG at `path`."""
    canvas = class_grid(images, labels, class_names, per_class, scale)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)


def class_grid(images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], per_class: int = 8,
               scale: int = 2):
    """A PIL image: one row per class present (its first `per_class` images, in order), the class name
    left of the row."""
    rows, names = [], []
    for k, name in enumerate(class_names):
        picked = images[labels == k][:per_class]
        if len(picked):
            blank = np.full((per_class - len(picked), *images.shape[1:]), BACKGROUND, dtype=np.uint8)
            rows.append(np.concatenate([picked, blank]))
            names.append(name)
    mosaic = Image.fromarray(grid_image(np.concatenate(rows), ncol=per_class, scale=scale))
    row_height = (images.shape[1] + PAD) * scale
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = max(int(draw.textlength(name)) for name in names) + 4 * PAD * scale
    canvas = Image.new("RGB", (mosaic.width + margin, mosaic.height), (BACKGROUND,) * 3)
    canvas.paste(mosaic, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(names):
        draw.text((PAD * scale, PAD * scale + i * row_height + row_height // 2 - 6), name, fill=(0, 0, 0))
    return canvas


def reconstruction_picks(labels: np.ndarray, n_classes: int, per_class: int = 4) -> np.ndarray:
    """Indices of the first `per_class` images of each class, class by class."""
    return np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in range(n_classes)])


def save_reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray, path: str | Path,
                             ncol: int = 16) -> Path:
    """Rows alternate `ncol` originals and their `ncol` reconstructions (uint8 (N, H, W, 3) each)."""
    rows = [block for i in range(0, len(originals), ncol)
            for block in (originals[i:i + ncol], reconstructions[i:i + ncol])]
    return save_grid(np.concatenate(rows), path, ncol=ncol)
