"""Automated plausibility of cell images: would a haematologist accept this cell as one of its class?

IMPROVE's experts judged cell and nucleus shape, size, colour and texture. Here each image is segmented and
measured, and it is plausible for a class when every measurement lies within that class's central 95 % on
the real train split. Measured criteria (`CRITERIA`), on 28x28 crops:

- the cell: pixels above the Otsu threshold of the HSV saturation (stained cells against the pale
  background and the pink red cells around them), the component at the centre (else the largest), its
  holes filled; its area;
- the nucleus: cell pixels above the Otsu threshold, within the cell, of the haematoxylin channel of
  colour deconvolution (`skimage.color.rgb2hed`, lightly smoothed); its area, the nucleus-to-cytoplasm
  ratio, its solidity (area over convex-hull area) and its lobes (components of 3 pixels or more);
- the cytoplasm (cell minus nucleus, the whole cell where the nucleus fills it): mean hue, saturation and
  value; granularity (the std of the value there); chromatin texture (the std of the haematoxylin in the
  nucleus).

An image with a label is judged against its class; one without (an unconditional model) is plausible when
it passes every criterion of at least one class. The real test split's rate is the ceiling: with ten
criteria each leaving out 5 % of real cells, a real cell passes all of them less often than 95 %.
Why hand-written: no library measures these cell criteria; scikit-image supplies every primitive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_fill_holes, gaussian_filter
from skimage import measure
from skimage.color import rgb2hed, rgb2hsv
from skimage.filters import threshold_otsu
from skimage.morphology import convex_hull_image
from tqdm.auto import tqdm

from bloodgen.data import N_CLASSES
from bloodgen.metrics.features import default_cache_dir
from bloodgen.provenance import atomic_path

CRITERIA = ("cell_area", "nucleus_area", "nc_ratio", "nucleus_solidity", "nucleus_lobes", "cytoplasm_hue",
            "cytoplasm_saturation", "cytoplasm_value", "granularity", "chromatin_texture")
COVERAGE = 0.95  # each criterion's accepted range: the central 95 % of the real class
MIN_LOBE_PIXELS = 3
MEASURE_VERSION = 2  # bump when a measurement changes: the cached real measurements are then redone


def _segment(hsv: np.ndarray, haematoxylin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    saturation = hsv[..., 1]
    if np.ptp(saturation) == 0:
        empty = np.zeros(saturation.shape, dtype=bool)
        return empty, empty
    labels = measure.label(saturation > threshold_otsu(saturation))
    rows, cols = labels.shape[0] // 2, labels.shape[1] // 2
    centre = labels[rows - 1:rows + 1, cols - 1:cols + 1]  # the 2x2 pixels at the middle
    pool = centre[centre > 0] if (centre > 0).any() else labels[labels > 0]
    if len(pool) == 0:
        return labels > 0, labels > 0
    cell = binary_fill_holes(labels == np.bincount(pool).argmax())
    inside = haematoxylin[cell]
    nucleus = cell & (haematoxylin > threshold_otsu(inside)) if np.ptp(inside) > 0 else np.zeros_like(cell)
    return cell, nucleus


def segment_cell(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The cell and nucleus masks of a uint8 (28, 28, 3) image, with the HSV image and the smoothed
    haematoxylin channel they were found in."""
    hsv = rgb2hsv(image)
    haematoxylin = gaussian_filter(rgb2hed(image)[..., 0], 0.7)
    cell, nucleus = _segment(hsv, haematoxylin)
    return cell, nucleus, hsv, haematoxylin


def _measure(image: np.ndarray) -> list[float]:
    cell, nucleus, hsv, haematoxylin = segment_cell(image)
    cytoplasm = cell & ~nucleus
    if not cytoplasm.any():
        cytoplasm = cell if cell.any() else np.ones_like(cell)
    n_cell, n_nucleus = int(cell.sum()), int(nucleus.sum())
    solidity = n_nucleus / convex_hull_image(nucleus).sum() if n_nucleus else 0.0
    parts = measure.label(nucleus)
    lobes = int((np.bincount(parts.ravel())[1:] >= MIN_LOBE_PIXELS).sum())
    return [n_cell, n_nucleus, n_nucleus / max(n_cell - n_nucleus, 1), solidity, lobes,
            *hsv[cytoplasm].mean(0), hsv[..., 2][cytoplasm].std(),
            haematoxylin[nucleus].std() if n_nucleus else 0.0]


def cell_measurements(images: np.ndarray, progress: bool = False) -> np.ndarray:
    """(N, len(CRITERIA)) float64 measurements of uint8 (N, 28, 28, 3) images (about 2 ms an image)."""
    return np.array([_measure(image) for image in tqdm(images, desc="cell measurements", disable=not progress,
                                                      leave=False)], dtype=np.float64).reshape(-1, len(CRITERIA))


@dataclass(frozen=True)
class PlausibleRanges:
    """Each class's accepted range of every criterion: (C, K) low and high ends, from real images."""

    low: np.ndarray
    high: np.ndarray
    counts: np.ndarray  # (C,) real images each class's ranges come from

    @classmethod
    def fit(cls, measurements: np.ndarray, labels: np.ndarray, n_classes: int) -> "PlausibleRanges":
        tail = 100 * (1 - COVERAGE) / 2
        low, high = np.full((n_classes, len(CRITERIA)), np.nan), np.full((n_classes, len(CRITERIA)), np.nan)
        for c in range(n_classes):
            rows = measurements[labels == c]
            if len(rows):
                low[c], high[c] = np.percentile(rows, [tail, 100 - tail], axis=0)
        return cls(low, high, np.bincount(labels, minlength=n_classes))

    def passes(self, measurements: np.ndarray) -> np.ndarray:
        """(N, C, K) bool: does image n meet criterion k of class c."""
        m = measurements[:, None, :]
        return (m >= self.low[None]) & (m <= self.high[None])

    def plausible(self, measurements: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """(N,) bool: every criterion of the image's class met (of some class, when unlabelled)."""
        every = self.passes(measurements).all(2)
        return every.any(1) if labels is None else every[np.arange(len(every)), labels]


def real_measurements(data, cache_dir=None, progress: bool = False) -> dict[str, np.ndarray]:
    """The train and test splits' measurements, cached per data file (about a minute to compute)."""
    path = Path(cache_dir or default_cache_dir()) / f"plausibility-{data.sha256[:16]}-v{MEASURE_VERSION}.npz"
    if path.is_file():
        with np.load(path) as f:
            return {split: f[split] for split in ("train", "test")}
    measured = {split: cell_measurements(data.images(split), progress) for split in ("train", "test")}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **measured)
    return measured


def _rates(ok: np.ndarray, labels: np.ndarray, n_classes: int) -> list[float | None]:
    return [float(ok[labels == c].mean()) if (labels == c).any() else None for c in range(n_classes)]


def evaluate_plausibility(images: np.ndarray, labels: np.ndarray | None, data, cache_dir=None,
                          progress: bool = False) -> dict:
    """Per-class plausible fraction of `images` (labels None or all -1: unconditional) beside the real test
    split's, with ranges fitted on the train split; also how often each criterion fails."""
    real = real_measurements(data, cache_dir, progress)
    ranges = PlausibleRanges.fit(real["train"], data.labels("train"), N_CLASSES)
    test_labels = data.labels("test")
    ceiling = ranges.plausible(real["test"], test_labels)
    labelled = bool(labels is not None and (np.asarray(labels) >= 0).all())
    measured = cell_measurements(images, progress)
    ok = ranges.plausible(measured, labels if labelled else None)
    result = {"criteria": list(CRITERIA), "coverage": COVERAGE, "n_images": int(len(images)), "labelled": labelled,
              "plausible": float(ok.mean()), "real_test_plausible": float(ceiling.mean()),
              "real_test_per_class": _rates(ceiling, test_labels, N_CLASSES)}
    if labelled:
        met = ranges.passes(measured)[np.arange(len(measured)), labels]  # (N, K) against the image's class
        result["per_class"] = _rates(ok, labels, N_CLASSES)
        result["criterion_failure"] = dict(zip(CRITERIA, (1 - met.mean(0)).round(4).tolist()))
    return result
