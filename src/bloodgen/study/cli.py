"""`bloodgen study`: the whole comparison in one command."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """\
examples:
  bloodgen study                                   # quick preset: every family, 13-35 min on 2 CPU cores
  bloodgen study --preset quick --models vae ddpm --out study-small
  bloodgen study --preset full --out study-full    # the protocol of record (GPU: hours)
  bloodgen study --preset full --train-seeds 2     # fewer training seeds than the full preset's 5
  bloodgen study --preset quick --utility --classifier-recipe cpu   # add fidelity/TSTR/memorisation (slow on CPU)
  bloodgen study --preset cpu --out study-cpu        # the largest budget for 2 CPU cores (~2.5 hours)
  bloodgen study --preset cpu --utility-models cgan   # utility checks for one family only
  bloodgen study --preset quick --experiments prototypes diffusion-classifier   # add both experiments
  bloodgen study --preset record --out results/record --max-minutes 150   # protocol of record on CPU, in slices
  bloodgen study --preset record --out results/record --models ddpm --train-only --max-minutes 110
  bloodgen study --preset gpu --out study-gpu      # the same protocol in ~10 min of one H200 (benchmarks/gpu_record.sh)

Re-running the same command after an interruption picks up where it stopped: finished trainings and
evaluations are reused (keyed by config, seed, data and weights), an interrupted training resumes.
Work goes unit by unit (one family's training seed: train, evaluate, grid), seed-major; with
--max-minutes the study stops at that time with the finished units reported and exits 3. --train-only
trains (or resumes) the units and stops: no InceptionV3, no evaluation, the report left as it was; a
later run without it evaluates the trained units (a way to split a long unit over two sittings).
Outputs: OUT/report.html (self-contained), OUT/report.md, OUT/results.json, OUT/figures/, OUT/runs/.
Exit status: 0 done, 3 stopped by --max-minutes (run again to continue), 2 a user error.
"""


def add_parser(subparsers) -> None:
    from bloodgen.cli import HelpFormatter
    from bloodgen.models.registry import REGISTRY, study_families
    from bloodgen.study.experiments import EXPERIMENTS
    from bloodgen.study.presets import PRESETS

    def draws(p) -> str:
        return "one draw per training run" if p.draw_per_run else f"{p.eval_seeds} sampling seeds"

    presets = "; ".join(f"{name}: train preset '{p.train_preset}', {p.train_seeds} training seed(s), "
                        f"N={p.n_images:,} x {draws(p)}" for name, p in PRESETS.items())
    p = subparsers.add_parser(
        "study", help="train every family, evaluate with the protocol, write report.html/report.md/results.json",
        description=f"Train each model family, sample, evaluate with the FID protocol (plus KID, precision/recall, "
                    f"density/coverage, per-class FID) beside the real-vs-real floor, and write a report. "
                    f"Presets: {presets}.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--preset", default="quick", choices=tuple(PRESETS),
                   help="how much training and how large an evaluation (see the description above)")
    p.add_argument("--models", nargs="+", metavar="MODEL", default=None,
                   help=f"families to include, any of {', '.join(REGISTRY)} (default: {' '.join(study_families())})")
    p.add_argument("--train-seeds", type=int, default=None, metavar="K",
                   help="independent training runs per family (default: the preset's)")
    p.add_argument("--out", metavar="DIR", default="study", help="study folder (reused on re-runs)")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="start nothing new after M minutes of wall time (a training stops there with a "
                        "checkpoint); the report covers the finished units; exit 3")
    p.add_argument("--train-only", action="store_true",
                   help="train (or resume) the units and stop: no evaluation starts and the report is left as "
                        "it is; exit 3 if --max-minutes cut a training")
    p.add_argument("--train-jobs", type=int, default=None, metavar="J",
                   help="trainings run at once, one process each (default: the preset's; gpu: 20)")
    p.add_argument("--utility", action=argparse.BooleanOptionalAction, default=None,
                   help="class fidelity, train-on-synthetic/test-on-real, augmentation and memorisation of each "
                        "family's best run (default: the preset's: on for full, off for quick)")
    p.add_argument("--utility-models", nargs="+", metavar="MODEL", default=None,
                   help="run the utility checks on these families only (implies --utility); on a CPU each "
                        "conditional family costs two classifier trainings")
    from bloodgen.classify.recipe import add_recipe_argument

    add_recipe_argument(p, "reference-classifier recipe for --utility")
    p.add_argument("--experiments", nargs="+", choices=(*EXPERIMENTS, "none"), default=None, metavar="NAME",
                   help=f"experiments to add, from {', '.join(EXPERIMENTS)}, or 'none' (default: the preset's: "
                        f"both for full, none for quick)")
    add_run_arguments(p)
    p.set_defaults(func=run)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Where the data, the FID weights and the caches are, the device and the progress bars."""
    from bloodgen.data.cli import add_data_argument

    add_data_argument(p)
    p.add_argument("--inception-weights", metavar="PATH", default=None,
                   help="pytorch-fid InceptionV3 weights (default: $BLOODGEN_INCEPTION_WEIGHTS, torch hub cache, download)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--cache-dir", default=None, help="real-feature cache (default: $BLOODGEN_CACHE or ~/.cache/bloodgen)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from bloodgen import checks
    from bloodgen.study.pipeline import StudyFolders, StudyRequest, run_study
    from bloodgen.study.stages import StudyIncomplete

    checks.output_folder(args.out, "--out")
    checks.device(args.device)
    checks.positive(args.train_seeds, "--train-seeds")
    checks.positive(args.train_jobs, "--train-jobs")
    experiments = None if args.experiments is None else [e for e in args.experiments if e != "none"]
    request = StudyRequest(args.preset, models=args.models, train_seeds=args.train_seeds, utility=args.utility,
                           utility_models=args.utility_models, classifier_recipe=args.classifier_recipe,
                           experiments=experiments, train_jobs=args.train_jobs)
    folders = StudyFolders(Path(args.out), data=args.data, inception_weights=args.inception_weights,
                           device=args.device, cache_dir=args.cache_dir)
    try:
        run_study(request, folders, progress=not args.no_progress, max_minutes=args.max_minutes,
                  train_only=args.train_only)
    except StudyIncomplete as stop:
        print(f"bloodgen study: stopped by --max-minutes with {stop}; run the same command again to continue")
        return 3
    return 0

