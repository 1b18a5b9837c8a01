"""``opencity ingest``: ingest one raw file into clean and quarantine Parquet."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from opencity.errors import ConfigError


def _utc(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def register(subparsers) -> None:
    from transforms.profiles import shipped_profiles
    from transforms.schemas import SCHEMAS

    p = subparsers.add_parser(
        "ingest",
        help="type, check and pseudonymize one raw file; bad rows go to a quarantine",
        description=(
            "Read a CSV, JSON-lines or Parquet file of one source, type every column, convert "
            "timestamps to UTC, replace direct identifiers by keyed HMAC pseudonyms (key from "
            "OPENCITY_HMAC_KEY or the Airflow connection opencity_hmac) and write the clean "
            "rows to OUT/part-0.parquet. Rows that fail a check go to "
            "QUARANTINE/quarantine.parquet with a reason; the counts always reconcile."
        ),
    )
    p.add_argument("source", choices=sorted(SCHEMAS), help="which source the file holds")
    p.add_argument("input", type=Path, help="CSV, .jsonl or Parquet file (or Parquet folder)")
    p.add_argument("--out", type=Path, required=True, help="folder for the clean Parquet")
    p.add_argument("--quarantine", type=Path, help="folder for quarantined rows "
                   "(default: OUT/../quarantine)")
    p.add_argument("--profile", default="opencity", metavar="NAME|FILE",
                   help="how the file's columns map to OpenCity's: opencity (default), a "
                        f"shipped profile ({', '.join(shipped_profiles())}) or the path of a "
                        "profile .yaml file")
    p.add_argument("--start", type=_utc, help="data interval start (UTC unless an offset is given)")
    p.add_argument("--end", type=_utc, help="data interval end, exclusive")
    p.add_argument("--strict-interval", action="store_true",
                   help="quarantine rows outside the interval instead of leaving them to "
                        "other intervals")
    p.add_argument("--districts", type=Path, help="districts.csv for district checks/mapping")
    p.add_argument("--towers", type=Path, help="towers.csv for cell checks and region mapping")
    p.add_argument("--encoding", default="utf-8",
                   help="text encoding of a CSV or JSON-lines input (default: utf-8; e.g. "
                        "utf-16, latin-1, cp1252)")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from opencity.io import read_reference_csv
    from opencity.secrets import resolve_hmac_key
    from transforms.ingest import Reference, ingest_file
    from transforms.schemas import DISTRICTS, TOWERS

    if (args.start is None) != (args.end is None):
        raise ConfigError("give both --start and --end, or neither")
    if args.start and args.end <= args.start:
        raise ConfigError("--end must be after --start")
    ref = Reference(
        districts=read_reference_csv(args.districts, DISTRICTS) if args.districts else None,
        towers=read_reference_csv(args.towers, TOWERS) if args.towers else None,
    )
    result = ingest_file(
        args.source, args.input, args.out,
        quarantine_dir=args.quarantine or args.out.parent / "quarantine",
        key=resolve_hmac_key(), interval=(args.start, args.end) if args.start else None,
        reference=ref, profile=args.profile, strict_interval=args.strict_interval,
        encoding=args.encoding,
    )
    print(json.dumps(result.as_dict(), indent=2))
    return 0
