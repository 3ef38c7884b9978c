"""The IMPROVE experiment: diffusion conditioned on frozen class prototypes vs. a learned class embedding.

Both arms are `proto-ddpm` runs with one config key apart (`class_embedding`: prototypes | learned): same
U-Net, schedule, steps, batch, seed and data. They are compared in two regimes, the full training set
and 100 images per class (train and val capped; the test split whole), by

  - FID and per-class FID against all BloodMNIST images (`calculate_metrics`, without the floor);
  - class fidelity: how often the classifier assigns a generated image to its intended class;
  - train-on-synthetic/test-on-real (TSTR) macro precision, recall and F1 (the paper's Table 5), with a
    "real images" row: the same classifier recipe trained on as many real images of the regime, with the
    same class counts as the synthetic set.

The classifier that judges fidelity is also the default prototype encoder (the reference classifier's
ResNet-18). Every stage writes its output under the folder and is skipped when the output exists, so an
interrupted comparison continues where it stopped:

  data/bloodmnist-100.npz                 the low-data file (`write_subset`)
  prototypes/<regime>/prototypes.*        prototypes learned on the regime's train split
  runs/<regime>-<arm>/                    the diffusion runs (`bloodgen train` run folders)
  samples/<regime>-<arm>.npz              the generated images every figure uses
  evaluations/<regime>-<arm or real>.json one row of figures
  grid-<regime>.png, results.json, report.md/.html
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from bloodgen.classify.clip_encoder import recorded_encoder_spec
from bloodgen.classify.prototype_options import PrototypeEncoder, PrototypeOptions
from bloodgen.classify.prototypes import learn_prototypes, read_info
from bloodgen.classify.recipe import RECIPES, ClassifierRecipe
from bloodgen.classify.reference import reference_classifier
from bloodgen.classify.scores import ClassificationScores
from bloodgen.classify.utility import class_fidelity, take_per_class, train_and_test
from bloodgen.data import CLASS_NAMES, N_CLASSES, load_bloodmnist
from bloodgen.data.subset import subset_indices, write_subset
from bloodgen.errors import UserError
from bloodgen.improve.budgets import FULL, REGIME_LABELS, REGIMES, Budget, budget_for
from bloodgen.metrics.protocol import calculate_metrics
from bloodgen.metrics.records import figure
from bloodgen.metrics.registry import FID, FID_CLASS_AVERAGED, FID_PER_CLASS
from bloodgen.models.prototype_file import LEARNED, PROTOTYPES
from bloodgen.models.registry import PROTOTYPE_FAMILY
from bloodgen.provenance import environment, portable_path, write_json
from bloodgen.report.document import Document, Heading, Image, Paragraph, Table, write_report
from bloodgen.report.plots import class_rows, plot_side_by_side
from bloodgen.samplefile import IMAGES, LABELS, write_samples
from bloodgen.sampling.api import load_model, sample
from bloodgen.training import RunOptions
from bloodgen.training import checkpoint as ck
from bloodgen.training import resume, train

SCHEMA = "bloodgen-prototypes-compare/1"
MODEL = PROTOTYPE_FAMILY
ARMS = (LEARNED, PROTOTYPES)  # baseline first, as in the paper's table
REAL = "real"
ARM_LABELS = {REAL: "real images", LEARNED: "learned class embedding (baseline)",
              PROTOTYPES: "frozen prototypes (IMPROVE)"}
RESULTS_FILE = "results.json"


# ---- records: what comparison.json, results.json and the evaluations hold, JSON keys the field names
# unless a to_json says otherwise ------------------------------------------------------------------

@dataclass(frozen=True)
class ComparisonSpec:
    """comparison.json: what a comparison folder compares; its finished stages hold only for this."""

    budget: Budget
    seed: int
    encoder: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TstrScores:
    """Train on synthetic (or real) images, test on real: one classifier's macro scores. Each JSON key has
    the prefix "tstr_", as the scores share their row with the FID and fidelity figures."""

    precision: float
    recall: float
    f1: float
    accuracy: float
    n_train: int
    n_test: int

    def to_json(self) -> dict[str, Any]:
        return {f"tstr_{name}": value for name, value in asdict(self).items()}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "TstrScores":
        return cls(**{f.name: record[f"tstr_{f.name}"] for f in fields(cls)})


@dataclass(frozen=True)
class ArmRow:
    """One diffusion arm in one regime (evaluations/<regime>-<arm>.json): its run, FID and class fidelity of
    its samples, and TSTR on them, whose keys come between the fidelity and the FID protocol."""

    run_dir: str  # as portable_path writes it
    steps: int
    train_time_s: float
    n_samples: int
    fid: float
    fid_class_averaged: float
    fid_per_class: list[float]
    class_fidelity: float
    class_fidelity_per_class: list[float]
    tstr: TstrScores
    fid_protocol: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            record.update(value.to_json() if f.name == "tstr" else {f.name: value})
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "ArmRow":
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name != "tstr"},
                   tstr=TstrScores.from_json(record))


@dataclass(frozen=True)
class PrototypesSummary:
    """The prototype classifier whose prototypes condition a regime's IMPROVE arm (from its prototypes.json)."""

    path: str
    test_accuracy: float
    val_accuracy: float
    options: PrototypeOptions
    encoder: PrototypeEncoder

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "PrototypesSummary":
        return cls(**{**record, "options": PrototypeOptions(**record["options"]),
                      "encoder": PrototypeEncoder.from_json(record["encoder"])})


@dataclass(frozen=True)
class RegimeResult:
    """One regime of results.json. Its JSON "rows" hold the arms and, under REAL, the real-images row."""

    regime_data: dict[str, Any]  # the regime's data file's provenance
    prototypes: PrototypesSummary
    arms: dict[str, ArmRow]  # in ARMS order
    real: TstrScores  # the TSTR recipe on as many real images, with the synthetic set's class counts
    grid: str  # the side-by-side grid, relative to the comparison folder

    def to_json(self) -> dict[str, Any]:
        rows = {arm: row.to_json() for arm, row in self.arms.items()}
        return {"regime_data": self.regime_data, "prototypes": self.prototypes.to_json(),
                "rows": {**rows, REAL: self.real.to_json()}, "grid": self.grid}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "RegimeResult":
        rows = record["rows"]
        return cls(record["regime_data"], PrototypesSummary.from_json(record["prototypes"]),
                   {arm: ArmRow.from_json(row) for arm, row in rows.items() if arm != REAL},
                   TstrScores.from_json(rows[REAL]), record["grid"])


@dataclass(frozen=True)
class JudgeSummary:
    """The reference classifier that judges class fidelity and is the default prototype encoder."""

    recipe: ClassifierRecipe
    trained_on: dict[str, Any]  # the data file's provenance
    test_accuracy: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "JudgeSummary":
        return cls(**{**record, "recipe": ClassifierRecipe(**record["recipe"])})


@dataclass(frozen=True)
class ComparisonResult:
    """results.json: the whole comparison."""

    schema: str
    preset: str  # the budget preset's name, or "custom"
    budget: Budget
    seed: int
    data: dict[str, Any]  # the full data file's provenance
    classifier: JudgeSummary
    regimes: dict[str, RegimeResult]
    environment: dict[str, Any]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**record, "budget": self.budget.to_json(), "classifier": self.classifier.to_json(),
                "regimes": {name: regime.to_json() for name, regime in self.regimes.items()}}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "ComparisonResult":
        return cls(**{**record, "budget": Budget.from_json(record["budget"]),
                      "classifier": JudgeSummary.from_json(record["classifier"]),
                      "regimes": {name: RegimeResult.from_json(block) for name, block in record["regimes"].items()}})


def _load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _quiet_load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # derived files are "not the official BloodMNIST", by design
        return load_bloodmnist(path)


def _cap(split: tuple[np.ndarray, np.ndarray], per_class: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if per_class is None:
        return split
    keep = subset_indices(split[1], per_class=per_class, seed=seed)
    return split[0][keep], split[1][keep]


@dataclass(frozen=True)
class Comparison:
    """What one comparison is: a preset's budget (or a Budget of its own) with the `--steps` and
    `--classifier-epochs` adjustments, the data file, the seed, the regimes and the prototype encoder."""

    preset: str | Budget = "quick"
    data: str | Path | None = None
    seed: int = 0
    regimes: tuple[str, ...] = tuple(REGIMES)
    encoder: str = "reference"
    steps: int | None = None
    classifier_epochs: int | None = None

    def budget(self) -> tuple[str, Budget]:
        """(the preset's name, or "custom", and the budget)."""
        if isinstance(self.preset, Budget):
            return "custom", self.preset
        return self.preset, budget_for(self.preset, self.steps, self.classifier_epochs)


def compare(out: str | Path, comparison: Comparison = Comparison(), cache_dir: str | Path | None = None,
            progress: bool = True, extractor=None) -> ComparisonResult:
    """Run (or continue) the comparison in `out`; returns what it writes to results.json, and writes the report.

    `extractor` replaces the InceptionV3 feature extractor of FID (tests use a cheap one).
    """
    started = time.perf_counter()
    preset_name, budget = comparison.budget()
    regimes, seed, encoder = comparison.regimes, comparison.seed, comparison.encoder
    unknown = sorted(set(regimes) - set(REGIMES))
    if unknown or not regimes:
        raise UserError(f"unknown regime(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(REGIMES)}")
    if budget.classifier not in RECIPES:
        raise UserError(f"unknown classifier recipe {budget.classifier!r}: choose one of {', '.join(RECIPES)}")
    out = Path(out)
    _claim(out, budget, seed, encoder)
    full = _quiet_load(comparison.data)
    files = {FULL: full.path}
    for name, per_class in REGIMES.items():
        if per_class is not None:
            path = out / "data" / f"bloodmnist-{per_class}.npz"
            if not path.is_file():
                write_subset(full, path, per_class=per_class, seed=seed)
            files[name] = path
    regime_data = {name: _quiet_load(path) for name, path in files.items()}

    recipe = replace(RECIPES[budget.classifier], seed=seed)
    if budget.classifier_epochs is not None:
        recipe = replace(recipe, epochs=budget.classifier_epochs)
    judge, judge_info = reference_classifier(full, recipe, cache_dir=cache_dir)
    judge_summary = JudgeSummary(recipe, full.provenance(), ClassificationScores.from_json(judge_info["test"]).accuracy)

    setting = _Setting(out, full, judge, recipe, budget, seed, encoder, cache_dir, progress, extractor)
    results = ComparisonResult(
        schema=SCHEMA, preset=preset_name, budget=budget, seed=seed, data=full.provenance(), classifier=judge_summary,
        regimes={regime: _regime(setting, regime, regime_data[regime]) for regime in regimes},
        environment=environment(), seconds=round(time.perf_counter() - started, 1))
    write_json(out / RESULTS_FILE, results.to_json())
    write_compare_report(results, out)
    return results


def _claim(out: Path, budget: Budget, seed: int, encoder: str) -> None:
    """Record what this folder compares; a folder started with another budget, seed or encoder is refused,
    since its finished stages would be silently mixed with new ones."""
    # A CLIP encoder's weights by name and hash: no path, and a changed file is noticed.
    spec = json.loads(json.dumps(ComparisonSpec(budget, seed, recorded_encoder_spec(encoder)).to_json()))
    path = out / "comparison.json"
    existing = _load_json(path)
    if existing is not None and existing != spec:
        raise UserError(f"{out} holds a comparison with another budget, seed or encoder ({path}); "
                        f"choose another --out or delete that folder")
    write_json(path, spec)


@dataclass(frozen=True)
class _Setting:
    """What every stage of one comparison shares."""

    out: Path
    full: Any  # the whole BloodMNIST file: test split, FID reference, the encoder's data
    judge: Any  # the reference classifier, for class fidelity
    recipe: Any  # its ClassifierRecipe, also the TSTR classifiers'
    budget: Budget
    seed: int
    encoder: str
    cache_dir: str | Path | None
    progress: bool
    extractor: Any


def _regime(s: _Setting, regime: str, data) -> RegimeResult:
    proto_path = s.out / "prototypes" / regime / "prototypes.safetensors"
    if not proto_path.is_file():
        learn_prototypes(data, proto_path, s.budget.prototypes, encoder=s.encoder, encoder_data=s.full,
                         classifier_recipe=s.recipe, cache_dir=s.cache_dir,
                         max_per_class=s.budget.prototype_max_per_class)
    proto_info = read_info(proto_path)
    rng = np.random.default_rng(s.seed)
    test = _cap(s.full.split("test"), s.budget.eval_per_class, s.seed)
    val = _cap(data.split("val"), s.budget.eval_per_class, s.seed)
    arms: dict[str, ArmRow] = {}
    generated: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for arm in ARMS:
        run_dir = _train_arm(s, regime, arm, data, proto_path)
        generated[arm] = _samples(s, regime, arm, run_dir)
        arms[arm] = _evaluate_arm(s, regime, arm, run_dir, generated[arm], val, test)
    real = _real_row(s, regime, data, generated[ARMS[0]][1], val, test)
    grid = f"grid-{regime}.png"
    panels = {ARM_LABELS[REAL]: class_rows(*data.split("train"), N_CLASSES, 6, rng)}
    panels.update({ARM_LABELS[arm]: class_rows(*generated[arm], N_CLASSES, 6, rng) for arm in ARMS})
    plot_side_by_side(panels, 6, CLASS_NAMES, s.out / grid, title=REGIME_LABELS[regime])
    prototypes = PrototypesSummary(str(proto_path), proto_info.test_accuracy, proto_info.val_accuracy,
                                   proto_info.options, proto_info.encoder)
    return RegimeResult(data.provenance(), prototypes, arms, real, grid)


def _train_arm(s: _Setting, regime: str, arm: str, data, proto_path: Path) -> Path:
    run_dir = s.out / "runs" / f"{regime}-{arm}"
    if (run_dir / ck.EXPORT_WEIGHTS).is_file():
        return run_dir
    options = RunOptions(data=data.path, progress=s.progress)
    if (run_dir / ck.CHECKPOINT_DIR / ck.CHECKPOINT_NAME).is_file():
        result = resume(run_dir, options=options)
    else:
        overrides = {**s.budget.diffusion_overrides, "class_embedding": arm,
                     "prototypes": str(proto_path) if arm == PROTOTYPES else ""}
        result = train(MODEL, preset=s.budget.diffusion_preset, overrides=overrides, seed=s.seed, run_dir=run_dir,
                       options=options)
    if result.export is None:
        raise UserError(f"the {regime}/{arm} diffusion run stopped ({result.status}) at step {result.step}; "
                        f"run the comparison again to continue it")
    return run_dir


def _samples_path(out: Path, regime: str, arm: str) -> Path:
    return out / "samples" / f"{regime}-{arm}.npz"


def _samples(s: _Setting, regime: str, arm: str, run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    path = _samples_path(s.out, regime, arm)
    if not path.is_file():
        images, labels = sample(load_model(run_dir, device="cpu"), s.budget.n_samples, s.seed, progress=s.progress)
        write_samples(path, images, labels)
    with np.load(path) as z:
        return z[IMAGES], z[LABELS]


def _tstr(train, val, test, recipe, budget: Budget) -> TstrScores:
    report = ClassificationScores.from_json(train_and_test(train, val, test, replace(recipe, epochs=budget.tstr_epochs),
                                                           desc="train-on-synthetic classifier"))
    return TstrScores(report.macro_precision, report.macro_recall, report.macro_f1, report.accuracy, len(train[1]),
                      len(test[1]))


def _evaluate_arm(s: _Setting, regime: str, arm: str, run_dir: Path, generated, val, test) -> ArmRow:
    path = s.out / "evaluations" / f"{regime}-{arm}.json"
    saved = _load_json(path)
    if saved is not None:
        return ArmRow.from_json(saved)
    images, labels = generated
    metrics = calculate_metrics(_samples_path(s.out, regime, arm), n=min(s.budget.fid_n, len(images)),
                                seeds=s.budget.fid_seeds, floor=False, metrics=("fid", "per-class"), data=s.full.path,
                                progress=s.progress, extractor=s.extractor)
    fidelity = class_fidelity(s.judge, images, labels)
    summary = json.loads((run_dir / "summary.json").read_text())
    row = ArmRow(run_dir=portable_path(str(run_dir)), steps=summary["step"], train_time_s=summary["train_time_s"],
                 n_samples=len(labels), fid=figure(metrics, FID.key).mean,
                 fid_class_averaged=figure(metrics, FID_CLASS_AVERAGED.key).mean,
                 fid_per_class=list(figure(metrics, FID_PER_CLASS.key).mean), class_fidelity=fidelity.macro,
                 class_fidelity_per_class=fidelity.per_class,
                 tstr=_tstr((images, labels), val, test, s.recipe, s.budget), fid_protocol=metrics["protocol"])
    write_json(path, row.to_json())
    return row


def _real_row(s: _Setting, regime: str, data, synthetic_labels: np.ndarray, val, test) -> TstrScores:
    """TSTR's real-data row: as many real train images of the regime, with the synthetic set's class counts
    (capped by what the regime has)."""
    path = s.out / "evaluations" / f"{regime}-{REAL}.json"
    saved = _load_json(path)
    if saved is not None:
        return TstrScores.from_json(saved)
    images, labels = data.split("train")
    counts = np.minimum(np.bincount(synthetic_labels, minlength=N_CLASSES), np.bincount(labels, minlength=N_CLASSES))
    train = take_per_class(images, labels, counts, np.random.default_rng(s.seed))
    row = _tstr(train, val, test, s.recipe, s.budget)
    write_json(path, row.to_json())
    return row


# ---- report -----------------------------------------------------------------------------------------

def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report_blocks(results: ComparisonResult, out_dir: Path, results_dir: Path | None = None) -> list:
    """The comparison as report blocks (headings, tables, grids); image paths relative to `out_dir`, for a
    comparison written in `results_dir` (default: `out_dir` itself)."""
    regimes = list(results.regimes)
    blocks: list = [Heading("Prototype-guided diffusion (IMPROVE)"), _setup_paragraph(results),
                    _tstr_table(results, regimes), _quality_table(results, regimes), _prototypes_table(results, regimes)]
    for regime in regimes:
        grid = Path(results_dir or out_dir) / results.regimes[regime].grid
        blocks.append(Image(os.path.relpath(grid, out_dir),
                            f"{REGIME_LABELS[regime]}: real images and both arms' samples, one row per class."))
    return blocks


def _setup_paragraph(results: ComparisonResult):
    budget = results.budget
    steps = budget.diffusion_overrides.get("steps", f"the {budget.diffusion_preset!r} preset's")
    cap = budget.eval_per_class
    tested = "the whole test split" if cap is None else f"{cap} test images per class"
    return Paragraph(
        "Two proto-ddpm arms that differ only in the class embedding concatenated with the time embedding: "
        "frozen class prototypes learned by convolutional prototype learning (IMPROVE), or a randomly "
        "initialised, learned embedding of the same dimension (baseline). Same U-Net, schedule, "
        f"{steps} training steps, batch, data and seed ({results.seed}). Budget preset "
        f"'{results.preset}': {budget.n_samples} generated images per run, FID at N={budget.fid_n} "
        f"over {budget.fid_seeds} seed(s) against all BloodMNIST images (no floor); TSTR classifiers "
        f"trained {budget.tstr_epochs} epochs, tested on {tested}. "
        f"{_judge_text(results)}")


def _judge_text(results: ComparisonResult) -> str:
    recipe, encoders = results.classifier.recipe, sorted({r.prototypes.encoder.spec for r in results.regimes.values()})
    judge = (f"the reference ResNet-18 at width {recipe.width} trained {recipe.epochs} epoch(s) (test accuracy "
             f"{_f(results.classifier.test_accuracy)})")
    if encoders == ["reference"]:
        return (f"Class fidelity and the prototype encoder use one classifier, {judge}; as it also shapes the "
                f"prototypes, its fidelity figures may favour the prototype arm.")
    return f"Class fidelity is judged by {judge}; the prototypes are learned on frozen {', '.join(encoders)} features."


def _tstr_table(results: ComparisonResult, regimes: list[str]):
    header = ["training images"]
    for regime in regimes:
        header += [f"{REGIME_LABELS[regime]}: precision", "recall", "F1"]
    rows = []
    for arm in (REAL, *ARMS):
        row = [ARM_LABELS[arm]]
        for regime in regimes:
            block = results.regimes[regime]
            scores = block.real if arm == REAL else block.arms[arm].tstr
            row += [_f(scores.precision), _f(scores.recall), _f(scores.f1)]
        rows.append(row)
    return Table(header, rows, caption="Train on synthetic, test on real: macro precision, recall and F1 "
                                       "(the paper's Table 5 layout; 'real images' trains on as many real "
                                       "images with the same class counts).")


def _quality_table(results: ComparisonResult, regimes: list[str]):
    rows = []
    for regime in regimes:
        for arm in ARMS:
            r = results.regimes[regime].arms[arm]
            rows.append([REGIME_LABELS[regime], ARM_LABELS[arm], _f(r.fid, 1), _f(r.fid_class_averaged, 1),
                         _f(r.class_fidelity), str(r.steps), _f(r.train_time_s / 60, 1)])
    return Table(["regime", "arm", "FID", "class-averaged FID", "class fidelity", "steps", "train min"],
                 rows, caption="Image quality (lower FID is better) and class fidelity (higher is better).",
                 align_right_from=2)


def _prototypes_table(results: ComparisonResult, regimes: list[str]):
    rows = []
    for regime in regimes:
        p = results.regimes[regime].prototypes
        rows.append([REGIME_LABELS[regime], _f(p.test_accuracy), _f(p.val_accuracy),
                     *map(str, (p.options.per_class, p.options.dim, p.options.gamma, p.options.lam))])
    return Table(["regime", "prototype classifier test accuracy", "val accuracy", "K", "dim", "gamma", "lambda"],
                 rows,
                 caption="The prototype classifiers whose prototypes condition the IMPROVE arm.")


def write_compare_report(results: ComparisonResult, out_dir: Path) -> tuple[Path, Path]:
    doc = Document("bloodgen: prototype-guided diffusion (IMPROVE) vs. a learned class embedding")
    doc.add(*report_blocks(results, out_dir))
    return write_report(doc, out_dir)
