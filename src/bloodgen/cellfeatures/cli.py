"""`bloodgen features train|probe`: autoencoder cell features (AE-CFE) and a random forest on them, across
shifted domains."""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  bloodgen domains make --out domains
  bloodgen features train --data domains/A.npz --out ae-b100                 # features of domain A alone
  bloodgen features train --data domains/A.npz --target domains/stain.npz --alignment mmd --beta 1 \\
      --out ae-cfe-stain                                                      # AE-CFE: A and stain aligned
  bloodgen features probe --run ae-cfe-stain --data domains/A.npz --test domains/stain.npz --seeds 5
  bloodgen features probe --data domains/A.npz --test domains/stain.npz     # Inception + forest, no AE
"""


def add_parser(subparsers) -> None:
    from bloodgen.cli import HelpFormatter

    p = subparsers.add_parser(
        "features", help="autoencoder cell features and domain adaptation (AE-CFE), probed by a random forest",
        description="Cell features in the manner of AE-CFE: an autoencoder of 6 linear layers with GroupNorm "
                    "squeezes each cell's frozen Inception pool3 features (or its pixels) into a bottleneck, "
                    "rebuilding the features and the image; a domain loss can make two labs' bottlenecks alike. "
                    "A random forest on the bottleneck, trained in one domain, is scored in every domain.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add_train(actions, HelpFormatter)
    _add_probe(actions, HelpFormatter)


def _add_inputs(p) -> None:
    from bloodgen.cellfeatures.inputs import INPUTS, VIEWS

    p.add_argument("--input", choices=INPUTS, default="inception", help="h: Inception pool3 features or pixels")
    p.add_argument("--view", choices=VIEWS, default="whole", help="the whole image or the segmented cell alone")
    p.add_argument("--inception-weights", default=None, help="FID Inception weights (default: "
                                                             "$BLOODGEN_INCEPTION_WEIGHTS, then pytorch-fid's)")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: $BLOODGEN_CACHE or ~/.cache/bloodgen)")


def _add_train(actions, formatter) -> None:
    from bloodgen.cellfeatures.alignment import ALIGNMENTS
    from bloodgen.cellfeatures.autoencoder import IMAGE_LOSSES
    from bloodgen.cellfeatures.train import AEOptions
    from bloodgen.data.cli import add_data_argument

    d = AEOptions()
    t = actions.add_parser(
        "train", help="train the autoencoder (resumable: the same command continues a cut run)",
        description="Trains on the train split of --data (the source domain) and, with --target, of those "
                    "files too (only their images are used, never their labels). Writes OUT/options.json, "
                    "checkpoint.pt, log.jsonl, model.safetensors and summary.json.",
        epilog=EXAMPLES, formatter_class=formatter)
    add_data_argument(t)
    t.add_argument("--target", nargs="*", metavar="FILE.npz", default=[],
                   help="other domains (their labels unused) to rebuild too and, with --alignment, to align to "
                        "--data (default: none)")
    _add_inputs(t)
    t.add_argument("--bottleneck", type=int, default=d.bottleneck, help="bottleneck dimensions b")
    t.add_argument("--image-loss", choices=IMAGE_LOSSES, default=d.image_loss, help="image reconstruction loss")
    t.add_argument("--alignment", choices=ALIGNMENTS, default=d.alignment,
                   help="domain loss: mmd (AE-CFE's mean and covariance alignment), normal, adversarial")
    t.add_argument("--beta", type=float, default=d.beta, help="weight of the domain loss")
    t.add_argument("--steps", type=int, default=d.steps, help="optimiser steps")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help="images a step, shared evenly by the domains")
    t.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    t.add_argument("--seed", type=int, default=d.seed, help="weights and batches seed")
    t.add_argument("--out", metavar="DIR", required=True, help="the run folder")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=run_train)


def _add_probe(actions, formatter) -> None:
    from bloodgen.data.cli import add_data_argument

    p = actions.add_parser(
        "probe", help="a random forest on the features, trained on --data, scored on every --test file",
        description="Fits a random forest (100 trees) per seed on the train split of --data, in the bottleneck "
                    "of --run or, without it, on the raw inputs, and scores it on the test split of --data and "
                    "of each --test file: accuracy and balanced accuracy, mean ± std over seeds.",
        epilog=EXAMPLES, formatter_class=formatter)
    add_data_argument(p)
    p.add_argument("--run", metavar="DIR", default=None, help="a `features train` run (its input and view apply)")
    p.add_argument("--test", nargs="*", metavar="FILE.npz", default=[],
                   help="other domains to score in (default: none)")
    _add_inputs(p)
    p.add_argument("--seeds", type=int, default=5, help="forest seeds")
    p.add_argument("--json", metavar="FILE", default=None, help="write the scores as JSON")
    p.set_defaults(func=run_probe)


def _spec(args: argparse.Namespace):
    from bloodgen.cellfeatures.experiment import InputSpec

    return InputSpec(args.input, args.view, args.inception_weights, args.cache_dir)


def run_train(args: argparse.Namespace) -> int:
    from bloodgen import checks
    from bloodgen.cellfeatures.experiment import train_run
    from bloodgen.cellfeatures.train import AEOptions

    checks.seed(args.seed)
    checks.output_folder(args.out, "--out")
    options = AEOptions(bottleneck=args.bottleneck, image_loss=args.image_loss, alignment=args.alignment,
                        beta=args.beta, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    train_run(args.data, args.target, _spec(args), options, args.out, progress=not args.quiet)
    print(f"autoencoder: {args.out}")
    return 0


def run_probe(args: argparse.Namespace) -> int:
    from bloodgen.cellfeatures.experiment import probe_files, probe_table
    from bloodgen.provenance import write_json

    result = probe_files(args.data, args.test, _spec(args), args.run, args.seeds)
    print(probe_table(result))
    if args.json:
        write_json(args.json, result)
    return 0
