"""Experiments a study can add to the family comparison (`bloodgen study --experiments`).

Each experiment is one record: its folder in the study, the check that runs before any training (so a
preset without a budget, or a study without the family an experiment needs, fails at once and not after
hours of training), the stage that runs it once every unit is trained and evaluated, and the blocks its
report section is made of. A new experiment is its own module (its stage and its report) and one record
here.

The stages and reports import their modules when called: `bloodgen study --help` reads this registry and
stays free of torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from bloodgen.cellfeatures.options import INPUTS, METHODS, VIEWS, AEOptions
from bloodgen.classify.diffusion_options import ClassifierOptions
from bloodgen.classify.diffusion_results import PARTS, EvalResults
from bloodgen.data.domains import DOMAINS, make_domains
from bloodgen.errors import UserError
from bloodgen.improve.budgets import budget_for
from bloodgen.models.registry import noise_classifiers, translation_families
from bloodgen.provenance import file_sha256
from bloodgen.study.presets import StudyPreset
from bloodgen.study.stages import DataFile, RunRef, classifier_recipe, log, train_stage


@dataclass(frozen=True)
class ExperimentContext:
    """What the study hands an experiment: the study's settings and folder, and its trained runs."""
    preset: StudyPreset
    models: tuple[str, ...]
    out: Path
    dataset: Any  # the bloodgen.data.BloodMNIST the study trains on
    cache_dir: str | None
    progress: bool
    extractor: Any
    best_run: Callable[[str], RunRef]  # a family's run with the lowest FID
    inception_weights: str | None = None  # the study's InceptionV3 file (None: found as the metrics find it)


@dataclass(frozen=True)
class Experiment:
    name: str  # the --experiments value and the key of results.json's "experiments"
    folder: str  # its sub-folder of the study
    check: Callable[[StudyPreset, Sequence[str]], None]  # (preset, the study's models): UserError if it cannot run
    run: Callable[[ExperimentContext], dict]  # its results, stored in results.json
    report: Callable[[dict, Path, Path], list]  # (its results, report folder, its folder) -> report blocks


def prototypes_budget(preset: StudyPreset) -> str:
    """The prototypes experiment's budget name for this study preset (a UserError if it has none)."""
    name = preset.prototypes_budget or preset.train_preset
    budget_for(name)
    return name


def _check_prototypes(preset: StudyPreset, models: Sequence[str]) -> None:
    prototypes_budget(preset)


def _run_prototypes(ctx: ExperimentContext) -> dict:
    """The IMPROVE comparison at the study's train preset; it skips its finished stages."""
    from bloodgen.improve.compare import Comparison, compare

    budget, folder = prototypes_budget(ctx.preset), ctx.out / PROTOTYPES.folder
    log(f"prototypes experiment ({budget} budget) in {folder}")
    return compare(folder, Comparison(budget, data=str(ctx.dataset.path)), cache_dir=ctx.cache_dir,
                   progress=ctx.progress, extractor=ctx.extractor).to_json()


def _report_prototypes(results: dict, out: Path, folder: Path) -> list:
    from bloodgen.improve.compare import ComparisonResult, report_blocks

    return report_blocks(ComparisonResult.from_json(results), out, results_dir=folder)


def _classifier_family(models: Sequence[str]) -> str | None:
    return next((m for m in noise_classifiers() if m in models), None)  # registry order: pixel ddpm first


def _preset_settings(name: str, settings: dict, config_class) -> dict:
    """A preset's settings of an experiment as keyword arguments of `config_class`: lists as tuples, the
    diffusion classifier's options as ClassifierOptions; a key the class does not have is a UserError."""
    unknown = set(settings) - set(config_class.__dataclass_fields__)
    if unknown:
        raise UserError(f"the study preset's {name} names {', '.join(sorted(unknown))}, which "
                        f"{config_class.__module__}.{config_class.__qualname__} does not have")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    if "options" in kwargs:
        try:
            kwargs["options"] = ClassifierOptions(**kwargs["options"])
        except TypeError as err:
            raise UserError(f"the study preset's {name} options: {err}") from None
    return kwargs


def _check_diffusion_classifier(preset: StudyPreset, models: Sequence[str]) -> None:
    from bloodgen.classify.diffusion_eval import EvalConfig

    if _classifier_family(models) is None:
        raise UserError(f"the diffusion-classifier experiment uses the study's {' or '.join(noise_classifiers())}: "
                        f"add it to --models or leave the experiment out")
    _preset_settings("diffusion_classifier", preset.diffusion_classifier, EvalConfig)


def _run_diffusion_classifier(ctx: ExperimentContext) -> dict:
    """The study's best conditional ddpm as a classifier (CytoDiffusion), plus a ddpm trained the same way
    without the held-out class for the anomaly part. Parts already saved are kept."""
    from bloodgen.classify.diffusion_eval import EvalConfig, holdout_data_path, run_evaluation, write_results

    cfg = EvalConfig(checkpoint="", out="",
                     **_preset_settings("diffusion_classifier", ctx.preset.diffusion_classifier, EvalConfig))
    run = ctx.best_run(_classifier_family(ctx.models))
    holdout_path = holdout_data_path(ctx.dataset, cfg.holdout_class, ctx.cache_dir)
    holdout = train_stage(run.model, run.seed, ctx.preset, ctx.out,
                          DataFile(str(holdout_path), file_sha256(holdout_path)), ctx.progress,
                          tag=f"without{cfg.holdout_class}")
    folder = ctx.out / DIFFUSION_CLASSIFIER.folder
    missing = tuple(p for p in PARTS if not (folder / "parts" / f"{p}.json").is_file())
    if "ablations" in missing and "accuracy" not in missing and not (folder / "parts" / "draws.npz").is_file():
        missing = ("accuracy", *missing)  # a folder from before draws were stored: the replays need them
    if not missing:
        log(f"diffusion-classifier experiment: done already ({folder})")
        return write_results(folder).to_json()
    log(f"diffusion-classifier experiment ({', '.join(missing)}) in {folder}")
    return run_evaluation(replace(cfg, checkpoint=str(run.export), out=str(folder), data=str(ctx.dataset.path),
                                  holdout_checkpoint=str(holdout.export), parts=missing,
                                  recipe=classifier_recipe(ctx.preset), cache_dir=ctx.cache_dir,
                                  progress=ctx.progress)).to_json()


def _report_diffusion_classifier(results: dict, out: Path, folder: Path) -> list:
    from bloodgen.classify.diffusion_eval import report_blocks

    return report_blocks(EvalResults.from_json(results), out, results_dir=folder)


def _check_domain_shift(preset: StudyPreset, models: Sequence[str]) -> None:
    if preset.domain_shift_seeds < 1:
        raise UserError(f"the study preset's domain_shift_seeds must be >= 1, got {preset.domain_shift_seeds}")


def _run_domain_shift(ctx: ExperimentContext) -> dict:
    """The study's data cut into shifted domains, and a domain-A classifier scored under each shift."""
    from bloodgen.classify.domain_shift import domain_shift_study

    folder = ctx.out / DOMAIN_SHIFT.folder
    if not all((folder / f"{name}.npz").is_file() for name in ("A", *DOMAINS)):
        make_domains(ctx.dataset, folder, tuple(DOMAINS))
    log(f"domain-shift experiment ({ctx.preset.domain_shift_seeds} classifier seed(s)) in {folder}")
    return domain_shift_study(folder, tuple(DOMAINS), tuple(range(ctx.preset.domain_shift_seeds)),
                              classifier_recipe(ctx.preset), ctx.cache_dir)


def _report_domain_shift(results: dict, out: Path, folder: Path) -> list:
    from bloodgen.classify.domain_shift import report_blocks

    return report_blocks(results)


def _check_translation(preset: StudyPreset, models: Sequence[str]) -> None:
    _check_domain_shift(preset, models)
    if preset.translation_fid_n < 0:
        raise UserError(f"the study preset's translation_fid_n must be >= 0, got {preset.translation_fid_n}")


def _run_translation(ctx: ExperimentContext) -> dict:
    """Every translation family trained from each shifted domain into A (seed 0, the study's train preset), then
    the domain-A classifier's table with their columns and what they do to the cells."""
    from bloodgen.classify.translation_eval import translation_study
    from bloodgen.sampling.api import load_model

    folder = ctx.out / DOMAIN_SHIFT.folder  # the domain files are shared with the domain-shift experiment
    if not all((folder / f"{name}.npz").is_file() for name in ("A", *DOMAINS)):
        make_domains(ctx.dataset, folder, tuple(DOMAINS))
    a_file = folder / "A.npz"
    data = DataFile(str(a_file), file_sha256(a_file))
    translators: dict[str, list] = {}
    for name in DOMAINS:
        for family in translation_families():
            overrides = {**ctx.preset.config_overrides.get(family, {}), "source_domain": str(folder / f"{name}.npz")}
            preset = replace(ctx.preset, config_overrides={**ctx.preset.config_overrides, family: overrides})
            # The tag names the source domain's content too: a domain file made again differently trains anew.
            tag = f"{name}-{file_sha256(folder / f'{name}.npz')[:8]}"
            run = train_stage(family, 0, preset, ctx.out, data, ctx.progress, tag=tag)
            translators.setdefault(name, []).append(load_model(run.run_dir))
    log(f"translation experiment: {len(DOMAINS)} domains x {', '.join(translation_families())} in {folder}")
    return translation_study(folder, tuple(DOMAINS), tuple(range(ctx.preset.domain_shift_seeds)),
                             classifier_recipe(ctx.preset), translators, ctx.preset.translation_fid_n, ctx.cache_dir)


def _report_translation(results: dict, out: Path, folder: Path) -> list:
    from bloodgen.classify.domain_shift import report_blocks as classifier_blocks
    from bloodgen.classify.translation_eval import report_blocks

    return [*classifier_blocks(results), *report_blocks(results["images"], results.get("translator_seeds"))]


def _low_data_config(preset: StudyPreset):
    from bloodgen.classify.low_data import LowDataConfig

    return LowDataConfig(**_preset_settings("low_data", preset.low_data, LowDataConfig)).check()


def _check_low_data(preset: StudyPreset, models: Sequence[str]) -> None:
    if _classifier_family(models) is None:
        raise UserError(f"the low-data experiment trains the study's {' or '.join(noise_classifiers())} on few "
                        f"images: add it to --models or leave the experiment out")
    _low_data_config(preset)


def _run_low_data(ctx: ExperimentContext) -> dict:
    """The study's conditional ddpm recipe trained on k images per class, as a classifier (CytoDiffusion Fig. 4)."""
    from bloodgen.classify.low_data import low_data_study
    from bloodgen.models.config import resolve_config

    family = _classifier_family(ctx.models)
    base = ctx.preset.config_overrides.get(family, {})
    config = resolve_config(family, ctx.preset.train_preset, None, base or None)

    def train(path: Path, seed: int, steps: int, keep_every: int) -> Path:
        # Warm-up never longer than a tenth of a short run; everything else is the study's recipe.
        overrides = {**base, "steps": steps, "warmup_steps": min(config["warmup_steps"], steps // 10)}
        preset = replace(ctx.preset, config_overrides={**ctx.preset.config_overrides, family: overrides})
        run = train_stage(family, seed, preset, ctx.out, DataFile(str(path), file_sha256(path)), ctx.progress,
                          tag=f"lowdata-{path.stem}", keep_every=keep_every)
        return run.run_dir

    folder = ctx.out / LOW_DATA.folder
    log(f"low-data experiment in {folder}")
    return low_data_study(ctx.dataset, folder, _low_data_config(ctx.preset), train, int(config["steps"]),
                          classifier_recipe(ctx.preset), ctx.extractor, ctx.progress)


def _report_low_data(results: dict, out: Path, folder: Path) -> list:
    from bloodgen.classify.low_data import report_blocks

    return report_blocks(results, out, folder)


def _cell_feature_settings(preset: StudyPreset, cache_dir: str | None = None, weights: str | None = None):
    """(InputSpec, methods, AEOptions, forest seeds) of the cell-features experiment, checked."""
    from bloodgen.cellfeatures.experiment import InputSpec

    settings = dict(preset.cell_features)
    spec = InputSpec(source=settings.pop("input", "inception"), view=settings.pop("view", "whole"),
                     inception_weights=weights, cache_dir=cache_dir)
    methods, seeds = tuple(settings.pop("methods", METHODS)), settings.pop("seeds", 5)
    unknown = set(settings) - set(AEOptions.__dataclass_fields__)
    if (unknown or spec.source not in INPUTS or spec.view not in VIEWS or not set(methods) <= set(METHODS)
            or seeds < 1):
        raise UserError(f"the study preset's cell_features must name AEOptions fields, an input from "
                        f"{', '.join(INPUTS)}, a view from {', '.join(VIEWS)}, methods from {', '.join(METHODS)} "
                        f"and seeds >= 1; got {dict(preset.cell_features)}")
    return spec, methods, AEOptions(**settings).check(has_target=True), seeds


def _check_cell_features(preset: StudyPreset, models: Sequence[str]) -> None:
    _cell_feature_settings(preset)


def _run_cell_features(ctx: ExperimentContext) -> dict:
    """AE-CFE's cross-domain table on the study's shifted domains (bloodgen.cellfeatures.study)."""
    from bloodgen.cellfeatures.study import FeatureStudy, domain_files, finished_units, run_study

    folder = ctx.out / DOMAIN_SHIFT.folder  # the domain files are shared with the domain-shift experiment
    if not all((folder / f"{name}.npz").is_file() for name in ("A", *DOMAINS)):
        make_domains(ctx.dataset, folder, tuple(DOMAINS))
    spec, methods, options, seeds = _cell_feature_settings(ctx.preset, ctx.cache_dir, ctx.inception_weights)
    study = FeatureStudy(domains=domain_files(folder), out=ctx.out / CELL_FEATURES.folder, spec=spec,
                         methods=methods, options=options, seeds=seeds, recipe=classifier_recipe(ctx.preset),
                         classifier_seeds=ctx.preset.domain_shift_seeds)  # the domain-shift experiment's oracles
    log(f"cell-features experiment ({spec.source} input; {', '.join(methods)}) in {study.out}")
    run_study(study, progress=ctx.progress)
    return {"domains": list(study.domains), "units": finished_units(study.out)}


def _report_cell_features(results: dict, out: Path, folder: Path) -> list:
    from bloodgen.cellfeatures.study import report_blocks

    return report_blocks(results["units"], results["domains"])


# Prototype-guided diffusion vs a learned class embedding (bloodgen.improve).
PROTOTYPES = Experiment("prototypes", "prototypes", _check_prototypes, _run_prototypes, _report_prototypes)
# A conditional diffusion model used as a classifier (bloodgen.classify.diffusion_eval).
DIFFUSION_CLASSIFIER = Experiment("diffusion-classifier", "diffusion_classifier", _check_diffusion_classifier,
                                  _run_diffusion_classifier, _report_diffusion_classifier)

# A domain-A classifier in shifted domains, before and after colour normalisation (bloodgen.classify.domain_shift).
DOMAIN_SHIFT = Experiment("domain-shift", "domain_shift", _check_domain_shift, _run_domain_shift,
                          _report_domain_shift)

# Translation models (cyclegan, aggan) in front of the domain-A classifier (bloodgen.classify.translation_eval).
TRANSLATION = Experiment("translation", "translation", _check_translation, _run_translation, _report_translation)

# The diffusion classifier trained on few images per class, beside a ResNet and a linear probe
# (bloodgen.classify.low_data).
LOW_DATA = Experiment("low-data", "low_data", _check_low_data, _run_low_data, _report_low_data)

# Autoencoder cell features with domain alignment, read by a random forest across domains (bloodgen.cellfeatures).
CELL_FEATURES = Experiment("cell-features", "cell_features", _check_cell_features, _run_cell_features,
                           _report_cell_features)

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (PROTOTYPES, DIFFUSION_CLASSIFIER, DOMAIN_SHIFT,
                                                          TRANSLATION, LOW_DATA, CELL_FEATURES)}


def experiments_for(names: Sequence[str], preset: StudyPreset, models: Sequence[str]) -> tuple[Experiment, ...]:
    """The named experiments, each checked against the study before anything trains."""
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise UserError(f"unknown experiment(s) {', '.join(unknown)}: choose from {', '.join(EXPERIMENTS)}")
    for name in names:
        EXPERIMENTS[name].check(preset, models)
    return tuple(EXPERIMENTS[n] for n in names)
