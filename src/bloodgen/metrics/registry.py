"""The metrics as typed records: what each computes from two feature sets, the JSON keys it writes and how
every report shows them. A new metric is one `MetricSpec` added to `METRICS` (its math in a module of
its own): `calculate_metrics`, `bloodgen evaluate --metrics`, the printed table and the study report read it
from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from bloodgen.data.bloodmnist import N_CLASSES
from bloodgen.metrics.alpha_beta import alpha_beta
from bloodgen.metrics.fid import fid_from_features, fid_per_class
from bloodgen.metrics.fid_infinity import fid_infinity
from bloodgen.metrics.kid import kid
from bloodgen.metrics.prdc import prdc

# Random streams: the real draw is default_rng(seed); everything else default_rng([seed, stream]).
STREAM_SAMPLES = 1
STREAM_SAME_POOL = 2
STREAM_DISJOINT = 3
STREAM_KID = 4
STREAM_FID_INFINITY = 5
STREAM_CLASSIFIER_KID = 6

# Feature spaces: the FID InceptionV3 (ImageNet-trained) and the reference classifier (BloodMNIST-trained).
INCEPTION = "inception"
CLASSIFIER = "classifier"


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


@dataclass(frozen=True)
class Drawn:
    """Features of one side of a comparison in each feature space, with labels when the images have them."""

    spaces: Mapping[str, np.ndarray]
    labels: np.ndarray | None

    @property
    def features(self) -> np.ndarray:
        return self.spaces[INCEPTION]


@dataclass(frozen=True)
class Column:
    """One figure a metric writes (a top-level key of the evaluation JSON) and how reports show it.

    label: its row in `bloodgen evaluate`'s table; study: its column header in the study's comparison table
    (None: not shown there); scale and decimals apply to both tables except that the study shows
    `study_decimals`; missing: the study's cell for a family whose evaluation has no such figure.
    """

    key: str
    label: str
    scale: float = 1.0
    decimals: int = 3
    lower_is_better: bool = True
    study: str | None = None
    study_decimals: int = 3
    missing: str = "n/a"


@dataclass(frozen=True)
class MetricSpec:
    """A comparison between two feature sets, selectable by name (`--metrics`): what it computes, the figures
    it writes (in report order), the feature space it reads and the images per set it needs. `default`
    metrics are computed when no selection is given (the study, `bloodgen evaluate` without --metrics).
    per_class: the figure holding one value per class, summarised class by class over seeds."""

    name: str
    compute: Callable[[Drawn, Drawn, "Options", int], dict]
    columns: tuple[Column, ...]
    description: str
    space: str = INCEPTION
    min_images: Callable[["Options"], int] = lambda options: 2
    default: bool = False
    per_class: Column | None = None


def _score(key: str, label: str, study: str | None = None) -> Column:
    """A figure in [0, 1] where higher is better (precision, recall and their kin)."""
    return Column(key, label, decimals=4, lower_is_better=False, study=study)


# Every figure of the evaluation JSON, once: its key and how reports show it.
FID = Column("fid", "FID", study_decimals=2)
KID = Column("kid", "KID x 10^3", scale=1e3, study="KID x 10^3")
PRECISION = _score("precision", "precision (k=3, closed balls)", "precision (k=3)")
RECALL = _score("recall", "recall (k=3, closed balls)", "recall (k=3)")
PRECISION_PRDC = _score("precision_prdc", "precision (k=5, prdc library)")
RECALL_PRDC = _score("recall_prdc", "recall (k=5, prdc library)")
DENSITY = _score("density", "density (k=5, prdc library)", "density (k=5)")
COVERAGE = _score("coverage", "coverage (k=5, prdc library)", "coverage (k=5)")
FID_CLASS_AVERAGED = Column("fid_class_averaged", "class-averaged FID", study="class-avg FID", study_decimals=2,
                            missing="unconditional")
FID_INFINITY = Column("fid_infinity", "FID extrapolated to infinite N")
ALPHA_PRECISION = _score("alpha_precision", "alpha-precision (integrated)")
BETA_RECALL = _score("beta_recall", "beta-recall (integrated)")
AUTHENTICITY = _score("authenticity", "authenticity")
FD_CLASSIFIER = Column("fd_classifier", "FD, reference-classifier features (not FID)")
KID_CLASSIFIER = Column("kid_classifier", "KID x 10^3, reference-classifier features", scale=1e3)
# The Inception Score is a property of the samples alone, computed from the network's logits (`isc=True`),
# so it is no comparison of two feature sets; its figure still has a row in the evaluation table.
ISC = Column("isc", "Inception Score", lower_is_better=False)
# Not table rows: FID of each class (a list per seed), and per-seed spreads kept beside their metric's
# figure rather than summarised over seeds (KID over subsets, IS over splits).
FID_PER_CLASS = Column("fid_per_class", "FID per class")
KID_SUBSET_STD = Column("kid_subset_std", "KID std over subsets")
ISC_SPLIT_STD = Column("isc_split_std", "Inception Score std over splits")
SPREADS = {KID_SUBSET_STD.key: KID.key, ISC_SPLIT_STD.key: ISC.key}


def _fid(real: Drawn, fake: Drawn, options: Options, seed: int) -> dict:
    return {FID.key: fid_from_features(real.features, fake.features)}


def _kid(real: Drawn, fake: Drawn, options: Options, seed: int) -> dict:
    mean, std = kid(real.features, fake.features, stream_rng(seed, STREAM_KID), options.kid_subsets,
                    options.kid_subset_size)
    return {KID.key: mean, KID_SUBSET_STD.key: std}


def _prdc(real: Drawn, fake: Drawn, options: Options, seed: int) -> dict:
    r = prdc(real.features, fake.features, options.nearest_k_pr, options.nearest_k_dc)
    return {PRECISION.key: r.precision, RECALL.key: r.recall, PRECISION_PRDC.key: r.precision_prdc,
            RECALL_PRDC.key: r.recall_prdc, DENSITY.key: r.density, COVERAGE.key: r.coverage}


def _per_class(real: Drawn, fake: Drawn, options: Options, seed: int) -> dict:
    if real.labels is None or fake.labels is None:
        return {}
    per_class, average = fid_per_class(real.features, real.labels, fake.features, fake.labels, N_CLASSES)
    return {FID_PER_CLASS.key: per_class, FID_CLASS_AVERAGED.key: average}


def _fid_infinity(real: Drawn, fake: Drawn, options: Options, seed: int) -> dict:
    return {FID_INFINITY.key: fid_infinity(real.features, fake.features, stream_rng(seed, STREAM_FID_INFINITY))}


def _alpha_beta(real: Drawn, fake: Drawn, options: Options, seed: int) -> dict:
    r = alpha_beta(real.features, fake.features)
    return {ALPHA_PRECISION.key: r.alpha_precision, BETA_RECALL.key: r.beta_recall,
            AUTHENTICITY.key: r.authenticity}


def _classifier(real: Drawn, fake: Drawn, options: Options, seed: int) -> dict:
    a, b = real.spaces[CLASSIFIER], fake.spaces[CLASSIFIER]
    mean, std = kid(a, b, stream_rng(seed, STREAM_CLASSIFIER_KID), options.kid_subsets, options.kid_subset_size)
    return {FD_CLASSIFIER.key: fid_from_features(a, b), KID_CLASSIFIER.key: mean}


# The registry, by name and in report order; `Options.metrics` picks from it.
METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("fid", _fid, (FID,), "Frechet Inception Distance (pytorch-fid's InceptionV3 pool3)", default=True),
    MetricSpec("kid", _kid, (KID,), "Kernel Inception Distance, unbiased, subset mean", default=True),
    MetricSpec("prdc", _prdc, (PRECISION, RECALL, PRECISION_PRDC, RECALL_PRDC, DENSITY, COVERAGE),
               "precision/recall (k-NN balls), density/coverage",
               min_images=lambda o: max(o.nearest_k_pr, o.nearest_k_dc) + 1, default=True),
    MetricSpec("per-class", _per_class, (FID_CLASS_AVERAGED,),
               "FID of each class and their mean (labels on both sides)", default=True, per_class=FID_PER_CLASS),
    MetricSpec("fid-inf", _fid_infinity, (FID_INFINITY,),
               "FID extrapolated to infinite N (Chong & Forsyth 2020): free of the 1/N bias",
               min_images=lambda o: 4),
    MetricSpec("alpha-beta", _alpha_beta, (ALPHA_PRECISION, BETA_RECALL, AUTHENTICITY),
               "alpha-precision, beta-recall, authenticity (Alaa et al. 2022) in Inception features",
               min_images=lambda o: 3),
    MetricSpec("classifier", _classifier, (FD_CLASSIFIER, KID_CLASSIFIER),
               "Frechet distance and KID in the reference classifier's penultimate features (BloodMNIST-trained; "
               "not FID)", space=CLASSIFIER),
)}


def default_metrics() -> tuple[str, ...]:
    return tuple(spec.name for spec in METRICS.values() if spec.default)


def report_columns() -> list[Column]:
    """Every figure's row in the evaluation table, in report order (ISC after the class-averaged FID)."""
    columns = [column for spec in METRICS.values() for column in spec.columns]
    after = columns.index(FID_CLASS_AVERAGED) + 1
    return columns[:after] + [ISC] + columns[after:]


def per_class_keys() -> set[str]:
    return {spec.per_class.key for spec in METRICS.values() if spec.per_class}


def study_columns() -> list[Column]:
    """The comparison table's metric columns after FID (FID has two columns of its own)."""
    return [column for spec in METRICS.values() for column in spec.columns if column.study]


@dataclass(frozen=True)
class Options:
    """Every parameter of the protocol; all of it goes into the JSON."""

    n: int = 10_000
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    metrics: tuple[str, ...] = field(default_factory=default_metrics)
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    nearest_k_pr: int = 3
    nearest_k_dc: int = 5
    isc: bool = False
    isc_splits: int = 10
