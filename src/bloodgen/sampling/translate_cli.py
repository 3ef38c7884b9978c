"""`bloodgen translate`: a BloodMNIST-format file translated into another domain by a cyclegan or aggan run."""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  bloodgen domains make --out domains
  bloodgen train --model cyclegan --preset cpu --data domains/A.npz --set source_domain=domains/stain.npz
  bloodgen translate runs/...-cyclegan-s0 domains/stain.npz --out stain-to-A.npz       # stain -> A
  bloodgen translate runs/...-aggan-s0 domains/A.npz --direction to_b --out A-to-stain.npz
  bloodgen classifier eval --data stain-to-A.npz ...      # every command reads the translated file
"""


def add_parser(subparsers) -> None:
    from bloodgen.cli import HelpFormatter
    from bloodgen.models.registry import translation_families

    p = subparsers.add_parser(
        "translate", help=f"translate a data file into another domain ({', '.join(translation_families())} runs)",
        description="Translate every split of a BloodMNIST-format file with a trained translation model (its EMA "
                    "generators): to_a maps the run's source domain (its source_domain file) into the domain it "
                    "was trained on (its --data), to_b the other way. Writes OUT.npz in the same format, labels "
                    "and order, and OUT.json naming the model and the input by hash.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("model", metavar="RUN", help="run folder, checkpoint .pt or exported model.safetensors")
    p.add_argument("input", metavar="INPUT.npz", help="the images to translate (a BloodMNIST-format file)")
    p.add_argument("--direction", choices=("to_a", "to_b"), default="to_a",
                   help="to_a: source domain -> the run's data domain; to_b: the reverse")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--out", metavar="OUT.npz", required=True, help="the translated file (OUT.json beside it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bloodgen import checks
    from bloodgen.data.domains import read_domain
    from bloodgen.errors import UserError
    from bloodgen.sampling.api import load_model
    from bloodgen.sampling.translate import check_translator, translate_file

    out = checks.output_file(args.out, "--out", ".npz")
    checks.output_file(out.with_suffix(".json"), "--out (its .json record)")
    if not Path(args.input).is_file():
        raise UserError(f"INPUT.npz {args.input} not found: give a BloodMNIST-format file (e.g. from bloodgen "
                        f"domains make)")
    model = load_model(args.model, checks.device(args.device))
    check_translator(model)
    source = read_domain(args.input)
    path = translate_file(model, source, out, args.direction)
    print(f"{model.spec.model} ({args.direction}): {sum(source.split_sizes.values()):,} images -> {path}")
    return 0
