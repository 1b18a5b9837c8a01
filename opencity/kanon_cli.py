"""``opencity kanon``: release record-level data under k-anonymity (ARX-compatible)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from opencity.errors import ConfigError, NotAchievableError
from privacy.kanon.anonymize import anonymize
from privacy.kanon.hierarchy import Hierarchy
from privacy.kanon.io import read_table, write_json_atomic, write_parquet_atomic
from privacy.kanon.lattice import METRICS
from privacy.kanon.models import KAnonymity, LDiversity, TCloseness

log = logging.getLogger(__name__)

DESCRIPTION = """\
Generalize quasi-identifiers (age, gender, district, week, ...) and suppress a few records
so that every released record shares its quasi-identifiers with at least K-1 others
(k-anonymity), optionally with l-diversity or t-closeness of one sensitive column.
The generalization chosen is the one with the least information loss among all
combinations of hierarchy levels (the same optimum ARX finds for the same settings).

Writes the released table (Parquet) and a JSON report with the chosen levels, the
suppressed records, all utility metrics and the re-identification risks. When no
generalization satisfies the settings, nothing is released, the report says
"not achievable with these settings" and the exit code is non-zero.
"""

EPILOG = """\
hierarchies: ARX CSV format, no header, column 0 the original value, one column per
level, the last '*' (e.g. 39;35-39;30-39;20-39;*). A .yaml/.yml file is read as a
category tree (nested groups whose leaves are lists of values).

example:
  opencity kanon adult.csv --qi age=age.csv --qi sex=sex.csv --k 5 --suppression 0.04 \\
      --metric nu-entropy --out release.parquet --report report.json
"""


def _qi(spec: str) -> tuple[str, str]:
    column, sep, path = spec.partition("=")
    if not sep or not column or not path:
        raise argparse.ArgumentTypeError(f"expected COLUMN=HIERARCHY.csv, got {spec!r}")
    return column, path


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from err


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``kanon`` subcommand."""
    p = subparsers.add_parser(
        "kanon",
        help="release microdata under k-anonymity (optimal generalization, ARX-compatible)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT",
                   help="microdata file: CSV (separator --sep) or Parquet (.parquet)")
    p.add_argument("--qi", action="append", type=_qi, required=True,
                   metavar="COLUMN=HIERARCHY.csv",
                   help="a quasi-identifier and its hierarchy file; repeat for each")
    p.add_argument("--k", type=int, required=True, metavar="K",
                   help="minimum number of records per released class (>= 2)")
    p.add_argument("--suppression", type=_fraction, required=True, metavar="FRACTION",
                   help="largest share of records that may be suppressed, in [0, 1), "
                        "e.g. 0.04 for 4%%")
    p.add_argument("--sensitive", metavar="COLUMN",
                   help="sensitive column for l-diversity / t-closeness")
    p.add_argument("--l", type=_fraction, metavar="L",
                   help="l-diversity: distinct sensitive values (or entropy/recursive l) "
                        "required per class")
    p.add_argument("--l-variant", choices=("distinct", "entropy", "recursive"),
                   default="distinct", help="l-diversity variant (default: distinct)")
    p.add_argument("--c", type=_fraction, metavar="C",
                   help="c of recursive-(c,l)-diversity")
    p.add_argument("--t", type=_fraction, metavar="T",
                   help="t-closeness: largest distance between a class's sensitive "
                        "distribution and the whole table's, in [0, 1]")
    p.add_argument("--t-distance", choices=("auto", "equal", "ordered"), default="auto",
                   help="t-closeness ground distance: equal (categories), ordered "
                        "(numbers); auto picks ordered for numeric columns")
    p.add_argument("--metric", choices=METRICS, default="nu-entropy",
                   help="information loss to minimise (default: nu-entropy, "
                        "non-uniform entropy)")
    p.add_argument("--sep", default=";",
                   help="CSV separator of INPUT and of the hierarchy files (default ';', "
                        "as in ARX's files)")
    p.add_argument("--suppressed", choices=("mask", "remove"), default="mask",
                   help="suppressed records: keep them with every quasi-identifier '*' "
                        "(mask, as ARX) or leave them out (remove)")
    p.add_argument("--drop", action="append", default=[], metavar="COLUMN",
                   help="leave COLUMN out of the release (e.g. direct identifiers); repeat")
    p.add_argument("--risk-threshold", type=_fraction, default=0.2, metavar="R",
                   help="records whose re-identification risk exceeds R count as at risk "
                        "in the report (default 0.2)")
    p.add_argument("--out", required=True, metavar="OUT.parquet",
                   help="released table (written only if the settings are achievable)")
    p.add_argument("--report", required=True, metavar="REPORT.json",
                   help="risk and utility report (also written when the settings are "
                        "not achievable)")
    p.set_defaults(func=run)


def _load_hierarchy(path: str, sep: str) -> Hierarchy:
    suffix = Path(path).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return Hierarchy.from_yaml(path)
    return Hierarchy.from_csv(path, sep=sep)


def _skip_pandas() -> None:
    """Keep pyarrow from importing pandas when this process is ``opencity kanon`` itself.

    pyarrow imports pandas (when installed) on its first conversion from Python or numpy
    values; the command never needs it, and the import costs 0.5-10 s on a busy machine.
    Only applied when the process was started as the command (not when ``run`` is called
    from another program, which may want pandas later).
    """
    if sys.argv[1:2] == ["kanon"] and "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())


class _NoPandas:
    """Import finder that makes ``import pandas`` fail (pyarrow then works without it)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r} (not used by opencity kanon)",
                                      name=name)


def run(args: argparse.Namespace) -> int:
    """Execute ``opencity kanon``; returns 0 or raises a PipelineError."""
    _skip_pandas()
    qis = [c for c, _ in args.qi]
    hierarchies = {c: _load_hierarchy(path, args.sep) for c, path in args.qi}
    model = KAnonymity(k=args.k, quasi_identifiers=tuple(qis), max_suppression=args.suppression)
    ldiv = tcl = None
    if args.l is not None or args.t is not None:
        if not args.sensitive:
            raise ConfigError("--l and --t need --sensitive COLUMN")
    elif args.sensitive:
        raise ConfigError("--sensitive needs --l and/or --t")
    if args.l is not None:
        value = args.l if args.l_variant == "entropy" else _as_int(args.l, "--l")
        ldiv = LDiversity(args.sensitive, value, args.l_variant, args.c)
    elif args.c is not None:
        raise ConfigError("--c needs --l and --l-variant recursive")
    if args.t is not None:
        tcl = TCloseness(args.sensitive, args.t, args.t_distance)
    numeric = (args.sensitive,) if tcl is not None and args.t_distance != "equal" else ()
    table = read_table(args.input, sep=args.sep, numeric=numeric)
    missing = [c for c in args.drop if c not in table.column_names]
    if missing:
        raise ConfigError(f"--drop: no such column(s) {missing} in {args.input}")
    base = {"k": args.k, "suppression_limit": args.suppression, "metric": args.metric,
            "quasi_identifiers": qis, "input_rows": table.num_rows}
    try:
        result = anonymize(table, hierarchies, model, metric=args.metric, l_diversity=ldiv,
                           t_closeness=tcl, suppression=args.suppressed,
                           risk_threshold=args.risk_threshold,
                           progress=sys.stderr.isatty())
    except NotAchievableError as err:
        write_json_atomic({"achievable": False, "reason": str(err), **base,
                           "generalization": None, "suppressed_records": None,
                           "information_loss": None, "risk": None, "classes": None},
                          args.report)
        raise
    out = result.table
    if args.drop:
        out = out.drop_columns([c for c in args.drop if c in out.column_names])
    write_parquet_atomic(out, args.out)
    write_json_atomic(result.report, args.report)
    rep = result.report
    log.info(
        "released %d of %d records (k=%d, %d suppressed); levels %s; %s = %.6g",
        out.num_rows, table.num_rows, args.k, rep["suppressed_records"],
        rep["generalization"], args.metric, rep["information_loss"][args.metric],
    )
    return 0


def _as_int(value: float, flag: str) -> int:
    if value != int(value):
        raise ConfigError(f"{flag} must be a whole number for this l-diversity variant")
    return int(value)
