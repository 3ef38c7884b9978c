"""The evaluation protocol and its single entry point, `calculate_metrics`.

For each seed s: N real images drawn uniformly without replacement from the reference (by default all
17,092 BloodMNIST images) with `numpy.random.default_rng(s)`, N generated images for seed s (a generator
is called as sample_fn(N, s); a fixed file gets its own seeded draw of N images), and every selected
metric between the two feature sets. Figures are reported per seed, with the mean and the sample std.

Beside it, at the same N and seeds, the real-vs-real floor in two forms: same-pool (the seed's real
draw against a second, independent draw from the same images; the two share many images) and disjoint
(two halves of a seeded permutation, no image in common; each half holds min(N, pool // 2) images).
FID's small-sample bias makes every figure depend on N, which is why the floor is never reused at
another size.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from bloodgen.data.bloodmnist import ALL, CLASS_NAMES, N_CLASSES
from bloodgen.errors import UserError
from bloodgen.metrics.features import Extractor, FeatureStore, dataset_feature_store
from bloodgen.metrics.fid import KEY_FID, KEY_FID_CLASS_AVERAGED, KEY_FID_PER_CLASS, fid_from_features, fid_per_class
from bloodgen.metrics.inputs import ImageSet, as_samples
from bloodgen.metrics.isc import KEY_ISC, KEY_ISC_SPLIT_STD, inception_score
from bloodgen.metrics.kid import KEY_KID, KEY_KID_SUBSET_STD, kid
from bloodgen.metrics.prdc import prdc
from bloodgen.provenance import environment

SCHEMA = "bloodgen-evaluation/1"
KEY_MEAN = "mean"
KEY_STD = "std"
KEY_PER_SEED = "per_seed"
KEY_FLOOR = "floor"
KEY_SAME_POOL = "same_pool"
KEY_DISJOINT = "disjoint"

FLOOR_NOTE = (
    "Same-pool floor: the seed's real draw against a second independent draw from the same reference images "
    "(they share many images, so only a model that reproduces the dataset reaches it); disjoint floor: two "
    "halves of the reference with no image in common (what a perfect model that never copies approaches at "
    "this sample size)."
)

# Random streams: the real draw is default_rng(seed); everything else default_rng([seed, stream]).
STREAM_SAMPLES = 1
STREAM_SAME_POOL = 2
STREAM_DISJOINT = 3
STREAM_KID = 4


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def real_draw(pool_size: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(pool_size, size=n, replace=False)


def samples_draw(pool_size: int, n: int, seed: int) -> np.ndarray:
    return stream_rng(seed, STREAM_SAMPLES).choice(pool_size, size=n, replace=False)


def same_pool_draw(pool_size: int, n: int, seed: int) -> np.ndarray:
    return stream_rng(seed, STREAM_SAME_POOL).choice(pool_size, size=n, replace=False)


def disjoint_halves(pool_size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sets of min(n, pool_size // 2) indices each."""
    m = min(n, pool_size // 2)
    order = stream_rng(seed, STREAM_DISJOINT).permutation(pool_size)
    return order[:m], order[m:2 * m]


@dataclass(frozen=True)
class Options:
    """Every parameter of the protocol; all of it goes into the JSON."""

    n: int = 10_000
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    metrics: tuple[str, ...] = ("fid", "kid", "prdc", "per-class")
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    nearest_k_pr: int = 3
    nearest_k_dc: int = 5
    isc: bool = False
    isc_splits: int = 10


@dataclass(frozen=True)
class Drawn:
    """Features of one side of a comparison, with labels when the images have them."""

    features: np.ndarray
    labels: np.ndarray | None


def _fid(real: Drawn, fake: Drawn, options: Options, seed: int) -> dict:
    return {KEY_FID: fid_from_features(real.features, fake.features)}


def _kid(real: Drawn, fake: Drawn, options: Options, seed: int) -> dict:
    mean, std = kid(real.features, fake.features, stream_rng(seed, STREAM_KID), options.kid_subsets,
                    options.kid_subset_size)
    return {KEY_KID: mean, KEY_KID_SUBSET_STD: std}


def _prdc(real: Drawn, fake: Drawn, options: Options, seed: int) -> dict:
    return prdc(real.features, fake.features, options.nearest_k_pr, options.nearest_k_dc)


def _per_class(real: Drawn, fake: Drawn, options: Options, seed: int) -> dict:
    if real.labels is None or fake.labels is None:
        return {}
    per_class, average = fid_per_class(real.features, real.labels, fake.features, fake.labels, N_CLASSES)
    return {KEY_FID_PER_CLASS: per_class, KEY_FID_CLASS_AVERAGED: average}


# Comparisons between two feature sets, selectable by name (`--metrics`).
METRICS: dict[str, Callable[[Drawn, Drawn, Options, int], dict]] = {
    "fid": _fid, "kid": _kid, "prdc": _prdc, "per-class": _per_class,
}


def compare(real: Drawn, fake: Drawn, options: Options, seed: int) -> dict:
    out: dict = {}
    for name in options.metrics:
        out.update(METRICS[name](real, fake, options, seed))
    return out


def summarise(values: list) -> dict:
    """Mean and sample std (ddof=1) over seeds, and the values; None where any seed has no value."""
    if any(v is None for v in values):
        mean = std = None
    else:
        mean = float(np.mean(values))
        std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {KEY_MEAN: mean, KEY_STD: std, KEY_PER_SEED: list(values)}


# Per-seed spreads over KID subsets / IS splits are kept next to their metric, not summarised over seeds.
_SPREADS = {KEY_KID_SUBSET_STD: KEY_KID, KEY_ISC_SPLIT_STD: KEY_ISC}


def summarise_seeds(per_seed: list[dict]) -> dict:
    out: dict = {}
    for key in per_seed[0]:
        values = [result[key] for result in per_seed]
        if key in _SPREADS:
            continue
        if key == KEY_FID_PER_CLASS:
            by_class = [summarise([v[c] for v in values]) for c in range(N_CLASSES)]
            out[key] = {"classes": list(CLASS_NAMES), KEY_MEAN: [s[KEY_MEAN] for s in by_class],
                        KEY_STD: [s[KEY_STD] for s in by_class], KEY_PER_SEED: values}
        else:
            out[key] = summarise(values)
    for spread, metric in _SPREADS.items():
        if spread in per_seed[0]:
            out[metric][f"{spread.split('_', 1)[1]}_per_seed"] = [result[spread] for result in per_seed]
    return out


def _check_options(options: Options, pool_size: int, floor: bool) -> None:
    unknown = [m for m in options.metrics if m not in METRICS]
    if unknown or not options.metrics:
        raise UserError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(METRICS)}")
    if not options.seeds:
        raise UserError("--seeds must be at least 1")
    smallest = max(2, options.nearest_k_pr + 1, options.nearest_k_dc + 1) if "prdc" in options.metrics else 2
    if options.n < smallest:
        raise UserError(f"--n {options.n} is too small: the selected metrics need at least {smallest} images per set")
    if options.n > pool_size:
        raise UserError(f"--n {options.n} is larger than the reference, which has {pool_size} images")
    if floor and pool_size // 2 < smallest:
        raise UserError(f"the reference has {pool_size} images: too few for two disjoint halves of at least "
                        f"{smallest} images (the disjoint floor)")
    if options.kid_subsets < 1 or options.kid_subset_size < 2:
        raise UserError("KID needs at least 1 subset of at least 2 images")


def _reference(reference, data):
    """(the BloodMNIST object or None, images, labels or None, provenance) of the real side."""
    if reference is None:
        from bloodgen.data.bloodmnist import load_bloodmnist

        data_set = load_bloodmnist(data)
        images = data_set.images(ALL)
        provenance = {"source": "BloodMNIST, all splits (train+val+test in that order)", "kind": "dataset",
                      "n_images": len(images), **data_set.provenance()}
        return data_set, images, data_set.labels(ALL), provenance
    ref_set = as_samples(reference, role="reference")
    if not isinstance(ref_set, ImageSet):
        raise UserError("the reference must be a fixed set of real images (an .npz file or a folder of PNG files)")
    return None, ref_set.images, ref_set.labels, ref_set.provenance()


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def calculate_metrics(
    samples=None,
    *,
    reference: str | os.PathLike | ImageSet | None = None,
    n: int = 10_000,
    seeds: int | Sequence[int] = 5,
    floor: bool = True,
    metrics: Sequence[str] = Options.metrics,
    isc: bool = False,
    data: str | os.PathLike | None = None,
    inception_weights: str | os.PathLike | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    kid_subsets: int = Options.kid_subsets,
    kid_subset_size: int = Options.kid_subset_size,
    progress: bool = True,
    extractor: Extractor | None = None,
) -> dict:
    """Evaluate `samples` against the reference with the protocol of the module doc; return a JSON-ready dict.

    samples: an .npz / PNG-folder path, an `ImageSet`, a uint8 (N, 28, 28, 3) array, a `sample_fn(n, seed)`
        (see `bloodgen.metrics.inputs`), or None for the floor alone.
    reference: None for all images of the BloodMNIST file found via `data` (features cached on disk),
        or a path / ImageSet of real images (features computed in memory).
    seeds: S for seeds 0..S-1, or the seeds themselves.
    floor: compute the real-vs-real floor (same-pool and disjoint) at the same N and seeds.
    extractor: a ready feature extractor; by default the FID InceptionV3 from `inception_weights`,
        run on `device` with `batch_size`.
    Top-level keys: `fid`, `kid`, `precision`, ... each {mean, std, per_seed} for the samples; `floor`
    with `same_pool` and `disjoint` holding the same; `protocol`, `network`, `reference`, `samples`,
    `timing`, `environment`.
    """
    started = time.perf_counter()
    seed_list = tuple(range(seeds)) if isinstance(seeds, int) else tuple(int(s) for s in seeds)
    options = Options(n=n, seeds=seed_list, metrics=tuple(metrics), kid_subsets=kid_subsets,
                      kid_subset_size=kid_subset_size, isc=isc)
    if samples is None and not floor:
        raise UserError("nothing to evaluate: give samples (an .npz file or a folder of PNG files) or ask for "
                        "the floor")
    source = as_samples(samples) if samples is not None else None
    if isc and source is None:
        raise UserError("Inception Score is a property of generated samples: give samples to use --isc")

    data_set, ref_images, ref_labels, ref_provenance = _reference(reference, data)
    pool_size = len(ref_images)
    _check_options(options, pool_size, floor)
    if isinstance(source, ImageSet) and len(source) < options.n:
        raise UserError(f"samples {source.source} hold {len(source)} images, fewer than the {options.n} requested "
                        f"(--n); generate more or lower --n (and the floor is only comparable at the same --n)")

    if extractor is None:
        from bloodgen.metrics.inception import inception_extractor

        extractor = inception_extractor(inception_weights, device=device, batch_size=batch_size, progress=progress)
    logits_weight = extractor.logits_weight() if isc else None  # refuses before any long computation

    if data_set is not None:
        ref_store = dataset_feature_store(data_set, extractor, cache_dir)
    else:
        ref_store = FeatureStore(ref_images, extractor, desc="reference images")
    draws = {s: real_draw(pool_size, options.n, s) for s in options.seeds}
    same_pool = {s: same_pool_draw(pool_size, options.n, s) for s in options.seeds} if floor else {}
    disjoint = {s: disjoint_halves(pool_size, options.n, s) for s in options.seeds} if floor else {}
    needed = np.unique(np.concatenate([*draws.values(), *same_pool.values(), *(i for pair in disjoint.values()
                                                                                for i in pair)]))
    missing = int((~ref_store.computed[needed]).sum())
    if missing:
        where = f"; cached in {ref_store.cache_path.parent} for later runs" if ref_store.cache_path else ""
        _log(progress, f"embedding {missing:,} of the {needed.size:,} reference images with InceptionV3 first "
                       f"(about {missing / 10 / 60:.0f} min on 2 CPU cores, seconds on a GPU){where}")
    ref_store.features(needed)  # one pass (and one progress bar) for every seed
    timing = {"reference_images_computed": ref_store.n_computed_now,
              "reference_images_from_cache": int(needed.size) - ref_store.n_computed_now}

    def reference_side(indices: np.ndarray) -> Drawn:
        return Drawn(ref_store.features(indices), None if ref_labels is None else ref_labels[indices])

    sample_store = None
    if isinstance(source, ImageSet):
        sample_store = FeatureStore(source.images, extractor, desc="sample images")
        sample_draws = {s: samples_draw(len(source), options.n, s) for s in options.seeds}
        sample_store.features(np.unique(np.concatenate(list(sample_draws.values()))))

    per_seed: list[dict] = []
    floor_same: list[dict] = []
    floor_disjoint: list[dict] = []
    for s in options.seeds:
        seed_started = time.perf_counter()
        real = reference_side(draws[s])
        line = []
        if source is not None:
            if sample_store is not None:
                idx = sample_draws[s]
                fake = Drawn(sample_store.features(idx), None if source.labels is None else source.labels[idx])
            else:
                images, labels = source.sample(options.n, s)
                fake = Drawn(extractor(images, desc=f"samples, seed {s}"), labels)
            scores = compare(real, fake, options, s)
            if logits_weight is not None:
                scores[KEY_ISC], scores[KEY_ISC_SPLIT_STD] = inception_score(fake.features, logits_weight,
                                                                           options.isc_splits)
            per_seed.append(scores)
            line.append(_brief(scores, "samples"))
        if floor:
            floor_same.append(compare(real, reference_side(same_pool[s]), options, s))
            a, b = disjoint[s]
            floor_disjoint.append(compare(reference_side(a), reference_side(b), options, s))
            line += [_brief(floor_same[-1], "same-pool floor"), _brief(floor_disjoint[-1], "disjoint floor")]
        _log(progress, f"seed {s}: {'; '.join(line)} ({time.perf_counter() - seed_started:.0f} s)")

    result: dict = {"schema": SCHEMA}
    if per_seed:
        result.update(summarise_seeds(per_seed))
    if floor:
        result[KEY_FLOOR] = _floor_block(floor_same, floor_disjoint, options.n, pool_size)
    if sample_store is not None:
        timing["sample_images_computed"] = sample_store.n_computed_now
    elif source is not None:
        timing["sample_images_computed"] = options.n * len(options.seeds)
    timing["seconds"] = round(time.perf_counter() - started, 1)
    result.update({
        "protocol": _protocol_record(options, floor, pool_size),
        "network": extractor.provenance(),
        "reference": ref_provenance,
        "samples": None if source is None else source.provenance(),
        "timing": timing,
        "environment": environment(),
    })
    return result


def _floor_block(same_pool: list[dict], disjoint: list[dict], n: int, pool_size: int) -> dict:
    m = min(n, pool_size // 2)
    disjoint_block = {"n_per_side": m, "capped": m < n, **summarise_seeds(disjoint)}
    if m < n:
        disjoint_block["cap_note"] = (
            f"N={n} is more than half of the {pool_size} reference images, so each disjoint half holds {m} images: "
            f"this floor is at N={m}, and FID's small-sample bias puts it slightly above the disjoint floor at N={n}")
    return {"note": FLOOR_NOTE, KEY_SAME_POOL: {"n": n, **summarise_seeds(same_pool)}, KEY_DISJOINT: disjoint_block}


def _brief(result: dict, label: str) -> str:
    parts = [f"FID {result[KEY_FID]:.3f}"] if KEY_FID in result else []
    if KEY_KID in result:
        parts.append(f"KID x 10^3 {1e3 * result[KEY_KID]:.3f}")
    return f"{label} {', '.join(parts) or 'done'}"


def _protocol_record(options: Options, floor: bool, pool_size: int) -> dict:
    record = asdict(options)
    record["seeds"] = list(options.seeds)
    record["metrics"] = list(options.metrics)
    record.update({
        "reference_pool_size": pool_size,
        "floor": floor,
        "real_draw": "numpy.random.default_rng(seed).choice(reference_pool_size, n, replace=False)",
        "samples_draw": f"numpy.random.default_rng([seed, {STREAM_SAMPLES}]).choice(n_samples, n, replace=False) "
                        f"for a fixed set; sample_fn(n, seed) for a generator",
        "same_pool_draw": f"numpy.random.default_rng([seed, {STREAM_SAME_POOL}]).choice(reference_pool_size, n, "
                          f"replace=False), compared with the real draw",
        "disjoint_halves": f"p = numpy.random.default_rng([seed, {STREAM_DISJOINT}]).permutation(reference_pool_size); "
                           f"p[:m] vs p[m:2m], m = min(n, reference_pool_size // 2)",
        "fid": "covariances with ddof=1; trace of the matrix square root from eigenvalues of PSD matrices",
        "kid": f"unbiased MMD^2, kernel (x.y/d + 1)^3, subsets drawn with numpy.random.default_rng([seed, "
               f"{STREAM_KID}]), subset size min(kid_subset_size, n)",
        "prdc": "k-th nearest-neighbour balls; precision/recall with nearest_k_pr and closed balls "
                "(Kynkaanniemi et al. 2019); precision_prdc/recall_prdc/density/coverage with nearest_k_dc and "
                "open balls (the prdc library, Naeem et al. 2020)",
        "std": "sample standard deviation over seeds (ddof=1); null for a single seed",
        "images": "uint8 RGB 28x28, divided by 255, resized inside the network to 299x299 (bilinear, "
                  "align_corners=False) as pytorch-fid does for PNG files",
    })
    return record
