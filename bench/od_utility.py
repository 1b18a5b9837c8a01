"""Utility of the published origin-destination table against the true counts.

    python bench/od_utility.py RAW_DIR DAY [DAY ...] [--out DIR] [--seed N] [--json]

RAW_DIR is a raw sample-data layout (``opencity sample-data``: ``cdr/`` and
``city/towers.csv``). For each UTC day it runs the real daily release
(:func:`privacy.mobility.release.run_daily_release`, stored policy, a throwaway ledger) and
compares ``od_matrix.parquet`` with the true number of distinct subscribers per ordered
region pair, computed here independently from the raw CDR (consecutive events of a
subscriber on that day in distinct regions, in time order; no bounding, no noise).

Figures (the issue 22 target: >= 50 published cells per day and a median relative error
<= 50 % over cells whose true count is >= 50):

* published cells per day (status = published), withheld cells per day;
* cells per day with a true count >= 50;
* median relative error |published - true| / true over those cells (pooled over the days,
  and per day).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

MIN_TRUE = 50


def true_od_counts(raw: Path, day: date) -> dict[tuple[str, str], int]:
    """Distinct subscribers per (origin, destination) on ``day`` (UTC), exact, from raw CDR."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.sql(f"""
            WITH ev AS (
                SELECT c.subscriber_id AS sub, c.event_time::TIMESTAMPTZ AS ts,
                       t.region_id::VARCHAR AS region
                FROM read_parquet('{raw / "cdr"}/**/*.parquet') c
                JOIN read_csv('{raw / "city" / "towers.csv"}', header = true,
                              all_varchar = true) t ON c.cell_id = t.cell_id
                WHERE c.subscriber_id IS NOT NULL
                  AND c.event_time >= TIMESTAMPTZ '{day} 00:00:00+00'
                  AND c.event_time < TIMESTAMPTZ '{day} 00:00:00+00' + INTERVAL 1 DAY),
            moves AS (
                SELECT sub, lag(region) OVER (PARTITION BY sub ORDER BY ts, region) AS o,
                       region AS d
                FROM ev)
            SELECT o, d, count(DISTINCT sub) FROM moves
            WHERE o IS NOT NULL AND o <> d GROUP BY o, d
        """).fetchall()
    finally:
        con.close()
    return {(o, d): int(n) for o, d, n in rows}


def day_figures(published: list[dict[str, Any]], truth: dict[tuple[str, str], int]
                ) -> dict[str, Any]:
    """Figures of one day: published rows of od_matrix vs the true counts."""
    ok = [r for r in published if r["status"] == "published"]
    errors = [abs(r["value"] - truth[(r["origin"], r["destination"])])
              / truth[(r["origin"], r["destination"])]
              for r in ok if truth.get((r["origin"], r["destination"]), 0) >= MIN_TRUE]
    return {
        "published_cells": len(ok),
        "withheld_cells": len(published) - len(ok),
        "cells_true_ge_50": sum(n >= MIN_TRUE for n in truth.values()),
        "published_cells_true_ge_50": len(errors),
        "relative_errors_true_ge_50": errors,
        "median_relative_error_true_ge_50": statistics.median(errors) if errors else None,
        # signed: < 0 when the published values fall short (contribution bounding drops the
        # pairs of subscribers with more than max_od_pairs moves in a day)
        "median_signed_relative_error_true_ge_50": statistics.median(
            (r["value"] - truth[(r["origin"], r["destination"])])
            / truth[(r["origin"], r["destination"])]
            for r in ok if truth.get((r["origin"], r["destination"]), 0) >= MIN_TRUE
        ) if errors else None,
    }


def measure(raw: Path, days: list[date], out: Path, seed: int | None = None
            ) -> dict[str, Any]:
    """Release each day for real into ``out`` and compare with the true counts."""
    import pyarrow.parquet as pq

    from privacy.dp import Ledger
    from privacy.mobility.release import run_daily_release

    ledger = Ledger(out / "state.sqlite")
    per_day = {}
    for day in days:
        t0 = time.perf_counter()
        res = run_daily_release(raw / "cdr", raw / "city" / "towers.csv", day,
                                out / day.isoformat(), ledger=ledger, seed=seed)
        rows = pq.read_table(res.files["od_matrix"]).to_pylist()
        fig = day_figures(rows, true_od_counts(raw, day))
        fig["seconds"] = round(time.perf_counter() - t0, 2)
        fig["od_statement"] = {k: res.ledger_entry.release["products"]["od_matrix"][k]
                               for k in ("epsilon", "delta", "noise_std", "error_bound_95",
                                         "key_source", "selection_threshold_subscribers")}
        per_day[day.isoformat()] = fig
    pooled = [e for f in per_day.values() for e in f["relative_errors_true_ge_50"]]
    return {
        "days": per_day,
        "min_published_cells_per_day": min(f["published_cells"] for f in per_day.values()),
        "cells_true_ge_50": len(pooled),
        "median_relative_error_true_ge_50": statistics.median(pooled) if pooled else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("raw", type=Path)
    p.add_argument("days", nargs="+", type=date.fromisoformat)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="od-utility-"))
    res = measure(args.raw, args.days, out, seed=args.seed)
    if args.json:
        for f in res["days"].values():
            f.pop("relative_errors_true_ge_50")
        print(json.dumps(res, indent=2))
        return 0
    for day, f in res["days"].items():
        med = f["median_relative_error_true_ge_50"]
        print(f"{day}: {f['published_cells']} published, {f['withheld_cells']} withheld, "
              f"{f['published_cells_true_ge_50']} cells with true >= 50, median rel. error "
              f"{'-' if med is None else f'{med:.1%}'} ({f['seconds']} s)")
    med = res["median_relative_error_true_ge_50"]
    print(f"min published cells per day {res['min_published_cells_per_day']}; pooled median "
          f"relative error over {res['cells_true_ge_50']} cells with true >= 50: "
          f"{'-' if med is None else f'{med:.1%}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
