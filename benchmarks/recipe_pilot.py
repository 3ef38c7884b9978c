"""Quality per CPU-hour of candidate recipes: train (or take) a model, sample N images, evaluate them
against N real images of protocol seed 0, and append a row to a JSON table.

    python benchmarks/recipe_pilot.py --name cgan-c32 --model cgan --preset cpu --set channels=32 \
        --steps 6000 --max-minutes 35 --out benchmarks/results/recipe_pilots_cpu.json
    python benchmarks/recipe_pilot.py --name cgan-cpu --checkpoint results/runs/cgan-s0-48d47630cb7e \
        --out benchmarks/results/recipe_pilots_cpu.json     # an existing model: evaluation only

Every step runs through the real CLI (`bloodgen train`, `sample`, `evaluate`) in a fresh process. N is
small next to the protocol of record (2,000 by default, against 10,000) because InceptionV3 embeds only
7-16 images/s on 2 cores: FID carries a bias at this N (the row's floor says how much), so rows compare
with each other, not with 10k figures. Training minutes are the run's own `train_time_s` (wall time of
the training steps), so a row's cost is what a user of these cores waits for.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.provenance import environment, write_json  # noqa: E402


def run(cmd: list[str]) -> None:
    print("+", shlex.join(cmd), flush=True)
    code = subprocess.call(cmd)
    if code not in (0, 3):  # 3: training stopped by --max-minutes, its checkpoint is what we sample
        sys.exit(f"recipe_pilot: {cmd[1]} exited {code}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="row name")
    p.add_argument("--checkpoint", help="evaluate this model (run folder, export or pretrained:NAME) instead of training")
    p.add_argument("--model")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int)
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=2000, help="images per side (default 2000)")
    p.add_argument("--runs", default="runs/pilots", help="parent of the training run folders")
    p.add_argument("--out", required=True, help="JSON table to append the row to")
    args = p.parse_args()

    bloodgen = [sys.executable, "-m", "bloodgen"]
    checkpoint, train_cmd = args.checkpoint, None
    if checkpoint is None:
        if not args.model:
            sys.exit("recipe_pilot: give --model (to train) or --checkpoint (to evaluate)")
        train_cmd = [*bloodgen, "train", "--model", args.model, "--preset", args.preset, "--seed", str(args.seed),
                     "--out", args.runs, "--no-progress", *[a for kv in args.set for a in ("--set", kv)]]
        if args.steps:
            train_cmd += ["--steps", str(args.steps)]
        if args.max_minutes:
            train_cmd += ["--max-minutes", str(args.max_minutes)]
        before = set(Path(args.runs).glob("*")) if Path(args.runs).is_dir() else set()
        run(train_cmd)
        (checkpoint,) = [str(d) for d in set(Path(args.runs).glob("*")) - before]
    work = Path(args.out).with_suffix("") / args.name
    work.mkdir(parents=True, exist_ok=True)
    samples, evaluation = work / "samples.npz", work / "eval.json"
    started = time.perf_counter()
    run([*bloodgen, "sample", checkpoint, "-n", str(args.n), "--seed", "0", "--out", str(samples),
         "--grid", str(work / "grid.png")])
    sampling_s = time.perf_counter() - started
    run([*bloodgen, "evaluate", str(samples), "--n", str(args.n), "--seeds", "1",
         "--metrics", "fid,kid,prdc", "--json", str(evaluation), "--quiet"])
    result = json.loads(evaluation.read_text())
    samples.unlink()  # 2,000 images are 4.7 MB; the grid and the figures stay
    row = {"name": args.name, "checkpoint": checkpoint, "train_command": train_cmd and shlex.join(train_cmd),
           "n": args.n, "eval_seed": 0, "sampling_s": round(sampling_s, 1)}
    summary = Path(checkpoint) / "summary.json"
    if checkpoint.startswith("pretrained:"):  # the shipped weights' run folder is in the repository
        provenance = ROOT / "src/bloodgen/pretrained" / checkpoint.split(":", 1)[1] / "provenance.json"
        run_folder = json.loads(provenance.read_text())["run"]  # repository-relative (older: relative to results/)
        summary = (ROOT / run_folder if run_folder.startswith("results/") else ROOT / "results" / run_folder)
        summary = summary / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        row.update(steps=s["step"], train_minutes=round(s["train_time_s"] / 60, 1), status=s["status"],
                   parameters=s["sampling_parameters"])
    else:
        row.update(steps=None, train_minutes=None)
    for key in ("fid", "kid", "precision", "recall"):
        row[key] = result[key]["mean"]
    row["floor_fid_disjoint"] = result["floor"]["disjoint"]["fid"]["mean"]
    table = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {"rows": []}
    table["rows"] = [r for r in table["rows"] if r["name"] != args.name] + [row]
    table["environment"] = environment()
    write_json(Path(args.out), table)
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
