"""The `opencity` command line.

Every feature package contributes its own subcommand: a module listed in SUBCOMMAND_MODULES
exposes ``register(subparsers)`` that adds one parser and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from opencity import __version__
from opencity.errors import PipelineError

# One line per feature package; each module defines register(subparsers).
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "sample_data.cli",
    "opencity.ingest_cli",
    "opencity.demo",
    "opencity.publish_cli",
    "opencity.kanon_cli",
    "opencity.mobility_cli",
    "opencity.kpi_cli",
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


def absolute_paths(args: argparse.Namespace) -> argparse.Namespace:
    """Every local path argument (run directories, --out, --raw-dir, ...) made absolute,
    once, before any command uses it: a relative one would change meaning under code that
    follows symbolic links or changes folder (the local catalog's ``current`` link).
    Object-storage URLs (``s3://...``, kept as strings) are left as they are."""
    for name, value in vars(args).items():
        if isinstance(value, Path):
            setattr(args, name, Path(os.path.abspath(value.expanduser())))
    return args


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
    absolute_paths(args)
    try:
        return int(args.func(args) or EXIT_OK)
    except PipelineError as err:
        kind = "temporary problem, retry later" if err.transient else type(err).__name__
        print(f"opencity {args.command}: error ({kind}): {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"opencity {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        _restrict(args)


# Commands that write into a run directory (the readers - report, budget, approvals - only
# read one, possibly another account's, and never change its modes).
WRITING_COMMANDS = ("publish", "kpi", "approve", "withdraw")
# What makes a folder a run directory (never tighten a folder that is not one, e.g. ~).
RUN_MARKERS = ("outputs", "clean", "csv", "manifests", "_runs", "state.url")


def _restrict(args: argparse.Namespace) -> None:
    """After a command that wrote into a local run directory: everything not published is
    owner-only (opencity.io.restrict_run_tree), whatever the umask."""
    run_dir = getattr(args, "run_dir", None)
    if (args.command not in WRITING_COMMANDS or not isinstance(run_dir, Path)
            or not run_dir.is_dir() or not any((run_dir / m).exists() for m in RUN_MARKERS)):
        return
    from opencity.io import restrict_run_tree

    try:
        restrict_run_tree(run_dir)
    except OSError as err:
        logging.getLogger(__name__).warning("could not restrict %s: %s", run_dir, err)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
