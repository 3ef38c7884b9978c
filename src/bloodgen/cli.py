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
    "bloodgen.data.domains_cli",
    "bloodgen.training.cli",
    "bloodgen.sampling.cli",
    "bloodgen.sampling.translate_cli",
    "bloodgen.metrics.cli",
    "bloodgen.study.cli",
    "bloodgen.study.demo_cli",
    "bloodgen.classify.cli",
    "bloodgen.classify.translate_eval_cli",
    "bloodgen.classify.turing_cli",
    "bloodgen.improve.cli",
    "bloodgen.classify.diffusion_cli",
    "bloodgen.cellfeatures.cli",
)

DESCRIPTION = """\
Train, compare and use generative models of BloodMNIST blood-cell images.

Run `bloodgen COMMAND --help` for a command's options and examples."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the hand-written examples in epilogs as written and shows an option's default once.

    A default is added only where the help text does not already say it ("default" in the text) and
    where it says something: not for required options, flags (False) or None (the text says what
    happens then).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error that names the subcommand and points at its --help."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bloodgen", description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"bloodgen {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _innermost(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser that parsed the chosen command, e.g. `bloodgen classifier train`'s."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = getattr(args, sub.dest, None) if sub is not None else None
        if chosen is None:
            return parser
        parser = sub.choices[chosen]


def _one_line_warning(message, category, filename, lineno, line=None):
    return f"bloodgen: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would blame the top-level command; the subcommand's usage is the useful one
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
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
