"""`bloodgen demo`: the shipped models sampled, evaluated and judged, and a short training of each family."""

from __future__ import annotations

import argparse

DEMO_EXAMPLES = """\
examples:
  bloodgen demo                                  # about 20 min on 2 CPU cores: report in demo/report.html
  bloodgen demo --n 2000 --out demo-2k           # a larger evaluation (about twice the feature extraction)
  bloodgen demo --models cgan gan --train-models gan   # minutes: the GANs only, no ddpm sampling

What it shows: the shipped models (pretrained:NAME, the best run of each family in the protocol of
record) sampled, evaluated at N per side beside both real-vs-real floors at that N, one grid per model
with a row per class, the ddpm's class fidelity by the shipped reference classifier and its nearest
training images; then each family trains for --train-steps steps, a demonstration of the training
machinery that says nothing about quality. A re-run reuses every finished stage.
"""


def add_parser(subparsers) -> None:
    from bloodgen.cli import HelpFormatter
    from bloodgen.models.registry import standalone_families
    from bloodgen.sampling.pretrained import pretrained_names
    from bloodgen.study.cli import add_run_arguments

    p = subparsers.add_parser(
        "demo", help="the shipped models sampled, evaluated and judged, plus a short training of each family",
        description="A first look at what bloodgen does at its best, in about 20 minutes on 2 CPU cores: writes "
                    "OUT/report.html (self-contained), OUT/report.md and OUT/results.json.",
        epilog=DEMO_EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--out", metavar="DIR", default="demo", help="demo folder (reused on re-runs)")
    p.add_argument("--n", type=int, default=1000, help="generated and real images per side of each comparison")
    p.add_argument("--models", nargs="+", metavar="NAME", default=None,
                   help=f"shipped models to sample and evaluate (default: all of {', '.join(pretrained_names())}, best first)")
    p.add_argument("--train-models", nargs="+", metavar="NAME", default=None,
                   help=f"families to train briefly (default: {', '.join(standalone_families())})")
    p.add_argument("--train-steps", type=int, default=150, help="steps of each short training")
    add_run_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bloodgen import checks
    from bloodgen.errors import UserError
    from bloodgen.models.registry import standalone_families
    from bloodgen.sampling.pretrained import pretrained_names
    from bloodgen.study.demo import DemoSettings, ranked_shipped_models, run_demo

    out = checks.output_folder(args.out, "--out")
    checks.device(args.device)
    checks.positive(args.n, "--n", minimum=10)
    checks.positive(args.train_steps, "--train-steps")
    models = tuple(args.models or ranked_shipped_models())
    train_models = tuple(args.train_models or standalone_families())
    unknown = [m for m in models if m not in pretrained_names()]
    if unknown:
        raise UserError(f"--models: no shipped model {', '.join(unknown)}; choose from {', '.join(pretrained_names())}")
    not_trainable = [m for m in train_models if m not in standalone_families()]
    if not_trainable:
        raise UserError(f"--train-models: {', '.join(not_trainable)} cannot train in the demo; choose from "
                        f"{', '.join(standalone_families())}")
    report = run_demo(DemoSettings(out=out, n=args.n, models=models, train_steps=args.train_steps,
                               train_models=train_models, data=args.data, inception_weights=args.inception_weights,
                               device=args.device, cache_dir=args.cache_dir, progress=not args.no_progress))
    print(f"bloodgen demo: wrote {report}, {report.with_suffix('.html')} and {out / 'results.json'}")
    return 0
