"""Train every family with one preset through the real CLI and record how long each took, where.

    python benchmarks/train_presets.py --preset quick --data /path/to/bloodmnist.npz
    python benchmarks/train_presets.py --preset full --models ddpm --max-minutes 9   # GPU, in slices
    python benchmarks/train_presets.py --preset full --resume                        # continue those runs

Each family runs as `bloodgen train ...` in a fresh process, so the wall time includes start-up, data
loading, sample grids, checkpoints and the family's extras: what a user waits for. The run folders go
to RUNS (default runs/benchmarks, not committed); OUT/<preset>.json collects per family the wall
time, the training-step time, steps/s, parameters, device and exact command; it is updated after each
family (resumable with --resume).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.models.config import PRESETS  # noqa: E402
from bloodgen.models.registry import model_names  # noqa: E402
from bloodgen.provenance import environment, write_json  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick", choices=PRESETS)
    p.add_argument("--models", nargs="+", default=list(model_names()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="bloodmnist.npz (default: the CLI's resolution)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder of the record JSON")
    p.add_argument("--runs", default=str(ROOT / "runs" / "benchmarks"), help="parent folder of the run folders")
    p.add_argument("--max-minutes", type=float, default=None, help="per-family time slice (then --resume)")
    p.add_argument("--resume", action="store_true", help="continue the unfinished runs recorded in OUT")
    args = p.parse_args()

    out, runs = Path(args.out), Path(args.runs)
    record_path = out / f"{args.preset}.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"runs": {}}
    record["environment"] = environment()
    record["machine"] = {"processor": platform.processor(), "cpu_count": record["environment"]["cpu_count"]}
    bloodgen = [sys.executable, "-m", "bloodgen"]
    for model in args.models:
        previous = record["runs"].get(model)
        if args.resume and previous and previous["status"] == "completed":
            continue
        if args.resume and previous:
            cmd = bloodgen + ["train", "--resume", previous["run_dir"]]
        else:
            cmd = bloodgen + ["train", "--model", model, "--preset", args.preset, "--seed", str(args.seed),
                              "--out", str(runs)]
        if args.data:
            cmd += ["--data", args.data]
        if args.max_minutes:
            cmd += ["--max-minutes", str(args.max_minutes)]
        before = set(runs.glob(f"*-{model}-s{args.seed}")) if runs.exists() else set()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode not in (0, 3):
            print(f"{model}: bloodgen train exited with {proc.returncode}", file=sys.stderr)
            return proc.returncode
        run_dir = Path(previous["run_dir"]) if args.resume and previous else \
            max(set(runs.glob(f"*-{model}-s{args.seed}")) - before)
        summary = json.loads((run_dir / "summary.json").read_text())
        walls = (previous or {}).get("wall_s_sessions", []) if args.resume else []
        record["runs"][model] = {
            "status": summary["status"], "run_dir": str(run_dir), "step": summary["step"], "steps": summary["steps"],
            "wall_s": round(sum(walls) + wall, 1), "wall_s_sessions": walls + [round(wall, 1)],
            "train_time_s": summary["train_time_s"], "steps_per_s": summary["steps_per_s"],
            "parameters": summary["parameters"], "device": summary["device"], "processes": summary["processes"],
            "mixed_precision": summary["mixed_precision"], "last_log": summary["last_log"],
            "extras": summary["extras"], "command": shlex.join(["bloodgen"] + cmd[3:]),
        }
        write_json(record_path, record)
        r = record["runs"][model]
        print(f"{model}: {r['status']} {r['step']}/{r['steps']} steps, wall {r['wall_s']} s, "
              f"training steps {r['train_time_s']} s on {r['device']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
