"""Figures of the study report: image grids, curves and heat maps, written as PNG with matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np


def pyplot():
    matplotlib.use("Agg")  # files only; never needs a display

    return plt


def class_rows(images: np.ndarray, labels: np.ndarray, n_classes: int, per_class: int,
               rng: np.random.Generator) -> np.ndarray:
    """(n_classes * per_class, 28, 28, 3): `per_class` random images of each class, class by class.

    A class with fewer images is padded with white so rows stay aligned across panels.
    """
    out = np.full((n_classes, per_class) + images.shape[1:], 255, dtype=np.uint8)
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        take = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else idx
        out[c, : len(take)] = images[take]
    return out.reshape((-1,) + images.shape[1:])


def tile(images: np.ndarray, n_cols: int, pad: int = 1) -> np.ndarray:
    """Tile (N, H, W, 3) uint8 images into one array, row-major, with white padding."""
    n, h, w, ch = images.shape
    n_rows = -(-n // n_cols)
    canvas = np.full((n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, ch), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, n_cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return canvas


def plot_side_by_side(panels: Mapping[str, np.ndarray], per_class: int, row_labels: Sequence[str], path: Path,
                      title: str = "") -> None:
    """Panels of class-ordered grids (from `class_rows`) next to each other, one row per class."""
    plt = pyplot()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(1.8 + n * per_class * 0.42, 0.5 + len(row_labels) * 0.45), squeeze=False)
    for k, (name, imgs) in enumerate(panels.items()):
        ax = axes[0, k]
        ax.imshow(tile(imgs, per_class), interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        h = imgs.shape[1] + 1
        ax.set_yticks(np.arange(len(row_labels)) * h + h / 2 if k == 0 else [])
        if k == 0:
            ax.set_yticklabels(row_labels, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_heatmap(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], path: Path,
                 title: str, cbar_label: str, fmt: str = "{:.1f}", cmap: str = "viridis") -> None:
    plt = pyplot()
    matrix = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(col_labels), 1.0 + 0.5 * len(row_labels)))
    im = ax.imshow(matrix, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=9)
    finite = matrix[np.isfinite(matrix)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for (r, c), v in np.ndenumerate(matrix):
        if np.isfinite(v):
            ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=7,
                    color="white" if v < middle else "black")
    fig.colorbar(im, ax=ax, label=cbar_label)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_curves(series: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]], path: Path,
                title: str, xlabel: str = "step", logy: bool = False, smooth: int = 1) -> None:
    """One subplot per group (e.g. a model family), one line per named series (x, y) in it.

    `smooth` > 1 draws a running mean over that many points, since per-step GAN and diffusion losses
    are too noisy to read raw.
    """
    plt = pyplot()
    n = len(series)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    for ax, (group, lines) in zip(axes[0], series.items()):
        for name, (x, y) in lines.items():
            x, y = np.asarray(x, float), np.asarray(y, float)
            if smooth > 1 and len(y) >= smooth:
                y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
                x = x[smooth - 1:]
            ax.plot(x, y, label=name, lw=1.2)
        ax.set_title(group)
        ax.set_xlabel(xlabel)
        if logy:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
