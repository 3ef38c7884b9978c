"""What `classify-eval` saves, as records: one per part (OUT/parts/<part>.json) and the whole (OUT/results.json).

Each record writes its JSON object with its field names as keys, in field order, and reads it back, so the
folders of earlier evaluations load, resume and re-render as they were written. A field that older files
lack defaults to None and stays out of the JSON while it is None. The classification reports inside are
`ClassificationScores`, on the same level as the fields stored beside them.

Kept free of torch and numpy: the study and the summary read these records without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, ClassVar, Generic, TypeVar

from bloodgen.classify.scores import ClassificationScores

PARTS = ("accuracy", "ablations", "calibration", "psychometric", "anomaly", "corruptions", "heatmaps")

T = TypeVar("T")


def _same(value: Any) -> Any:
    return value


def _json_value(value: Any) -> Any:
    """A field's JSON: a record by its to_json, a dict or list of records entry by entry, anything else as it is."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, dict):
        return {key: _json_value(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


class _Record:
    """JSON in and out under the field names. READERS names the fields whose JSON is read into records."""

    READERS: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    def to_json(self) -> dict:
        return {f.name: _json_value(getattr(self, f.name)) for f in fields(self)
                if not (f.default is None and getattr(self, f.name) is None)}

    @classmethod
    def from_json(cls, d: dict):
        return cls(**{f.name: cls.READERS.get(f.name, _same)(d[f.name]) for f in fields(cls) if f.name in d})


@dataclass(frozen=True)
class ClassifierPair(Generic[T]):
    """One figure of each classifier: the diffusion model's and the ResNet-18's."""

    diffusion: T
    resnet18: T

    def to_json(self) -> dict:
        return {"diffusion": _json_value(self.diffusion), "resnet18": _json_value(self.resnet18)}

    @classmethod
    def from_json(cls, d: dict, read: Callable[[Any], T] = _same) -> ClassifierPair[T]:
        return cls(diffusion=read(d["diffusion"]), resnet18=read(d["resnet18"]))


class _WithReport(_Record):
    """A classification report with more fields beside it, all on one level of the JSON object."""

    def to_json(self) -> dict:
        own = super().to_json()
        report = own.pop("report")
        return {**report, **own}

    @classmethod
    def from_json(cls, d: dict):
        names = {f.name for f in fields(cls)}
        return cls(report=ClassificationScores.from_json(d), **{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class DiffusionScores(_WithReport):
    """The diffusion classifier on a set of images: its classification report and what it cost."""

    report: ClassificationScores
    n_images: int
    evaluations_per_image: float
    draws_per_image: float
    seconds_per_image: float
    options: dict  # ClassifierOptions.to_dict() of the run


@dataclass(frozen=True)
class ResnetScores(_WithReport):
    """The ResNet-18 on the same images: its classification report and seconds per image."""

    report: ClassificationScores
    seconds_per_image: float

    @property
    def evaluations_per_image(self) -> int:
        return 1  # one forward pass, so it is not saved


@dataclass(frozen=True)
class PartRun(_Record):
    """How a part was run; saved in the part's JSON object after its own fields."""

    wall_seconds: float
    config: dict  # EvalConfig.to_dict()
    checkpoint_step: int | None
    data: dict  # the data file's provenance
    environment: dict


@dataclass(frozen=True)
class _Part(_Record):
    """A part's result; run_evaluation adds `run` once the part is done."""

    run: PartRun | None = field(default=None, kw_only=True)

    def to_json(self) -> dict:
        own = super().to_json()
        run = own.pop("run", {})
        return {**own, **run}

    @classmethod
    def from_json(cls, d: dict):
        part = super().from_json(d)
        return replace(part, run=PartRun.from_json(d)) if "wall_seconds" in d else part


@dataclass(frozen=True)
class AccuracyPart(_Part):
    """Accuracy and cost of the diffusion classifier with and without pruning, and of the ResNet-18."""

    READERS = {"diffusion": DiffusionScores.from_json, "diffusion_no_prune": DiffusionScores.from_json,
               "resnet18": ResnetScores.from_json}

    diffusion: DiffusionScores
    diffusion_no_prune: DiffusionScores
    resnet18: ResnetScores
    classifier: dict  # the ResNet-18's recipe and training summary
    test_indices: list[int]
    evaluation_reduction: float  # network evaluations without pruning over those with it
    accuracy_loss_points: float

    def classifiers(self) -> dict[str, DiffusionScores | ResnetScores]:
        """The three classifiers' scores under their keys in the JSON, in report order."""
        return {"diffusion": self.diffusion, "diffusion_no_prune": self.diffusion_no_prune, "resnet18": self.resnet18}


@dataclass(frozen=True)
class ReplayScore(_Record):
    """One setting replayed on the accuracy part's stored draws: its accuracy and network evaluations per image."""

    accuracy: float
    balanced_accuracy: float
    evaluations_per_image: float


@dataclass(frozen=True)
class PruningScore(ReplayScore):
    """A replayed pruning setting."""

    min_draws: int
    p_value: float


@dataclass(frozen=True)
class AblationsPart(_Part):
    """The accuracy part's unpruned draws replayed under other weightings, aggregations, numbers of draws and
    pruning settings (no network evaluation): CytoDiffusion's Table 4 and Fig. 7."""

    READERS = {"weightings": lambda d: {w: {a: ReplayScore.from_json(s) for a, s in by.items()} for w, by in d.items()},
               "fitted": ReplayScore.from_json, "pruning": lambda d: [PruningScore.from_json(x) for x in d]}

    n_images: int
    stored_draws: int
    weightings: dict[str, dict[str, ReplayScore]]  # weighting -> aggregation -> all stored draws, no pruning
    fitted: ReplayScore  # logistic weights of time ranges, each image scored by weights fitted on other images
    fitted_bins: int
    fitted_bin_weights: list[float]  # fitted on every image, scaled to a largest magnitude of 1
    draw_counts: list[int]
    accuracy_by_draws: dict[str, list[float]]  # weighting -> accuracy with each image's first n draws (mean)
    weighting: str  # the run's weighting: the pruning replays use it
    draws_per_round: int
    pruning: list[PruningScore]
    figures: dict[str, str]


@dataclass(frozen=True)
class Calibration(_Record):
    """One classifier's expected calibration error and its reliability diagram's bins."""

    ece: float
    reliability: dict


@dataclass(frozen=True)
class CalibrationPart(_Part):
    """Temperature-scaled probabilities of the diffusion classifier: calibration beside the ResNet-18's."""

    READERS = {"diffusion": Calibration.from_json, "resnet18": Calibration.from_json}

    temperature: float
    n_val: int
    diffusion: Calibration
    resnet18: Calibration
    figures: dict[str, str]


@dataclass(frozen=True)
class PsychometricFit(_Record):
    """psi(x) = guess + (1 - guess - lapse) S(x; threshold, width) fitted to correctness against confidence."""

    threshold: float
    threshold_ci95: list[float]
    width: float  # from S = 0.05 to S = 0.95
    width_ci95: list[float]
    lapse: float
    lapse_ci95: list[float]
    guess: float  # fixed: 1 / the number of classes
    sigmoid: str
    bins: list[list[float]]  # (mean confidence, correct, images) per equal-count bin


@dataclass(frozen=True)
class PsychometricPart(_Part):
    """Both classifiers' correctness against their confidence on the accuracy part's test images (eq. 9)."""

    READERS = {"diffusion": lambda d: d and PsychometricFit.from_json(d),
               "resnet18": lambda d: d and PsychometricFit.from_json(d)}

    n_images: int
    # None where every image had the same confidence. Diffusion: the top class's temperature-scaled probability
    # (calibration part); ResNet-18: the top class's softmax probability.
    diffusion: PsychometricFit | None
    resnet18: PsychometricFit | None
    figures: dict[str, str]


@dataclass(frozen=True)
class AnomalyScores(_Record):
    """How well one classifier's low confidence flags the held-out class."""

    auc: float
    inlier_balanced_accuracy: float
    confidences: dict[str, list[float]]  # of the held-out class's images and of the others
    evaluations_per_image: float | None = None  # the diffusion classifier's only
    auc_ci95: list[float] | None = None  # bootstrap percentile interval; results made before lack it


@dataclass(frozen=True)
class AnomalyPart(_Part):
    """Both classifiers trained without one class, scored on telling that class's test images from the rest."""

    READERS = {"diffusion": AnomalyScores.from_json, "resnet18": AnomalyScores.from_json}

    heldout_class: int
    n_heldout: int
    n_images: int
    test_indices: list[int]
    classifier: dict  # the ResNet-18 trained without the held-out class
    figures: dict[str, str]
    diffusion: AnomalyScores
    resnet18: AnomalyScores


@dataclass(frozen=True)
class ShiftedScore(_Record):
    """Balanced accuracy on changed images, and its drop from the clean images'."""

    balanced_accuracy: float
    drop: float


def _shifted(d: dict) -> ClassifierPair[ShiftedScore]:
    return ClassifierPair.from_json(d, ShiftedScore.from_json)


@dataclass(frozen=True)
class CorruptionsPart(_Part):
    """Balanced accuracy of both classifiers on clean, corrupted and domain-shifted copies of test images."""

    READERS = {"clean": ClassifierPair.from_json, "mean_drop": ClassifierPair.from_json,
               "corrupted": lambda d: {name: {sev: _shifted(s) for sev, s in sevs.items()} for name, sevs in d.items()},
               "domains": lambda d: {name: _shifted(s) for name, s in d.items()}}

    n_images: int
    clean: ClassifierPair[float]
    corrupted: dict[str, dict[str, ClassifierPair[ShiftedScore]]]  # corruption -> severity -> scores
    skipped: dict[str, str]  # corruption -> why it was not applied
    mean_drop: ClassifierPair[float | None]  # None without any corruption applied
    severities: list[int]
    domains: dict[str, ClassifierPair[ShiftedScore]] | None = None  # results made before domains were scored lack it


@dataclass(frozen=True)
class Faithfulness(_Record):
    """Images moved along their signed maps towards each other class c, against random directions of the same
    size: how often the ResNet-18 then answers c, and its mean gain in the probability of c, per step size."""

    steps: list[float]  # root-mean-square change of a pixel value, [0, 1] units
    pairs: int  # (image, target class) pairs
    random_directions: int  # per pair
    map_to_target: list[float]
    random_to_target: list[float]
    map_gain: list[float]
    random_gain: list[float]


@dataclass(frozen=True)
class HeatmapsPart(_Part):
    """Counterfactual heat maps of one test image per class (the maps themselves are in heatmaps.npz)."""

    READERS = {"faithfulness": lambda d: d and Faithfulness.from_json(d)}

    image_classes: list[int]
    test_indices: list[int]
    predicted: list[int]
    draws: int
    figures: dict[str, str]
    kind: str | None = None  # the grid's maps: signed (eqs. 10-12) or squared; results made before lack it
    faithfulness: Faithfulness | None = None


PART_RECORDS: dict[str, type[_Part]] = {"accuracy": AccuracyPart, "ablations": AblationsPart,
                                        "calibration": CalibrationPart, "psychometric": PsychometricPart,
                                        "anomaly": AnomalyPart, "corruptions": CorruptionsPart,
                                        "heatmaps": HeatmapsPart}


@dataclass(frozen=True)
class EvalResults:
    """results.json: every part saved so far (their figures lie beside it)."""

    accuracy: AccuracyPart | None = None
    ablations: AblationsPart | None = None
    calibration: CalibrationPart | None = None
    psychometric: PsychometricPart | None = None
    anomaly: AnomalyPart | None = None
    corruptions: CorruptionsPart | None = None
    heatmaps: HeatmapsPart | None = None

    def parts(self) -> dict[str, _Part]:
        """The saved parts by name, in PARTS order."""
        return {name: getattr(self, name) for name in PARTS if getattr(self, name) is not None}

    def to_json(self) -> dict:
        return {"parts": {name: part.to_json() for name, part in self.parts().items()}}

    @classmethod
    def from_json(cls, d: dict) -> EvalResults:
        return cls(**{name: PART_RECORDS[name].from_json(part) for name, part in d["parts"].items()})
