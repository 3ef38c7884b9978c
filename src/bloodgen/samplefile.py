"""The sample file every command reads and writes: an .npz with `images` uint8 (N, 28, 28, 3) and `labels`
int64 (N,), -1 for every image of an unconditional model. Reading with validation is
`bloodgen.metrics.inputs.load_images`."""

from __future__ import annotations

import os

import numpy as np

from bloodgen.provenance import atomic_path

IMAGES = "images"
LABELS = "labels"
INDICES = "indices"  # optional: each image's index in the draw it was picked from
UNLABELLED = -1


def write_samples(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray | None,
                  indices: np.ndarray | None = None) -> None:
    """Write atomically; `labels` None (an unconditional model) is stored as all UNLABELLED."""
    labels = np.full(len(images), UNLABELLED, dtype=np.int64) if labels is None else np.asarray(labels, np.int64)
    arrays = {IMAGES: images, LABELS: labels}
    if indices is not None:
        arrays[INDICES] = np.asarray(indices, np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
