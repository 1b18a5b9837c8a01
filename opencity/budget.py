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
                              "delta": 1e-07, "status": "published"}, ...]}, ...],
     "non_dp_releases": [{"privacy_unit": "requester", "period": "2026-10",
                          "dataset": "opencity-311-requests-microdata",
                          "partition": "dt=2026-10-05", "method": "k_anonymity",
                          "epsilon": null, "k": 5, "k_counts": "persons", "l": 2,
                          "max_records_per_person": 4, "threshold": null}, ...]}

``status``: ``published``, ``rejected`` (a privacy officer rejected the release: the budget
stays spent, nothing was published) or ``spent`` (no publication in the release registry
yet, e.g. a command-line release written to a directory).
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


def release_statuses(db: Any, releases: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(dataset, partition) -> "published", "rejected" (a privacy officer's latest decision
    rejected it: spent, never published) or "spent" (no publication in the registry yet)."""
    from opencity.registry import Registry

    reg = Registry(db)
    out: dict[tuple[str, str], str] = {}
    latest: dict[str, dict[str, str]] = {}
    for ds, part in releases:
        if ds not in latest:
            latest[ds] = {d["partition"]: d["decision"] for d in reg.decisions(ds)}
        if reg.get(ds, part) is not None:
            out[(ds, part)] = "published"
        elif latest[ds].get(part) == "rejected":
            out[(ds, part)] = "rejected"
        else:
            out[(ds, part)] = "spent"
    return out


def budget_report(url: str) -> dict[str, Any]:
    """The JSON contract: {"units": [...]} (empty when nothing was released yet). Every
    release also says its ``status`` (:func:`release_statuses`)."""
    from privacy.dp.ledger import Ledger, StateDB

    db = StateDB(url)
    if db.path is not None and not db.path.exists():
        return {"units": []}
    accounts = Ledger(db).accounts()
    status = release_statuses(db, [(r["dataset"], r["partition"])
                                   for a in accounts for r in a["releases"]])
    from opencity.review.collect import non_dp_releases

    return {"non_dp_releases": non_dp_releases(url), "units": [
        {**{k: a[k] for k in UNIT_KEYS if k != "releases"},
         "releases": [{**{k: r[k] for k in RELEASE_KEYS},
                       "status": status[(r["dataset"], r["partition"])]}
                      for r in a["releases"]]}
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
    if not report["units"] and not report.get("non_dp_releases"):
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
            rejected = [r["partition"] for r in rel if r.get("status") == "rejected"]
            if rejected:
                print(f"        REJECTED by the privacy officer (spent, not published): "
                      f"{', '.join(rejected)}")
    if report.get("non_dp_releases"):
        print("  Releases that spend no epsilon (not differentially private):")
        for r in report["non_dp_releases"]:
            what = (f"k-anonymity, k = {r['k']} {r['k_counts'] or 'records'} per group"
                    if r["method"] == "k_anonymity" else
                    f"small-count suppression, threshold {r['threshold']}")
            cap = (f", at most {r['max_records_per_person']} records per person"
                   if r.get("max_records_per_person") else "")
            print(f"      {r['privacy_unit']:<11} {r['period'] or '-':<9} {r['dataset']} "
                  f"{r['partition']}: {what}{cap}")
    sys.stdout.flush()
    return 0
