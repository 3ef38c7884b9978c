"""`bloodgen classify` and `bloodgen classify-eval`: a conditional ddpm used as a classifier (CytoDiffusion)."""

from __future__ import annotations

import argparse
from pathlib import Path

CLASSIFY_EXAMPLES = """\
examples:
  bloodgen classify runs/20250101-120000-ddpm-s0 test --n 200 --out preds.npz
  bloodgen classify runs/RUN/model.safetensors cells.npz --out preds.npz     # cells.npz: images [+ labels]
  bloodgen classify runs/RUN test --n 50 --no-prune --max-draws 100 --weighting uniform --out full.npz
  bloodgen classify runs/RUN val --n 20 --min-draws 20 --max-draws 300 --p-value 0.01 --seed 3 --out v.npz
  bloodgen classify runs/RUN test --n 400 --no-prune --max-draws 500 --save-draws --out draws.npz

Writes OUT (.npz: predictions, mean_errors, draws, confidence, indices [, labels]) and OUT with .json
(per-image class, per-class mean errors, confidence, draws; the options, seed and versions); prints the
accuracy when the labels are known. The same seed gives the same result. With --save-draws OUT also holds
every draw's unweighted error per class (draw_errors, N x 8 x draws) and time step (draw_timesteps), from
which bloodgen.classify.draws replays other weightings and pruning settings without the network.
"""

EVAL_EXAMPLES = """\
examples:
  bloodgen classify-eval runs/FULL --holdout-checkpoint runs/NO-ERYTHROBLAST --out cyto-eval
  bloodgen classify-eval runs/FULL --parts accuracy calibration --n-test 300 --out cyto-eval
  bloodgen classify-eval runs/FULL --parts corruptions --n-corrupt 50 --severities 1 3 5 --out cyto-eval
  bloodgen classify-eval runs/FULL --parts heatmaps --heatmap-draws 200 --out cyto-eval
  bloodgen classify-eval runs/FULL --parts accuracy ablations --no-prune-draws 1000 --out cyto-eval  # Table 4, Fig. 7
  bloodgen classify-eval RUN-S0 --parts accuracy calibration --test-per-class 50 --out cyto/s0   # per training seed
  bloodgen classify-eval --summarise cyto/s0 cyto/s1 cyto/s2 --out cyto/summary                # mean ± std

Each part is saved under OUT/parts/ as it finishes; OUT/results.json and OUT/report.md/.html are rebuilt
from all saved parts, so parts can be run one at a time (or in parallel processes) into the same OUT.
Within a part, images are classified in chunks kept in OUT/parts/*.partial.npz: an interrupted part run
again continues after its last finished chunk, with the same result. The accuracy part keeps the draws of
its unpruned run (OUT/parts/draws.npz); the ablations part replays them under other weightings, aggregations,
numbers of draws and pruning settings without evaluating the network.
Train the held-out model with a file from `bloodgen.data.subset.write_subset(data, path, exclude_classes=[2])`.
"""


def add_classifier_options(p: argparse.ArgumentParser, max_draws: int) -> None:
    from bloodgen.classify.diffusion_options import WEIGHTINGS, ClassifierOptions

    d = ClassifierOptions()
    g = p.add_argument_group("diffusion classifier")
    g.add_argument("--weighting", default=d.weighting, metavar="NAME",
                   help=f"error weight over t: {', '.join(WEIGHTINGS)} (paper: 1 / CytoDiffusion's fitted polynomial)")
    g.add_argument("--min-draws", type=int, default=d.min_draws, help="draws before the first pruning test")
    g.add_argument("--max-draws", type=int, default=max_draws, help="draws at most per image")
    g.add_argument("--p-value", type=float, default=d.p_value, help="prune a class when the paired t-test's p is below this")
    g.add_argument("--no-prune", action="store_true", help="score every class on all --max-draws draws")
    g.add_argument("--draws-per-round", type=int, default=d.draws_per_round, help="draws added between pruning tests")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="network evaluations per forward pass")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of the (t, noise) draws and of the random subsets")
    g.add_argument("--disc-radius", type=float, default=d.disc_radius, metavar="R",
                   help="count the error within a centred disc of R pixels only (the paper: about 12; 0: everywhere)")
    g.add_argument("--tta", action="store_true",
                   help="test-time augmentation: each draw under a random flip/quarter turn, the same for every class")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def options_from_args(args: argparse.Namespace):
    from bloodgen import checks
    from bloodgen.classify.diffusion_options import ClassifierOptions

    checks.seed(args.seed)
    return ClassifierOptions(weighting=args.weighting, prune=not args.no_prune, min_draws=args.min_draws,
                             max_draws=args.max_draws, p_value=args.p_value, draws_per_round=args.draws_per_round,
                             batch_size=args.batch_size, seed=args.seed, disc_radius=args.disc_radius,
                             tta=args.tta).check()


def add_parser(subparsers) -> None:
    from bloodgen.cli import HelpFormatter
    from bloodgen.data.cli import add_data_argument

    p = subparsers.add_parser(
        "classify", help="classify cells with a conditional ddpm (CytoDiffusion)",
        description="Classify BloodMNIST images with a class-conditional ddpm: noise each image at random time "
                    "steps, predict the noise under every class and pick the class with the smallest weighted "
                    "error; classes that are significantly worse (paired t-test) are pruned early. Classes the "
                    "model never saw in training are not candidates.",
        epilog=CLASSIFY_EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="run folder, checkpoint .pt or export .safetensors")
    p.add_argument("images", metavar="IMAGES",
                   help="a data split (train, val, test) or an .npz with 'images' uint8 (N, 28, 28, 3) [+ 'labels']")
    p.add_argument("--n", type=int, default=None, help="classify a random subset of this many images (drawn with --seed)")
    p.add_argument("--out", metavar="FILE", default="classified.npz", help="output .npz (a .json is written beside it)")
    p.add_argument("--save-draws", action="store_true",
                   help="also keep every draw's unweighted error per class and its time step in OUT (for replays)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_data_argument(p)
    add_classifier_options(p, max_draws=2000)
    p.set_defaults(func=run_classify)
    _add_eval_parser(subparsers)


def _add_eval_parser(subparsers) -> None:
    from bloodgen.classify.corruptions import BLOODMNIST_CORRUPTIONS
    from bloodgen.classify.diffusion_results import PARTS
    from bloodgen.classify.recipe import add_recipe_argument
    from bloodgen.cli import HelpFormatter
    from bloodgen.data.cli import add_data_argument
    from bloodgen.data.domains import DOMAINS

    e = subparsers.add_parser(
        "classify-eval", help="evaluate the diffusion classifier against the ResNet-18 reference",
        description="Accuracy and cost with and without pruning, calibration, held-out-class anomaly detection, "
                    "medmnistc corruptions and shifted domains, and counterfactual heat maps; writes "
                    "OUT/results.json and "
                    "OUT/report.md/.html with figures.",
        epilog=EVAL_EXAMPLES, formatter_class=HelpFormatter)
    e.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", default=None,
                   help="conditional ddpm trained on all classes (a run folder, checkpoint, export or pretrained:ddpm)")
    e.add_argument("--summarise", nargs="+", metavar="DIR", default=None,
                   help="instead of evaluating: mean ± std of the figures of these classify-eval folders (independent "
                        "trainings of one recipe) into OUT/summary.json and OUT/report.md/.html")
    e.add_argument("--holdout-checkpoint", metavar="RUN", default=None,
                   help="conditional ddpm trained without --holdout-class (needed by the anomaly part)")
    e.add_argument("--holdout-class", default="2", metavar="CLASS", help="the held-out class: index or name")
    e.add_argument("--out", metavar="DIR", required=True, help="output folder")
    e.add_argument("--parts", nargs="+", default=list(PARTS), metavar="PART", help=f"any of {', '.join(PARTS)}")
    e.add_argument("--n-test", type=int, default=300, help="random test images for accuracy and calibration")
    e.add_argument("--test-per-class", type=int, default=None, metavar="K",
                   help="K test images of each class for accuracy and calibration, in place of --n-test random ones")
    e.add_argument("--n-val", type=int, default=100, help="random val images to fit the calibration temperature")
    e.add_argument("--n-anomaly", type=int, default=150,
                   help="random test images for the anomaly part, a third of them of the held-out class")
    e.add_argument("--n-corrupt", type=int, default=50, help="test images (the first of the random subset) to corrupt")
    e.add_argument("--corruptions", nargs="+", default=list(BLOODMNIST_CORRUPTIONS), metavar="NAME",
                   help="medmnistc BloodMNIST corruptions")
    e.add_argument("--severities", nargs="+", type=int, default=[1, 3, 5], metavar="S", help="corruption severities (1-5)")
    e.add_argument("--domains", nargs="*", default=list(DOMAINS), metavar="NAME",
                   help=f"shifted domains (`bloodgen domains make`) scored on the same images in the corruptions "
                        f"part: any of {', '.join(DOMAINS)}; none with a bare --domains")
    e.add_argument("--no-prune-draws", type=int, default=100,
                   help="draws of every class in the no-pruning comparison (stored: the ablations replay up to these)")
    e.add_argument("--heatmap-draws", type=int, default=100, help="draws per class for each heat map")
    e.add_argument("--heatmap-kind", choices=("signed", "squared"), default="signed",
                   help="the heat maps shown: signed per-channel noise differences (CytoDiffusion eqs. 10-12, with "
                        "overlays and a faithfulness check) or the unsigned weighted squared-error differences")
    add_recipe_argument(e, "ResNet-18 reference recipe; a cached one is reused")
    e.add_argument("--classifier-epochs", type=int, default=None, help="override the reference recipe's epochs")
    e.add_argument("--classifier-seed", type=int, default=None,
                   help="the ResNet-18's training seed (default: the recipe's, 0); one per evaluation of several "
                        "training seeds gives the ResNet's spread beside the diffusion models'")
    e.add_argument("--cache-dir", default=None, help="classifier cache (default: $BLOODGEN_CACHE or ~/.cache/bloodgen)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_data_argument(e)
    add_classifier_options(e, max_draws=100)
    e.set_defaults(func=run_eval)


def load_images(spec: str, data: str | None):
    """(images, labels or None, source description) from a split name or an .npz file, checked as
    `bloodgen evaluate` checks its inputs (all labels -1, as unconditional samples carry, means none)."""
    from bloodgen.data import SPLITS, load_bloodmnist
    from bloodgen.errors import UserError
    from bloodgen.metrics import inputs

    if spec in SPLITS:
        images, labels = load_bloodmnist(data).split(spec)
        return images, labels, f"{spec} split"
    path = Path(spec)
    if not path.is_file() or path.suffix.lower() != ".npz":
        raise UserError(f"IMAGES {spec!r} is neither a split ({', '.join(SPLITS)}) nor an existing .npz file")
    image_set = inputs.load_images(path, role="IMAGES")
    return image_set.images, image_set.labels, str(path)


def run_classify(args: argparse.Namespace) -> int:
    import numpy as np

    from bloodgen import checks
    from bloodgen.classify.diffusion import check_images, classify_images
    from bloodgen.classify.reference import classification_report
    from bloodgen.data import CLASS_NAMES, N_CLASSES
    from bloodgen.errors import UserError
    from bloodgen.provenance import atomic_path, environment, write_json
    from bloodgen.sampling.api import load_model
    from bloodgen.sampling.pretrained import resolve_model_path

    options = options_from_args(args)
    checks.positive(args.n, "--n")
    out = checks.output_file(args.out, "--out", ".npz")
    record = checks.output_file(out.with_suffix(".json"), "--out (its .json record)")
    device = checks.device(args.device)
    if not resolve_model_path(args.checkpoint).exists():
        raise UserError(f"checkpoint {args.checkpoint} not found (give a run folder, a .pt checkpoint, a "
                        f".safetensors export or pretrained:NAME)")
    images, labels, source = load_images(args.images, args.data)
    check_images(images, f"images in {source}")
    if args.n is not None and args.n > len(images):
        raise UserError(f"--n {args.n} is more than the {len(images)} images in {source}; lower --n or drop it")
    indices = np.arange(len(images))
    if args.n is not None and args.n < len(images):
        rng = np.random.default_rng(np.random.SeedSequence([args.seed, 7]))
        indices = np.sort(rng.choice(len(images), size=args.n, replace=False))
    model = load_model(args.checkpoint, device)
    result = classify_images(model, images[indices], options, progress=not args.no_progress,
                             keep_draws=args.save_draws)
    arrays = {"predictions": result.predictions, "mean_errors": result.mean_errors, "draws": result.draws,
              "confidence": result.confidence, "indices": indices}
    if args.save_draws:
        arrays.update(draw_errors=result.draw_errors, draw_timesteps=result.draw_timesteps)
    summary = {"checkpoint": str(args.checkpoint), "checkpoint_step": model.step, "images": source,
               "n_images": int(len(indices)), "candidates": result.candidates, "options": options.to_dict(),
               "seconds": result.seconds, "evaluations_per_image": float(result.evaluations.mean()),
               "draws_per_image": float(result.draws_used.mean()), "environment": environment()}
    if labels is not None:
        arrays["labels"] = labels[indices]
        report = classification_report(labels[indices], np.eye(N_CLASSES)[result.predictions])
        summary.update({"accuracy": report.accuracy, "balanced_accuracy": report.balanced_accuracy})
    summary["per_image"] = [
        {"index": int(i), "class": int(p), "class_name": CLASS_NAMES[p], "confidence": float(c),
         "draws": int(d), "mean_errors": [None if np.isnan(e) else float(e) for e in errs]}
        for i, p, c, d, errs in zip(indices, result.predictions, result.confidence, result.draws_used, result.mean_errors)]
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    write_json(record, summary)
    print(f"classified {len(indices)} images in {result.seconds:.1f} s "
          f"({summary['evaluations_per_image']:.0f} network evaluations per image); wrote {out} and "
          f"{out.with_suffix('.json')}")
    if labels is not None:
        print(f"accuracy {report.accuracy:.4f}, balanced accuracy {report.balanced_accuracy:.4f}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bloodgen import checks
    from bloodgen.classify.diffusion_eval import EvalConfig, run_evaluation
    from bloodgen.classify.reference import chosen_recipe
    from bloodgen.errors import UserError
    from bloodgen.sampling.api import parse_class
    from bloodgen.sampling.pretrained import resolve_model_path

    if args.summarise is not None:
        if args.checkpoint is not None:
            raise UserError("give a CHECKPOINT to evaluate or --summarise DIR ... to summarise, not both")
        from bloodgen.classify.diffusion_summary import write_summary

        checks.output_folder(args.out, "--out")
        summary = write_summary(args.summarise, args.out)
        print(f"summarised {len(summary['folders'])} folders into {Path(args.out) / 'report.md'}")
        return 0
    if args.checkpoint is None:
        raise UserError("classify-eval needs a CHECKPOINT (a conditional ddpm) or --summarise DIR ...")
    for path in filter(None, (args.checkpoint, args.holdout_checkpoint)):
        if not resolve_model_path(path).exists():
            raise UserError(f"checkpoint {path} not found")
    options = options_from_args(args)
    checks.output_folder(args.out, "--out")
    checks.device(args.device)
    recipe = chosen_recipe(args.classifier_recipe)
    if args.classifier_epochs is not None:
        if args.classifier_epochs < 1:
            raise UserError(f"--classifier-epochs must be >= 1, got {args.classifier_epochs}")
        recipe = replace(recipe, epochs=args.classifier_epochs)
    if args.classifier_seed is not None:
        checks.seed(args.classifier_seed, "--classifier-seed")
        recipe = replace(recipe, seed=args.classifier_seed)
    cfg = EvalConfig(checkpoint=args.checkpoint, out=args.out, data=args.data,
                     holdout_checkpoint=args.holdout_checkpoint, holdout_class=parse_class(args.holdout_class),
                     parts=tuple(args.parts), n_test=args.n_test, test_per_class=args.test_per_class,
                     n_val=args.n_val, n_anomaly=args.n_anomaly,
                     n_corrupt=args.n_corrupt,
                     corruptions=tuple(args.corruptions), severities=tuple(args.severities),
                     domains=tuple(args.domains), no_prune_draws=args.no_prune_draws, heatmap_draws=args.heatmap_draws,
                     heatmap_kind=args.heatmap_kind, seed=args.seed,
                     options=options, recipe=recipe, device=args.device, cache_dir=args.cache_dir,
                     progress=not args.no_progress)
    results = run_evaluation(cfg)
    print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.html'} "
          f"(parts: {', '.join(results.parts())})")
    return 0
