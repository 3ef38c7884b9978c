"""The study: for every family and training seed, train, sample and evaluate; then the utility checks and
the experiments; then the report.

The work is done unit by unit, a unit being one family's training seed (train, evaluate, sample grid),
seed-major, so that a study cut short by `max_minutes` has every family's first seeds rather than all
seeds of the first family; its report says which units are still to do. Each stage (`stages`) stores its
result under the study folder, so a re-run redoes nothing that already finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from bloodgen.data import load_bloodmnist
from bloodgen.errors import UserError
from bloodgen.metrics.inception import inception_extractor
from bloodgen.models.registry import get_spec, model_names, study_families
from bloodgen.provenance import environment, write_json
from bloodgen.study.experiments import Experiment, ExperimentContext, experiments_for
from bloodgen.study.layout import RESULTS_FILE, FamilyResult, RunResult, StudyInfo, StudyResults
from bloodgen.study.presets import PRESETS, StudyPreset
from bloodgen.study.report import write_study_report
from bloodgen.study.stages import (DataFile, RunRef, StudyIncomplete, aggregate, eval_stage, floor_stage, grid_stage,
                                   log, train_in_parallel, train_stage, train_units, utility_samples_path,
                                   utility_stage)


@dataclass(frozen=True)
class StudyRequest:
    """What a study is asked for: a preset (a name from PRESETS, or a StudyPreset) and what the command line
    changes in it; None keeps the preset's value."""

    preset: str | StudyPreset = "quick"
    models: Sequence[str] | None = None
    train_seeds: int | None = None
    utility: bool | None = None
    utility_models: Sequence[str] | None = None
    classifier_recipe: str | None = None
    experiments: Sequence[str] | None = None
    train_jobs: int | None = None

    def preset_name(self) -> str:
        return self.preset if isinstance(self.preset, str) else "custom"

    def resolved_preset(self) -> StudyPreset:
        """The preset with the request's changes, each checked."""
        if isinstance(self.preset, str) and self.preset not in PRESETS:
            raise UserError(f"unknown study preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        preset = PRESETS[self.preset] if isinstance(self.preset, str) else self.preset
        for flag, value in (("--train-seeds", self.train_seeds), ("--train-jobs", self.train_jobs)):
            if value is not None and value < 1:
                raise UserError(f"{flag} must be at least 1, got {value}")
        changes: dict[str, Any] = {"train_seeds": self.train_seeds, "utility": self.utility,
                                   "classifier_recipe": self.classifier_recipe, "train_jobs": self.train_jobs,
                                   "experiments": None if self.experiments is None else tuple(self.experiments)}
        if self.utility_models:
            changes.update(utility=True, utility_models=tuple(self.utility_models))
        return replace(preset, **{k: v for k, v in changes.items() if v is not None})

    def plan(self) -> StudyPlan:
        """The checked plan: every name known and every experiment able to run, before anything trains."""
        preset = self.resolved_preset()
        models = tuple(self.models or study_families())
        unknown = [m for m in models if m not in model_names()]
        if unknown:
            raise UserError(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(model_names())}")
        needy = [m for m in models if get_spec(m).needs_inputs]
        if needy:
            raise UserError(f"{', '.join(needy)} train(s) only with inputs of their own (a prototypes file, a source "
                            f"domain), not from the data alone: train them with bloodgen train")
        outside = [m for m in preset.utility_models if m not in models]
        if outside:
            raise UserError(f"--utility-models names {', '.join(outside)}, which the study does not train: "
                            f"choose from {', '.join(models)}")
        experiments = experiments_for(preset.experiments, preset, models)
        return StudyPlan(self.preset_name(), preset, models, experiments, "bloodgen study " + " ".join(
            _command_args(self.preset_name(), models, self)))


@dataclass(frozen=True)
class StudyPlan:
    preset_name: str
    preset: StudyPreset
    models: tuple[str, ...]
    experiments: tuple[Experiment, ...]
    command: str

    def units(self) -> list[tuple[str, int]]:
        return [(m, s) for s in range(self.preset.train_seeds) for m in self.models]  # seed-major: module doc


@dataclass(frozen=True)
class StudyFolders:
    """Where a study writes (`out`) and what it reads (None: the defaults, see `bloodgen study --help`)."""

    out: Path
    data: str | None = None
    inception_weights: str | None = None
    device: str | None = None
    cache_dir: str | None = None


class _Clock:
    """The `max_minutes` deadline of one invocation."""

    def __init__(self, max_minutes: float | None):
        if max_minutes is not None and max_minutes <= 0:
            raise UserError(f"--max-minutes must be positive, got {max_minutes}")
        self.started = time.perf_counter()
        self.deadline = None if max_minutes is None else self.started + 60 * max_minutes

    def minutes_left(self) -> float | None:
        return None if self.deadline is None else (self.deadline - time.perf_counter()) / 60

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def run_study(request: StudyRequest, folders: StudyFolders, extractor=None, progress: bool = True,
              max_minutes: float | None = None, train_only: bool = False) -> StudyResults | dict:
    """Run (or finish) the study in `folders.out` and write results.json, report.md and report.html there.

    `extractor` replaces the InceptionV3 feature extractor (tests use a cheap one). With `max_minutes`, no
    stage starts after that much wall time (a training is cut at it with a checkpoint; an evaluation that
    started finishes): the report then covers the finished units and StudyIncomplete is raised; running
    again continues. `train_only` trains (or resumes) the units and stops there, leaving evaluations and
    the report to a later run; it returns {"trained": [run folders]} and raises StudyIncomplete if
    `max_minutes` cut a training.
    """
    clock, plan, out = _Clock(max_minutes), request.plan(), Path(folders.out)
    dataset = load_bloodmnist(folders.data)
    if extractor is None and not train_only:  # located now, so missing weights fail before hours of training
        extractor = inception_extractor(folders.inception_weights, device=folders.device, progress=progress)
    preset = plan.preset
    log(f"preset {plan.preset_name}: {', '.join(plan.models)}; {preset.train_seeds} training seed(s); evaluation "
        f"{preset.n_images} images x {preset.eval_seeds} seeds; utility checks {'on' if preset.utility else 'off'}; "
        f"output {out}")
    units, data = plan.units(), DataFile(str(dataset.path), dataset.sha256)
    if preset.train_jobs > 1 and len(units) > 1:
        train_in_parallel(units, preset, out, data, clock.minutes_left())
    if train_only:
        return train_units(units, preset, out, data, progress, clock.minutes_left)
    floor = floor_stage(preset, out, data.path, data.sha256, extractor, folders.cache_dir, progress)
    families, runs, pending = _run_units(plan, folders, dataset, extractor, progress, clock)
    if pending and not runs:
        raise StudyIncomplete(pending)
    best = _summarise_families(families, runs, out)
    if preset.utility and not pending:
        _utility_units(plan, families, best, folders, dataset, extractor)
    context = ExperimentContext(preset, plan.models, out, dataset, folders.cache_dir, progress, extractor, best,
                                folders.inception_weights)
    if pending:
        log(f"time limit reached: the experiments wait for the {len(pending)} unit(s) left")
    experiments = {} if pending else {e.name: e.run(context) for e in plan.experiments}
    results = _results(plan, dataset, extractor, clock, floor, families, experiments, pending)
    write_json(out / RESULTS_FILE, results.to_json())
    md, html = write_study_report(results, dataset, out)
    log(f"{'stopped' if pending else 'done'} after {clock.seconds():.0f} s: {md}, {html}, {out / RESULTS_FILE}")
    if pending:
        raise StudyIncomplete(pending)
    return results


def _run_units(plan: StudyPlan, folders: StudyFolders, dataset, extractor, progress: bool,
               clock: _Clock) -> tuple[dict[str, FamilyResult], list[RunRef], list[str]]:
    """Train, evaluate and draw the grid of every unit; past the deadline, finished units are still
    collected and nothing new starts. Returns the families' runs, the finished runs and the units left."""
    preset, out = plan.preset, Path(folders.out)
    families: dict[str, FamilyResult] = {}
    runs: list[RunRef] = []
    pending: list[str] = []
    for model, seed in plan.units():
        run = train_stage(model, seed, preset, out, DataFile(str(dataset.path), dataset.sha256), progress,
                          max_minutes=clock.minutes_left())
        left = clock.minutes_left()
        evaluation = None if run is None else eval_stage(run, preset, out, str(dataset.path), extractor,
                                                          folders.cache_dir, progress,
                                                          allow_compute=left is None or left > 0)
        if evaluation is None:
            pending.append(f"{model} seed {seed}")
            continue
        runs.append(run)
        families.setdefault(model, FamilyResult([])).runs.append(RunResult(
            seed, str(run.run_dir.relative_to(out)), run.summary.to_dict(), evaluation, grid_stage(run, preset, out)))
    return families, runs, pending


def _summarise_families(families: dict[str, FamilyResult], runs: list[RunRef],
                        out: Path) -> Callable[[str], RunRef]:
    """Each family's aggregate over training seeds and config, in place; returns its best run by FID."""
    for family in families.values():
        family.aggregate = aggregate([r.eval for r in family.runs])
        with open(out / family.runs[0].run_dir / "config.json") as fh:
            family.config = json.load(fh)["config"]
    by_key = {(r.model, r.seed): r for r in runs}
    return lambda model: by_key[(model, families[model].best().seed)]


def _utility_units(plan: StudyPlan, families: dict[str, FamilyResult], best: Callable[[str], RunRef],
                   folders: StudyFolders, dataset, extractor) -> None:
    """The utility checks on each family's best run (those of --utility-models only, when given), in place."""
    out = Path(folders.out)
    for name, family in families.items():
        if plan.preset.utility_models and name not in plan.preset.utility_models:
            continue
        run = best(name)
        family.utility = {"seed": run.seed, "samples": str(utility_samples_path(run, out).relative_to(out)),
                          **utility_stage(run, plan.preset, out, dataset, extractor, folders.cache_dir)}


def _results(plan: StudyPlan, dataset, extractor, clock: _Clock, floor: dict, families: dict[str, FamilyResult],
             experiments: dict, pending: list[str]) -> StudyResults:
    study = StudyInfo(plan.preset_name, plan.preset.as_dict(), list(plan.models), dataset.provenance(),
                      extractor.provenance(), environment(), plan.command, round(clock.seconds(), 1))
    return StudyResults(study, floor, families, experiments, pending)


def _command_args(preset_name: str, models: Sequence[str], request: StudyRequest) -> list[str]:
    """The command line that repeats this study: the preset and what the request changed in it."""
    args = ["--preset", preset_name]
    if list(models) != list(study_families()):
        args += ["--models", *models]
    if request.train_seeds is not None:
        args += ["--train-seeds", str(request.train_seeds)]
    if request.utility is not None:
        args.append("--utility" if request.utility else "--no-utility")
    if request.utility_models:
        args += ["--utility-models", *request.utility_models]
    if request.classifier_recipe is not None:
        args += ["--classifier-recipe", request.classifier_recipe]
    if request.experiments is not None:
        args += ["--experiments", *request.experiments] if request.experiments else ["--experiments", "none"]
    return args
