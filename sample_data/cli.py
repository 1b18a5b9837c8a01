"""``opencity sample-data``: write a synthetic city's raw data to a directory."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path

from sample_data.config import DEFAULT_CHUNK_ROWS, DEFAULT_START


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from err


def _number(kind: type):
    def parse(text: str):
        try:
            return kind(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from err
    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sample-data`` subcommand."""
    p = subparsers.add_parser(
        "sample-data",
        help="generate a synthetic city's raw data (CDR, 311, meters, transit, waste)",
        description=(
            "Generate realistic, entirely fictional raw data for a city of ~300,000 people: "
            "districts and cell towers, mobile phone events (CDR), 311 service requests with "
            "the requesters' personal data, water and electricity meters with hourly smart-"
            "meter readings, transit tap-ins and waste pickups. The same seed always gives "
            "the same files. The data contains fake personal data on purpose, to exercise the "
            "privacy steps: do not publish it as is."
        ),
        epilog=(
            "Writes DIR/city (districts, towers), DIR/cdr (Parquet parts), "
            "DIR/service_requests, DIR/meters (registry, readings), DIR/transit (stops, taps) "
            "and DIR/waste; timestamps are UTC. At --scale 1 (default) the city has ~100,000 CDR events, ~3,000 service requests, "
            "~2,000 households and ~20,000 transit taps per 14 days, in a few seconds. "
            "--scale 100 gives 10 million CDR events (a minute or two, bounded memory). "
            "Example: opencity sample-data --out raw --seed 7 --scale 0.5"
        ),
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="output directory (created if missing; files from an earlier run in it "
                        "are replaced)")
    p.add_argument("--seed", type=_number(int), default=42, metavar="N",
                   help="random seed, a non-negative integer (default: 42)")
    p.add_argument("--scale", type=_number(float), default=1.0, metavar="S",
                   help="activity multiplier > 0: 1 = ~100k CDR events, 100 = ~10M "
                        "(default: 1.0)")
    p.add_argument("--start", type=_date, default=DEFAULT_START, metavar="YYYY-MM-DD",
                   help=f"first day of the data, in UTC (default: {DEFAULT_START})")
    p.add_argument("--days", type=_number(int), default=14, metavar="D",
                   help="number of days of data (default: 14)")
    p.add_argument("--chunk-rows", type=_number(int), default=None, metavar="N",
                   help="rows per Parquet part file for CDR events and meter readings "
                        "(default: 1,000,000)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the data and print a summary of row counts per file (or file group)."""
    from sample_data.generator import generate

    counts = generate(args.out, seed=args.seed, scale=args.scale, start=args.start,
                      days=args.days, progress=not args.quiet,
                      chunk_rows=args.chunk_rows or DEFAULT_CHUNK_ROWS)
    groups: dict[str, list[int]] = defaultdict(list)
    for rel, rows in counts.items():
        key = rel.rsplit("/", 1)[0] + "/part-*.parquet" if "/part-" in rel else rel
        groups[key].append(rows)
    width = max(len(k) for k in groups)
    print(f"Sample data written to {Path(args.out).resolve()}")
    for key, rows in groups.items():
        files = f"  ({len(rows)} files)" if len(rows) > 1 else ""
        print(f"  {key:<{width}}  {sum(rows):>12,} rows{files}")
    sys.stdout.flush()
    return 0
