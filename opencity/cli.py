"""The `opencity` command line.

Every feature package contributes its own subcommand: a module listed in SUBCOMMAND_MODULES
exposes ``register(subparsers)`` that adds one parser and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from opencity import __version__
from opencity.errors import PipelineError

# One line per feature package; each module defines register(subparsers).
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "sample_data.cli",
    "transforms.cli",
    "opencity.demo",
    "publish.cli",
    "privacy.kanon.cli",
    "privacy.mobility.cli",
    "kpi.cli",
    "opencity.budget",
    "opencity.review.cli",
    "opencity.verify",
    "opencity.run",
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opencity",
        description=(
            "OpenCity turns municipal service data and mobility records into open data a city "
            "can publish: it cleans and pseudonymizes the inputs, anonymizes them "
            "(k-anonymity or differential privacy), checks them with Great Expectations and "
            "publishes them to a local catalog or a CKAN portal."
        ),
        epilog="Run 'opencity COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"opencity {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or EXIT_OK)
    except PipelineError as err:
        kind = "temporary problem, retry later" if err.transient else type(err).__name__
        print(f"opencity {args.command}: error ({kind}): {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"opencity {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
