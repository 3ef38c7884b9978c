"""The `bloodgen` command.

Each area of the package owns its subcommands in a small `cli` module with `add_parser(subparsers)`;
this file only ties them together and turns user errors into one-line messages with exit code 2.
Heavy imports (torch, matplotlib) happen inside the command functions so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from bloodgen import __version__
from bloodgen.errors import EXIT_USER_ERROR, UserError

SUBCOMMAND_MODULES = (
    "bloodgen.data.cli",
    "bloodgen.training.cli",
    "bloodgen.sampling.cli",
    "bloodgen.metrics.cli",
    "bloodgen.study.cli",
    "bloodgen.classify.cli",
    "bloodgen.improve.cli",
    "bloodgen.classify.diffusion_cli",
)

DESCRIPTION = """\
Train, compare and use generative models of BloodMNIST blood-cell images.

Run `bloodgen COMMAND --help` for a command's options and examples."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the hand-written examples in epilogs as written and shows every option's default."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bloodgen", description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"bloodgen {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None):
    return f"bloodgen: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = _one_line_warning
    try:
        result = args.func(args)
    except UserError as err:
        print(f"bloodgen: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("bloodgen: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
