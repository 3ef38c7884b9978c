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
import warnings
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from bloodgen.data.bloodmnist import ALL, CLASS_NAMES, load_bloodmnist
from bloodgen.errors import UserError
from bloodgen.metrics.features import Extractor, FeatureStore, dataset_feature_store
from bloodgen.metrics.inputs import ImageSet, as_samples
from bloodgen.metrics.isc import inception_score
from bloodgen.metrics.records import ClassFigures, Figure, Floor, SampleSpread
from bloodgen.metrics.registry import (FID, INCEPTION, ISC, ISC_SPLIT_STD, KID, METRICS, SPREADS, STREAM_CLASSIFIER_KID,
                                       STREAM_DISJOINT, STREAM_FID_INFINITY, STREAM_KID, STREAM_SAME_POOL,
                                       STREAM_SAMPLES, Drawn, Options, default_metrics, per_class_keys, stream_rng)
from bloodgen.provenance import environment

SCHEMA = "bloodgen-evaluation/1"

FLOOR_NOTE = (
    "Same-pool floor: the seed's real draw against a second independent draw from the same reference images "
    "(they share many images, so only a model that reproduces the dataset reaches it); disjoint floor: two "
    "halves of the reference with no image in common (what a perfect model that never copies approaches at "
    "this sample size)."
)


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


def compare(real: Drawn, fake: Drawn, options: Options, seed: int) -> dict:
    out: dict = {}
    for name in options.metrics:
        out.update(METRICS[name].compute(real, fake, options, seed))
    return out


def summarise(values: list) -> dict:
    """Mean and sample std (ddof=1) over seeds, and the values; None where any seed has no value."""
    return Figure.of(values).to_json()


def summarise_seeds(per_seed: list[dict]) -> dict:
    out: dict = {}
    for key in per_seed[0]:
        values = [result[key] for result in per_seed]
        if key in SPREADS:
            continue
        if key in per_class_keys():
            out[key] = ClassFigures.of(CLASS_NAMES, values).to_json()
        else:
            out[key] = summarise(values)
    for spread, metric in SPREADS.items():
        if spread in per_seed[0]:
            out[metric][f"{spread.split('_', 1)[1]}_per_seed"] = [result[spread] for result in per_seed]
    return out


def _check_options(options: Options, pool_size: int, floor: bool) -> None:
    unknown = [m for m in options.metrics if m not in METRICS]
    if unknown or not options.metrics:
        raise UserError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(METRICS)}")
    if not options.seeds:
        raise UserError("--seeds must be at least 1")
    smallest = max(METRICS[name].min_images(options) for name in options.metrics)
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
    metrics: Sequence[str] | None = None,
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
    extractors: Mapping[str, Extractor] | None = None,
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
    extractors: extractors of the other feature spaces the selected metrics read, by space name (the
        'classifier' metric needs `extractors={"classifier": ...}`, which `bloodgen evaluate` builds).
    Top-level keys: `fid`, `kid`, `precision`, ... each {mean, std, per_seed} for the samples; `floor`
    with `same_pool` and `disjoint` holding the same; `protocol`, `network`, `reference`, `samples`,
    `timing`, `environment`.
    """
    started = time.perf_counter()
    seed_list = tuple(range(seeds)) if isinstance(seeds, int) else tuple(int(s) for s in seeds)
    options = Options(n=n, seeds=seed_list, metrics=tuple(metrics or default_metrics()), kid_subsets=kid_subsets,
                      kid_subset_size=kid_subset_size, isc=isc)
    source = _checked_source(samples, floor, isc)
    data_set, ref_images, ref_labels, ref_provenance = _reference(reference, data)
    _check_options(options, len(ref_images), floor)
    _check_source_size(source, options)
    spaces = _feature_spaces(options, extractor, extractors, inception_weights, device, batch_size, progress)
    logits_weight = spaces[INCEPTION].logits_weight() if isc else None  # refuses before any long computation

    reference_side, timing = _reference_features(data_set, ref_images, ref_labels, spaces, options, floor,
                                                 cache_dir, progress)
    sample_side, sample_info, spread = _sample_features(source, spaces, options, progress)
    scores = _score_seeds(reference_side, sample_side, len(ref_images), options, floor, logits_weight, progress)
    return _result(scores, options, len(ref_images), spaces, ref_provenance, source, spread,
                   {**timing, **sample_info, "seconds": round(time.perf_counter() - started, 1)})


@dataclass
class _SeedScores:
    """Every seed's figures: the samples against the real draw, and the two floors (empty when not asked)."""

    samples: list[dict] = field(default_factory=list)
    same_pool: list[dict] = field(default_factory=list)
    disjoint: list[dict] = field(default_factory=list)


def _score_seeds(reference_side, sample_side, pool_size: int, options: Options, floor: bool, logits_weight,
                 progress: bool) -> _SeedScores:
    scores = _SeedScores()
    for s in options.seeds:
        seed_started = time.perf_counter()
        real, line = reference_side(real_draw(pool_size, options.n, s)), []
        if sample_side is not None:
            figures = compare(real, sample_side(s), options, s)
            if logits_weight is not None:
                figures[ISC.key], figures[ISC_SPLIT_STD.key] = inception_score(
                    sample_side(s).features, logits_weight, options.isc_splits)
            scores.samples.append(figures)
            line.append(_brief(figures, "samples"))
        if floor:
            scores.same_pool.append(compare(real, reference_side(same_pool_draw(pool_size, options.n, s)), options, s))
            a, b = disjoint_halves(pool_size, options.n, s)
            scores.disjoint.append(compare(reference_side(a), reference_side(b), options, s))
            line += [_brief(scores.same_pool[-1], "same-pool floor"), _brief(scores.disjoint[-1], "disjoint floor")]
        _log(progress, f"seed {s}: {'; '.join(line)} ({time.perf_counter() - seed_started:.0f} s)")
    return scores


def _checked_source(samples, floor: bool, isc: bool):
    if samples is None and not floor:
        raise UserError("nothing to evaluate: give samples (an .npz file or a folder of PNG files) or ask for "
                        "the floor")
    if isc and samples is None:
        raise UserError("Inception Score is a property of generated samples: give samples to use --isc")
    return as_samples(samples) if samples is not None else None


def _check_source_size(source, options: Options) -> None:
    if isinstance(source, ImageSet) and len(source) < options.n:
        raise UserError(f"samples {source.source} hold {len(source)} images, fewer than the {options.n} requested "
                        f"(--n); generate more or lower --n (and the floor is only comparable at the same --n)")


def _feature_spaces(options: Options, extractor, extractors, inception_weights, device, batch_size,
                    progress: bool) -> dict[str, Extractor]:
    """The extractor of every feature space the selected metrics read (Inception always: FID's space)."""
    from bloodgen.metrics.inception import inception_extractor

    spaces = dict(extractors or {})
    if extractor is not None:
        spaces[INCEPTION] = extractor
    if INCEPTION not in spaces:
        spaces[INCEPTION] = inception_extractor(inception_weights, device=device, batch_size=batch_size,
                                                progress=progress)
    for name in options.metrics:
        if METRICS[name].space not in spaces:
            raise UserError(f"metric {name!r} reads {METRICS[name].space} features and no extractor for them was "
                            f"given: use `bloodgen evaluate --metrics {name}`, which loads the reference classifier")
    return {space: spaces[space] for space in [INCEPTION, *sorted({METRICS[m].space for m in options.metrics})]}


def _reference_features(data_set, ref_images, ref_labels, spaces: dict, options: Options, floor: bool,
                        cache_dir, progress: bool):
    """`reference_side(indices) -> Drawn` over the reference, with every index any seed draws embedded first
    in one pass per space (disk-cached for the dataset), and the timing record of that pass."""
    pool_size = len(ref_images)
    draws = [real_draw(pool_size, options.n, s) for s in options.seeds]
    if floor:
        draws += [same_pool_draw(pool_size, options.n, s) for s in options.seeds]
        draws += [i for s in options.seeds for i in disjoint_halves(pool_size, options.n, s)]
    needed = np.unique(np.concatenate(draws))
    stores, timing = {}, {}
    for space, ex in spaces.items():
        if data_set is not None:
            store = dataset_feature_store(data_set, ex, cache_dir)
        else:
            store = FeatureStore(ref_images, ex, desc=f"reference images ({space})")
        missing = int((~store.computed[needed]).sum())
        if missing:
            where = f"; cached in {store.cache_path.parent} for later runs" if store.cache_path else ""
            _log(progress, f"embedding {missing:,} of the {needed.size:,} reference images in {space} features first"
                           f"{f' (about {missing / 10 / 60:.0f} min on 2 CPU cores, seconds on a GPU)' if space == INCEPTION else ''}"
                           f"{where}")
        store.features(needed)
        stores[space] = store
        suffix = "" if space == INCEPTION else f"_{space}"
        timing[f"reference_images_computed{suffix}"] = store.n_computed_now
        timing[f"reference_images_from_cache{suffix}"] = int(needed.size) - store.n_computed_now

    def reference_side(indices: np.ndarray) -> Drawn:
        return Drawn({space: store.features(indices) for space, store in stores.items()},
                     None if ref_labels is None else ref_labels[indices])

    return reference_side, timing


def _sample_features(source, spaces: dict, options: Options, progress: bool):
    """`sample_side(seed) -> Drawn` of the samples (features of a fixed set computed once, a generator's
    per seed and remembered for the seed), the record of how many images were embedded, and how far the
    seeds' draws from a fixed set overlap (None for a generator or a single seed)."""
    if source is None:
        return None, {}, None
    if isinstance(source, ImageSet):
        stores = {space: FeatureStore(source.images, ex, desc=f"sample images ({space})") for space, ex in spaces.items()}
        picks = {s: samples_draw(len(source), options.n, s) for s in options.seeds}
        union = np.unique(np.concatenate(list(picks.values())))
        for store in stores.values():
            store.features(union)
        info = {"sample_images_computed": stores[INCEPTION].n_computed_now}
        overlap = _draw_overlap(list(picks.values()), options.n)
        if overlap is not None and overlap >= OVERLAP_WARNING:
            _warn_overlap(source, options, overlap)

        def side(seed: int) -> Drawn:
            idx = picks[seed]
            return Drawn({space: store.features(idx) for space, store in stores.items()},
                         None if source.labels is None else source.labels[idx])

        return side, info, None if overlap is None else SampleSpread.of(overlap)
    made: dict[int, Drawn] = {}

    def generated(seed: int) -> Drawn:
        if seed not in made:
            images, labels = source.sample(options.n, seed)
            made.clear()  # one seed's features at a time
            made[seed] = Drawn({space: ex(images, desc=f"samples, seed {seed} ({space})")
                                for space, ex in spaces.items()}, labels)
        return made[seed]

    return generated, {"sample_images_computed": options.n * len(options.seeds)}, None


# At or above this mean overlap between two seeds' draws from a fixed sample set, the evaluation warns that the
# seeds score largely the same generated images.
OVERLAP_WARNING = 0.5


def _draw_overlap(picks: list[np.ndarray], n: int) -> float | None:
    """Mean over seed pairs of the fraction of drawn sample images the two draws share (None: one seed)."""
    if len(picks) < 2:
        return None
    shared = [np.intersect1d(a, b).size / n for i, a in enumerate(picks) for b in picks[i + 1:]]
    return float(np.mean(shared))


def _warn_overlap(source, options: Options, overlap: float) -> None:
    what = "the same images" if overlap == 1.0 else f"{overlap:.0%} of the same images"
    warnings.warn(f"samples {source.source} hold {len(source)} images for --n {options.n}, so every seed scores "
                  f"{what}: the +/- is the spread of the real draws only; give at least "
                  f"{options.n * len(options.seeds):,} images for independent sample draws", stacklevel=2)


def _result(scores: _SeedScores, options: Options, pool_size: int, spaces: dict, ref_provenance: dict, source,
            spread: SampleSpread | None, timing: dict) -> dict:
    result: dict = {"schema": SCHEMA}
    floor = bool(scores.same_pool)
    if scores.samples:
        result.update(summarise_seeds(scores.samples))
        if spread is not None:
            result[SampleSpread.key] = spread.to_json()
    if floor:
        result[Floor.key] = _floor_block(scores.same_pool, scores.disjoint, options.n, pool_size)
    result.update({
        "protocol": _protocol_record(options, floor, pool_size),
        "network": spaces[INCEPTION].provenance(),
        "reference": ref_provenance,
        "samples": None if source is None else source.provenance(),
        "timing": timing,
        "environment": environment(),
    })
    if len(spaces) > 1:
        result["networks"] = {space: ex.provenance() for space, ex in spaces.items()}
    return result


def _floor_block(same_pool: list[dict], disjoint: list[dict], n: int, pool_size: int) -> dict:
    m = min(n, pool_size // 2)
    disjoint_block = {"n_per_side": m, "capped": m < n, **summarise_seeds(disjoint)}
    if m < n:
        disjoint_block["cap_note"] = (
            f"N={n} is more than half of the {pool_size} reference images, so each disjoint half holds {m} images: "
            f"this floor is at N={m}, and FID's small-sample bias puts it slightly above the disjoint floor at N={n}")
    return Floor(FLOOR_NOTE, {"n": n, **summarise_seeds(same_pool)}, disjoint_block).to_json()


def _brief(result: dict, label: str) -> str:
    parts = [f"FID {result[FID.key]:.3f}"] if FID.key in result else []
    if KID.key in result:
        parts.append(f"KID x 10^3 {1e3 * result[KID.key]:.3f}")
    return f"{label} {', '.join(parts) or 'done'}"


# How the metrics added after the first protocol are computed, recorded when selected.
METHODS = {
    "fid-inf": f"FID on seeded subsets of both sides (numpy.random.default_rng([seed, {STREAM_FID_INFINITY}])) of "
               f"6 sizes from N/2 to N, least-squares line FID = a + b/m, a reported (Chong & Forsyth 2020)",
    "alpha-beta": "integrated alpha-precision and beta-recall over 30 levels, supports as balls around each side's "
                  "mean in Inception features; authenticity per generated sample (Alaa et al. 2022)",
    "classifier": f"Frechet distance and KID (subsets from numpy.random.default_rng([seed, {STREAM_CLASSIFIER_KID}])) "
                  f"in the reference classifier's penultimate features",
}


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
        **{name: method for name, method in METHODS.items() if name in options.metrics},
        "std": "sample standard deviation over seeds (ddof=1); null for a single seed",
        "images": "uint8 RGB 28x28, divided by 255, resized inside the network to 299x299 (bilinear, "
                  "align_corners=False) as pytorch-fid does for PNG files",
    })
    return record
