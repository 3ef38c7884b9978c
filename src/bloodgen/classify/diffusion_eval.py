"""`classify-eval`: the diffusion classifier (CytoDiffusion) next to the ResNet-18 reference classifier.

Parts, each saved on its own under OUT/parts/ so that a long evaluation can be run part by part (or
parts in parallel processes) and the report is rebuilt from whatever parts exist:

- accuracy: accuracy, balanced accuracy, per-class recall on a random test subset, with and without
  pruning (the cost: network evaluations and seconds per image), and the ResNet on the same images; the
  unpruned run's draws are kept in parts/draws.npz.
- ablations: those draws replayed under other weightings, aggregations, numbers of draws and pruning
  settings, without network evaluations (bloodgen.classify.diffusion_ablations).
- calibration: softmax(-errors / T) with T fitted on a val subset; ECE and a reliability diagram, ResNet's too.
- psychometric: correctness against those probabilities as a psychometric function (psignifit), ResNet's too.
- anomaly: a diffusion model and a ResNet trained without one class; AUC of their confidences for
  telling that class's test images from the rest (on a test subset that is one third that class);
  a KDE figure of the confidences.
- corruptions: balanced accuracy of both classifiers on medmnistc-corrupted copies of a test subset.
- heatmaps: counterfactual heat maps, one test image per class against every target class.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.stats import gaussian_kde
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from bloodgen.classify.corruptions import BLOODMNIST_CORRUPTIONS, corrupt_all
from bloodgen.classify.diffusion import (candidate_classes, classify_images, counterfactual_maps, error_probabilities,
                                         fit_temperature)
from bloodgen.classify.diffusion_ablations import replay_ablations, save_draws
from bloodgen.classify.diffusion_options import ClassifierOptions
from bloodgen.classify.diffusion_results import (PART_RECORDS, PARTS, AblationsPart, AccuracyPart, AnomalyPart,
                                                 AnomalyScores, Calibration, CalibrationPart, ClassifierPair,
                                                 CorruptionsPart, DiffusionScores, EvalResults, HeatmapsPart, PartRun,
                                                 PsychometricPart, ResnetScores, ShiftedScore)
from bloodgen.classify.heatmaps import faithfulness, plot_overlay, plot_signed, plot_squared
from bloodgen.classify.psychometric import BINS, curve, fit_psychometric
from bloodgen.classify.recipe import ClassifierRecipe
from bloodgen.classify.reference import (classification_report, default_recipe, predict_logits, predict_proba,
                                         reference_classifier)
from bloodgen.data import CLASS_NAMES, N_CLASSES, load_bloodmnist
from bloodgen.data.domains import DOMAINS, get_domains
from bloodgen.data.subset import write_subset
from bloodgen.errors import UserError
from bloodgen.metrics.features import default_cache_dir
from bloodgen.provenance import atomic_path, environment, portable_path, write_json
from bloodgen.report.document import Document, Heading, Image, Paragraph, Table, write_report
from bloodgen.report.plots import pyplot
from bloodgen.sampling.api import load_model

ECE_BINS = 10
HEATMAP_KINDS = ("signed", "squared")
DOMAIN_SEVERITY = "domain"  # a shifted domain's place among the corruptions' severities


@dataclass
class EvalConfig:
    """Everything that decides the numbers; saved with the results."""

    checkpoint: str
    out: str
    data: str | None = None
    holdout_checkpoint: str | None = None
    holdout_class: int = 2
    parts: tuple[str, ...] = PARTS
    n_test: int = 300
    test_per_class: int | None = None  # K test images of each class in place of n_test random ones
    n_val: int = 100
    n_anomaly: int = 150
    n_corrupt: int = 50
    corruptions: tuple[str, ...] = BLOODMNIST_CORRUPTIONS
    severities: tuple[int, ...] = (1, 3, 5)
    domains: tuple[str, ...] = tuple(DOMAINS)  # shifted domains (bloodgen.data.domains) scored beside them
    no_prune_draws: int = 100
    heatmap_draws: int = 100
    heatmap_kind: str = "signed"  # HEATMAP_KINDS: the grid's maps (both are saved in parts/heatmaps.npz)
    seed: int = 0
    options: ClassifierOptions = field(default_factory=lambda: ClassifierOptions(max_draws=100))
    recipe: ClassifierRecipe | None = None  # None: the reference's default (its CPU-sized recipe without a GPU)
    device: str | None = None
    cache_dir: str | None = None
    progress: bool = True

    def check(self) -> "EvalConfig":
        self.options.check()
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise UserError(f"unknown part(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(PARTS)}")
        if self.test_per_class is not None and self.test_per_class < 1:
            raise UserError(f"--test-per-class must be >= 1, got {self.test_per_class}")
        for name in ("n_test", "n_val", "n_anomaly", "n_corrupt", "no_prune_draws", "heatmap_draws"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.heatmap_kind not in HEATMAP_KINDS:
            raise UserError(f"--heatmap-kind must be one of {', '.join(HEATMAP_KINDS)}, got {self.heatmap_kind!r}")
        if self.no_prune_draws < 2:
            raise UserError(f"--no-prune-draws must be >= 2, got {self.no_prune_draws}")
        if self.domains:
            get_domains(self.domains)  # an unknown or repeated name fails before any work
        if "anomaly" in self.parts and not self.holdout_checkpoint:
            raise UserError("the anomaly part needs --holdout-checkpoint (a ddpm trained without one class); "
                            "leave it out with --parts")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["options"], d["recipe"] = self.options.to_dict(), asdict(self.recipe) if self.recipe else None
        for key in ("checkpoint", "holdout_checkpoint", "out", "data", "cache_dir"):  # records are shared
            if isinstance(d.get(key), str):
                d[key] = portable_path(d[key])
        return d


class _Context:
    """Lazily loaded models and data shared by the parts of one run."""

    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.figures = self.out / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # derived files are "not official"; the data hash is recorded anyway
            self.data = load_bloodmnist(cfg.data)
        self.model = load_model(cfg.checkpoint, cfg.device)

        candidate_classes(self.model)  # fail now, not after an hour, on an unconditional model
        self.test_idx = _test_indices(self.data.labels("test"), cfg)
        self._resnet = None

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self.data.split("test")
        return images[self.test_idx], labels[self.test_idx]

    @property
    def draws_path(self) -> Path:
        return self.out / "parts" / "draws.npz"

    def partial(self, name: str) -> Path:
        """Where a classification of this part keeps its finished chunks until it is done."""
        return self.out / "parts" / f"{name}.partial.npz"

    def resnet(self):
        if self._resnet is None:
            self._resnet = reference_classifier(self.data, self.cfg.recipe, cache_dir=self.cfg.cache_dir)
        return self._resnet


def _test_indices(labels: np.ndarray, cfg: EvalConfig) -> np.ndarray:
    """The test images the accuracy and calibration parts score: n_test at random, or test_per_class of each
    class (all of a class that has fewer), sorted."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 7]))
    if cfg.test_per_class is None:
        return np.sort(rng.choice(len(labels), size=min(cfg.n_test, len(labels)), replace=False))
    pools = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    return np.sort(np.concatenate([rng.choice(p, size=min(cfg.test_per_class, len(p)), replace=False) for p in pools]))


def logit_gap(logits: np.ndarray) -> np.ndarray:
    """(N,) largest minus second-largest logit: the ResNet's confidence."""
    ordered = np.sort(logits, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def _diffusion_scores(labels: np.ndarray, result) -> DiffusionScores:
    # one-hot scores: an AUC of them would mean nothing
    report = replace(classification_report(labels, np.eye(N_CLASSES)[result.predictions]), auc_ovr=None)
    return DiffusionScores(report=report, n_images=int(len(labels)),
                           evaluations_per_image=float(result.evaluations.mean()),
                           draws_per_image=float(result.draws_used.mean()),
                           seconds_per_image=result.seconds / len(labels), options=result.options)


def _save_arrays(ctx: _Context, part: str, **arrays) -> None:
    with atomic_path(ctx.out / "parts" / f"{part}.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def _part_path(out: Path, part: str) -> Path:
    return out / "parts" / f"{part}.json"


def _saved_no_prune(ctx: _Context) -> tuple[DiffusionScores, np.ndarray] | None:
    """The no-pruning scores and errors of an earlier accuracy part on the same images, model and draws.

    The no-pruning run costs most of the part and does not depend on the pruning options, so a rerun
    that changes only those reuses it.
    """
    json_path, npz_path = _part_path(ctx.out, "accuracy"), ctx.out / "parts" / "accuracy.npz"
    if not (json_path.is_file() and npz_path.is_file() and ctx.draws_path.is_file()):
        return None
    old = AccuracyPart.from_json(json.loads(json_path.read_text()))
    draw_keys = ("weighting", "draws_per_round", "seed", "disc_radius", "tta")
    defaults = ClassifierOptions().to_dict()  # for records made before an option existed
    old_cfg, new_cfg = old.run.config, ctx.cfg.to_dict()
    if (old.test_indices != ctx.test_idx.tolist() or old.run.checkpoint_step != ctx.model.step
            or old_cfg["checkpoint"] != new_cfg["checkpoint"] or old_cfg["no_prune_draws"] != new_cfg["no_prune_draws"]
            or any(old_cfg["options"].get(k, defaults[k]) != new_cfg["options"][k] for k in draw_keys)):
        return None
    with np.load(ctx.draws_path) as f:  # the draws must be those of that run (a crash may have parted them)
        if f["test_indices"].tolist() != old.test_indices or f["errors"].shape[2] != ctx.cfg.no_prune_draws:
            return None
    with np.load(npz_path) as f:
        return old.diffusion_no_prune, f["mean_errors_no_prune"]


def part_accuracy(ctx: _Context) -> AccuracyPart:
    images, labels = ctx.test
    pruned = classify_images(ctx.model, images, ctx.cfg.options, progress=ctx.cfg.progress,
                             partial=ctx.partial("accuracy-pruned"))
    saved = _saved_no_prune(ctx)
    if saved is None:
        full = classify_images(ctx.model, images, replace(ctx.cfg.options, prune=False, max_draws=ctx.cfg.no_prune_draws),
                               progress=ctx.cfg.progress, partial=ctx.partial("accuracy-no-prune"), keep_draws=True)
        family = ctx.model.family
        save_draws(ctx.draws_path, full, labels, ctx.test_idx, family.noise_scheduler().alphas_cumprod.double().numpy(),
                   int(family.config["timesteps"]))
        saved = _diffusion_scores(labels, full), full.mean_errors
    no_prune, no_prune_errors = saved
    resnet, info = ctx.resnet()
    start = time.perf_counter()
    proba = predict_proba(resnet, images)
    resnet_report = classification_report(labels, proba)
    resnet_scores = ResnetScores(report=resnet_report, seconds_per_image=(time.perf_counter() - start) / len(labels))
    _save_arrays(ctx, "accuracy", test_indices=ctx.test_idx, labels=labels, mean_errors=pruned.mean_errors,
                 error_gaps=pruned.error_gaps, draws=pruned.draws, mean_errors_no_prune=no_prune_errors,
                 resnet_proba=proba)
    diffusion = _diffusion_scores(labels, pruned)
    return AccuracyPart(diffusion=diffusion, diffusion_no_prune=no_prune, resnet18=resnet_scores,
                        classifier=_classifier_summary(info), test_indices=ctx.test_idx.tolist(),
                        evaluation_reduction=no_prune.evaluations_per_image / diffusion.evaluations_per_image,
                        accuracy_loss_points=100 * (no_prune.report.accuracy - diffusion.report.accuracy))


def part_ablations(ctx: _Context) -> AblationsPart:
    return replay_ablations(ctx.draws_path, ctx.out, ctx.cfg.options.weighting)


def _classifier_summary(info: dict) -> dict:
    return {k: info.get(k) for k in ("recipe", "best_val_accuracy", "train_seconds", "device", "n_train")}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> tuple[float, dict]:
    """ECE over equal-width confidence bins, and the reliability diagram's per-bin numbers."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    acc = np.bincount(which, weights=correct.astype(float), minlength=bins)
    conf = np.bincount(which, weights=confidence, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc, conf = acc / count, conf / count
    ece = float(np.nansum(count * np.abs(acc - conf)) / max(count.sum(), 1))
    return ece, {"edges": edges.tolist(), "count": count.tolist(),
                 "accuracy": [None if np.isnan(a) else float(a) for a in acc],
                 "confidence": [None if np.isnan(c) else float(c) for c in conf]}


def part_calibration(ctx: _Context) -> CalibrationPart:
    saved = ctx.out / "parts" / "accuracy.npz"
    if not saved.is_file():
        raise UserError(f"the calibration part scores the accuracy part's test errors: run --parts accuracy first "
                        f"({saved} not found)")
    acc = np.load(saved)
    val_images, val_labels = ctx.data.split("val")
    scored = np.flatnonzero(np.isin(val_labels, candidate_classes(ctx.model)))  # T is fit on classes it can score
    rng = np.random.default_rng(np.random.SeedSequence([ctx.cfg.seed, 8]))
    idx = np.sort(rng.choice(scored, size=min(ctx.cfg.n_val, len(scored)), replace=False))
    val = classify_images(ctx.model, val_images[idx], ctx.cfg.options, progress=ctx.cfg.progress,
                          partial=ctx.partial("calibration"))
    temperature = fit_temperature(val.error_gaps, val_labels[idx])
    proba = error_probabilities(acc["error_gaps"], temperature)
    labels = acc["labels"]
    ece, bins = expected_calibration_error(proba.max(1), proba.argmax(1) == labels)
    resnet_proba = acc["resnet_proba"] if "resnet_proba" in acc else predict_proba(ctx.resnet()[0], ctx.test[0])
    resnet_ece, resnet_bins = expected_calibration_error(resnet_proba.max(1), resnet_proba.argmax(1) == labels)
    _plot_reliability({"diffusion classifier": (ece, bins), "ResNet-18": (resnet_ece, resnet_bins)},
                      ctx.figures / "reliability.png")
    return CalibrationPart(temperature=temperature, n_val=int(len(idx)), diffusion=Calibration(ece, bins),
                           resnet18=Calibration(resnet_ece, resnet_bins),
                           figures={"reliability": "figures/reliability.png"})


def _plot_reliability(curves: dict[str, tuple[float, dict]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.4), squeeze=False)
    for ax, (name, (ece, bins)) in zip(axes[0], curves.items()):
        edges = np.asarray(bins["edges"])
        acc = np.array([np.nan if a is None else a for a in bins["accuracy"]])
        ax.bar(edges[:-1], np.nan_to_num(acc), width=np.diff(edges), align="edge", edgecolor="k", alpha=0.7,
               label="accuracy")
        ax.plot([0, 1], [0, 1], "r--", lw=1, label="perfect calibration")
        ax.set_title(f"{name}\nECE {ece:.3f}", fontsize=9)
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def part_psychometric(ctx: _Context) -> PsychometricPart:
    saved, calibration = ctx.out / "parts" / "accuracy.npz", _part_path(ctx.out, "calibration")
    for path in (saved, calibration):
        if not path.is_file():
            raise UserError(f"the psychometric part fits the accuracy part's test errors scaled by the calibration "
                            f"part's temperature: run --parts accuracy calibration first ({path} not found)")
    temperature = CalibrationPart.from_json(json.loads(calibration.read_text())).temperature
    with np.load(saved) as acc:
        labels, gaps, resnet_proba = acc["labels"], acc["error_gaps"], acc["resnet_proba"]
    proba = error_probabilities(gaps, temperature)
    diffusion = fit_psychometric(proba.max(1), proba.argmax(1) == labels, len(candidate_classes(ctx.model)))
    resnet = fit_psychometric(resnet_proba.max(1), resnet_proba.argmax(1) == labels, N_CLASSES)
    part = PsychometricPart(n_images=int(len(labels)), diffusion=diffusion, resnet18=resnet,
                            figures={"psychometric": "figures/psychometric.png"})
    _plot_psychometric(part, ctx.out / part.figures["psychometric"])
    return part


def _plot_psychometric(part: PsychometricPart, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    x = np.linspace(0, 1, 300)
    for (name, fit), colour in zip((("diffusion classifier", part.diffusion), ("ResNet-18", part.resnet18)),
                                   ("tab:blue", "tab:orange")):
        if fit is None:
            continue
        bins = np.asarray(fit.bins)
        ax.scatter(bins[:, 0], bins[:, 1] / bins[:, 2], s=6 + 40 * bins[:, 2] / bins[:, 2].max(), color=colour,
                   alpha=0.6)
        ax.plot(x, curve(fit, x), color=colour, label=f"{name}: threshold {fit.threshold:.2f}, width {fit.width:.2f}")
    ax.set(xlabel="confidence (top-class probability)", ylabel="proportion correct", ylim=(0, 1.02),
           title=f"Psychometric functions ({part.n_images} test images, equal-count bins)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def holdout_data_path(data, holdout_class: int, cache_dir: str | None) -> Path:
    """The BloodMNIST file without `holdout_class` in train/val, written once into the cache."""
    path = Path(cache_dir or default_cache_dir()) / "subsets" / f"{data.sha256[:16]}-without-{holdout_class}.npz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_subset(data, path, exclude_classes=[holdout_class])
    return path


def part_anomaly(ctx: _Context) -> AnomalyPart:
    held = ctx.cfg.holdout_class
    model = load_model(ctx.cfg.holdout_checkpoint, ctx.cfg.device)
    if held in candidate_classes(model):
        raise UserError(f"{ctx.cfg.holdout_checkpoint} was trained with class {held} ({CLASS_NAMES[held]}): "
                        f"train it on a file without that class or pass its class with --holdout-class")
    all_images, all_labels = ctx.data.split("test")
    # A third of the subset is the held-out class (~9% of the test split): more positives, a steadier AUC.
    rng = np.random.default_rng(np.random.SeedSequence([ctx.cfg.seed, 10]))
    pools = np.flatnonzero(all_labels == held), np.flatnonzero(all_labels != held)
    n_held = min(len(pools[0]), max(1, ctx.cfg.n_anomaly // 3))
    n_other = min(len(pools[1]), ctx.cfg.n_anomaly - n_held)
    if n_held == 0 or n_other == 0:
        raise UserError(f"the test split needs both class-{held} and other images for the anomaly part")
    idx = np.sort(np.concatenate([rng.choice(pools[0], n_held, replace=False),
                                  rng.choice(pools[1], n_other, replace=False)]))
    images, labels = all_images[idx], all_labels[idx]
    is_anomaly = labels == held
    diff = classify_images(model, images, ctx.cfg.options, progress=ctx.cfg.progress, partial=ctx.partial("anomaly"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        holdout_data = load_bloodmnist(holdout_data_path(ctx.data, held, ctx.cfg.cache_dir))
    resnet, info = reference_classifier(holdout_data, ctx.cfg.recipe, cache_dir=ctx.cfg.cache_dir)
    logits = predict_logits(resnet, images)
    logits[:, held] = -np.inf  # never trained on: its logit carries no information
    inliers = ~is_anomaly

    def scores(predictions: np.ndarray, confidence: np.ndarray) -> AnomalyScores:
        # Low confidence should flag the unseen class, so the anomaly score is minus the confidence.
        inlier_report = classification_report(labels[inliers], np.eye(len(CLASS_NAMES))[predictions[inliers]])
        return AnomalyScores(auc=float(roc_auc_score(is_anomaly, -confidence)),
                             auc_ci95=auc_interval(is_anomaly, -confidence, seed=ctx.cfg.seed),
                             inlier_balanced_accuracy=inlier_report.balanced_accuracy,
                             confidences={"heldout": confidence[is_anomaly].tolist(),
                                          "others": confidence[inliers].tolist()})

    out = AnomalyPart(heldout_class=held, n_heldout=int(is_anomaly.sum()), n_images=int(len(labels)),
                      test_indices=idx.tolist(), classifier=_classifier_summary(info),
                      figures={"confidence_kde": "figures/confidence_kde.png"},
                      diffusion=replace(scores(diff.predictions, diff.confidence),
                                        evaluations_per_image=float(diff.evaluations.mean())),
                      resnet18=scores(logits.argmax(1), logit_gap(logits)))
    _plot_kde(out, ctx.figures / "confidence_kde.png")
    return out


def auc_interval(positive: np.ndarray, scores: np.ndarray, resamples: int = 2000, seed: int = 0) -> list[float]:
    """95 % percentile bootstrap interval of the ROC AUC. Positives and negatives are resampled apart, so every
    resample holds both and keeps the class balance of the test set (the AUC is defined only with both)."""
    positive = np.asarray(positive, dtype=bool)
    pos, neg = scores[positive], scores[~positive]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    aucs = [roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))],
                          np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]) for _ in range(resamples)]
    return [float(v) for v in np.percentile(aucs, [2.5, 97.5])]


def _plot_kde(anomaly: AnomalyPart, path: Path) -> None:
    plt = pyplot()
    # Error gaps span orders of magnitude, so the diffusion classifier's are shown as log10.
    curves = (("diffusion classifier: log10 error gap", anomaly.diffusion, True),
              ("ResNet-18: logit gap", anomaly.resnet18, False))
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    held = CLASS_NAMES[anomaly.heldout_class]
    for ax, (title, scores, log10) in zip(axes, curves):
        conf = scores.confidences
        groups = {f"{held} (held out)": np.asarray(conf["heldout"]), "other classes": np.asarray(conf["others"])}
        if log10:
            groups = {k: np.log10(np.maximum(v, 1e-12)) for k, v in groups.items()}
        lo = min(v.min() for v in groups.values())
        hi = max(v.max() for v in groups.values())
        grid = np.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 200)
        for label, values in groups.items():
            if len(values) > 1 and np.ptp(values) > 0:
                ax.plot(grid, gaussian_kde(values)(grid), label=f"{label} (n={len(values)})")
        ax.set_title(f"{title}\nAUC {scores.auc:.3f}", fontsize=9)
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def part_corruptions(ctx: _Context) -> CorruptionsPart:
    images, labels = ctx.test
    images, labels = images[: ctx.cfg.n_corrupt], labels[: ctx.cfg.n_corrupt]
    sets = corrupt_all(images, tuple(ctx.cfg.corruptions), tuple(ctx.cfg.severities), seed=ctx.cfg.seed)
    # A shifted domain's test split is its transform of the same test cells, so the transform here scores
    # exactly the cells `bloodgen domains make` writes.
    shifted = {(name, DOMAIN_SEVERITY): DOMAINS[name].transform(images) for name in ctx.cfg.domains}
    named = {("clean", 0): images, **sets.images, **shifted}

    def balanced(proba: np.ndarray) -> float:
        return classification_report(labels, proba).balanced_accuracy

    # The diffusion model first: the (cached) ResNet is only needed for the cheap second pass.
    diffusion = {key: balanced(np.eye(N_CLASSES)[classify_images(
                     ctx.model, x, ctx.cfg.options, partial=ctx.partial(f"corruptions-{key[0]}-{key[1]}")).predictions])
                 for key, x in tqdm(named.items(), desc="corruptions", disable=not ctx.cfg.progress)}
    resnet, _ = ctx.resnet()
    scores = {key: ClassifierPair(diffusion=diffusion[key], resnet18=balanced(predict_proba(resnet, x)))
              for key, x in named.items()}
    clean = scores.pop(("clean", 0))
    corrupted, domains = {}, {}
    for (name, severity), s in scores.items():
        shifts = ClassifierPair(diffusion=ShiftedScore(s.diffusion, clean.diffusion - s.diffusion),
                                resnet18=ShiftedScore(s.resnet18, clean.resnet18 - s.resnet18))
        if severity == DOMAIN_SEVERITY:
            domains[name] = shifts
        else:
            corrupted.setdefault(name, {})[str(severity)] = shifts
    applied = [shifts for sevs in corrupted.values() for shifts in sevs.values()]
    drops = ClassifierPair(diffusion=_mean([a.diffusion.drop for a in applied]),
                           resnet18=_mean([a.resnet18.drop for a in applied]))
    return CorruptionsPart(n_images=int(len(labels)), clean=clean, corrupted=corrupted, skipped=sets.skipped,
                           mean_drop=drops, severities=list(ctx.cfg.severities), domains=domains)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def part_heatmaps(ctx: _Context) -> HeatmapsPart:
    images, labels = ctx.data.split("test")
    classes = candidate_classes(ctx.model)
    rng = np.random.default_rng(np.random.SeedSequence([ctx.cfg.seed, 9]))
    picks = [int(rng.choice(np.flatnonzero(labels == c))) for c in classes]
    options = replace(ctx.cfg.options, prune=False)
    maps = [counterfactual_maps(ctx.model, images[i], ctx.cfg.heatmap_draws, options, index=i) for i in picks]
    predicted = [m.predicted for m in maps]
    squared, signed = np.stack([m.squared for m in maps]), np.stack([m.signed for m in maps])
    _save_arrays(ctx, "heatmaps", squared=squared.astype(np.float32), signed=signed.astype(np.float32),
                 images=images[picks], test_indices=np.array(picks), predicted=np.array(predicted))
    names = list(CLASS_NAMES)
    figures, faithful = {"heatmaps": "figures/counterfactual_heatmaps.png"}, None
    if ctx.cfg.heatmap_kind == "signed":
        resnet, _ = ctx.resnet()
        faithful = faithfulness(images[picks], predicted, signed, classes, lambda x: predict_proba(resnet, x),
                                seed=ctx.cfg.seed)
        plot_signed(images[picks], classes, signed, predicted, names, ctx.figures / "counterfactual_heatmaps.png")
        figures["overlays"] = "figures/counterfactual_overlays.png"
        plot_overlay(images[picks], classes, signed, predicted, names, ctx.figures / "counterfactual_overlays.png")
    else:
        plot_squared(images[picks], classes, squared, predicted, names, ctx.figures / "counterfactual_heatmaps.png")
    return HeatmapsPart(image_classes=classes, test_indices=picks, predicted=predicted, draws=ctx.cfg.heatmap_draws,
                        figures=figures, kind=ctx.cfg.heatmap_kind, faithfulness=faithful)


PART_FUNCTIONS = {"accuracy": part_accuracy, "ablations": part_ablations, "calibration": part_calibration,
                  "psychometric": part_psychometric, "anomaly": part_anomaly, "corruptions": part_corruptions,
                  "heatmaps": part_heatmaps}


def run_evaluation(cfg: EvalConfig) -> EvalResults:
    """Run the requested parts (saving each as it finishes), then rebuild results.json and the report."""
    cfg = replace(cfg.check(), recipe=cfg.recipe or default_recipe())
    ctx = _Context(cfg)
    for part in PARTS:  # in dependency order: ablations, calibration and psychometric read earlier parts
        if part in cfg.parts:
            start = time.perf_counter()
            result = PART_FUNCTIONS[part](ctx)
            run = PartRun(wall_seconds=time.perf_counter() - start, config=cfg.to_dict(),
                          checkpoint_step=ctx.model.step, data=ctx.data.provenance(), environment=environment())
            write_json(_part_path(ctx.out, part), replace(result, run=run).to_json())
            for partial in (ctx.out / "parts").glob(f"{part}*.partial.npz"):  # kept in the part now
                partial.unlink()
    return write_results(ctx.out)


def write_results(out: str | Path) -> EvalResults:
    """results.json and report.md/.html from every part saved in `out`."""
    out = Path(out)
    parts = {p: PART_RECORDS[p].from_json(json.loads(_part_path(out, p).read_text())) for p in PARTS
             if _part_path(out, p).is_file()}
    results = EvalResults(**parts)
    write_json(out / "results.json", results.to_json())
    write_report(Document("Diffusion classifier (CytoDiffusion) evaluation", report_blocks(results, out)), out)
    return results


def _draws_text(options: dict) -> str:
    if not options["prune"]:
        return f"no pruning, {options['max_draws']} draws"
    return f"pruning at p < {options['p_value']}, {options['min_draws']}-{options['max_draws']} draws"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


class _Figures:
    """Report images of the parts' figures: found in `source` (where the evaluation wrote them) and copied
    into OUT_DIR/diffusion_classifier/ when the report lives elsewhere."""

    def __init__(self, source: Path, out_dir: Path):
        self.source, self.out_dir = source, out_dir

    def __call__(self, rel: str, caption: str):
        src = self.source / rel
        if not src.is_file():
            return Paragraph(f"(figure {rel} not found in {self.source})")
        dest_rel = rel if self.source.resolve() == self.out_dir.resolve() else f"diffusion_classifier/{Path(rel).name}"
        if dest_rel != rel:
            (self.out_dir / dest_rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, self.out_dir / dest_rel)
        return Image(dest_rel, caption)


def _accuracy_blocks(a: AccuracyPart, figure: _Figures) -> list:
    names = ("diffusion, pruned", "diffusion, no pruning", "ResNet-18")
    classifiers = tuple(a.classifiers().values())
    rows = [[name, _pct(r.report.accuracy), _pct(r.report.balanced_accuracy),
             f"{r.evaluations_per_image:.0f}", f"{r.seconds_per_image:.3f}"] for name, r in zip(names, classifiers)]
    cfg = a.run.config
    o = cfg["options"]
    return [
        Paragraph(f"{a.diffusion.n_images} {_test_text(cfg)} (seed {cfg['seed']}); checkpoint "
                  f"`{cfg['checkpoint']}` at step {a.run.checkpoint_step}; weighting `{o['weighting']}`; pruning: "
                  f"paired t-test p < {o['p_value']}, {o['min_draws']}-{o['max_draws']} draws; no pruning: "
                  f"{cfg['no_prune_draws']} draws of every class. Pruning cuts network evaluations "
                  f"{a.evaluation_reduction:.1f}x at {a.accuracy_loss_points:+.1f} points of accuracy lost."),
        Table(["classifier", "accuracy %", "balanced acc. %", "network evals / image", "seconds / image"], rows,
              caption="Test accuracy and cost (seconds on this run's device)"),
        Table(["class"] + list(names),
              [[CLASS_NAMES[c]] + [_pct(r.report.per_class_recall[c]) for r in classifiers]
               for c in range(len(CLASS_NAMES))], caption="Per-class recall %"),
    ]


def _test_text(cfg: dict) -> str:
    per_class = cfg.get("test_per_class")
    return "random test images" if per_class is None else f"test images ({per_class} of each class)"


def _ablation_blocks(ab: AblationsPart, figure: _Figures) -> list:
    aggregations = list(next(iter(ab.weightings.values())))
    rows = [[w] + [_pct(by[a].accuracy) for a in aggregations] + [_pct(by["mean"].balanced_accuracy)]
            for w, by in ab.weightings.items()]
    f = ab.fitted  # a weighting of its own: one accuracy, in the first aggregation's column
    rows.append([f"logistic over {ab.fitted_bins} time ranges (5-fold cross-fitted)", _pct(f.accuracy),
                 *[""] * (len(aggregations) - 1), _pct(f.balanced_accuracy)])
    pruning = [[str(s.min_draws), f"{s.p_value:g}", _pct(s.accuracy), _pct(s.balanced_accuracy),
                f"{s.evaluations_per_image:.0f}"] for s in ab.pruning]
    return [
        Paragraph(f"Ablations replayed from the accuracy part's stored draws ({ab.n_images} test images, "
                  f"{ab.stored_draws} draws of every class each): no network evaluation beyond the stored ones."),
        Table(["weighting"] + [f"{a} %" for a in aggregations] + ["balanced acc. % (mean)"], rows,
              caption=f"Accuracy with all {ab.stored_draws} draws by error weighting and by how a draw's errors "
                      f"are combined (mean of weighted errors; normalised by the draw's mean; rank within the "
                      f"draw), CytoDiffusion's Table 4"),
        Table(["min draws", "p-value", "accuracy %", "balanced acc. %", "network evals / image"], pruning,
              caption=f"Pruning replayed (weighting {ab.weighting}, t-test every {ab.draws_per_round} draws, "
                      f"at most {ab.stored_draws} draws), Fig. 7"),
        figure(ab.figures["ablations"], "Accuracy against draws per weighting; pruning settings' accuracy "
                                        "against cost; the fitted weight of each time range beside the paper's"),
    ]


def _calibration_blocks(c: CalibrationPart, figure: _Figures) -> list:
    return [Paragraph(f"Calibration: probabilities softmax(-errors / T), T = {c.temperature:.3g} fitted on "
                      f"{c.n_val} val images. ECE ({ECE_BINS} bins): diffusion {c.diffusion.ece:.3f}, "
                      f"ResNet-18 {c.resnet18.ece:.3f}."),
            figure(c.figures["reliability"], "Reliability diagrams on the accuracy part's test images")]


def _psychometric_blocks(ps: PsychometricPart, figure: _Figures) -> list:
    def interval(value: float, ci: list[float]) -> str:
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    rows = [[name, interval(f.threshold, f.threshold_ci95), interval(f.width, f.width_ci95),
             interval(f.lapse, f.lapse_ci95), f"{f.guess:.3f}"] if f else [name, "not fitted: every image had the "
                                                                           "same confidence", "", "", ""]
            for name, f in (("diffusion classifier", ps.diffusion), ("ResNet-18", ps.resnet18))]
    return [Table(["classifier", "threshold [95 % CI]", "width [95 % CI]", "lapse rate [95 % CI]", "guess rate"], rows,
                  caption=f"Psychometric functions of correctness against confidence on {ps.n_images} test images "
                          f"(psignifit; cumulative normal, guess rate fixed at 1 / classes, Beta(1, 10) lapse "
                          f"prior; up to {BINS} equal-count bins), CytoDiffusion's eq. 9"),
            figure(ps.figures["psychometric"], "Proportion correct per confidence bin and the fitted functions")]


def _anomaly_blocks(an: AnomalyPart, figure: _Figures) -> list:
    held = CLASS_NAMES[an.heldout_class]
    def auc(s: AnomalyScores) -> str:
        return f"{s.auc:.3f}" + (f" [{s.auc_ci95[0]:.3f}, {s.auc_ci95[1]:.3f}]" if s.auc_ci95 else "")

    return [Table(["classifier (trained without " + held + ")", "anomaly AUC [95 % CI]",
                   "balanced acc. on other classes %"],
                  [[name, auc(s), _pct(s.inlier_balanced_accuracy)]
                   for s, name in ((an.diffusion, "diffusion (error gap)"), (an.resnet18, "ResNet-18 (logit gap)"))],
                  caption=f"Anomaly detection: {an.n_heldout} {held} images among {an.n_images} random test "
                          f"images (the held-out class oversampled); score = minus the confidence; diffusion: "
                          f"{_draws_text(an.run.config['options'])}"),
            figure(an.figures["confidence_kde"], f"Confidence densities, {held} held out")]


def _shift_cells(r: ClassifierPair[ShiftedScore]) -> list[str]:
    return [_pct(r.diffusion.balanced_accuracy), _pct(r.diffusion.drop),
            _pct(r.resnet18.balanced_accuracy), _pct(r.resnet18.drop)]


def _corruption_blocks(co: CorruptionsPart, figure: _Figures) -> list:
    rows = [["clean", "", _pct(co.clean.diffusion), "", _pct(co.clean.resnet18), ""]]
    for name, sevs in co.corrupted.items():
        rows += [[name, sev] + _shift_cells(r) for sev, r in sevs.items()]
    rows.append(["mean drop", "", "", _pct(co.mean_drop.diffusion), "", _pct(co.mean_drop.resnet18)])
    blocks = [Table(["corruption", "severity", "diffusion bal. acc. %", "drop", "ResNet bal. acc. %", "drop"],
                    rows, caption=f"medmnistc corruptions on {co.n_images} test images (balanced "
                                  f"accuracy; drop = clean minus corrupted, points); diffusion: "
                                  f"{_draws_text(co.run.config['options'])}")]
    if co.skipped:
        blocks.append(Paragraph("Skipped corruptions: " + "; ".join(f"{k}: {v}" for k, v in co.skipped.items())))
    if co.domains:  # results made before the domains were scored have none
        blocks.append(Table(["domain", "diffusion bal. acc. %", "drop", "ResNet bal. acc. %", "drop"],
                            [[name] + _shift_cells(r) for name, r in co.domains.items()],
                            caption="The same test images in the shifted domains of `bloodgen domains make` "
                                    "(docs/domains.md); both classifiers were trained in the original domain"))
    return blocks


def _heatmap_blocks(h: HeatmapsPart, figure: _Figures) -> list:
    if h.kind != "signed":  # squared maps, or results made before the signed maps
        return [figure(h.figures["heatmaps"],
                       "Counterfactual heat maps: one test image per class (diagonal), per-pixel error of each target "
                       "class minus the predicted class's (off the diagonal)")]
    blocks = [figure(h.figures["heatmaps"], "Signed counterfactual maps (CytoDiffusion eqs. 10-12): one test image "
                                            "per class (diagonal) and the change towards each other class"),
              figure(h.figures["overlays"], "The same maps as thresholded overlays")]
    f = h.faithfulness
    if f:
        rows = [[f"{step:g}", _pct(a), _pct(b), f"{100 * c:+.1f}", f"{100 * d:+.1f}"]
                for step, a, b, c, d in zip(f.steps, f.map_to_target, f.random_to_target, f.map_gain, f.random_gain)]
        blocks.append(Table(["step (RMS, [0, 1])", "along the map: ResNet says target %", "random: target %",
                             "along the map: gain in p(target), points", "random: gain, points"], rows,
                            caption=f"Faithfulness: {f.pairs} (image, target class) pairs moved along their signed "
                                    f"map vs {f.random_directions} random directions of the same size each"))
    return blocks


# Each part's report blocks, in report order.
PART_BLOCKS = {"accuracy": _accuracy_blocks, "ablations": _ablation_blocks, "calibration": _calibration_blocks,
               "psychometric": _psychometric_blocks, "anomaly": _anomaly_blocks, "corruptions": _corruption_blocks,
               "heatmaps": _heatmap_blocks}


def report_blocks(results: EvalResults, out_dir: Path, results_dir: Path | None = None) -> list:
    """Report blocks (headings, tables, figures) for `results` (EvalResults.from_json of results.json), with
    figure paths relative to `out_dir`; figures made elsewhere are copied into out_dir/diffusion_classifier/.

    The figures are looked up in `results_dir`, the folder results.json was written to (default: `out_dir`).
    """
    parts = results.parts()
    figure = _Figures(Path(results_dir or out_dir), Path(out_dir))
    blocks: list = [Heading("Diffusion model as a classifier (CytoDiffusion)")]
    for name, make in PART_BLOCKS.items():
        if name in parts:
            blocks += make(parts[name], figure)
    if len(blocks) == 1:
        blocks.append(Paragraph("No diffusion-classifier results yet."))
    return blocks
