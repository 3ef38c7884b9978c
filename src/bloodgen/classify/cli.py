"""`bloodgen classifier`: the ResNet-18 reference classifier that judges generated cells."""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  bloodgen classifier train                       # train once, then reused from the cache
  bloodgen classifier train --epochs 60 --seed 1 --json classifier.json
  bloodgen classifier train --retrain --cache-dir /tmp/bloodgen-cache
"""


def add_parser(subparsers) -> None:
    from bloodgen.classify.recipe import ClassifierRecipe
    from bloodgen.cli import HelpFormatter
    from bloodgen.data.cli import add_data_argument

    p = subparsers.add_parser("classifier", help="train or load the ResNet-18 reference classifier",
                              description="The ResNet-18 (28x28 stem) reference classifier, trained on the train "
                                          "split with the val split for model selection, scored on the test split.",
                              epilog=EXAMPLES, formatter_class=HelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train (or load from the cache) and report test accuracy",
                               epilog=EXAMPLES, formatter_class=HelpFormatter)
    add_data_argument(train)
    defaults = ClassifierRecipe()
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--lr", type=float, default=defaults.lr)
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--no-augment", action="store_true", help="train without random flips/rot90")
    train.add_argument("--cache-dir", default=None, help="cache folder (default: $BLOODGEN_CACHE or ~/.cache/bloodgen)")
    train.add_argument("--retrain", action="store_true", help="ignore a cached classifier and train again")
    train.add_argument("--json", default=None, metavar="FILE", help="also write the training and test report here")
    train.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from bloodgen.classify.recipe import ClassifierRecipe
    from bloodgen.classify.reference import KEY_ACCURACY, KEY_BALANCED_ACCURACY, KEY_MACRO_F1, reference_classifier
    from bloodgen.data import load_bloodmnist
    from bloodgen.errors import UserError
    from bloodgen.provenance import write_json

    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.lr <= 0:
        raise UserError(f"--lr must be positive, got {args.lr}")
    recipe = ClassifierRecipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              augment=not args.no_augment)
    _, info = reference_classifier(load_bloodmnist(args.data), recipe, cache_dir=args.cache_dir, retrain=args.retrain)
    test = info["test"]
    print(f"reference classifier (best val accuracy {info['best_val_accuracy']:.4f}, trained in "
          f"{info['train_seconds']:.0f} s on {info['device']}): test accuracy {test[KEY_ACCURACY]:.4f}, "
          f"balanced accuracy {test[KEY_BALANCED_ACCURACY]:.4f}, macro F1 {test[KEY_MACRO_F1]:.4f}")
    if args.json:
        write_json(args.json, info)
    return 0
