"""Copy a finished study into the repository: its report into `results/`, and (optionally) each family's
best run into `src/bloodgen/pretrained/<family>/` (so `bloodgen sample pretrained:NAME` works right after
install).

    python benchmarks/publish_study.py study-cpu --no-pretrained     # the cpu study into results/
    python benchmarks/publish_study.py results/record --pretrained-only     # ship the protocol of record's best runs

What is copied: report.md/.html, results.json, figures/, grids/, evaluations/, and per run folder its
config, environment, summary, logs and sample grids, plus the best run's exported weights (model.safetensors
+ model.json), so that the published study samples from its own run folders; never the training
checkpoints (optimiser state, tens of MB) nor the utility checks' samples (`utility/*-samples.npz`, 32 MB per
conditional family at the cpu preset; the report's figures already show them and the best run's weights
regenerate them): only the few images the memorisation figure shows (`utility/*-closest.npz`), so the
report re-renders from the published folder. A hand-written results/README.md is kept, and so is any study published inside the
results folder (a subfolder holding its own results.json, such as results/record/).

Pretrained: the best run's (lowest FID) model.safetensors + model.json (weights and full config; absolute
machine paths such as the data file's are dropped from the copy) with a provenance.json naming the study
command, the run folder, its training seed, its FID and protocol, the family's mean ± std and the report,
paths relative to the repository. The shipped models are the protocol of record's (results/record/):
`--pretrained-only STUDY` refreshes them from a study folder that is already in the repository and copies
nothing else; `--no-pretrained` publishes a study's report without replacing them. Sizes are checked
against the limits the repository keeps: results under 20 MB (studies published inside it and the best
runs' weights not counted), pretrained weights under 50 MB, the best runs' weights in results under 50 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.metrics.registry import FID  # noqa: E402
from bloodgen.provenance import write_json  # noqa: E402
from bloodgen.study.report import FIGURES_DIR  # noqa: E402
from bloodgen.study.experiments import EXPERIMENTS  # noqa: E402
from bloodgen.study.layout import EVAL_DIR, RESULTS_FILE, RUNS_DIR, UTILITY_DIR, StudyResults  # noqa: E402
from bloodgen.training.checkpoint import EXPORT_META, EXPORT_WEIGHTS  # noqa: E402

RESULTS_LIMIT, PRETRAINED_LIMIT = 20 * 2**20, 50 * 2**20
README = "README.md"
TOP_LEVEL = ("report.md", "report.html", RESULTS_FILE)
FOLDERS = (FIGURES_DIR, "grids", EVAL_DIR, *(e.folder for e in EXPERIMENTS.values()))
RUN_FILES = ("config.json", "environment.json", "summary.json", "log.jsonl", "log.csv", "snapshots.jsonl", EXPORT_META)
RUN_FOLDERS = ("samples", "extras")


def repo_path(path: Path) -> str:
    """`path` relative to the repository (as provenance records it), or as given when it lies outside."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def portable(meta):
    """A copy of an export's model.json without absolute machine paths: those inside the repository made
    relative to it, the others (the data file's location on the training machine) dropped."""
    if isinstance(meta, dict):
        out = {}
        for key, value in meta.items():
            if isinstance(value, str) and os.path.isabs(value):
                if repo_path(Path(value)) == value:
                    continue
                value = repo_path(Path(value))
            out[key] = portable(value)
        return out
    if isinstance(meta, list):
        return [portable(v) for v in meta]
    return meta


def study_command(data: StudyResults, where: str) -> str:
    """The study's command with the --out it was published under (results.json records it without)."""
    words = data.study.command.split()
    if "--out" not in words:
        at = words.index("--preset") + 2 if "--preset" in words else min(2, len(words))
        words[at:at] = ["--out", where]
    return " ".join(words)


def ship(data: StudyResults, study: Path, published: Path, pretrained: Path) -> dict:
    """Each family's best run of `study` into `pretrained`/<family>/; provenance names the copy in `published`."""
    shipped = {}
    for model, family in data.families.items():
        best = family.best()
        if not (study / best.run_dir / EXPORT_WEIGHTS).is_file():
            raise SystemExit(f"{study / best.run_dir} holds no {EXPORT_WEIGHTS}: its training did not finish")
        folder = pretrained / model
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        shutil.copy2(study / best.run_dir / EXPORT_WEIGHTS, folder / EXPORT_WEIGHTS)
        write_json(folder / EXPORT_META, portable(json.loads((study / best.run_dir / EXPORT_META).read_text())))
        evaluation, aggregate = best.eval, family.aggregate.get(FID.key, {})
        shipped[model] = {
            "study": study_command(data, repo_path(published)), "study_preset": data.study.preset,
            "run": repo_path(published / best.run_dir), "training_seed": best.seed,
            "fid": (evaluation.get(FID.key) or {}).get("mean"),
            "fid_protocol": {k: evaluation.get("protocol", {}).get(k) for k in ("n", "seeds")},
            "family_fid": {"mean": aggregate.get("mean"), "std": aggregate.get("std"),
                           "training_seeds": len(aggregate.get("per_training_seed") or [])},
            "selected_as": "the family's run with the lowest FID (study.layout.FamilyResult.best)",
            "report": repo_path(published / "report.md")}
        write_json(folder / "provenance.json", shipped[model])
    return shipped


def nested_studies(results: Path) -> set[str]:
    """Subfolders of a published results folder that are studies of their own (results/record/)."""
    return {d.name for d in results.iterdir() if d.is_dir() and (d / RESULTS_FILE).is_file()}


def size(path: Path, skip: set[str] = frozenset(), weights: bool | None = None) -> int:
    """Bytes under `path`, leaving out its subfolders named in `skip`; only the exported weights
    (weights=True), all but them (False) or everything (None)."""
    return sum(f.stat().st_size for f in path.rglob("*")
               if f.is_file() and f.relative_to(path).parts[0] not in skip
               and (weights is None or (f.name == EXPORT_WEIGHTS) == weights))


def publish(study: Path, results: Path, pretrained: Path | None) -> dict:
    """Copy `study` into `results` (and ship its best runs into `pretrained` unless it is None)."""
    data = StudyResults.load(study)
    results.mkdir(parents=True, exist_ok=True)
    kept = nested_studies(results) | {README}  # README: how this study was made and what it shows
    for child in results.iterdir():
        if child.name in kept:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    for name in TOP_LEVEL:
        shutil.copy2(study / name, results / name)
    for name in FOLDERS:
        if (study / name).is_dir():
            shutil.copytree(study / name, results / name, ignore=shutil.ignore_patterns("*.pt", "checkpoints"))
    for run_dir in sorted((study / RUNS_DIR).iterdir()):
        target = results / RUNS_DIR / run_dir.name
        target.mkdir(parents=True)
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, target / name)
        for name in RUN_FOLDERS:
            if (run_dir / name).is_dir():
                shutil.copytree(run_dir / name, target / name)
    for closest in sorted(study.glob(f"{UTILITY_DIR}/*-closest.npz")):  # the memorisation figure's images
        (results / UTILITY_DIR).mkdir(exist_ok=True)
        shutil.copy2(closest, results / UTILITY_DIR / closest.name)
    for family in data.families.values():  # the best runs sample from their own folders
        best = family.best()
        if (study / best.run_dir / EXPORT_WEIGHTS).is_file():
            shutil.copy2(study / best.run_dir / EXPORT_WEIGHTS, results / best.run_dir / EXPORT_WEIGHTS)

    shipped = ship(data, study, results, pretrained) if pretrained is not None else {}
    nested = nested_studies(results)
    sizes = {"results_bytes": size(results, nested, weights=False),
             "results_weights_bytes": size(results, nested, weights=True),
             "pretrained_bytes": size(pretrained) if pretrained is not None else None}
    check_sizes(sizes)
    return {"shipped": shipped, **sizes}


def check_sizes(sizes: dict) -> None:
    """Reports, figures and logs under RESULTS_LIMIT; weights (shipped, or a published study's best runs)
    under PRETRAINED_LIMIT each."""
    if ((sizes.get("results_bytes") or 0) > RESULTS_LIMIT or (sizes.get("pretrained_bytes") or 0) > PRETRAINED_LIMIT
            or (sizes.get("results_weights_bytes") or 0) > PRETRAINED_LIMIT):
        raise SystemExit(f"too large for the repository: {sizes} (limits {RESULTS_LIMIT} and {PRETRAINED_LIMIT})")


def publish_pretrained(study: Path, pretrained: Path) -> dict:
    """Only replace the shipped models, by the best runs of `study`, a study folder kept in the repository."""
    shipped = ship(StudyResults.load(study), study, study, pretrained)
    sizes = {"pretrained_bytes": size(pretrained)}
    check_sizes(sizes)
    return {"shipped": shipped, **sizes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", type=Path, help="a finished study folder (holds results.json)")
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--pretrained", type=Path, default=ROOT / "src" / "bloodgen" / "pretrained")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--pretrained-only", action="store_true",
                      help="only ship STUDY's best runs as the pretrained models (STUDY stays where it is)")
    mode.add_argument("--no-pretrained", action="store_true",
                      help="publish STUDY into --results without replacing the shipped models")
    args = p.parse_args()
    if not (args.study / RESULTS_FILE).is_file():
        raise SystemExit(f"{args.study} holds no {RESULTS_FILE}: run `bloodgen study --out {args.study}` to the end first")
    if args.pretrained_only:
        print(json.dumps(publish_pretrained(args.study, args.pretrained), indent=1))
    else:
        print(json.dumps(publish(args.study, args.results, None if args.no_pretrained else args.pretrained),
                         indent=1))


if __name__ == "__main__":
    main()
