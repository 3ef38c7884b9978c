"""Copy a finished study into the repository: its report into `results/`, each family's best run into
`src/bloodgen/pretrained/<family>/` (so `bloodgen sample pretrained:NAME` works right after install).

    python benchmarks/publish_study.py /work/study-cpu

What is copied: report.md/.html, results.json, figures/, grids/, evaluations/, and per run folder its
config, environment, summary, logs and sample grids; never the training checkpoints (optimiser state,
tens of MB) nor the utility checks' samples (`utility/*-samples.npz`, 32 MB per conditional family at the
cpu preset; the report's figures already show them and the shipped weights regenerate them). A
hand-written results/README.md is kept. Pretrained: the best run's model.safetensors + model.json
(weights and full config) with a provenance.json naming the study, run and FID. Sizes are checked
against the limits the repository keeps: results under 20 MB, pretrained weights under 50 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.metrics.fid import KEY_FID  # noqa: E402
from bloodgen.provenance import write_json  # noqa: E402
from bloodgen.report.study_report import FIGURES_DIR  # noqa: E402
from bloodgen.study.pipeline import (DIFFUSION_CLASSIFIER_DIR, EVAL_DIR, K_AGGREGATE, K_FAMILIES, K_FLOOR,  # noqa: E402
                                     K_STUDY, PROTOTYPES_DIR, RESULTS_FILE, RUNS_DIR, best_run)
from bloodgen.training.checkpoint import EXPORT_META, EXPORT_WEIGHTS  # noqa: E402

RESULTS_LIMIT, PRETRAINED_LIMIT = 20 * 2**20, 50 * 2**20
README = "README.md"
TOP_LEVEL = ("report.md", "report.html", RESULTS_FILE)
FOLDERS = (FIGURES_DIR, "grids", EVAL_DIR, PROTOTYPES_DIR, DIFFUSION_CLASSIFIER_DIR)
RUN_FILES = ("config.json", "environment.json", "summary.json", "log.jsonl", "log.csv", "snapshots.jsonl", EXPORT_META)
RUN_FOLDERS = ("samples", "extras")


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def publish(study: Path, results: Path, pretrained: Path) -> dict:
    data = json.loads((study / RESULTS_FILE).read_text())
    readme = (results / README).read_text() if (results / README).is_file() else None
    if results.exists():
        shutil.rmtree(results)
    results.mkdir(parents=True)
    if readme is not None:  # hand-written: how the study was made and what it shows
        (results / README).write_text(readme)
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

    shipped = {}
    for model, family in data[K_FAMILIES].items():
        best = best_run(family)
        folder = pretrained / model
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name in (EXPORT_WEIGHTS, EXPORT_META):
            shutil.copy2(study / best["run_dir"] / name, folder / name)
        fid = family[K_AGGREGATE].get(KEY_FID, {}).get("mean")
        shipped[model] = {"study": data[K_STUDY]["command"], "study_preset": data[K_STUDY]["preset"],
                          "run": best["run_dir"], "training_seed": best["seed"], "fid_mean": fid,
                          "fid_protocol": {k: data[K_FLOOR]["protocol"][k] for k in ("n", "seeds")},
                          "report": "results/report.md"}
        write_json(folder / "provenance.json", shipped[model])
    sizes = {"results_bytes": size(results), "pretrained_bytes": size(pretrained)}
    if sizes["results_bytes"] > RESULTS_LIMIT or sizes["pretrained_bytes"] > PRETRAINED_LIMIT:
        raise SystemExit(f"too large for the repository: {sizes} (limits {RESULTS_LIMIT} and {PRETRAINED_LIMIT})")
    return {"shipped": shipped, **sizes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", type=Path, help="a finished study folder (holds results.json)")
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--pretrained", type=Path, default=ROOT / "src" / "bloodgen" / "pretrained")
    args = p.parse_args()
    if not (args.study / RESULTS_FILE).is_file():
        raise SystemExit(f"{args.study} holds no {RESULTS_FILE}: run `bloodgen study --out {args.study}` to the end first")
    print(json.dumps(publish(args.study, args.results, args.pretrained), indent=1))


if __name__ == "__main__":
    main()
