"""`bloodgen features train|probe|study|sweep`: autoencoder cell features (AE-CFE) and a random forest on them, across
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
  bloodgen features study --domains domains --out aecfe --input pixels --methods raw ae mmd --umap
  bloodgen features sweep --data domains/A.npz --out sweep --bottlenecks 5 50 500 --views whole --steps 600
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
    _add_study(actions, HelpFormatter)
    _add_sweep(actions, HelpFormatter)


def _add_inputs(p, view: bool = True) -> None:
    from bloodgen.cellfeatures.options import INPUTS, VIEWS

    p.add_argument("--input", choices=INPUTS, default="inception", help="h: Inception pool3 features or pixels")
    if view:
        p.add_argument("--view", choices=VIEWS, default="whole", help="the whole image or the segmented cell alone")
    p.add_argument("--inception-weights", default=None, help="FID Inception weights (default: "
                                                             "$BLOODGEN_INCEPTION_WEIGHTS, then pytorch-fid's)")
    p.add_argument("--cache-dir", default=None,
                   help="feature and classifier cache (default: $BLOODGEN_CACHE or ~/.cache/bloodgen)")


def _add_autoencoder_options(t, single: bool = True) -> None:
    """The autoencoder's options; `single` False leaves out the bottleneck and image loss (a sweep's axes)
    and the domain loss's weight."""
    from bloodgen.cellfeatures.options import IMAGE_LOSSES, AEOptions

    d = AEOptions()
    if single:
        t.add_argument("--bottleneck", type=int, default=d.bottleneck, help="bottleneck dimensions b")
        t.add_argument("--image-loss", choices=IMAGE_LOSSES, default=d.image_loss, help="image reconstruction loss")
        t.add_argument("--beta", type=float, default=d.beta, help="weight of the domain loss")
    t.add_argument("--steps", type=int, default=d.steps, help="optimiser steps")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help="images a step, shared evenly by the domains")
    t.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    t.add_argument("--seed", type=int, default=d.seed, help="weights and batches seed")
    t.add_argument("--quiet", action="store_true", help="no progress bars")


def _options(args: argparse.Namespace, alignment: str = "none"):
    from bloodgen import checks
    from bloodgen.cellfeatures.options import AEOptions

    checks.seed(args.seed)
    d = AEOptions()
    return AEOptions(bottleneck=getattr(args, "bottleneck", d.bottleneck), image_loss=getattr(args, "image_loss",
                     d.image_loss), alignment=alignment, beta=getattr(args, "beta", d.beta), steps=args.steps,
                     batch_size=args.batch_size, lr=args.lr, seed=args.seed)


def _add_study(actions, formatter) -> None:
    from bloodgen.cellfeatures.options import METHODS
    from bloodgen.classify.recipe import add_recipe_argument

    s = actions.add_parser(
        "study", help="AE-CFE's cross-domain table: a forest trained in each domain, scored in all, per method",
        description="For each method (raw: the input and a forest; ae: the autoencoder without a domain loss; "
                    "normal, adversarial, mmd: with that domain loss, mmd being AE-CFE) a random forest per seed "
                    "is trained on each domain's train part and scored on the test cells of every domain. The "
                    "autoencoders train on every domain's train part. The oracle, resnet18, is the reference "
                    "ResNet-18 trained on each domain's images (per classifier seed). Each method is a unit saved "
                    "as it finishes (OUT/<input>-<method>.json, OUT/resnet18.json, OUT/runs/): the same command "
                    "continues a cut study. Writes OUT/README.md with the tables.",
        epilog=EXAMPLES, formatter_class=formatter)
    s.add_argument("--domains", metavar="DIR", required=True, help="a `bloodgen domains make` folder")
    s.add_argument("--out", metavar="DIR", required=True, help="the study folder")
    _add_inputs(s)
    s.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="feature spaces to compare")
    _add_autoencoder_options(s)
    s.add_argument("--seeds", type=int, default=5, help="forest seeds")
    add_recipe_argument(s, "the resnet18 oracle's recipe")
    s.add_argument("--classifier-seeds", type=int, default=3, help="the resnet18 oracle's seeds")
    s.add_argument("--max-minutes", type=float, default=None, help="start no method after this many minutes")
    s.add_argument("--umap", action="store_true", help="also draw OUT/umap-<input>.png (needs umap-learn)")
    s.set_defaults(func=run_study)


def _add_sweep(actions, formatter) -> None:
    from bloodgen.cellfeatures.options import BOTTLENECKS, IMAGE_LOSSES, VIEWS
    from bloodgen.data.cli import add_data_argument

    s = actions.add_parser(
        "sweep", help="AE-CFE's bottleneck study (Table 3.1): forest accuracy by bottleneck, image loss and view",
        description="For every bottleneck b, image loss and view, an autoencoder without a domain loss trained on "
                    "--data's train split, and a random forest per seed on its bottleneck scored on the test "
                    "split; with each unit's test reconstructions. Each unit is saved as it finishes "
                    "(OUT/<view>-<loss>-b<b>.json, OUT/runs/, OUT/reconstructions/): the same command continues "
                    "a cut sweep. Writes OUT/README.md with the table.", epilog=EXAMPLES, formatter_class=formatter)
    add_data_argument(s)
    s.add_argument("--out", metavar="DIR", required=True, help="the sweep folder")
    _add_inputs(s, view=False)
    s.add_argument("--views", nargs="+", choices=VIEWS, default=list(VIEWS), help="views to sweep")
    s.add_argument("--image-losses", nargs="+", choices=IMAGE_LOSSES, default=list(IMAGE_LOSSES),
                   help="image losses to sweep")
    s.add_argument("--bottlenecks", nargs="+", type=int, default=list(BOTTLENECKS), metavar="B",
                   help="bottleneck sizes to sweep")
    _add_autoencoder_options(s, single=False)
    s.add_argument("--seeds", type=int, default=5, help="forest seeds")
    s.add_argument("--max-minutes", type=float, default=None, help="start no unit after this many minutes")
    s.set_defaults(func=run_sweep)


def _add_train(actions, formatter) -> None:
    from bloodgen.cellfeatures.options import ALIGNMENTS
    from bloodgen.data.cli import add_data_argument

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
    t.add_argument("--alignment", choices=ALIGNMENTS, default="none",
                   help="domain loss: mmd (AE-CFE's mean and covariance alignment), normal, adversarial")
    _add_autoencoder_options(t)
    t.add_argument("--out", metavar="DIR", required=True, help="the run folder")
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

    return InputSpec(args.input, getattr(args, "view", "whole"), args.inception_weights, args.cache_dir)


def run_train(args: argparse.Namespace) -> int:
    from bloodgen import checks
    from bloodgen.cellfeatures.experiment import train_run

    checks.output_folder(args.out, "--out")
    train_run(args.data, args.target, _spec(args), _options(args, args.alignment), args.out,
              progress=not args.quiet)
    print(f"autoencoder: {args.out}")
    return 0


def run_probe(args: argparse.Namespace) -> int:
    from bloodgen import checks
    from bloodgen.cellfeatures.experiment import probe_files, probe_table
    from bloodgen.provenance import write_json

    checks.positive(args.seeds, "--seeds")
    if args.json:
        checks.output_file(args.json, "--json", ".json")
    result = probe_files(args.data, args.test, _spec(args), args.run, args.seeds)
    print(probe_table(result))
    if args.json:
        write_json(args.json, result)
    return 0


def run_study(args: argparse.Namespace) -> int:
    from bloodgen import checks
    from bloodgen.cellfeatures import study
    from bloodgen.classify.reference import chosen_recipe

    out = checks.output_folder(args.out, "--out")
    checks.positive(args.seeds, "--seeds")
    checks.positive(args.classifier_seeds, "--classifier-seeds")
    plan = study.FeatureStudy(study.domain_files(args.domains), out, _spec(args), tuple(args.methods),
                              _options(args).check(has_target=True), args.seeds,
                              chosen_recipe(args.classifier_recipe), args.classifier_seeds)
    print(f"report: {study.run_study(plan, args.max_minutes, args.umap, progress=not args.quiet)}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from bloodgen import checks
    from bloodgen.cellfeatures.sweep import Sweep, run_sweep as sweep

    out = checks.output_folder(args.out, "--out")
    checks.positive(args.seeds, "--seeds")
    for b in args.bottlenecks:
        checks.positive(b, "--bottlenecks")
    plan = Sweep(args.data, out, _spec(args), tuple(dict.fromkeys(args.bottlenecks)), tuple(args.image_losses),
                 tuple(args.views), _options(args).check(has_target=False), args.seeds)
    print(f"report: {sweep(plan, args.max_minutes, progress=not args.quiet)}")
    return 0
