"""Benchmark: sample-data generation at --scale 100 (10M+ CDR events) against plain DuckDB.

Runs ``opencity sample-data`` in a subprocess and reports its wall time and peak RSS, then a
plain DuckDB baseline in the same run: the generator's CDR step alone versus DuckDB writing the same number of random CDR-like rows
(same columns and types) to Parquet with range()/random(). Peak RSS is ru_maxrss of each child
(os.wait4, the per-child form of getrusage(RUSAGE_CHILDREN)). Exit code 1 if the generator's
peak RSS reaches the memory limit.

Usage: .venv/bin/python bench/bench_sample_data.py [--scale 100] [--days 14] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

MEMORY_LIMIT_MB = 2048


def run_child(cmd: list[str]) -> tuple[float, float, str]:
    """Run a command; returns (wall seconds, peak RSS in MB, stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024, out  # ru_maxrss is in KiB on Linux


def count_cdr_rows(cdr_dir: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in cdr_dir.glob("part-*.parquet"))


CDR_ONLY = textwrap.dedent("""
    import sys
    from datetime import date
    from pathlib import Path
    from sample_data import io
    from sample_data.cdr import cdr_blocks, make_subscribers
    from sample_data.city import make_city
    from sample_data.config import DEFAULT_CHUNK_ROWS
    scale, days, out = float(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    city = make_city(42, scale)
    subs = make_subscribers(42, city, scale, days)
    io.write_parts(cdr_blocks(42, city, subs, date(2026, 10, 5), days), out, DEFAULT_CHUNK_ROWS)
""")

BASELINE = textwrap.dedent("""
    import sys, duckdb
    n, out = int(sys.argv[1]), sys.argv[2]
    con = duckdb.connect()
    con.execute(f'''
        COPY (
            SELECT '+4915' || lpad(CAST(CAST(random() * 1e9 AS BIGINT) AS VARCHAR), 9, '0')
                       AS subscriber_id,
                   '26201' || lpad(CAST(CAST(random() * 1e10 AS BIGINT) AS VARCHAR), 10, '0')
                       AS imsi,
                   TIMESTAMPTZ '2026-10-05 00:00:00+00'
                       + to_microseconds(CAST(random() * 14 * 86400e6 AS BIGINT))
                       AS event_time,
                   'C' || lpad(CAST(CAST(random() * 1500 AS INT) AS VARCHAR), 4, '0') AS cell_id,
                   ['call', 'sms', 'data'][1 + CAST(floor(random() * 3) AS INT)] AS event_type
            FROM range({n})
        ) TO '{out}' (FORMAT parquet)
    ''')
""")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=100.0)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--keep", type=Path, help="write the data here and keep it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sample-data-"))
    out = args.keep or work / "raw"
    try:
        gen_cmd = [sys.executable, "-m", "opencity.cli", "sample-data", "--out", str(out),
                   "--scale", str(args.scale), "--days", str(args.days), "--quiet"]
        gen_s, gen_mb, summary = run_child(gen_cmd)
        n_cdr = count_cdr_rows(out / "cdr")
        cdr_s, cdr_mb, _ = run_child([sys.executable, "-c", CDR_ONLY, str(args.scale),
                                      str(args.days), str(work / "cdr_only")])
        base_s, base_mb, _ = run_child(
            [sys.executable, "-c", BASELINE, str(n_cdr), str(work / "baseline.parquet")])
        print(summary.rstrip())
        print(f"\nscale {args.scale:g}, {args.days} days, {os.cpu_count()} CPUs")
        print(f"opencity sample-data (all tables): {gen_s:8.1f} s   peak RSS {gen_mb:7.0f} MB")
        print(f"  CDR events: {n_cdr:,}")
        print(f"DuckDB baseline ({n_cdr:,} random CDR rows -> Parquet): "
              f"{base_s:6.1f} s   peak RSS {base_mb:7.0f} MB")
        print(f"CDR events only (same generator code):                {cdr_s:6.1f} s   "
              f"peak RSS {cdr_mb:7.0f} MB")
        print(f"ratio CDR generator / DuckDB baseline: time {cdr_s / base_s:.1f}x, "
              f"peak memory {cdr_mb / base_mb:.1f}x")
        print(f"ratio whole generation / DuckDB CDR baseline: time {gen_s / base_s:.1f}x")
        ok = max(gen_mb, cdr_mb) < MEMORY_LIMIT_MB
        print(f"memory bound ({MEMORY_LIMIT_MB} MB): {'OK' if ok else 'EXCEEDED'}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
