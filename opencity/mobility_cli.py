"""``opencity mobility``: one day of differentially private mobility statistics from CDR."""

from __future__ import annotations

import argparse
import math
import sys
from datetime import date
from pathlib import Path

from opencity.errors import ConfigError, PipelineError


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if math.isnan(value) or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``mobility`` subcommand."""
    p = subparsers.add_parser(
        "mobility",
        help="publish one day of differentially private mobility statistics from CDR",
        description=(
            "Turn one day of mobile-phone events (CDR) into four open mobility tables with "
            "differential privacy, so that no subscriber can be singled out: subscribers per "
            "region per hour, an origin-destination matrix between regions, subscribers per "
            "home region (where they are at night) and a histogram of how far people range "
            "during the day (radius of gyration). Each table uses a fixed share of the "
            "day's privacy budget --epsilon (40/30/20/10 %) and every number comes with its "
            "noise level and 95 % error bound. The budget is recorded in the portal's "
            "ledger, one account per subscriber per month across every dataset, capped by "
            "the stored release policy: a day cannot be released twice beyond its budget, "
            "and rerunning the same day returns the recorded release."
        ),
        epilog=(
            "Example: opencity mobility raw/cdr --towers raw/city/towers.csv --epsilon 1 "
            "--date 2026-10-05 --out release/2026-10-05. "
            "Writes hourly_presence.parquet, od_matrix.parquet, home_region.parquet, "
            "gyration.parquet and privacy.json in --out (publishable), and _run/report.json "
            "(rows read and set aside, for the operator only). Without --delta the "
            "origin-destination table publishes every pair of regions with its noise; with "
            "--delta (only if the policy allows one; the stored policy's is 0) a pair is "
            "published only if it passes a noisy threshold, and the others are listed with "
            "status withheld and a withheld_reason."
        ),
    )
    p.add_argument("cdr", metavar="CDR.parquet",
                   help="CDR events: a Parquet file, a directory of part files or a glob, "
                        "with subscriber_pid (or raw subscriber_id), event_time (UTC), cell_id")
    p.add_argument("--towers", required=True, type=Path, metavar="TOWERS.csv",
                   help="cell tower table with cell_id, lat, lon, region_id")
    p.add_argument("--epsilon", type=_float, default=None, metavar="E",
                   help="privacy budget per subscriber for this day, all tables together "
                        "(> 0; smaller = more private, noisier). At most the release "
                        "policy's per-release epsilon (default: the policy's, 1.0): a larger "
                        "value is refused")
    p.add_argument("--delta", type=_float, default=0.0, metavar="D",
                   help="probability that a rare origin-destination pair leaks; must be "
                        "below 1/number of subscribers and at most the policy's "
                        "per-release delta (default: 0 = none; the stored policy allows none)")
    p.add_argument("--date", required=True, type=_date, metavar="YYYY-MM-DD",
                   help="the day (UTC) to release; events on other days are counted and "
                        "set aside")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="output directory (created if missing)")
    p.add_argument("--ledger", default=None, metavar="URL",
                   help="the portal's state database holding the privacy-budget ledger: a "
                        "SQLite file or a postgresql:// URL (default: $OPENCITY_STATE_URL or "
                        "~/.local/share/opencity/state.sqlite, the same one the DAGs use). "
                        "Caps are not a flag: they come from the release policy "
                        "(privacy/policy.yaml or $OPENCITY_POLICY)")
    p.add_argument("--release-id", default="daily", metavar="ID",
                   help="name of this release; rerunning a day with the same id returns the "
                        "recorded release without spending budget (default: daily)")
    p.add_argument("--max-region-hours", type=_int, default=24, metavar="N",
                   help="most region-hours one subscriber counts in (default: 24)")
    p.add_argument("--max-od-pairs", type=_int, default=4, metavar="N",
                   help="most origin-destination pairs one subscriber counts in (default: 4)")
    p.add_argument("--seed", type=_int, default=None, metavar="N",
                   help="fix sampling and noise (tests only: never for a real release)")
    p.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb",
                   help="where the row-level steps run: duckdb (embedded, default) or spark "
                        "(the operator's cluster; only aggregates come back, the ledger, "
                        "noise and statement stay here)")
    p.add_argument("--spark-master", default=None, metavar="URL",
                   help="Spark master for --engine spark: spark://host:port or local[N] "
                        "(default: $OPENCITY_SPARK_MASTER, else local[*])")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run one daily release and print where it went."""
    from tqdm import tqdm

    from privacy.approval import ApprovalStore
    from privacy.dp import DPBudget
    from privacy.dp.ledger import default_state_url
    from privacy.mobility.release import DATASET, run_daily_release
    from privacy.policy import load_policy

    # No approval gate follows this command: the policy version must be approved already.
    ApprovalStore(args.ledger or default_state_url()).require_approved(load_policy(), DATASET)
    eps = args.epsilon
    if eps is None:
        eps = load_policy().dataset(DATASET).budget.epsilon
    budget = DPBudget(eps, args.delta)  # checked against the policy (tighten only)
    if args.spark_master and args.engine != "spark":
        raise ConfigError("--spark-master needs --engine spark")
    if args.seed is not None and args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    steps = ["read", "hourly_presence", "od_matrix", "home_region", "gyration", "ledger"]
    bar = tqdm(total=len(steps), desc="mobility", unit="step", file=sys.stderr,
               disable=args.quiet)

    def progress(step: str) -> None:
        bar.set_postfix_str(step)
        bar.update(1)

    try:
        result = run_daily_release(
            args.cdr, args.towers, args.date, args.out, budget, ledger=args.ledger,
            release_id=args.release_id, seed=args.seed,
            config={"max_region_hours": args.max_region_hours,
                    "max_od_pairs": args.max_od_pairs},
            progress=progress, engine=args.engine, spark_master=args.spark_master,
        )
    finally:
        bar.close()
    entry = result.ledger_entry
    if result.reused:
        print(f"Release {args.date} ({args.release_id}) was already recorded in the ledger "
              f"(entry {entry.id}); rewrote it to {result.out_dir} without spending budget.")
    else:
        print(f"Released {args.date} to {result.out_dir}: spent epsilon={entry.epsilon:g}, "
              f"delta={entry.delta:g} per subscriber (ledger entry {entry.id}).")
    doc_cap = entry.release.get("cap") or {}
    if doc_cap:
        from privacy.dp import Ledger
        from privacy.dp.ledger import default_state_url

        # The spend is committed and the files are complete: the per-person total is
        # information only, and a state DB that stops answering now (e.g. a restart) must
        # not turn a finished release into a failed command.
        try:
            spent = Ledger(args.ledger or default_state_url()).spent(entry.spends[0].unit,
                                                                     args.date)
        except PipelineError as err:
            print(f"  per-person total not shown ({type(err).__name__}: the state database "
                  "did not answer after the release was recorded); see opencity budget",
                  file=sys.stderr)
        else:
            print(f"  per-person total {entry.spends[0].unit} {entry.spends[0].period}: "
                  f"epsilon {spent[0]:g} of {doc_cap['epsilon']:g}, delta {spent[1]:g} of "
                  f"{doc_cap['delta']:g} (every dataset of the portal; see opencity budget)")
    for name, path in result.files.items():
        print(f"  {name:<16} {path}")
    set_aside = result.report.get("rows_set_aside") or {}
    if set_aside:
        details = ", ".join(f"{n:,} {reason}" for reason, n in set_aside.items())
        print(f"  rows set aside: {details} (see _run/report.json)", file=sys.stderr)
    return 0
