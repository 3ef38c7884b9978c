"""Are synthetic cells faithful and useful? Class fidelity, train-on-synthetic/test-on-real, augmentation,
and memorisation. Images, labels and features come in; typed records (ClassFidelity, Memorisation) and the
utility report's JSON-ready dict go out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import numpy as np

from bloodgen.classify.reference import (ClassifierRecipe, classification_report, predict_proba, reference_classifier,
                                         train_classifier)
from bloodgen.classify.scores import ClassificationScores
from bloodgen.data import N_CLASSES
from bloodgen.data.analysis import image_keys
from bloodgen.errors import UserError
from bloodgen.metrics.features import dataset_feature_store

AUGMENTATION_GAIN = "augmentation_gain_balanced_accuracy"  # the utility report's key for augmented - real

MEMORISATION_FLAG_FRACTION = 0.01

# How a report runs one named part: `step(name, compute)` returns compute()'s result or a saved one.
Step = Callable[[str, Callable[[], Any]], Any]


@dataclass(frozen=True)
class ClassFidelity:
    """How often the reference classifier reads a generated image of class c as c: per class (None for a class
    not drawn), their mean, and the confusion matrix (class drawn for x class read)."""

    per_class: list[float | None]
    macro: float | None
    confusion: list[list[int]]

    def to_json(self) -> dict:
        return {"class_fidelity_per_class": self.per_class, "class_fidelity_macro": self.macro,
                "class_fidelity_confusion": self.confusion}

    @classmethod
    def from_json(cls, record: dict) -> "ClassFidelity":
        return cls(record["class_fidelity_per_class"], record["class_fidelity_macro"],
                   record["class_fidelity_confusion"])


def class_fidelity(model, images: np.ndarray, labels: np.ndarray) -> ClassFidelity:
    """Fraction of generated images of class c that the reference classifier assigns to c."""
    pred = predict_proba(model, images).argmax(1)
    per_class = [float((pred[labels == c] == c).mean()) if (labels == c).any() else None for c in range(N_CLASSES)]
    present = [v for v in per_class if v is not None]
    confusion = np.zeros((N_CLASSES, N_CLASSES), dtype=int)
    np.add.at(confusion, (labels, pred), 1)
    return ClassFidelity(per_class, float(np.mean(present)) if present else None, confusion.tolist())


def matched_class_counts(real_labels: np.ndarray) -> np.ndarray:
    """How many synthetic images of each class TSTR uses: as many as the real train split, same proportions."""
    return np.bincount(real_labels, minlength=N_CLASSES)


def train_and_test(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray], recipe: ClassifierRecipe, desc: str = "classifier") -> dict:
    """One classifier trained with `recipe` on `train` (selected on `val`) and scored on `test`; `desc`
    names its progress bar (each training takes minutes to an hour on a CPU)."""
    model, info = train_classifier(train, val, recipe, desc=desc)
    report = classification_report(test[1], predict_proba(model, test[0])).to_json()
    report["train_seconds"] = info["train_seconds"]
    report["n_train"] = int(len(train[1]))
    return report


def minority_top_up(real_labels: np.ndarray) -> np.ndarray:
    """Synthetic images per class that bring every class up to the largest class's count."""
    counts = np.bincount(real_labels, minlength=N_CLASSES)
    return counts.max() - counts


def take_per_class(images: np.ndarray, labels: np.ndarray, counts: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`counts[c]` images of each class c, drawn without replacement; too few of a class is an error."""
    picks = []
    for c, k in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if len(idx) < k:
            raise UserError(f"need {k} synthetic images of class {c} but the samples hold {len(idx)}; "
                            f"sample more (e.g. `bloodgen sample ... --balanced -n {int(counts.sum()) * 2}`)")
        picks.append(rng.choice(idx, size=int(k), replace=False))
    order = np.concatenate(picks) if picks else np.zeros(0, int)
    return images[order], labels[order]


def nearest_distances(queries: np.ndarray, reference: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query row to its nearest reference row, and that row's index.

    Why not `torch.cdist`: its fast path expands |a|^2 + |b|^2 - 2ab in float32, whose rounding on
    2,352-d pixel vectors is ~1e-4 in squared distance, so an exact copy reads 0.0156 instead of 0 and
    the memorisation threshold drowns in rounding. Here the search runs in float64 (rounding ~1e-9,
    far below the smallest distinct-pixel gap of (1/255)^2) and the winner's distance is recomputed by
    direct subtraction, so identical rows give exactly 0.
    """
    q, r = np.asarray(queries, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    r_sq = np.einsum("ij,ij->i", r, r)
    dists, idxs = np.empty(len(q)), np.empty(len(q), dtype=np.int64)
    for start in range(0, len(q), chunk):
        block = q[start:start + chunk]
        nearest = (r_sq[None, :] - 2.0 * (block @ r.T)).argmin(axis=1)  # |q|^2 is constant along a row
        idxs[start:start + len(block)] = nearest
        dists[start:start + len(block)] = np.sqrt(((block - r[nearest]) ** 2).sum(axis=1))
    return dists, idxs


def copy_masks(generated: np.ndarray, train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
    """`memorisation`'s copy masks for uint8 images: generated and test images equal to a training image."""
    train_keys = image_keys(train)
    return {"generated_copies": np.isin(image_keys(generated), train_keys),
            "test_copies": np.isin(image_keys(test), train_keys)}


@dataclass(frozen=True)
class Memorisation:
    """`memorisation`'s figures in one space (field = JSON key): nearest-training-image distances of the
    generated and the real test items, the threshold, what falls under it, and the closest pairs."""

    n_generated: int
    generated_nn_distance_median: float
    test_nn_distance_median: float
    distance_ratio_median: float
    threshold: float
    test_copies_excluded: int
    memorised_fraction: float
    exact_copies: int
    memorisation_flag: bool
    closest: list[list]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> "Memorisation":
        return cls(**{f.name: record[f.name] for f in fields(cls)})


def memorisation(generated: np.ndarray, train: np.ndarray, test: np.ndarray, *,
                 generated_copies: np.ndarray | None = None, test_copies: np.ndarray | None = None,
                 flag_fraction: float = MEMORISATION_FLAG_FRACTION, n_closest: int = 16) -> Memorisation:
    """Nearest-training-image distances of generated vs real test items, in one space (pixels or features).

    Inputs are 2-d float arrays of vectors (flattened pixels in [0, 1], or Inception features). A generated
    image counts as memorised when it copies a training image or lies closer to one than any distinct
    real test image does. Test images that copy a training image (BloodMNIST has a few) are left out of
    that threshold, since with them it would be zero and nothing could ever be flagged. Copies are those
    at distance exactly 0 unless `generated_copies`/`test_copies` masks say otherwise: feature space takes
    them from pixel equality, since one image's features can differ by rounding between batches.
    `closest` lists the `n_closest` generated items nearest to a training item (generated index,
    training index, distance).
    """
    d_gen, nn_gen = nearest_distances(generated, train)
    d_test, _ = nearest_distances(test, train)
    gen_copy = d_gen == 0 if generated_copies is None else np.asarray(generated_copies, dtype=bool)
    test_copy = d_test == 0 if test_copies is None else np.asarray(test_copies, dtype=bool)
    distinct_test = d_test[~test_copy]
    threshold = float(distinct_test.min()) if len(distinct_test) else 0.0
    memorised = gen_copy | (d_gen < threshold)
    order = np.argsort(d_gen, kind="stable")[:n_closest]
    fraction = float(memorised.mean()) if len(d_gen) else 0.0
    return Memorisation(
        n_generated=int(len(d_gen)), generated_nn_distance_median=float(np.median(d_gen)),
        test_nn_distance_median=float(np.median(d_test)),
        distance_ratio_median=float(np.median(d_gen) / max(np.median(d_test), 1e-12)), threshold=threshold,
        test_copies_excluded=int(test_copy.sum()), memorised_fraction=fraction, exact_copies=int(gen_copy.sum()),
        memorisation_flag=bool(fraction > flag_fraction or gen_copy.any()),
        closest=[[int(i), int(nn_gen[i]), round(float(d_gen[i]), 5)] for i in order])


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def required_class_counts(train_labels: np.ndarray) -> np.ndarray:
    """Synthetic images of each class that TSTR and the minority top-up need (the larger of the two)."""
    return np.maximum(matched_class_counts(train_labels), minority_top_up(train_labels))


def _run_now(name: str, compute: Callable[[], Any]) -> Any:
    return compute()


def utility_report(reference_model, reference_info: dict, generated: tuple[np.ndarray, np.ndarray | None], data,
                   seed: int = 0, features: Callable[[], dict[str, np.ndarray]] | None = None,
                   memorisation_n: int | None = None, step: Step = _run_now) -> dict:
    """Class fidelity, TSTR (with the train-on-real baseline), augmentation and memorisation in one dict.

    Every classifier here is trained with the reference classifier's own recipe, so the reference's
    test scores are the train-on-real baseline. Unconditional samples (labels None) get memorisation
    only, since the other checks need the class each image was generated for. `features()` may return
    Inception features for keys 'generated', 'train' and 'test' to add the memorisation check in feature
    space next to pixel space; it uses the first `memorisation_n` generated images (all if None), as do the
    pixel-space figures. Each part runs through `step(name, compute)`, cheapest first, so a caller that
    saves finished parts (the study) resumes an interrupted report at the next part.
    """
    images, labels = generated
    train, val, test = data.split("train"), data.split("val"), data.split("test")
    report: dict = {"classifier": {k: reference_info[k] for k in ("recipe", "best_val_accuracy", "train_seconds",
                                                                     "device") if k in reference_info},
                    "train_on_real": reference_info["test"]}
    m = len(images) if memorisation_n is None else min(memorisation_n, len(images))
    copies = copy_masks(images[:m], train[0], test[0])
    recipe = ClassifierRecipe(**reference_info["recipe"])
    rng = np.random.default_rng(seed)  # the TSTR draw, then the top-up draw: the same images on a resumed run
    if labels is not None:
        report["fidelity"] = step("fidelity", lambda: class_fidelity(reference_model, images, labels).to_json())
    memorised = {"pixels": step("memorisation_pixels", lambda: memorisation(
        pixel_vectors(images[:m]), pixel_vectors(train[0]), pixel_vectors(test[0]), **copies).to_json())}
    if labels is not None:
        synthetic = take_per_class(images, labels, matched_class_counts(train[1]), rng)
        report["tstr"] = step("tstr", lambda: train_and_test(synthetic, val, test, recipe,
                                                             desc="train-on-synthetic classifier"))
    if features is not None:
        def in_features() -> dict:
            f = features()
            return memorisation(f["generated"][:m], f["train"], f["test"], **copies).to_json()

        memorised["inception"] = step("memorisation_inception", in_features)
    report["memorisation"] = memorised
    if labels is None:
        report["skipped"] = "fidelity, TSTR and augmentation need class-conditional samples"
        return report
    top_up = take_per_class(images, labels, minority_top_up(train[1]), rng)
    mixed = (np.concatenate([train[0], top_up[0]]), np.concatenate([train[1], top_up[1]]))
    report["augmented"] = step("augmented", lambda: train_and_test(mixed, val, test, recipe,
                                                                   desc="augmented classifier"))
    report[AUGMENTATION_GAIN] = (ClassificationScores.from_json(report["augmented"]).balanced_accuracy
                                     - ClassificationScores.from_json(report["train_on_real"]).balanced_accuracy)
    return report


def evaluate_utility(generated: tuple[np.ndarray, np.ndarray | None], data, *, recipe: ClassifierRecipe | None = None,
                     cache_dir=None, extractor=None, seed: int = 0, memorisation_n: int | None = 5000,
                     step: Step = _run_now) -> dict:
    """`utility_report` of the `generated` (images, labels or None) with the cached reference classifier and,
    given an extractor, Inception features (the dataset's from the feature cache; the generated images'
    computed now, first `memorisation_n`, only when that part runs)."""
    images, labels = generated
    model, info = reference_classifier(data, recipe, cache_dir=cache_dir)

    def features() -> dict[str, np.ndarray]:
        sizes = data.split_sizes
        store = dataset_feature_store(data, extractor, cache_dir)  # rows in "all" order: train, val, test
        m = len(images) if memorisation_n is None else min(memorisation_n, len(images))
        return {"generated": extractor(images[:m], desc="utility: generated features"),
                "train": store.features(np.arange(sizes["train"])),
                "test": store.features(np.arange(sizes["train"] + sizes["val"], sum(sizes.values())))}

    return utility_report(model, info, (images, labels), data, seed=seed,
                          features=features if extractor is not None else None, memorisation_n=memorisation_n,
                          step=step)
