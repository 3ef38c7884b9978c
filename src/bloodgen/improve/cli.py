"""`bloodgen prototypes`: learn class prototypes, and compare prototype-guided diffusion with its baseline."""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  bloodgen prototypes learn --out protos/                      # reference-classifier encoder, K=1, dim 64
  bloodgen prototypes learn --out protos/ --per-class 3 --gamma 0.5 --lam 0.05
  bloodgen prototypes learn --out protos/ --encoder inception --max-per-class 100   # ImageNet features
  bloodgen prototypes learn --out protos/ --encoder torch.nn:Flatten   # any module:function -> torch module
  bloodgen train --model proto-ddpm --set prototypes=protos/prototypes.safetensors
  bloodgen train --model proto-ddpm --set class_embedding=learned      # the baseline arm
  bloodgen prototypes compare --preset quick --out /tmp/improve       # CPU budget, both regimes
  bloodgen prototypes compare --preset quick --steps 400 --classifier-epochs 1 --out /tmp/improve
"""


def add_parser(subparsers) -> None:
    from bloodgen.classify.prototype_options import PrototypeOptions
    from bloodgen.cli import HelpFormatter
    from bloodgen.data.cli import add_data_argument

    p = subparsers.add_parser("prototypes", help="class prototypes and prototype-guided diffusion (IMPROVE)",
                              description="Convolutional prototype learning on a frozen image encoder, and the "
                                          "IMPROVE comparison: diffusion conditioned on frozen prototypes vs. a "
                                          "learned class embedding, on the full data and 100 images per class.",
                              epilog=EXAMPLES, formatter_class=HelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    learn = actions.add_parser("learn", help="learn prototypes; report the prototype classifier's test accuracy",
                               description="Learn K class prototypes (convolutional prototype learning) in the "
                                           "feature space of a frozen encoder, with a projection head; writes "
                                           "prototypes.safetensors and its JSON, and reports the nearest-prototype "
                                           "classifier's val and test accuracy.",
                               epilog=EXAMPLES, formatter_class=HelpFormatter)
    add_data_argument(learn)
    learn.add_argument("--out", required=True, help="folder (or .safetensors path) for the prototypes and their JSON")
    defaults = PrototypeOptions()
    learn.add_argument("--per-class", type=int, default=defaults.per_class, help="K prototypes per class")
    learn.add_argument("--dim", type=int, default=defaults.dim, help="prototype dimension (proto-ddpm class_dim)")
    learn.add_argument("--gamma", type=float, default=defaults.gamma, help="distance temperature")
    learn.add_argument("--lam", type=float, default=defaults.lam, help="weight of the prototype loss")
    learn.add_argument("--hidden", type=int, default=defaults.hidden, help="projection head hidden width")
    learn.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the train features")
    learn.add_argument("--batch-size", type=int, default=defaults.batch_size, help="feature vectors per step")
    learn.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate")
    learn.add_argument("--seed", type=int, default=defaults.seed, help="seed of the head's weights and batch order")
    learn.add_argument("--max-per-class", type=int, default=None,
                       help="use at most this many train images per class (features are computed once per image)")
    _encoder_arguments(learn)
    learn.set_defaults(func=run_learn)

    comp = actions.add_parser("compare", help="train both arms in both regimes and compare them (resumable)",
                              description="Train proto-ddpm (frozen prototypes) and its baseline (a learned class "
                                          "embedding; same U-Net, schedule, steps and seed) on all training images "
                                          "and on 100 per class, then compare FID, class fidelity and "
                                          "train-on-synthetic F1. Finished stages are reused on a re-run.",
                              epilog=EXAMPLES, formatter_class=HelpFormatter)
    add_data_argument(comp)
    from bloodgen.improve.budgets import PRESETS, REGIMES

    comp.add_argument("--out", required=True, help="comparison folder; an existing one is continued")
    comp.add_argument("--preset", default="quick", choices=tuple(PRESETS),
                      help="budget: quick (CPU minutes, small sample sets) or full (GPU, protocol-sized)")
    comp.add_argument("--steps", type=int, default=None,
                      help="diffusion training steps per run (default: the preset's)")
    comp.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=tuple(REGIMES),
                      help="full: all training images; low: 100 per class")
    comp.add_argument("--classifier-epochs", type=int, default=None,
                      help="epochs of the reference classifier (judge and encoder; default: its recipe's)")
    comp.add_argument("--seed", type=int, default=0, help="seed of every training and sampling of the comparison")
    comp.add_argument("--encoder", default="reference",
                      help="prototype encoder: 'reference', 'inception', 'clip[:ARCH[:WEIGHTS]]' or module:function "
                           "(see prototypes learn)")
    comp.add_argument("--cache-dir", default=None,
                      help="classifier cache (default: $BLOODGEN_CACHE or ~/.cache/bloodgen)")
    comp.add_argument("--quiet", action="store_true", help="no progress bars")
    comp.set_defaults(func=run_compare)


def _encoder_arguments(p: argparse.ArgumentParser) -> None:
    from bloodgen.classify.recipe import add_recipe_argument

    p.add_argument("--encoder", default="reference",
                   help="'reference' (the reference classifier's ResNet-18 features, trained and cached if needed), "
                        "'inception' (the FID InceptionV3's pool3 features: ImageNet-trained, never saw BloodMNIST; "
                        "cached with the evaluation's features; weights from $BLOODGEN_INCEPTION_WEIGHTS or the torch "
                        "hub cache), 'clip[:ARCH[:WEIGHTS]]' (a CLIP image tower, IMPROVE's encoder: ARCH an "
                        "open_clip architecture, ViT-L-14 when omitted; WEIGHTS an open_clip checkpoint file or, "
                        "online, a pretrained tag such as openai, $BLOODGEN_CLIP_WEIGHTS when omitted; needs the "
                        "'clip' extra) or module:function returning a torch module from images (N, 3, 28, 28) in "
                        "[-1, 1] to (N, D)")
    add_recipe_argument(p, "recipe of the reference classifier behind --encoder reference, cached per recipe")
    p.add_argument("--cache-dir", default=None, help="classifier cache (default: $BLOODGEN_CACHE or ~/.cache/bloodgen)")


def run_learn(args: argparse.Namespace) -> int:
    from bloodgen import checks
    from bloodgen.classify.prototype_options import PrototypeOptions
    from bloodgen.classify.prototypes import REFERENCE_ENCODER, learn_prototypes
    from bloodgen.classify.reference import chosen_recipe
    from bloodgen.data import load_bloodmnist

    options = PrototypeOptions(per_class=args.per_class, dim=args.dim, gamma=args.gamma, lam=args.lam,
                               hidden=args.hidden, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               seed=args.seed)
    options.check()
    checks.seed(args.seed)
    checks.positive(args.max_per_class, "--max-per-class")
    if str(args.out).endswith(".safetensors"):
        checks.output_file(args.out, "--out", ".safetensors")
    else:
        checks.output_folder(args.out, "--out")
    recipe = chosen_recipe(args.classifier_recipe) if args.encoder == REFERENCE_ENCODER else None  # its own
    path, record = learn_prototypes(load_bloodmnist(args.data), args.out, options, encoder=args.encoder,
                                    classifier_recipe=recipe, cache_dir=args.cache_dir,
                                    max_per_class=args.max_per_class)
    print(f"prototypes {tuple(record.prototypes_shape)} written to {path} ({record.seconds:.0f} s): "
          f"prototype classifier test accuracy {record.test_accuracy:.4f} (val {record.val_accuracy:.4f})")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from bloodgen import checks
    from bloodgen.improve.compare import ARMS, RESULTS_FILE, Comparison, compare

    checks.output_folder(args.out, "--out")
    checks.seed(args.seed)
    checks.positive(args.steps, "--steps")

    comparison = Comparison(args.preset, data=args.data, seed=args.seed, regimes=tuple(args.regimes),
                            encoder=args.encoder, steps=args.steps, classifier_epochs=args.classifier_epochs)
    results = compare(args.out, comparison, cache_dir=args.cache_dir, progress=not args.quiet)
    for regime, block in results.regimes.items():
        parts = [f"{arm}: FID {block.arms[arm].fid:.1f}, TSTR F1 {block.arms[arm].tstr.f1:.3f}" for arm in ARMS]
        print(f"{regime}: " + "; ".join(parts) + f"; real TSTR F1 {block.real.f1:.3f}")
    print(f"results in {args.out}/{RESULTS_FILE}, report in {args.out}/report.html")
    return 0
