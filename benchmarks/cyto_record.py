"""The diffusion classifier (CytoDiffusion) on the five record ddpm runs, beside the reference ResNet-18:

    python benchmarks/cyto_record.py [--seeds 0 1 2 3 4] [--per-class 50] [--parts accuracy calibration]
                                     [--max-minutes M]

Each training seed's run (results/record/runs/ddpm-s<seed>-*) is evaluated by `bloodgen classify-eval` on
the same stratified test images (--per-class of each class, seed 0) into
results/record/diffusion-classifier/ddpm-s<seed>/; once two or more are done, `classify-eval --summarise`
writes their mean ± std into results/record/diffusion-classifier/summary/. A seed is a unit and each of its
parts is saved as it finishes (and, inside a part, every 64 images), so the benchmark resumes where it
stopped. On 2 CPU cores a seed's accuracy part takes about an hour (400 images, pruned and unpruned).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.classify.diffusion_eval import PARTS, EvalConfig, run_evaluation  # noqa: E402
from bloodgen.classify.diffusion_options import ClassifierOptions  # noqa: E402
from bloodgen.classify.diffusion_summary import write_summary  # noqa: E402
from bloodgen.errors import UserError  # noqa: E402

RECORD = ROOT / "results" / "record"
OUT = RECORD / "diffusion-classifier"


def run_folder(seed: int) -> Path:
    found = sorted((RECORD / "runs").glob(f"ddpm-s{seed}-*"))
    if len(found) != 1:
        raise UserError(f"expected one record ddpm run of seed {seed} in {RECORD / 'runs'}, found {len(found)}")
    return found[0]


def evaluate_seed(seed: int, parts: tuple[str, ...], per_class: int, data: str | None, progress: bool) -> bool:
    """Run the parts of `seed` not saved yet; True when all of them are saved."""
    out = OUT / f"ddpm-s{seed}"
    missing = tuple(p for p in parts if not (out / "parts" / f"{p}.json").is_file())
    if not missing:
        print(f"seed {seed}: done already ({out})", flush=True)
        return True
    print(f"seed {seed}: {', '.join(missing)} into {out}", flush=True)
    # The paper's sampling budget with pruning: at most 2,000 draws, decided by paired t-tests.
    run_evaluation(EvalConfig(checkpoint=str(run_folder(seed)), out=str(out), data=data, parts=missing,
                              test_per_class=per_class, options=ClassifierOptions(max_draws=2000), progress=progress))
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--per-class", type=int, default=50, help="test images of each class (default 50)")
    parser.add_argument("--parts", nargs="+", default=["accuracy", "calibration"], choices=PARTS)
    parser.add_argument("--max-minutes", type=float, default=None, help="start no seed after this many minutes")
    parser.add_argument("--data", default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    for seed in args.seeds:
        if args.max_minutes is not None and time.perf_counter() - started > 60 * args.max_minutes:
            print(f"time limit: seeds from {seed} on wait for the next run", flush=True)
            break
        evaluate_seed(seed, tuple(args.parts), args.per_class, args.data, not args.no_progress)
    done = [OUT / f"ddpm-s{s}" for s in args.seeds
            if all((OUT / f"ddpm-s{s}" / "parts" / f"{p}.json").is_file() for p in args.parts)]
    if len(done) >= 2:
        write_summary(done, OUT / "summary")
        print(f"summary of {len(done)} seeds in {OUT / 'summary'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
