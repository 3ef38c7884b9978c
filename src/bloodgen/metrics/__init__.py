"""Evaluation of generated images: FID (overall and per class), KID, precision/recall, density/coverage,
Inception Score, the real-vs-real floor, all under one seeded protocol (`calculate_metrics`).

One module per metric (`fid`, `kid`, `prdc`, `isc`; pure NumPy on features), one for the feature network
(`inception`), one for extraction and the real-feature cache (`features`), one for inputs (`inputs`),
and the protocol that ties them together (`protocol`). Importing this package does not import torch.
"""

from bloodgen.metrics.fid import KEY_FID, KEY_FID_CLASS_AVERAGED, KEY_FID_PER_CLASS, fid_from_features, frechet_distance
from bloodgen.metrics.inputs import Generator, ImageSet, SampleFn, load_images
from bloodgen.metrics.isc import KEY_ISC, inception_score
from bloodgen.metrics.kid import KEY_KID, kid
from bloodgen.metrics.prdc import (KEY_COVERAGE, KEY_DENSITY, KEY_PRECISION, KEY_PRECISION_PRDC, KEY_RECALL,
                                   KEY_RECALL_PRDC, prdc)
from bloodgen.metrics.protocol import (
    KEY_DISJOINT,
    KEY_FLOOR,
    KEY_MEAN,
    KEY_PER_SEED,
    KEY_SAME_POOL,
    KEY_STD,
    METRICS,
    calculate_metrics,
)

__all__ = [
    "KEY_FID", "KEY_FID_CLASS_AVERAGED", "KEY_FID_PER_CLASS", "KEY_ISC", "KEY_KID", "KEY_PRECISION", "KEY_RECALL",
    "KEY_PRECISION_PRDC", "KEY_RECALL_PRDC",
    "KEY_DENSITY", "KEY_COVERAGE", "KEY_FLOOR", "KEY_SAME_POOL", "KEY_DISJOINT", "KEY_MEAN", "KEY_STD",
    "KEY_PER_SEED", "METRICS", "Generator", "ImageSet", "SampleFn", "calculate_metrics", "fid_from_features",
    "frechet_distance", "inception_score", "kid", "load_images", "prdc",
]
