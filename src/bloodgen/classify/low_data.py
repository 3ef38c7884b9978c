"""The diffusion classifier trained on few images (CytoDiffusion's Fig. 4), beside a ResNet-18 from scratch and
a logistic regression on Inception pool3 features.

For each regime k (training images per class) and repetition r: the train and val splits are cut to k random
images of each class (subset seed r; the test split stays whole), and everything of the unit sees only that
file. A conditional ddpm is trained on it (`train`, e.g. the study's recipe) for `scaled_steps` steps, keeping a
checkpoint at every `checkpoints`-th of them; the checkpoint whose diffusion classifier is most accurate on a
few of the subset's val images (`val_per_class` of each class; ties to the later one) classifies the test
images, the same `test_per_class` of each class for every unit. The ResNet-18 (the reference recipe, a fixed
number of optimiser steps whatever k, its epoch picked on the subset's val images) and the logistic regression
on Inception features (the one pretrained network available offline, in place of the paper's ImageNet
networks) are scored on the same test images. Each unit is saved as units/k<k>-r<r>.json when it is done, and
the test classification of its ddpm keeps its finished chunks: the experiment resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bloodgen.classify.diffusion import classify_images
from bloodgen.classify.diffusion_options import ClassifierOptions
from bloodgen.classify.few_shot import mean_std, step_matched
from bloodgen.classify.recipe import ClassifierRecipe
from bloodgen.classify.reference import classification_report
from bloodgen.classify.utility import train_and_test
from bloodgen.data import CLASS_NAMES, N_CLASSES, load_bloodmnist
from bloodgen.data.subset import subset_indices, write_subset
from bloodgen.errors import UserError
from bloodgen.provenance import write_json
from bloodgen.report.document import Image, Paragraph, Table
from bloodgen.report.plots import pyplot
from bloodgen.sampling.api import load_model

METHODS = (("diffusion", "diffusion classifier"), ("resnet18", "ResNet-18 from scratch"),
           ("logistic", "logistic regression on Inception pool3"))
TEST_SEED = 0
# train(subset file, seed, steps, keep_every) -> the finished run's folder
Train = Callable[[Path, int, int, int], Path]


@dataclass(frozen=True)
class LowDataConfig:
    per_class: tuple[int, ...] = (10, 20, 50, 150)
    repeats: int = 3
    test_per_class: int = 50
    val_per_class: int = 5
    checkpoints: int = 4  # kept along each training, evenly spaced; the last is the run's end
    resnet_steps: int = 300
    options: ClassifierOptions = field(default_factory=ClassifierOptions)

    def check(self) -> "LowDataConfig":
        if not self.per_class or min(self.per_class) < 1 or len(set(self.per_class)) != len(self.per_class):
            raise UserError(f"low-data regimes must be distinct numbers of images per class >= 1, got {self.per_class}")
        for name in ("repeats", "test_per_class", "val_per_class", "checkpoints", "resnet_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"the low-data {name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        self.options.check()
        return self


def scaled_steps(full_steps: int, n_train: int, n_full: int, checkpoints: int) -> int:
    """Training steps on a subset: the full recipe's steps times sqrt(n_train / n_full), a multiple of
    `checkpoints`. Fewer images need fewer steps, but not proportionally fewer: the same number of epochs would
    give a few dozen steps on 80 images, and the square root keeps the small sets seen for many more epochs."""
    steps = max(checkpoints, round(full_steps * math.sqrt(n_train / n_full)))
    return checkpoints * math.ceil(steps / checkpoints)


def pick_checkpoint(run_dir: Path, images: np.ndarray, labels: np.ndarray, options: ClassifierOptions,
                    saved: Path) -> dict:
    """{"step": the kept checkpoint with the best val accuracy, "val_accuracy": {step: accuracy}, "path": ...},
    kept in `saved` so that a unit resumed after the choice does not classify the val images again."""
    if saved.is_file():
        return json.loads(saved.read_text())
    kept = sorted((run_dir / "checkpoints").glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    if not kept:
        raise UserError(f"{run_dir} kept no checkpoints to pick from (train it with keep_every > 0)")
    accuracy = {int(p.stem.split("-")[1]): float((classify_images(load_model(p), images, options).predictions
                                                   == labels).mean()) for p in kept}
    best = max(accuracy, key=lambda s: (accuracy[s], s))
    choice = {"step": best, "val_accuracy": accuracy, "checkpoint": f"step-{best}.pt"}
    write_json(saved, choice)
    return json.loads(saved.read_text())  # as a resumed unit reads it (JSON keys are strings)


def logistic_probe(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                   test_labels: np.ndarray) -> dict:
    """A standardised multinomial logistic regression (scikit-learn, L2, C = 1) scored on the test features."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_features, train_labels)
    proba = np.zeros((len(test_labels), N_CLASSES))
    proba[:, probe.classes_] = probe.predict_proba(test_features)
    return classification_report(test_labels, proba).to_json()


def run_unit(data, k: int, r: int, cfg: LowDataConfig, folder: Path, train: Train, full_steps: int,
             recipe: ClassifierRecipe, extractor, test: tuple[np.ndarray, np.ndarray], test_features: np.ndarray,
             progress: bool) -> dict:
    """One (k, r) unit: its subset, ddpm, checkpoint choice, and the three classifiers' test reports."""
    path = folder / "data" / f"k{k}-r{r}.npz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_subset(data, path, per_class=k, seed=r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a derived file is "not official"; its sidecar records the source
        subset = load_bloodmnist(path, download=False)
    train_split, val_split = subset.split("train"), subset.split("val")
    steps = scaled_steps(full_steps, len(train_split[1]), len(data.labels("train")), cfg.checkpoints)
    run_dir = train(path, r, steps, steps // cfg.checkpoints)
    pick = subset_indices(val_split[1], per_class=cfg.val_per_class, seed=r)
    chosen = pick_checkpoint(run_dir, val_split[0][pick], val_split[1][pick], cfg.options,
                             folder / "units" / f"k{k}-r{r}.pick.json")
    result = classify_images(load_model(run_dir / "checkpoints" / chosen["checkpoint"]), test[0], cfg.options,
                             progress=progress,
                             partial=folder / "units" / f"k{k}-r{r}.partial.npz")
    resnet_recipe = step_matched(recipe, len(train_split[1]), cfg.resnet_steps, r)
    resnet = train_and_test(train_split, val_split, test, resnet_recipe, desc=f"ResNet-18, k {k}, repeat {r}")
    logistic = logistic_probe(extractor(train_split[0], desc=f"features, k {k}"), train_split[1], test_features,
                              test[1])
    diffusion = classification_report(test[1], np.eye(N_CLASSES)[result.predictions]).to_json()
    return {"settings": unit_settings(cfg), "per_class": k, "repeat": r, "n_train": int(len(train_split[1])),
            "steps": steps,
            "checkpoint": {"step": chosen["step"], "val_accuracy": chosen["val_accuracy"], "n_val": int(len(pick))},
            "run": run_dir.name, "evaluations_per_image": float(result.evaluations.mean()),
            "diffusion": diffusion, "resnet18": resnet, "logistic": logistic}


def unit_settings(cfg: LowDataConfig) -> dict:
    """What decides a unit's figures besides its k and r: a saved unit made otherwise is not reused."""
    return json.loads(json.dumps({**asdict(cfg), "options": cfg.options.to_dict(), "per_class": None, "repeats": None}))


def low_data_study(data, folder: str | Path, cfg: LowDataConfig, train: Train, full_steps: int,
                   recipe: ClassifierRecipe, extractor, progress: bool = True) -> dict:
    """Every unit (saved as it finishes), then per regime and method the mean ± std over repetitions."""
    cfg = cfg.check()
    folder = Path(folder)
    test_images, test_labels = data.split("test")
    idx = subset_indices(test_labels, per_class=cfg.test_per_class, seed=TEST_SEED)
    test = test_images[idx], test_labels[idx]
    test_features = extractor(test[0], desc="features, test images")
    units = []
    for k in cfg.per_class:
        for r in range(cfg.repeats):
            unit_path = folder / "units" / f"k{k}-r{r}.json"
            if not unit_path.is_file():
                write_json(unit_path, run_unit(data, k, r, cfg, folder, train, full_steps, recipe, extractor, test,
                                               test_features, progress))
                for leftover in ("partial.npz", "pick.json"):
                    (folder / "units" / f"k{k}-r{r}.{leftover}").unlink(missing_ok=True)
            unit = json.loads(unit_path.read_text())
            if unit["settings"] != unit_settings(cfg):
                raise UserError(f"{unit_path} was made with other low-data settings ({unit['settings']}): use "
                                f"another study folder or the same settings")
            units.append(unit)
    summary = {str(k): {method: {figure: mean_std([u[method][figure] for u in units if u["per_class"] == k])
                                 for figure in ("accuracy", "balanced_accuracy")} for method, _ in METHODS}
               for k in cfg.per_class}
    results = {"config": {**asdict(cfg), "options": cfg.options.to_dict()}, "n_test": int(len(idx)),
               "units": units, "summary": summary, "figures": {"curve": "low_data.png"}}
    plot_curves(results, folder / "low_data.png")
    return results


def plot_curves(results: dict, path: Path) -> None:
    plt = pyplot()
    ks = [int(k) for k in results["summary"]]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for method, label in METHODS:
        mean = np.array([100 * results["summary"][str(k)][method]["balanced_accuracy"]["mean"] for k in ks])
        std = np.array([100 * results["summary"][str(k)][method]["balanced_accuracy"]["std"] for k in ks])
        ax.plot(ks, mean, marker="o", label=label)
        ax.fill_between(ks, mean - std, mean + std, alpha=0.2)
    ax.set(xscale="log", xlabel="training images per class", ylabel="balanced accuracy % (test)",
           title="Few training images (CytoDiffusion Fig. 4)")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_blocks(results: dict, out_dir: Path, folder: Path) -> list:
    """The section's blocks for a report in `out_dir`; the figure stays in the experiment's `folder`."""
    cfg = results["config"]
    rows = [[k] + [f"{100 * s[m]['balanced_accuracy']['mean']:.1f} ± {100 * s[m]['balanced_accuracy']['std']:.1f}"
                   for m, _ in METHODS] for k, s in results["summary"].items()]
    return [
        Paragraph(f"Each regime: {cfg['repeats']} repetition(s), each with its own random k images per class "
                  f"(train and val), a ddpm trained on them alone with its checkpoint picked on "
                  f"{cfg['val_per_class']} val images per class, scored on the same {results['n_test']} test images "
                  f"({cfg['test_per_class']} per class of {len(CLASS_NAMES)}); ResNet-18: {cfg['resnet_steps']} "
                  f"optimiser steps from scratch."),
        Table(["images per class"] + [f"{label}: balanced acc. %" for _, label in METHODS], rows,
              caption="Balanced test accuracy, mean ± std over repetitions"),
        Image(os.path.relpath(folder / results["figures"]["curve"], out_dir),
              "Balanced accuracy against training images per class (± std)"),
    ]
