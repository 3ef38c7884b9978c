"""`bloodgen domains make`: shifted domains of BloodMNIST (artificial, stain, scope) as BloodMNIST files."""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  bloodgen domains make --out domains                        # A, artificial, stain and scope
  bloodgen domains make --out domains --domains stain --seed 1
  bloodgen train --model ddpm --data domains/A.npz           # every command takes a domain file
  bloodgen classifier train --data domains/A.npz            # a reference classifier of domain A alone
  bloodgen domains normalise domains/stain.npz --to domains/A.npz --method reinhard --out stain-reinhard.npz
  bloodgen translate-eval --folder domains --seeds 0 1 2 --out domain-shift  # S_A under each shift
"""


def add_parser(subparsers) -> None:
    from bloodgen.cli import HelpFormatter
    from bloodgen.data.cli import add_data_argument
    from bloodgen.data.domains import DOMAINS

    listing = "; ".join(f"{name}: {d.description}" for name, d in DOMAINS.items())
    p = subparsers.add_parser(
        "domains", help="shifted domains of BloodMNIST: the same cells as another lab would image them",
        description="Shifted domains built from BloodMNIST by deterministic transforms, for robustness and "
                    "domain-translation work: a classifier trained in domain A, tested on the same cells in "
                    "another domain.", epilog=EXAMPLES, formatter_class=HelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    make = actions.add_parser(
        "make", help="write domain A and the shifted domains as BloodMNIST .npz files",
        description="Cut the official train split, class by class, into disjoint parts (part 0 stays domain A, "
                    "part j becomes the j-th shifted domain: training data never shows one cell in two domains); "
                    "transform all of val and test, so the same test cells exist in every domain. Writes "
                    "A.npz and <domain>.npz (each with a .json saying how it was made) and domains.png. Domains: "
                    + listing + ".",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    add_data_argument(make)
    make.add_argument("--out", metavar="DIR", required=True, help="folder for the domain files and domains.png")
    make.add_argument("--domains", nargs="+", metavar="NAME", default=list(DOMAINS),
                      help=f"shifted domains to make, from: {', '.join(DOMAINS)} (default: all)")
    make.add_argument("--seed", type=int, default=0, help="seed of the cut of the train split")
    make.set_defaults(func=run)
    from bloodgen.data.domains import NORMALISERS

    norm = actions.add_parser(
        "normalise", help="move a domain file's colours to another's (Reinhard or histogram matching)",
        description="The classical answer to a stain or scope shift, and the baseline a translation model must "
                    "beat: every split of DOMAIN.npz moved to the colours of REFERENCE.npz's train images, written "
                    "as a BloodMNIST file (with a .json saying how). reinhard: each image's L*a*b* mean and spread "
                    "set to the reference's (Reinhard et al. 2001); histogram: each image's channel histograms "
                    "mapped onto the reference's pooled ones.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    norm.add_argument("domain", metavar="DOMAIN.npz", help="the images to normalise (e.g. domains/stain.npz)")
    norm.add_argument("--to", metavar="REFERENCE.npz", required=True, dest="reference",
                      help="the domain whose colours to take (e.g. domains/A.npz)")
    norm.add_argument("--method", choices=tuple(NORMALISERS), default="reinhard", help="normalisation")
    norm.add_argument("--out", metavar="OUT.npz", required=True, help="the normalised file")
    norm.set_defaults(func=run_normalise)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bloodgen import checks
    from bloodgen.data.bloodmnist import load_bloodmnist
    from bloodgen.data.domains import domains_figure, get_domains, make_domains

    checks.output_folder(args.out, "--out")
    checks.seed(args.seed)
    get_domains(args.domains)  # a bad name fails before the data is read
    data = load_bloodmnist(args.data)
    paths = make_domains(data, args.out, args.domains, seed=args.seed)
    figure = domains_figure(paths, Path(args.out))
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"the same test cells in every domain: {figure}")
    return 0


def run_normalise(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bloodgen import checks
    from bloodgen.data.domains import normalise_file, read_domain
    from bloodgen.errors import UserError

    for option, path in (("DOMAIN.npz", args.domain), ("--to", args.reference)):
        if not Path(path).is_file():
            raise UserError(f"{option} {path} not found: give a domain file of `bloodgen domains make`")
    out = checks.output_file(args.out, "--out", ".npz")
    checks.output_file(out.with_suffix(".json"), "--out (its .json record)")
    source, reference = read_domain(args.domain), read_domain(args.reference)
    path = normalise_file(source, reference, args.method, out)
    print(f"{args.method}: {path} ({sum(source.split_sizes.values()):,} images)")
    return 0
