"""`bloodgen evaluate`: FID, KID, precision/recall, density/coverage and the real-vs-real floor."""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  bloodgen evaluate --floor                                  # the floor of the full protocol (10,000 x 5 seeds)
  bloodgen evaluate samples.npz --json eval.json             # samples vs all 17,092 real images, with the floor
  bloodgen evaluate samples_png/ --n 2000 --seeds 3          # a quicker look, floor at the same size
  bloodgen evaluate samples.npz --reference real.npz --metrics fid,kid
  bloodgen sample RUN -n 18640 --balanced --out b.npz && bloodgen evaluate b.npz --utility --utility-dir util/
  bloodgen evaluate --floor --n 500 --seeds 2 --data ~/datasets/bloodmnist.npz \\
      --inception-weights ~/weights/pt_inception-2015-12-05-6726825d.pth

SAMPLES and REAL are an .npz with key `images` (uint8, shape (N, 28, 28, 3)) and optional `labels` (N,),
or a folder of 28x28 PNG files. Labels on both sides add per-class FID and the class-averaged FID.
Features of the dataset's images are cached in the cache folder, so only the first run embeds them.
"""


def add_parser(subparsers) -> None:
    from bloodgen.cli import HelpFormatter
    from bloodgen.data.cli import add_data_argument
    from bloodgen.metrics.registry import METRICS, Options, default_metrics

    p = subparsers.add_parser(
        "evaluate", help="FID/KID/precision/recall of generated images, with the real-vs-real floor",
        description="Evaluate generated images with the seeded protocol: for each seed s, N real images drawn "
                    "without replacement from all BloodMNIST images (or --reference) against N generated images, "
                    "then FID, KID, precision/recall, density/coverage and per-class FID; per seed, mean and std. "
                    "The real-vs-real floor (same-pool and disjoint) is computed at the same N and seeds.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("samples", metavar="SAMPLES", nargs="?", default=None,
                   help="generated images: an .npz file or a folder of PNG files (omit with --floor)")
    p.add_argument("--reference", metavar="REAL", default=None,
                   help="real images (.npz or PNG folder) to compare with instead of the whole dataset")
    p.add_argument("--n", type=int, default=Options.n, help="images per side and seed")
    p.add_argument("--seeds", type=int, default=len(Options.seeds), help="number of seeds (0..S-1)")
    p.add_argument("--floor", action="store_true",
                   help="compute only the real-vs-real floor (no SAMPLES needed); with SAMPLES the floor is always "
                        "included")
    p.add_argument("--json", metavar="OUT.json", default=None, help="write every figure and parameter here")
    p.add_argument("--markdown", metavar="OUT.md", default=None, help="also write the printed Markdown here")
    p.add_argument("--metrics", default=",".join(default_metrics()),
                   help="comma-separated subset of: " + "; ".join(f"{name} ({spec.description})"
                                                                  for name, spec in METRICS.items()))
    p.add_argument("--isc", action="store_true",
                   help="also compute the Inception Score of the samples (needs weights with a real logits layer)")
    p.add_argument("--kid-subsets", type=int, default=Options.kid_subsets, help="KID: number of random subsets")
    p.add_argument("--kid-subset-size", type=int, default=Options.kid_subset_size,
                   help="KID: images per subset (capped at N)")
    p.add_argument("--inception-weights", metavar="PATH", default=None,
                   help="pytorch-fid weights pt_inception-2015-12-05-6726825d.pth; if omitted: "
                        "$BLOODGEN_INCEPTION_WEIGHTS, then the torch hub cache, then download")
    add_data_argument(p)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per network batch; if omitted: 50 on CPU, 500 on CUDA")
    p.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="feature cache folder; if omitted: $BLOODGEN_CACHE, then ~/.cache/bloodgen")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-seed lines on stderr")
    _add_utility_arguments(p)
    p.add_argument("--plausibility", action="store_true",
                   help="add the automated plausibility check: the fraction of SAMPLES whose cell and nucleus "
                        "measurements (size, shape, colour, texture) all lie within their class's central 95 %% of "
                        "real train cells, per class, beside the real test split's (about a minute the first time)")
    p.set_defaults(func=run)


def _add_utility_arguments(p) -> None:
    from bloodgen.classify.recipe import add_recipe_argument

    utility = p.add_argument_group(
        "utility", "with --utility: class fidelity, train-on-synthetic/test-on-real, augmentation and memorisation, "
                   "judged with the cached ResNet-18 reference classifier (trained on first use). SAMPLES must be "
                   "labelled and hold, per class, as many images as the real train split (TSTR) and as the "
                   "minority top-up needs: `--balanced -n 18640` covers both.")
    utility.add_argument("--utility", action="store_true", help="add the utility checks")
    utility.add_argument("--utility-dir", metavar="DIR", default="utility",
                         help="where utility.md, utility.html and their figures go")
    add_recipe_argument(utility, "reference classifier recipe")
    utility.add_argument("--memorisation-n", type=int, default=5000,
                         help="generated images checked for memorisation (nearest training image)")
    utility.add_argument("--memorisation-space", choices=("both", "pixels"), default="both",
                         help="'pixels' skips the Inception-feature check, which embeds all 15,380 train and test "
                              "images once (cached; ~15 min on 2 CPU cores the first time)")


def run(args: argparse.Namespace) -> int:
    from bloodgen import checks
    from bloodgen.errors import UserError
    from bloodgen.metrics.protocol import calculate_metrics
    from bloodgen.metrics.report import plausibility_markdown, to_markdown_report
    from bloodgen.provenance import write_json, write_text

    if args.samples is None and not args.floor:
        raise UserError("give SAMPLES (an .npz file or a folder of PNG files) to evaluate, or --floor for the "
                        "real-vs-real floor alone")
    for flag, on in (("--utility", args.utility), ("--plausibility", args.plausibility)):
        if on and args.samples is None:
            raise UserError(f"{flag} judges generated images: give SAMPLES")
    checks.positive(args.memorisation_n, "--memorisation-n")
    checks.device(args.device)
    if args.json:
        checks.output_file(args.json, "--json", ".json")
    if args.markdown:
        checks.output_file(args.markdown, "--markdown")
    if args.utility:
        checks.output_folder(args.utility_dir, "--utility-dir")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    result = calculate_metrics(
        args.samples, reference=args.reference, n=args.n, seeds=args.seeds, floor=True, metrics=metrics,
        isc=args.isc, data=args.data, inception_weights=args.inception_weights, device=args.device,
        batch_size=args.batch_size, cache_dir=args.cache_dir, kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size, progress=not args.quiet, extractors=_extractors(args, metrics))
    markdown = to_markdown_report(result)
    if args.utility:
        result["utility"] = _utility(args)
    if args.plausibility:
        result["plausibility"] = _plausibility(args)
        markdown += "\n" + plausibility_markdown(result["plausibility"])
    print(markdown)
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    if args.markdown:
        write_text(args.markdown, markdown)
        print(f"wrote {args.markdown}")
    return 0


def _extractors(args: argparse.Namespace, metrics: list[str]) -> dict:
    """The reference classifier's feature extractor when a selected metric reads that space."""
    from bloodgen.metrics.registry import CLASSIFIER, METRICS

    if not any(name in METRICS and METRICS[name].space == CLASSIFIER for name in metrics):
        return {}
    from bloodgen.classify.features import classifier_extractor
    from bloodgen.classify.reference import chosen_recipe
    from bloodgen.data import load_bloodmnist

    recipe = chosen_recipe(args.classifier_recipe)
    return {CLASSIFIER: classifier_extractor(load_bloodmnist(args.data), recipe, cache_dir=args.cache_dir,
                                             device=args.device, progress=not args.quiet)}


def _plausibility(args: argparse.Namespace) -> dict:
    from bloodgen.data import load_bloodmnist
    from bloodgen.metrics.inputs import load_images
    from bloodgen.metrics.plausibility import evaluate_plausibility

    samples = load_images(args.samples)
    return evaluate_plausibility(samples.images, samples.labels, load_bloodmnist(args.data), cache_dir=args.cache_dir,
                                 progress=not args.quiet)


def _utility(args: argparse.Namespace) -> dict:
    """The utility checks of SAMPLES, written as a small report in --utility-dir; returns the figures."""
    from pathlib import Path

    from bloodgen.classify.reference import chosen_recipe
    from bloodgen.classify.utility import evaluate_utility
    from bloodgen.classify.utility_report import plot_fidelity_confusions, plot_nearest_pairs, utility_blocks
    from bloodgen.data import load_bloodmnist
    from bloodgen.metrics.inputs import load_images
    from bloodgen.report.document import Document, Heading, write_report

    samples = load_images(args.samples)
    data = load_bloodmnist(args.data)
    extractor = None
    if args.memorisation_space == "both":
        from bloodgen.metrics.inception import inception_extractor

        extractor = inception_extractor(args.inception_weights, device=args.device, batch_size=args.batch_size,
                                        progress=not args.quiet)
    report = evaluate_utility((samples.images, samples.labels), data,
                              recipe=chosen_recipe(args.classifier_recipe),
                              cache_dir=args.cache_dir, extractor=extractor, memorisation_n=args.memorisation_n)
    out = Path(args.utility_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.samples).stem
    figures = {}
    if plot_fidelity_confusions({name: report}, out / "fidelity_confusion.png"):
        figures["Class-fidelity confusion matrix (rows: class generated for)"] = "fidelity_confusion.png"
    for space in ("pixels", "inception"):
        if plot_nearest_pairs({name: (samples.images, report)}, data.images("train"), out / f"nearest_{space}.png",
                              space=space):
            figures[f"Closest generated/training pairs ({space})"] = f"nearest_{space}.png"
    doc = Document(f"Utility of {args.samples}", [Heading("Utility"), *utility_blocks({name: report}, figures)])
    md, html = write_report(doc, out, stem="utility")
    print(f"wrote {md} and {html}")
    return report
