"""The study's stages: train one run, evaluate it, draw its grid, check its utility; the floor; the
aggregate over training seeds. `pipeline.run_study` puts them in order and `experiments` builds on them.

Every stage's result is stored under the study folder, keyed by a hash of everything it depends on
(model, preset, config, seed, data file; for evaluations also the weights and the protocol), so a
re-run after an interruption, or with one more family, redoes nothing that already finished. A
training run that was stopped half-way is resumed from its checkpoint. Run folders refer to their
weights relative to themselves, so a study folder can be moved or committed and continued elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bloodgen.classify.recipe import RECIPES, ClassifierRecipe
from bloodgen.data import N_CLASSES
from bloodgen.errors import UserError
from bloodgen.metrics import calculate_metrics
from bloodgen.metrics.inputs import load_images
from bloodgen.metrics.records import figure
from bloodgen.provenance import file_sha256, saved_parts, write_json
from bloodgen.samplefile import write_samples
from bloodgen.study.layout import EVAL_DIR, RUNS_DIR, SAMPLING_TIME_10K, closest_samples_file, utility_samples_file
from bloodgen.study.presets import StudyPreset
from bloodgen.training.records import COMPLETED, TIME_LIMIT, RunSummary

UTILITY_SAMPLE_SEED = 1000  # apart from the evaluation seeds 0..S-1, so utility samples are fresh images


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class DataFile:
    """The data a training reads: its path (None: the default BloodMNIST location) and its sha256, which
    keys the run folder."""

    path: str | None
    sha256: str


@dataclass
class RunRef:
    model: str
    seed: int
    run_dir: Path
    summary: RunSummary

    @property
    def export(self) -> Path:
        """The run's EMA weights, found beside its summary wherever the study folder now lives."""
        return self.summary.export_in(self.run_dir)


class StudyIncomplete(Exception):
    """`max_minutes` ran out with units left; the finished ones are saved and reported."""

    def __init__(self, pending: list[str]):
        super().__init__(f"{len(pending)} unit(s) left: {', '.join(pending)}")
        self.pending = pending


def log(message: str) -> None:
    print(f"[study {time.strftime('%H:%M:%S')}] {message}", flush=True)


def train_stage(model: str, seed: int, preset: StudyPreset, out: Path, data: DataFile, progress: bool,
                tag: str = "", max_minutes: float | None = None, keep_every: int = 0) -> RunRef | None:
    """Train (or reuse, or resume) one run; its folder name carries the hash of what defines it (and `tag`,
    which names a run on derived data). None when `max_minutes` stopped it (with a checkpoint to resume)."""
    from bloodgen.models.config import resolve_config
    from bloodgen.training.checkpoint import CHECKPOINT_DIR
    from bloodgen.training.loop import SUMMARY_FILE, RunOptions, resume, train

    overrides = preset.config_overrides.get(model) or None
    config = resolve_config(model, preset.train_preset, None, overrides)
    key = config_hash({"model": model, "preset": preset.train_preset, "config": config, "seed": seed, "data": data.sha256})
    run_dir = out / RUNS_DIR / f"{model}{'-' + tag if tag else ''}-s{seed}-{key}"
    summary_file = run_dir / SUMMARY_FILE
    if summary_file.is_file():
        summary = RunSummary.from_dict(json.loads(summary_file.read_text()))
        if summary.status == COMPLETED:
            log(f"{model} seed {seed}: trained already ({run_dir})")
            return RunRef(model, seed, run_dir, summary)
    if max_minutes is not None and max_minutes <= 0:
        return None  # out of time: finished runs only
    options = RunOptions(data=data.path, max_minutes=max_minutes, progress=progress, keep_every=keep_every)
    if (run_dir / CHECKPOINT_DIR).is_dir():
        log(f"{model} seed {seed}: resuming the interrupted run in {run_dir}")
        result = resume(run_dir, options=options)
    else:
        log(f"{model} seed {seed}: training ({preset.train_preset} preset, {config['steps']} steps)")
        result = train(model, preset=preset.train_preset, overrides=overrides, seed=seed, run_dir=run_dir,
                       options=options)
    if result.status == TIME_LIMIT and max_minutes is not None:
        log(f"{model} seed {seed}: stopped by the time limit at step {result.step}; a re-run resumes it")
        return None
    if result.status != COMPLETED:
        raise UserError(f"training {model} seed {seed} stopped ({result.status}); run the study again to resume it")
    return RunRef(model, seed, run_dir, result.summary)


def cached(path: Path, compute: Callable[[], dict], what: str, allow_compute: bool = True) -> dict | None:
    """Load `path` if a previous study wrote it, else compute and store it atomically (None when not
    `allow_compute`)."""
    if path.is_file():
        try:
            result = json.loads(path.read_text())
            log(f"{what}: done already ({path})")
            return result
        except json.JSONDecodeError:
            log(f"{what}: ignoring an unreadable result file {path}")
    if not allow_compute:
        return None
    result = compute()
    write_json(path, result)
    return result


def feature_key(extractor) -> dict:
    """What identifies the features in a cache key: the network and its weights, not the device or batch size
    (features agree across devices to ~1e-5, far below any reported digit)."""
    info = extractor.provenance()
    return {"name": info["name"], "sha256": info["sha256"]}


class TimedSampler:
    """Wraps a `sample_fn` and adds up the time spent generating, for the sampling-time column."""

    def __init__(self, sample_fn: Callable):
        self.sample_fn = sample_fn
        self.seconds = 0.0
        self.images = 0

    def __call__(self, n: int, seed: int):
        start = time.perf_counter()
        out = self.sample_fn(n, seed)
        self.seconds += time.perf_counter() - start
        self.images += n
        return out


def seeds_key(preset: StudyPreset, seeds: list[int]) -> int | list[int]:
    """The protocol seeds as a cache key: the seed count where they are 0..S-1, as studies keyed them before
    draws per run existed (so their stored results still match), else the seeds themselves."""
    return seeds if preset.draw_per_run else preset.eval_seeds


def eval_stage(run: RunRef, preset: StudyPreset, out: Path, data_path: str | None, extractor, cache_dir,
               progress: bool, allow_compute: bool = True) -> dict | None:
    """The protocol on one trained run, with its sampling time; cached by weights, protocol and sampler
    (None if it is not cached and not `allow_compute`)."""
    from bloodgen.sampling.api import PRIOR, make_sample_fn

    export = run.export
    options = preset.sampler_options.get(run.model, {})
    seeds = preset.run_eval_seeds(run.seed)
    key = config_hash({"weights": file_sha256(export), "n": preset.n_images, "seeds": seeds_key(preset, seeds),
                       "sampler": options, "features": feature_key(extractor)})

    def compute() -> dict:
        log(f"{run.model} seed {run.seed}: evaluating ({preset.n_images} images, protocol seeds {seeds})")
        sampler = TimedSampler(make_sample_fn(export, classes=PRIOR, **options))
        result = calculate_metrics(sampler, n=preset.n_images, seeds=seeds, floor=False, data=data_path,
                                   extractor=extractor, cache_dir=cache_dir, progress=progress)
        result[SAMPLING_TIME_10K] = round(sampler.seconds / sampler.images * 10_000, 1)
        result["sampling_measured_on"] = {"images": sampler.images, "seconds": round(sampler.seconds, 2)}
        result["sampler_options"] = options
        return result

    return cached(out / EVAL_DIR / f"{run.model}-s{run.seed}-{key}.json", compute,
                  f"{run.model} seed {run.seed} evaluation", allow_compute)


def _train_worker(model: str, seed: int, preset: StudyPreset, out: Path, data: DataFile, max_minutes: float | None,
                  threads: int) -> bool:
    """One training of `train_in_parallel`, in its own process; True when it finished."""
    import torch

    torch.set_num_threads(threads)  # N processes sharing the cores, not N x all of them
    return train_stage(model, seed, preset, out, data, False, max_minutes=max_minutes) is not None


def train_in_parallel(units: list[tuple[str, int]], preset: StudyPreset, out: Path, data: DataFile,
                      max_minutes: float | None) -> None:
    """Train the units `preset.train_jobs` at a time, one process each: small networks use a fraction of a
    GPU, so several trainings share it. The unit loop then finds them finished (or resumes what was cut)."""
    jobs = min(preset.train_jobs, len(units))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    log(f"training {len(units)} run(s), {jobs} at a time")
    # spawn: CUDA cannot be used in a forked child.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_worker, m, s, preset, out, data, max_minutes, threads)
                   for m, s in units]
        for future in futures:
            future.result()  # re-raises a worker's error (e.g. a diverged run) here


def train_units(units: list[tuple[str, int]], preset: StudyPreset, out: Path, data: DataFile, progress: bool,
                minutes_left: Callable[[], float | None]) -> dict:
    """The study's trainings alone, in unit order. Why: a unit whose training and evaluation together
    outlast one sitting (a CPU ddpm: ~1.5 h of training, ~1 h of sampling and features) can be trained in
    one, its finished run folder committed, and evaluated in the next, since a cut training's checkpoint
    is not committed and would be lost with the machine."""
    trained, cut = [], []
    for model, seed in units:
        run = train_stage(model, seed, preset, out, data, progress, max_minutes=minutes_left())
        if run is None:
            cut.append(f"{model} seed {seed}")
        else:
            trained.append(str(run.run_dir))
    log(f"trained {len(trained)} of {len(units)} unit(s); evaluations and the report wait for a run without "
        f"--train-only")
    if cut:
        raise StudyIncomplete(cut)
    return {"trained": trained}


def floor_stage(preset: StudyPreset, out: Path, data_path: str | None, data_sha: str, extractor, cache_dir,
                progress: bool) -> dict:
    seeds = preset.floor_seeds()
    key = config_hash({"n": preset.n_images, "seeds": seeds_key(preset, seeds), "data": data_sha,
                       "features": feature_key(extractor)})

    def compute() -> dict:
        log(f"real-vs-real floor ({preset.n_images} images, seeds {seeds})")
        return calculate_metrics(None, n=preset.n_images, seeds=seeds, floor=True, data=data_path,
                                 extractor=extractor, cache_dir=cache_dir, progress=progress)

    return cached(out / EVAL_DIR / f"floor-{key}.json", compute, "real-vs-real floor")


def grid_stage(run: RunRef, preset: StudyPreset, out: Path) -> str:
    """`grid_per_class` samples of each class, in class order (seed 0), kept as .npz for the report."""
    from bloodgen.sampling.api import generate, load_model

    path = out / "grids" / f"{run.model}-s{run.seed}.npz"
    if not path.is_file():
        loaded = load_model(run.export)
        labels = np.repeat(np.arange(N_CLASSES), preset.grid_per_class)
        images = generate(loaded.family, loaded.network, labels if loaded.conditional else None, len(labels), 0,
                          **preset.sampler_options.get(run.model, {}))
        write_samples(path, images, labels if loaded.conditional else None)  # unconditional: -1, said in the report
    return str(path.relative_to(out))


def classifier_recipe(preset: StudyPreset):
    """The preset's reference-classifier recipe (None: the device's default)."""
    r = preset.classifier_recipe
    if r is None or isinstance(r, ClassifierRecipe):
        return r
    return RECIPES[r] if isinstance(r, str) else ClassifierRecipe(**r)


def utility_samples_path(run: RunRef, out: Path) -> Path:
    return out / utility_samples_file(run.model, run.seed)


def utility_stage(run: RunRef, preset: StudyPreset, out: Path, dataset, extractor, cache_dir) -> dict:
    """Utility checks of one run: samples with exactly the per-class counts TSTR and the top-up need
    (kept as .npz for the figures), then `classify.utility.evaluate_utility`; cached like the evaluation."""
    from bloodgen.classify.reference import default_recipe
    from bloodgen.classify.utility import evaluate_utility, required_class_counts
    from bloodgen.sampling.api import load_model

    export = run.export
    recipe = classifier_recipe(preset) or default_recipe()
    options = preset.sampler_options.get(run.model, {})
    key = config_hash({"weights": file_sha256(export), "recipe": asdict(recipe),
                       "sampler": options, "memorisation_n": preset.memorisation_n, "data": dataset.sha256,
                       "features": feature_key(extractor)})
    samples_path = utility_samples_path(run, out)

    def compute() -> dict:
        loaded = load_model(export)
        counts = required_class_counts(dataset.labels("train"))
        labels = np.repeat(np.arange(len(counts)), counts) if loaded.conditional else None
        n = int(counts.sum()) if loaded.conditional else preset.memorisation_n
        log(f"{run.model} seed {run.seed}: utility checks ({n} samples, classifier width {recipe.width}, "
            f"{recipe.epochs} epochs)")
        images = utility_samples(loaded, labels, n, options, samples_path, key)
        report = evaluate_utility((images, labels), dataset, recipe=recipe, cache_dir=cache_dir, extractor=extractor,
                                  seed=run.seed, memorisation_n=preset.memorisation_n,
                                  step=saved_parts(parts, f"{run.model} seed {run.seed} utility", say=log))
        parts.unlink(missing_ok=True)  # the whole report is saved next
        return report

    path = out / EVAL_DIR / f"utility-{run.model}-s{run.seed}-{key}.json"
    parts = path.with_suffix(".parts.json")
    report = cached(path, compute, f"{run.model} seed {run.seed} utility")
    keep_closest(run, report, out, dataset, options)
    return report


def keep_closest(run: RunRef, report: dict, out: Path, dataset, options: dict) -> None:
    """Keep the generated images the memorisation figure shows (those nearest to a training image) in a small
    file beside the samples, so the report renders from a clone without the samples file (tens of MB, not
    committed). Taken from the samples when present, else regenerated by index from the run's weights."""
    from bloodgen.classify.utility import Memorisation, required_class_counts
    from bloodgen.sampling.api import generate_indices, load_model

    path = out / closest_samples_file(run.model, run.seed)
    wanted = sorted({g for block in report.get("memorisation", {}).values()
                     for g, _, _ in Memorisation.from_json(block).closest})
    if path.is_file() or not wanted:
        return
    samples = utility_samples_path(run, out)
    if samples.is_file():
        loaded = load_images(samples)
        images, labels = loaded.images[wanted], loaded.labels
    else:
        model = load_model(run.export)
        counts = required_class_counts(dataset.labels("train"))
        labels = np.repeat(np.arange(len(counts)), counts) if model.conditional else None
        images = generate_indices(model.family, model.network, labels, wanted, UTILITY_SAMPLE_SEED, **options)
    write_samples(path, images, None if labels is None else labels[wanted], indices=np.asarray(wanted))


def utility_samples(loaded, labels, n: int, options: dict, path: Path, key: str):
    """The utility checks' samples: generated once (the long part for a diffusion model) and kept in `path`
    with the key of what made them, so an interrupted utility stage resumes after the sampling."""
    from bloodgen.sampling.api import generate

    record = path.with_suffix(".json")
    if path.is_file() and record.is_file() and json.loads(record.read_text()).get("key") == key:
        return load_images(path).images
    images = generate(loaded.family, loaded.network, labels, n, UTILITY_SAMPLE_SEED, **options)
    write_samples(path, images, labels)
    write_json(record, {"key": key})
    return images


def aggregate(evals: list[dict]) -> dict:
    """Across training seeds: mean and std of each run's mean, per metric (std None for one run)."""
    out = {}
    for key in evals[0]:
        figures = [figure(e, key) for e in evals]
        if all(f is not None and f.mean is not None for f in figures):
            # Scalars (FID, KID...) or per-class lists (per-class FID): averaged over runs, element-wise.
            means = np.array([f.mean for f in figures], dtype=float)
            std = means.std(axis=0, ddof=1) if len(means) > 1 else None
            out[key] = {"mean": means.mean(axis=0).tolist(), "std": None if std is None else std.tolist(),
                        "per_training_seed": means.tolist()}
    return out
