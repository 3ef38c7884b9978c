"""What the cell-feature autoencoder reads: per image, a feature vector h and the image its image decoder
rebuilds.

h is frozen Inception pool3 (ImageNet-trained, it never saw a blood cell: the offline stand-in for the
AE-CFE study's frozen detector backbone), cached with the evaluation's features, or the raw pixels. The
`cell` view keeps the segmented cell only (everything outside its mask black), the study's cell crop:
BloodMNIST cells are centred crops already, so no detector is needed to find them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bloodgen.cellfeatures.options import INPUTS, VIEWS
from bloodgen.data.bloodmnist import SPLITS, BloodMNIST
from bloodgen.errors import UserError
from bloodgen.metrics.features import dataset_feature_store
from bloodgen.metrics.plausibility import segment_cell


@dataclass(frozen=True)
class CellInputs:
    """One split of one data file, as the autoencoder sees it."""

    features: np.ndarray  # (N, D) float32, h
    images: np.ndarray  # (N, 28, 28, 3) uint8, the view the image decoder rebuilds
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


def split_rows(data: BloodMNIST, split: str) -> np.ndarray:
    """The rows of `split` in the file's `all` order (train, val, test), which feature stores index."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    sizes = data.split_sizes
    start = sum(sizes[s] for s in SPLITS[:SPLITS.index(split)])
    return np.arange(start, start + sizes[split])


def cell_view(images: np.ndarray) -> np.ndarray:
    """Each image with the pixels outside its segmented cell set to black."""
    masks = np.stack([segment_cell(image)[0] for image in images]) if len(images) else np.zeros((0, 28, 28), bool)
    return np.where(masks[..., None], images, 0).astype(np.uint8)


def load_inputs(data: BloodMNIST, split: str, source: str = "inception", view: str = "whole", extractor=None,
                cache_dir=None) -> CellInputs:
    """The autoencoder's inputs for one split: `source` features of the `view` of each image. `extractor`
    is required for Inception features (bloodgen.metrics.inception_extractor)."""
    if source not in INPUTS or view not in VIEWS:
        raise UserError(f"unknown input {source!r}/{view!r}: choose one of {', '.join(INPUTS)} and of "
                        f"{', '.join(VIEWS)}")
    rows = split_rows(data, split)
    if source == "pixels":
        images = data.images(split) if view == "whole" else cell_view(data.images(split))
        features = images.reshape(len(images), -1).astype(np.float32) / 255.0
    else:
        if extractor is None:
            raise UserError("Inception features need the feature network: pass an extractor")
        # The cell views of every image are made once per call and shared with the feature store.
        cells = None if view == "whole" else ("cells", cell_view(data.images("all")))
        store = dataset_feature_store(data, extractor, cache_dir, view=cells)
        images, features = store.images[rows], store.features(rows).astype(np.float32)
    return CellInputs(features, images, data.labels(split).astype(np.int64))
