"""`bloodgen classifier`: the ResNet-18 reference classifier that judges generated cells."""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  bloodgen classifier train                       # train once, then reused from the cache
  bloodgen classifier train --recipe cpu          # half-width ResNet-18, 6 epochs: minutes on a CPU
  bloodgen classifier train --epochs 60 --seed 1 --json classifier.json
  bloodgen classifier train --retrain --cache-dir /tmp/bloodgen-cache
"""


def add_parser(subparsers) -> None:
    from bloodgen.classify.recipe import RECIPES
    from bloodgen.cli import HelpFormatter
    from bloodgen.data.cli import add_data_argument

    p = subparsers.add_parser("classifier", help="train or load the ResNet-18 reference classifier",
                              description="The ResNet-18 (28x28 stem) reference classifier, trained on the train "
                                          "split with the val split for model selection, scored on the test split.",
                              epilog=EXAMPLES, formatter_class=HelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train (or load from the cache) and report test accuracy",
                               description="Train the reference classifier with a recipe (or load it from the cache, "
                                           "keyed by recipe and data) and print its test accuracy, balanced "
                                           "accuracy and macro F1.",
                               epilog=EXAMPLES, formatter_class=HelpFormatter)
    add_data_argument(train)
    train.add_argument("--recipe", choices=tuple(RECIPES), default=None,
                       help="named recipe: 'full' (ResNet-18, %d epochs) or 'cpu' (width %d, %d epochs); default: "
                            "full with a GPU, cpu without" % (RECIPES["full"].epochs, RECIPES["cpu"].width,
                                                               RECIPES["cpu"].epochs))
    train.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    train.add_argument("--width", type=int, default=None, help="override the recipe's width (64 = ResNet-18)")
    train.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    train.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    train.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    train.add_argument("--no-augment", action="store_true", help="train without random flips/rot90")
    train.add_argument("--cache-dir", default=None, help="cache folder (default: $BLOODGEN_CACHE or ~/.cache/bloodgen)")
    train.add_argument("--retrain", action="store_true", help="ignore a cached classifier and train again")
    train.add_argument("--json", default=None, metavar="FILE", help="also write the training and test report here")
    train.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bloodgen import checks
    from bloodgen.classify.reference import chosen_recipe, reference_classifier
    from bloodgen.classify.scores import ClassificationScores
    from bloodgen.data import load_bloodmnist
    from bloodgen.errors import UserError
    from bloodgen.provenance import write_json

    if args.json:
        checks.output_file(args.json, "--json", ".json")
    if args.seed is not None:
        checks.seed(args.seed)
    for name in ("epochs", "batch_size", "width"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.lr is not None and args.lr <= 0:
        raise UserError(f"--lr must be positive, got {args.lr}")
    overrides = {k: getattr(args, k) for k in ("epochs", "width", "batch_size", "lr", "seed")
                 if getattr(args, k) is not None}
    if args.no_augment:
        overrides["augment"] = False
    recipe = replace(chosen_recipe(args.recipe), **overrides)
    _, info = reference_classifier(load_bloodmnist(args.data), recipe, cache_dir=args.cache_dir, retrain=args.retrain)
    test = ClassificationScores.from_json(info["test"])
    print(f"reference classifier (width {recipe.width}, {recipe.epochs} epochs, best val accuracy "
          f"{info['best_val_accuracy']:.4f}, trained in {info['train_seconds']:.0f} s on {info['device']}): test accuracy {test.accuracy:.4f}, "
          f"balanced accuracy {test.balanced_accuracy:.4f}, macro F1 {test.macro_f1:.4f}")
    if args.json:
        write_json(args.json, info)
    return 0
