"""The study: for every family and training seed, train, sample and evaluate; then write the report.

Every stage's result is stored under the study folder, keyed by a hash of everything it depends on
(model, preset, config, seed, data file; for evaluations also the weights and the protocol), so a
re-run after an interruption, or with one more family, redoes nothing that already finished. A
training run that was stopped half-way is resumed from its checkpoint.

The work is done unit by unit, a unit being one family's training seed (train, evaluate, sample grid),
seed-major, so that a study cut short by `max_minutes` has every family's first seeds rather than all
seeds of the first family; its report says which units are still to do. Run folders refer to their
weights relative to themselves, so a study folder can be moved or committed and continued elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bloodgen.provenance import write_json
from bloodgen.study.layout import (RUNS_DIR, EVAL_DIR, RESULTS_FILE, K_STUDY, K_FLOOR, K_FAMILIES, K_RUNS,
                                   K_AGGREGATE, K_TRAIN, K_EVAL, K_SAMPLING_TIME_10K, K_UTILITY, K_EXPERIMENTS,
                                   K_PENDING, PROTOTYPES_DIR, DIFFUSION_CLASSIFIER_DIR, closest_samples_file,
                                   utility_samples_file)
from bloodgen.models.registry import noise_classifiers, study_families
from bloodgen.study.presets import EXPERIMENTS, PRESETS, StudyPreset

UTILITY_SAMPLE_SEED = 1000  # apart from the evaluation seeds 0..S-1, so utility samples are fresh images


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class RunRef:
    model: str
    seed: int
    run_dir: Path
    summary: dict

    @property
    def export(self) -> Path:
        """The run's EMA weights, found beside its summary wherever the study folder now lives."""
        from bloodgen.training.loop import R_EXPORT

        return self.run_dir / Path(self.summary[R_EXPORT]).name


class StudyIncomplete(Exception):
    """`max_minutes` ran out with units left; the finished ones are saved and reported."""

    def __init__(self, pending: list[str]):
        super().__init__(f"{len(pending)} unit(s) left: {', '.join(pending)}")
        self.pending = pending


def log(message: str) -> None:
    print(f"[study {time.strftime('%H:%M:%S')}] {message}", flush=True)


def train_stage(model: str, seed: int, preset: StudyPreset, out: Path, data_path: str | None,
                data_sha: str, progress: bool, tag: str = "", max_minutes: float | None = None) -> RunRef | None:
    """Train (or reuse, or resume) one run; its folder name carries the hash of what defines it (and `tag`,
    which names a run on derived data). None when `max_minutes` stopped it (with a checkpoint to resume)."""
    from bloodgen.models.config import resolve_config
    from bloodgen.training.loop import COMPLETED, SUMMARY_FILE, TIME_LIMIT, train
    from bloodgen.training.checkpoint import CHECKPOINT_DIR

    overrides = preset.config_overrides.get(model) or None
    config = resolve_config(model, preset.train_preset, None, overrides)
    key = config_hash({"model": model, "preset": preset.train_preset, "config": config, "seed": seed, "data": data_sha})
    run_dir = out / RUNS_DIR / f"{model}{'-' + tag if tag else ''}-s{seed}-{key}"
    summary_file = run_dir / SUMMARY_FILE
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        if summary.get("status") == COMPLETED:
            log(f"{model} seed {seed}: trained already ({run_dir})")
            return RunRef(model, seed, run_dir, summary)
    if max_minutes is not None and max_minutes <= 0:
        return None  # out of time: finished runs only
    if (run_dir / CHECKPOINT_DIR).is_dir():
        log(f"{model} seed {seed}: resuming the interrupted run in {run_dir}")
        result = train(resume=run_dir, data=data_path, progress=progress, max_minutes=max_minutes)
    else:
        log(f"{model} seed {seed}: training ({preset.train_preset} preset, {config['steps']} steps)")
        result = train(model, preset=preset.train_preset, overrides=overrides, seed=seed, run_dir=run_dir,
                       data=data_path, progress=progress, max_minutes=max_minutes)
    if result.status == TIME_LIMIT and max_minutes is not None:
        log(f"{model} seed {seed}: stopped by the time limit at step {result.step}; a re-run resumes it")
        return None
    if result.status != COMPLETED:
        from bloodgen.errors import UserError

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


def saved_parts(path: Path, what: str) -> Callable[[str, Callable[[], Any]], Any]:
    """A `step(name, compute)` that keeps each finished part of a long computation in `path` (JSON, written
    atomically after every part), so a run cut between parts resumes at the next one."""
    done = json.loads(path.read_text()) if path.is_file() else {}

    def step(name: str, compute: Callable[[], Any]) -> Any:
        if name in done:
            log(f"{what}, {name}: done already ({path})")
        else:
            log(f"{what}, {name}")
            done[name] = compute()
            write_json(path, done)
        return done[name]

    return step


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
    from bloodgen.metrics import calculate_metrics
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
        result[K_SAMPLING_TIME_10K] = round(sampler.seconds / sampler.images * 10_000, 1)
        result["sampling_measured_on"] = {"images": sampler.images, "seconds": round(sampler.seconds, 2)}
        result["sampler_options"] = options
        return result

    return cached(out / EVAL_DIR / f"{run.model}-s{run.seed}-{key}.json", compute,
                  f"{run.model} seed {run.seed} evaluation", allow_compute)


def _train_worker(model: str, seed: int, preset: StudyPreset, out: Path, data_path: str | None, data_sha: str,
                  max_minutes: float | None, threads: int) -> bool:
    """One training of `train_in_parallel`, in its own process; True when it finished."""
    import torch

    torch.set_num_threads(threads)  # N processes sharing the cores, not N x all of them
    return train_stage(model, seed, preset, out, data_path, data_sha, False, max_minutes=max_minutes) is not None


def train_in_parallel(units: list[tuple[str, int]], preset: StudyPreset, out: Path, data_path: str | None,
                      data_sha: str, max_minutes: float | None) -> None:
    """Train the units `preset.train_jobs` at a time, one process each: small networks use a fraction of a
    GPU, so several trainings share it. The unit loop then finds them finished (or resumes what was cut)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    jobs = min(preset.train_jobs, len(units))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    log(f"training {len(units)} run(s), {jobs} at a time")
    # spawn: CUDA cannot be used in a forked child.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_worker, m, s, preset, out, data_path, data_sha, max_minutes, threads)
                   for m, s in units]
        for future in futures:
            future.result()  # re-raises a worker's error (e.g. a diverged run) here


def train_units(units: list[tuple[str, int]], preset: StudyPreset, out: Path, data_path: str, data_sha: str,
                progress: bool, minutes_left: Callable[[], float | None]) -> dict:
    """The study's trainings alone, in unit order. Why: a unit whose training and evaluation together
    outlast one sitting (a CPU ddpm: ~1.5 h of training, ~1 h of sampling and features) can be trained in
    one, its finished run folder committed, and evaluated in the next, since a cut training's checkpoint
    is not committed and would be lost with the machine."""
    trained, cut = [], []
    for model, seed in units:
        run = train_stage(model, seed, preset, out, data_path, data_sha, progress, max_minutes=minutes_left())
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
    from bloodgen.metrics import calculate_metrics

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
    import numpy as np

    from bloodgen.data import N_CLASSES
    from bloodgen.samplefile import write_samples
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
    from bloodgen.classify.recipe import RECIPES, ClassifierRecipe

    r = preset.classifier_recipe
    if r is None or isinstance(r, ClassifierRecipe):
        return r
    return RECIPES[r] if isinstance(r, str) else ClassifierRecipe(**r)


def utility_samples_path(run: RunRef, out: Path) -> Path:
    return out / utility_samples_file(run.model, run.seed)


def utility_stage(run: RunRef, preset: StudyPreset, out: Path, dataset, extractor, cache_dir) -> dict:
    """Utility checks of one run: samples with exactly the per-class counts TSTR and the top-up need
    (kept as .npz for the figures), then `classify.utility.evaluate_utility`; cached like the evaluation."""
    from dataclasses import asdict

    import numpy as np

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
        report = evaluate_utility(images, labels, dataset, recipe=recipe, cache_dir=cache_dir, extractor=extractor,
                                  seed=run.seed, memorisation_n=preset.memorisation_n,
                                  step=saved_parts(parts, f"{run.model} seed {run.seed} utility"))
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
    import numpy as np

    from bloodgen.classify.utility import KEY_CLOSEST, required_class_counts
    from bloodgen.metrics.inputs import load_images
    from bloodgen.samplefile import write_samples
    from bloodgen.sampling.api import generate_indices, load_model

    path = out / closest_samples_file(run.model, run.seed)
    wanted = sorted({g for block in report.get("memorisation", {}).values() for g, _, _ in block[KEY_CLOSEST]})
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
    from bloodgen.metrics.inputs import load_images
    from bloodgen.samplefile import write_samples
    from bloodgen.sampling.api import generate

    record = path.with_suffix(".json")
    if path.is_file() and record.is_file() and json.loads(record.read_text()).get("key") == key:
        return load_images(path).images
    images = generate(loaded.family, loaded.network, labels, n, UTILITY_SAMPLE_SEED, **options)
    write_samples(path, images, labels)
    write_json(record, {"key": key})
    return images


def best_run(family: dict) -> dict:
    """The family's run with the lowest mean FID (its first run where FID is missing)."""
    from bloodgen.metrics.fid import KEY_FID

    def fid(run: dict) -> float:
        block = run[K_EVAL].get(KEY_FID) or {}
        return block.get("mean") if block.get("mean") is not None else float("inf")

    return min(family[K_RUNS], key=fid)


def prototypes_budget(preset: StudyPreset) -> str:
    """The prototypes experiment's budget name for this study preset (a UserError if it has none)."""
    from bloodgen.improve.compare import budget_for

    name = preset.prototypes_budget or preset.train_preset
    budget_for(name)
    return name


def prototypes_stage(preset: StudyPreset, out: Path, data_path: str, cache_dir, progress: bool, extractor) -> dict:
    """The IMPROVE comparison in OUT/prototypes at the study's train preset; it skips its finished stages."""
    from bloodgen.improve.compare import compare

    budget = prototypes_budget(preset)
    log(f"prototypes experiment ({budget} budget) in {out / PROTOTYPES_DIR}")
    return compare(out / PROTOTYPES_DIR, preset=budget, data=data_path, cache_dir=cache_dir,
                   progress=progress, extractor=extractor)


def diffusion_classifier_stage(preset: StudyPreset, ddpm_run: RunRef, out: Path, dataset, cache_dir,
                               progress: bool) -> dict:
    """The ddpm as a classifier (CytoDiffusion) in OUT/diffusion_classifier: the study's best ddpm run, plus a
    ddpm trained the same way without the held-out class for the anomaly part. Parts already saved are kept."""
    from bloodgen.classify.diffusion_eval import PARTS, EvalConfig, holdout_data_path, run_evaluation, write_results
    from bloodgen.classify.diffusion_options import ClassifierOptions

    settings = dict(preset.diffusion_classifier)
    if "options" in settings:
        settings["options"] = ClassifierOptions(**settings["options"])
    settings.update({k: tuple(v) for k, v in settings.items() if isinstance(v, list)})
    cfg = EvalConfig(checkpoint="", out="", **settings)
    holdout_path = holdout_data_path(dataset, cfg.holdout_class, cache_dir)
    holdout_sha = file_sha256(holdout_path)
    holdout = train_stage(ddpm_run.model, ddpm_run.seed, preset, out, str(holdout_path), holdout_sha, progress,
                          tag=f"without{cfg.holdout_class}")
    folder = out / DIFFUSION_CLASSIFIER_DIR
    missing = tuple(p for p in PARTS if not (folder / "parts" / f"{p}.json").is_file())
    if not missing:
        log(f"diffusion-classifier experiment: done already ({folder})")
        return write_results(folder)
    log(f"diffusion-classifier experiment ({', '.join(missing)}) in {folder}")
    from dataclasses import replace

    return run_evaluation(replace(cfg, checkpoint=str(ddpm_run.export), out=str(folder),
                                  data=str(dataset.path), holdout_checkpoint=str(holdout.export),
                                  parts=missing, recipe=classifier_recipe(preset), cache_dir=cache_dir,
                                  progress=progress))


def file_sha256(path: Path) -> str:
    from bloodgen.provenance import file_digests

    return file_digests(path, ("sha256",))["sha256"]


def aggregate(evals: list[dict]) -> dict:
    """Across training seeds: mean and std of each run's mean, per metric (std None for one run)."""
    import numpy as np

    from bloodgen.metrics import KEY_MEAN

    out = {}
    for key in evals[0]:
        blocks = [e.get(key) for e in evals]
        if all(isinstance(b, dict) and KEY_MEAN in b and b[KEY_MEAN] is not None for b in blocks):
            # Scalars (FID, KID...) or per-class lists (per-class FID): averaged over runs, element-wise.
            means = np.array([b[KEY_MEAN] for b in blocks], dtype=float)
            std = means.std(axis=0, ddof=1) if len(means) > 1 else None
            out[key] = {"mean": means.mean(axis=0).tolist(), "std": None if std is None else std.tolist(),
                        "per_training_seed": means.tolist()}
    return out


def run_study(preset: str | StudyPreset = "quick", models: list[str] | None = None, train_seeds: int | None = None,
              utility: bool | None = None, utility_models: list[str] | None = None,
              classifier_recipe: str | None = None,
              experiments: list[str] | None = None, out: str | Path = "study", data: str | None = None,
              inception_weights: str | None = None,
              device: str | None = None, cache_dir: str | None = None, progress: bool = True,
              extractor=None, max_minutes: float | None = None, train_jobs: int | None = None,
              train_only: bool = False) -> dict:
    """Run (or finish) the study in `out` and write results.json, report.md and report.html there.

    `preset` is a name from PRESETS or a StudyPreset; `extractor` replaces the InceptionV3 feature
    extractor (tests use a cheap one). With `max_minutes`, no stage starts after that much wall time (a
    training is cut at it with a checkpoint; an evaluation that started finishes): the report then covers
    the finished units and StudyIncomplete is raised; running again continues. `train_only` trains (or
    resumes) the units and stops there, leaving evaluations and the report to a later run; it returns
    {"trained": [run folders]} and raises StudyIncomplete if `max_minutes` cut a training.
    """
    from dataclasses import replace

    from bloodgen.data import load_bloodmnist
    from bloodgen.errors import UserError
    from bloodgen.metrics.inception import inception_extractor
    from bloodgen.models.registry import model_names
    from bloodgen.provenance import environment
    from bloodgen.study.report import write_study_report

    if isinstance(preset, str):
        if preset not in PRESETS:
            raise UserError(f"unknown study preset {preset!r}: choose one of {', '.join(PRESETS)}")
        preset_name, preset = preset, PRESETS[preset]
    else:
        preset_name = "custom"
    if train_seeds is not None:
        if train_seeds < 1:
            raise UserError(f"--train-seeds must be at least 1, got {train_seeds}")
        preset = replace(preset, train_seeds=train_seeds)
    if utility is not None:
        preset = replace(preset, utility=utility)
    if utility_models:
        preset = replace(preset, utility=True, utility_models=tuple(utility_models))
    if classifier_recipe is not None:
        preset = replace(preset, classifier_recipe=classifier_recipe)
    if train_jobs is not None:
        if train_jobs < 1:
            raise UserError(f"--train-jobs must be at least 1, got {train_jobs}")
        preset = replace(preset, train_jobs=train_jobs)
    if max_minutes is not None and max_minutes <= 0:
        raise UserError(f"--max-minutes must be positive, got {max_minutes}")
    if experiments is not None:
        unknown = [e for e in experiments if e not in EXPERIMENTS]
        if unknown:
            raise UserError(f"unknown experiment(s) {', '.join(unknown)}: choose from {', '.join(EXPERIMENTS)}")
        preset = replace(preset, experiments=tuple(experiments))
    if "prototypes" in preset.experiments:
        prototypes_budget(preset)  # before any training: a preset without a budget fails now, not hours later
    models = list(models or study_families())
    unknown = [m for m in models if m not in model_names()]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(model_names())}")
    outside = [m for m in preset.utility_models if m not in models]
    if outside:
        raise UserError(f"--utility-models names {', '.join(outside)}, which the study does not train: "
                        f"choose from {', '.join(models)}")
    classifiers = [m for m in models if m in noise_classifiers()]
    if "diffusion-classifier" in preset.experiments and not classifiers:
        raise UserError(f"the diffusion-classifier experiment uses the study's {' or '.join(noise_classifiers())}: "
                        f"add it to --models or leave the experiment out")
    out = Path(out)
    started = time.perf_counter()
    dataset = load_bloodmnist(data)
    data_path = str(dataset.path)
    if extractor is None and not train_only:  # located now, so missing weights fail before hours of training
        extractor = inception_extractor(inception_weights, device=device, progress=progress)
    log(f"preset {preset_name}: {', '.join(models)}; {preset.train_seeds} training seed(s); evaluation "
        f"{preset.n_images} images x {preset.eval_seeds} seeds; utility checks {'on' if preset.utility else 'off'}; "
        f"output {out}")

    deadline = None if max_minutes is None else started + 60 * max_minutes

    def minutes_left() -> float | None:
        return None if deadline is None else (deadline - time.perf_counter()) / 60

    units = [(m, s) for s in range(preset.train_seeds) for m in models]  # seed-major: see the module doc
    if preset.train_jobs > 1 and len(units) > 1:
        train_in_parallel(units, preset, out, data_path, dataset.sha256, minutes_left())
    if train_only:
        return train_units(units, preset, out, data_path, dataset.sha256, progress, minutes_left)
    floor = floor_stage(preset, out, data_path, dataset.sha256, extractor, cache_dir, progress)
    families: dict[str, Any] = {}
    runs: list[RunRef] = []
    pending: list[str] = []
    for model, seed in units:
        # Past the deadline, finished units are still collected; nothing new starts.
        run = train_stage(model, seed, preset, out, data_path, dataset.sha256, progress, max_minutes=minutes_left())
        left = minutes_left()
        evaluation = None if run is None else eval_stage(run, preset, out, data_path, extractor, cache_dir, progress,
                                                          allow_compute=left is None or left > 0)
        if evaluation is None:
            pending.append(f"{model} seed {seed}")
            continue
        runs.append(run)
        family = families.setdefault(model, {K_RUNS: []})
        family[K_RUNS].append({"seed": seed, "run_dir": str(run.run_dir.relative_to(out)), K_TRAIN: run.summary,
                               K_EVAL: evaluation, "grid": grid_stage(run, preset, out)})
    if pending and not runs:
        raise StudyIncomplete(pending)
    for family in families.values():
        family[K_AGGREGATE] = aggregate([r[K_EVAL] for r in family[K_RUNS]])
        with open(Path(out) / family[K_RUNS][0]["run_dir"] / "config.json") as fh:
            family["config"] = json.load(fh)["config"]
    by_key = {(r.model, r.seed): r for r in runs}

    def best(model: str) -> RunRef:
        return by_key[(model, best_run(families[model])["seed"])]

    if preset.utility and not pending:
        for name, family in families.items():
            if preset.utility_models and name not in preset.utility_models:
                continue
            run = best(name)
            family[K_UTILITY] = {"seed": run.seed, "samples": str(utility_samples_path(run, out).relative_to(out)),
                                 **utility_stage(run, preset, out, dataset, extractor, cache_dir)}
    experiment_results = {}
    if pending:
        log(f"time limit reached: the experiments wait for the {len(pending)} unit(s) left")
    elif "prototypes" in preset.experiments:
        experiment_results["prototypes"] = prototypes_stage(preset, out, data_path, cache_dir, progress, extractor)
    if "diffusion-classifier" in preset.experiments and not pending:
        experiment_results["diffusion-classifier"] = diffusion_classifier_stage(
            preset, best(classifiers[0]), out, dataset, cache_dir, progress)
    results = {
        K_STUDY: {"preset": preset_name, "settings": preset.as_dict(), "models": models,
                  "data": dataset.provenance(), "network": extractor.provenance(), "environment": environment(),
                  "command": "bloodgen study " + " ".join(_command_args(preset_name, models, train_seeds, utility,
                                                                          utility_models, classifier_recipe,
                                                                          experiments)),
                  "wall_seconds_this_invocation": round(time.perf_counter() - started, 1)},
        K_FLOOR: floor,
        K_FAMILIES: families,
        K_EXPERIMENTS: experiment_results,
        K_PENDING: pending,
    }
    write_json(out / RESULTS_FILE, results)
    md, html = write_study_report(results, dataset, out)
    log(f"{'stopped' if pending else 'done'} after {time.perf_counter() - started:.0f} s: {md}, {html}, "
        f"{out / RESULTS_FILE}")
    if pending:
        raise StudyIncomplete(pending)
    return results


def _command_args(preset_name: str, models: list[str], train_seeds: int | None, utility: bool | None,
                  utility_models: list[str] | None, classifier_recipe: str | None,
                  experiments: list[str] | None) -> list[str]:
    args = ["--preset", preset_name]
    if models != list(study_families()):
        args += ["--models", *models]
    if train_seeds is not None:
        args += ["--train-seeds", str(train_seeds)]
    if utility is not None:
        args.append("--utility" if utility else "--no-utility")
    if utility_models:
        args += ["--utility-models", *utility_models]
    if classifier_recipe is not None:
        args += ["--classifier-recipe", classifier_recipe]
    if experiments is not None:
        args += ["--experiments", *experiments] if experiments else ["--experiments", "none"]
    return args
