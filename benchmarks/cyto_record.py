"""The diffusion classifier (CytoDiffusion) on the five record ddpm runs, beside the reference ResNet-18:

    python benchmarks/cyto_record.py [--seeds 0 1 2 3 4] [--per-class 50] [--parts accuracy calibration]
                                     [--variant default|disc|tta|disc-tta] [--max-minutes M]

Each training seed's run (results/record/runs/ddpm-s<seed>-*) is evaluated by `bloodgen classify-eval` on
the same stratified test images (--per-class of each class, seed 0), beside a ResNet-18 trained with the same
seed, into
results/record/diffusion-classifier/ddpm-s<seed>/; once two or more are done, `classify-eval --summarise`
writes their mean ± std into results/record/diffusion-classifier/summary/. A seed is a unit and each of its
parts is saved as it finishes (and, inside a part, every 64 images), so the benchmark resumes where it
stopped. On 2 CPU cores a seed's accuracy part takes about an hour (400 images, pruned and unpruned).
A --variant other than default turns on the paper's options (the error within a centred disc of 12
pixels, paired test-time augmentation) for an A/B on the same images, into ddpm-s<seed>-<variant>/; --family ldm
evaluates the record latent-diffusion runs the same way (ldm-s<seed>/), the A/B of the latent model.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bloodgen.classify.diffusion_eval import PARTS, EvalConfig, run_evaluation  # noqa: E402
from bloodgen.classify.diffusion_options import ClassifierOptions  # noqa: E402
from bloodgen.classify.diffusion_summary import write_summary  # noqa: E402
from bloodgen.classify.reference import default_recipe  # noqa: E402
from bloodgen.errors import UserError  # noqa: E402

RECORD = ROOT / "results" / "record"
OUT = RECORD / "diffusion-classifier"
# The paper's sampling budget with pruning (at most 2,000 draws, decided by paired t-tests), and its options.
VARIANTS = {"default": {}, "disc": {"disc_radius": 12.0}, "tta": {"tta": True},
            "disc-tta": {"disc_radius": 12.0, "tta": True}}


def out_folder(seed: int, variant: str, family: str = "ddpm") -> Path:
    return OUT / (f"{family}-s{seed}" if variant == "default" else f"{family}-s{seed}-{variant}")


def run_folder(seed: int, family: str = "ddpm") -> Path:
    found = sorted((RECORD / "runs").glob(f"{family}-s{seed}-*"))
    if len(found) != 1:
        raise UserError(f"expected one record {family} run of seed {seed} in {RECORD / 'runs'}, found {len(found)}")
    return found[0]


def evaluate_seed(seed: int, variant: str, parts: tuple[str, ...], per_class: int, data: str | None,
                  progress: bool, family: str = "ddpm") -> bool:
    """Run the parts of `seed` not saved yet; True when all of them are saved."""
    out = out_folder(seed, variant, family)
    missing = tuple(p for p in parts if not (out / "parts" / f"{p}.json").is_file())
    if not missing:
        print(f"seed {seed}: done already ({out})", flush=True)
        return True
    print(f"seed {seed}: {', '.join(missing)} into {out}", flush=True)
    options = ClassifierOptions(max_draws=2000, **VARIANTS[variant])
    # The ResNet-18 beside it is trained with the same seed: five evaluations give five of each (Table 2).
    run_evaluation(EvalConfig(checkpoint=str(run_folder(seed, family)), out=str(out), data=data, parts=missing,
                              test_per_class=per_class, options=options, progress=progress,
                              recipe=replace(default_recipe(), seed=seed)))
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--per-class", type=int, default=50, help="test images of each class (default 50)")
    parser.add_argument("--parts", nargs="+", default=["accuracy", "calibration"], choices=PARTS)
    parser.add_argument("--variant", choices=tuple(VARIANTS), default="default")
    parser.add_argument("--family", choices=("ddpm", "ldm"), default="ddpm",
                        help="the record runs to evaluate: the pixel ddpm, or the latent model (an A/B of item 3)")
    parser.add_argument("--max-minutes", type=float, default=None, help="start no seed after this many minutes")
    parser.add_argument("--data", default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    for seed in args.seeds:
        if args.max_minutes is not None and time.perf_counter() - started > 60 * args.max_minutes:
            print(f"time limit: seeds from {seed} on wait for the next run", flush=True)
            break
        evaluate_seed(seed, args.variant, tuple(args.parts), args.per_class, args.data, not args.no_progress,
                      args.family)
    done = [out_folder(s, args.variant, args.family) for s in args.seeds
            if all((out_folder(s, args.variant, args.family) / "parts" / f"{p}.json").is_file() for p in args.parts)]
    prefix = "summary" if args.family == "ddpm" else f"summary-{args.family}"
    summary = OUT / (prefix if args.variant == "default" else f"{prefix}-{args.variant}")
    if len(done) >= 2:
        write_summary(done, summary)
        print(f"summary of {len(done)} seeds in {summary}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
