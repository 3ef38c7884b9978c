"""Evaluation of generated images: FID (overall and per class), KID, precision/recall, density/coverage,
Inception Score, the real-vs-real floor, all under one seeded protocol (`calculate_metrics`).

One module per metric (`fid`, `kid`, `prdc`, `isc`, ...; pure NumPy on features), one for the feature network
(`inception`), one for extraction and the real-feature cache (`features`), one for inputs (`inputs`), the
registry of metrics and the figures they write (`registry`), the typed records of the result (`records`),
and the protocol that ties them together (`protocol`). Importing this package does not import torch.
"""

from bloodgen.metrics.fid import fid_from_features, frechet_distance
from bloodgen.metrics.inputs import Generator, ImageSet, SampleFn, load_images
from bloodgen.metrics.isc import inception_score
from bloodgen.metrics.kid import kid
from bloodgen.metrics.prdc import prdc
from bloodgen.metrics.protocol import METRICS, calculate_metrics
from bloodgen.metrics.records import Figure, Floor, Scores

__all__ = [
    "METRICS", "Figure", "Floor", "Generator", "ImageSet", "SampleFn", "Scores", "calculate_metrics",
    "fid_from_features", "frechet_distance", "inception_score", "kid", "load_images", "prdc",
]
