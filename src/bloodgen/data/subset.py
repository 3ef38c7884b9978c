"""Derived BloodMNIST files: a class held out, or a few images per class (the low-data regime).

A derived file is an ordinary BloodMNIST-shaped .npz, so every command (`bloodgen train --data`,
`evaluate`, `classify`) takes it unchanged and records its hash; a JSON sidecar says how it was made.
The test split is always kept whole: held-out-class test images are exactly the anomalies to detect,
and a low-data model is still judged on the full test split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

from bloodgen.data.bloodmnist import N_CLASSES, SPLITS, BloodMNIST
from bloodgen.errors import UserError
from bloodgen.provenance import atomic_path, write_json


def subset_indices(labels: np.ndarray, exclude_classes: Iterable[int] = (), per_class: int | None = None,
                   seed: int = 0) -> np.ndarray:
    """Sorted indices that drop `exclude_classes` and keep at most `per_class` random images of each other class."""
    exclude = set(int(c) for c in exclude_classes)
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(N_CLASSES):
        if c in exclude:
            continue
        idx = np.flatnonzero(labels == c)
        if per_class is not None and len(idx) > per_class:
            idx = rng.choice(idx, size=per_class, replace=False)
        keep.append(idx)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def write_subset(data: BloodMNIST, path: str | Path, *, exclude_classes: Iterable[int] = (),
                 per_class: int | None = None, splits: Iterable[str] = ("train", "val"), seed: int = 0) -> Path:
    """Write `data` with `splits` filtered (classes dropped and/or capped per class); other splits unchanged.

    Returns `path`. The sidecar `path.json` records the source file's hash and the filter.
    """
    exclude = sorted(set(int(c) for c in exclude_classes))
    if any(not 0 <= c < N_CLASSES for c in exclude):
        raise UserError(f"classes to hold out must be in 0..{N_CLASSES - 1}, got {exclude}")
    if len(exclude) >= N_CLASSES:
        raise UserError("cannot hold out every class")
    if per_class is not None and per_class < 1:
        raise UserError(f"images per class must be >= 1, got {per_class}")
    splits = tuple(splits)
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise UserError(f"unknown split(s) {', '.join(unknown)}: choose from {', '.join(SPLITS)}")
    parts = {}
    for split in SPLITS:
        images, labels = data.split(split)
        if split in splits:
            idx = subset_indices(labels, exclude, per_class, seed)
            images, labels = images[idx], labels[idx]
        parts[split] = images, labels
    sizes = {split: int(len(labels)) for split, (_, labels) in parts.items()}
    path = Path(path)
    write_splits(path, parts)
    write_json(path.with_suffix(".json"), {
        "source": data.provenance(), "exclude_classes": exclude, "per_class": per_class,
        "filtered_splits": list(splits), "seed": seed, "split_sizes": sizes,
    })
    return path


def write_splits(path: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], **extra: np.ndarray) -> None:
    """A BloodMNIST-format .npz (`<split>_images`, `<split>_labels` as (N, 1) uint8) written atomically, with
    `extra` arrays beside the splits."""
    arrays = dict(extra)
    for split, (images, labels) in splits.items():
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.astype(np.uint8)[:, None]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # np.savez would append ".npz" to a bare temporary name
            np.savez_compressed(f, **arrays)


def describe_subset(path: str | Path) -> dict | None:
    """The sidecar of a derived file, or None for a file that is not one."""
    sidecar = Path(path).with_suffix(".json")
    return json.loads(sidecar.read_text()) if sidecar.is_file() else None
