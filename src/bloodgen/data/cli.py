"""`bloodgen data`: load, validate and describe BloodMNIST."""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  bloodgen data --out data-report
  bloodgen data --data ~/datasets/bloodmnist.npz --out data-report
  BLOODGEN_DATA=~/datasets bloodgen data --out data-report --seed 1
"""


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """The shared `--data` option of every command that reads BloodMNIST."""
    parser.add_argument("--data", metavar="PATH", default=None,
                        help="bloodmnist.npz or the folder holding it (default: $BLOODGEN_DATA, then ~/.medmnist, "
                             "then medmnist's download)")


def add_parser(subparsers) -> None:
    from bloodgen.cli import HelpFormatter

    p = subparsers.add_parser(
        "data", help="load, validate and analyse BloodMNIST (counts, statistics, figures)",
        description="Load and validate BloodMNIST, then write a Markdown summary, a JSON file of every "
                    "figure and PNG plots: class counts, channel statistics, mean images, samples per class, "
                    "RGB histograms and exact duplicates across splits.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    add_data_argument(p)
    p.add_argument("--out", metavar="DIR", default="data-report", help="folder for summary.md, summary.html, summary.json and PNGs")
    p.add_argument("--seed", type=int, default=0, help="seed for the random sample grid")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bloodgen import checks
    from bloodgen.data.analysis import analyse
    from bloodgen.data.bloodmnist import load_bloodmnist

    checks.output_folder(args.out, "--out")
    checks.seed(args.seed)
    data = load_bloodmnist(args.data)
    summary = analyse(data, args.out, seed=args.seed)
    counts = summary["class_counts"]["counts"]
    print(f"BloodMNIST {data.path}: train {sum(counts['train'])}, val {sum(counts['val'])}, "
          f"test {sum(counts['test'])} images; {summary['duplicates']['n_groups']} duplicate groups")
    print(f"wrote {args.out}/summary.md, summary.html, summary.json and {len(summary['figures'])} figures")
    return 0
