"""Benchmark and accuracy report: the city examples (examples/<city>/) through the real 311 DAG.

For each city, runs ``opencity run opencity_311 --config examples/<city> --raw DIR --out RUN
--from FROM --to TO`` as a steward would (the real DAG with ``dag.test()``, one interval after
the other), on the city's real extract (tests/data/311_*), with a fresh state database whose
policy is approved by a throwaway officer (opencity.review.testing, as the tests do). Then
compares what the catalog published with the truth:

* per published week: the sum of the published ``requests`` cells (the zero-floored noisy
  counts a user downloads) and the sum of ``requests_unfloored`` against the true number of
  clean requests of the week (the clean partition of the run, which only the benchmark
  reads); the median relative error over weeks is the accuracy figure of issue 21;
* the granularity level the ladder chose per week (privacy.json of each partition);
* wall time of the whole command, seconds per interval (from the run summary), rows clean /
  quarantined with the top quarantine reasons (the run's ingest manifests).

Writes bench/results/city-examples.json and prints a table.

Usage: .venv/bin/python bench/city_examples.py [--city boston] [--from ... --to ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
# city -> (extract, [from, to)) : the extract's real date range (issue 21's done-when)
CITIES = {
    "boston": (DATA / "311_boston_sample" / "boston_311.csv", "2024-12-30", "2025-06-02"),
    "nyc": (DATA / "311_nyc_sample" / "nyc311.csv", "2019-12-30", "2020-01-06"),
    "baltimore": (DATA / "311_baltimore" / "311_sample.csv", "2018-01-01", "2018-12-31"),
}
WEEKLY = "opencity-311-requests-weekly"


def run_city(city: str, start: str, end: str, work: Path) -> dict:
    import pyarrow.parquet as pq

    from opencity.review.testing import approve_policy

    extract = CITIES[city][0]
    config = ROOT / "examples" / city
    state = work / "state.db"
    env = {**os.environ, "OPENCITY_STATE_URL": str(state),
           "OPENCITY_POLICY": str(config / "policy.yaml"),
           # a throwaway pseudonymization key for the benchmark (a city uses its own secret)
           "OPENCITY_HMAC_KEY": os.environ.get("OPENCITY_HMAC_KEY") or os.urandom(24).hex()}
    os.environ.update({k: env[k] for k in ("OPENCITY_STATE_URL", "OPENCITY_POLICY")})
    approve_policy(str(state))
    raw = work / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    shutil.copy(extract, raw / extract.name)
    out = work / "run"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "opencity.cli", "run", "opencity_311", "--config", str(config),
         "--raw", str(raw), "--out", str(out), "--from", start, "--to", end],
        check=False, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    summary_file = out / f"run-opencity_311-{start}-{end}.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    intervals = summary.get("intervals", [])
    states = Counter(r["state"] for r in intervals)
    secs = [r["seconds"] for r in intervals if r.get("seconds") is not None]

    weeks, levels = [], Counter()
    for part in sorted((out / "catalog" / WEEKLY / "data").rglob("dt=*")):
        files = list(part.glob("*.parquet"))
        if not files:
            continue
        dt = part.name.removeprefix("dt=")
        table = pq.read_table(files[0])
        clean_dir = out / "clean" / "service_requests" / f"dt={dt}"
        truth = sum(pq.read_metadata(f).num_rows for f in clean_dir.glob("*.parquet"))
        published = sum(v or 0 for v in table.column("requests").to_pylist())
        unfloored = sum(v or 0 for v in table.column("requests_unfloored").to_pylist())
        level = (table.schema.metadata or {}).get(b"opencity.granularity", b"?").decode()
        levels[level] += 1
        weeks.append({"week": dt, "true": truth, "published": published,
                      "unfloored": round(unfloored, 1), "level": level, "cells": table.num_rows})

    def rel(key: str) -> float | None:
        errs = [abs(w[key] - w["true"]) / w["true"] for w in weeks if w["true"] > 0]
        return round(statistics.median(errs), 4) if errs else None

    rows_clean = rows_quarantined = 0
    reasons: Counter = Counter()
    for manifest in (out / "manifests").rglob("*.json") if (out / "manifests").is_dir() else []:
        body = json.loads(manifest.read_text())
        rc = body.get("row_counts") or {}
        if "rows_clean" in rc:
            rows_clean += rc.get("rows_clean") or 0
            rows_quarantined += rc.get("rows_quarantined") or 0
            for k, v in ((body.get("quarantine") or {}).get("reasons") or {}).items():
                reasons[k] += v
    return {
        "city": city, "from": start, "to": end, "exit_code": proc.returncode,
        "wall_s": round(wall, 1), "intervals": dict(states),
        "seconds_per_interval_median": round(statistics.median(secs), 1) if secs else None,
        "rows_clean": rows_clean, "rows_quarantined": rows_quarantined,
        "top_quarantine_reasons": reasons.most_common(3),
        "levels_chosen": dict(levels), "weeks_published": len(weeks),
        "median_relative_error_published_total": rel("published"),
        "median_relative_error_unfloored_total": rel("unfloored"),
        "weeks": weeks,
        "stderr_tail": proc.stderr[-600:] if proc.returncode else "",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--city", choices=sorted(CITIES), action="append")
    ap.add_argument("--from", dest="start")
    ap.add_argument("--to", dest="end")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "city-examples.json"))
    args = ap.parse_args(argv)
    results = []
    for city in args.city or list(CITIES):
        _, start, end = CITIES[city]
        with tempfile.TemporaryDirectory(prefix=f"city-{city}-") as tmp:
            res = run_city(city, args.start or start, args.end or end, Path(tmp))
        results.append(res)
        print(f"{city:10s} exit {res['exit_code']} {res['wall_s']:>7.1f} s "
              f"{res['intervals']} per interval {res['seconds_per_interval_median']} s; "
              f"clean {res['rows_clean']} quarantined {res['rows_quarantined']}; "
              f"levels {res['levels_chosen']}; median rel. error of published weekly totals "
              f"{res['median_relative_error_published_total']} (unfloored "
              f"{res['median_relative_error_unfloored_total']})", flush=True)
    load = os.getloadavg()
    Path(args.out).write_text(json.dumps({"load_average": load, "cities": results}, indent=2))
    return 0 if all(r["exit_code"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
