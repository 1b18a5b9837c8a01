"""``opencity budget RUN_DIR [--json]``: every privacy-loss account, its spends and its cap.

The accounts are the portal's (privacy unit, period) accounts of the budget ledger. The state
DB is the one RUN_DIR names in ``RUN_DIR/state.url`` (a run that keeps its own state, like
the demo), else the settings default (``OPENCITY_STATE_URL`` or
``~/.local/share/opencity/state.sqlite``).

JSON (a contract other tools rely on)::

    {"units": [{"unit": "subscriber", "period": "2026-10",
                "spent_epsilon": 15.0, "spent_delta": 1.4e-06,
                "cap_epsilon": 32.0, "cap_delta": 1e-05,
                "releases": [{"dataset": "opencity-cdr-mobility-daily",
                              "partition": "dt=2026-10-05", "epsilon": 1.0,
                              "delta": 1e-07}, ...]}, ...]}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError
from opencity.runstore import location

RELEASE_KEYS = ("dataset", "partition", "epsilon", "delta")
UNIT_KEYS = ("unit", "period", "spent_epsilon", "spent_delta", "cap_epsilon", "cap_delta",
             "releases")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``budget`` subcommand."""
    p = subparsers.add_parser(
        "budget",
        help="show the privacy budget spent per person (privacy unit) and period",
        description=(
            "Show every privacy-loss account of the portal: for each privacy unit "
            "(subscriber, household, card, requester) and period (calendar month), the "
            "epsilon and delta spent by all releases together, the cap from the release "
            "policy, and the releases that spent it."),
        epilog=("Example: opencity budget opencity-demo --json. The state database is the "
                "one named in RUN_DIR/state.url (the demo keeps its own), else "
                "$OPENCITY_STATE_URL or ~/.local/share/opencity/state.sqlite."),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=location,
                   help="a run directory, local or on object storage (s3://bucket/run); "
                        "used to find a state DB the run keeps itself")
    p.add_argument("--json", action="store_true", help="print JSON (keys: units)")
    p.set_defaults(func=run)


def state_url_for(run_dir: Path | str) -> str:
    """RUN_DIR/state.url if the run keeps its own state, else the settings default.

    RUN_DIR may be a local folder or an object-storage URL (``s3://bucket/run``)."""
    from opencity.runstore import join, read_text
    from opencity.settings import Settings

    text = read_text(run_dir, "state.url")
    if text is not None:
        url = text.strip()
        if not url:
            raise ConfigError(f"{join(str(run_dir), 'state.url')} is empty; it should hold "
                              "the run's state URL")
        return url
    return Settings.resolve().state_url


def budget_report(url: str) -> dict[str, Any]:
    """The JSON contract: {"units": [...]} (empty when nothing was released yet)."""
    from privacy.dp.ledger import Ledger, StateDB

    db = StateDB(url)
    if db.path is not None and not db.path.exists():
        return {"units": []}
    accounts = Ledger(db).accounts()
    return {"units": [
        {**{k: a[k] for k in UNIT_KEYS if k != "releases"},
         "releases": [{k: r[k] for k in RELEASE_KEYS} for r in a["releases"]]}
        for a in accounts]}


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def run(args: argparse.Namespace) -> int:
    """Print the accounts (table or JSON)."""
    from privacy.dp.ledger import redact_url

    url = state_url_for(args.run_dir)
    report = budget_report(url)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"Privacy budget per person, state {redact_url(url)}")
    if not report["units"]:
        print("  nothing released yet")
        return 0
    head = f"  {'unit':<11} {'period':<9} {'spent eps':>10} {'cap eps':>8} " \
           f"{'spent delta':>12} {'cap delta':>10} {'releases':>8}"
    print(head)
    for a in report["units"]:
        over = (a["cap_epsilon"] is not None and a["spent_epsilon"] > a["cap_epsilon"] + 1e-9)
        print(f"  {a['unit']:<11} {a['period']:<9} {_fmt(a['spent_epsilon']):>10} "
              f"{_fmt(a['cap_epsilon']):>8} {_fmt(a['spent_delta']):>12} "
              f"{_fmt(a['cap_delta']):>10} {len(a['releases']):>8}"
              + ("  OVER CAP (this is a bug)" if over else ""))
        by_ds: dict[str, list] = {}
        for r in a["releases"]:
            by_ds.setdefault(r["dataset"], []).append(r)
        for ds, rel in by_ds.items():
            eps = sum(r["epsilon"] for r in rel)
            print(f"      {ds}: {len(rel)} release(s), epsilon {eps:.6g} "
                  f"({', '.join(r['partition'] for r in rel[:3])}"
                  f"{', ...' if len(rel) > 3 else ''})")
    sys.stdout.flush()
    return 0
