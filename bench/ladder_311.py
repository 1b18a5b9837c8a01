"""The granularity ladder on the real Baltimore extract, one year week by week.

    .venv/bin/python bench/ladder_311.py [--year 2016] [--target 0.25]

Ingests tests/data/311_baltimore through its profile, then for every week of the year (in
order, each week's history = the noisy totals this simulation published before it) applies
the ladder of docs/privacy-units.md with the event-level unit ``request`` at the shipped
epsilon, and prints the levels chosen, the measured median relative error per cell against
the true counts, the weekly totals' error and the zero floor's bias, beside the finest level.
Numbers only (no row content). ~1 min here.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import types
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from opencity.pipelines import service_requests as sr
from opencity.secrets import Secret
from privacy.granularity import choose_level
from transforms.ingest import ingest_file
from transforms.profiles import get_profile

ROOT = Path(__file__).resolve().parents[1]
LADDER = ["district x request_type x week", "district x category x week",
          "city x category x week", "city x all x week"]


def cell_error(week: pa.Table, table: pa.Table, level: str) -> float:
    """Median over the published cells of |published - true| / max(true, 1)."""
    place, kind = sr.parse_level(level)
    p = "'all'" if place == "city" else "district_id"
    t = {"all": "'all'", "category": "agency", "request_type": "request_type"}[kind]
    con = duckdb.connect()
    con.register("w", week)
    truth = {(a, b): n for a, b, n in
             con.execute(f"SELECT {p}, {t}, count(*) FROM w GROUP BY ALL").fetchall()}
    con.close()
    rel = [abs(v - truth.get((dd, tt), 0)) / max(truth.get((dd, tt), 0), 1)
           for dd, tt, v in zip(table["district_id"].to_pylist(),
                                table["request_type"].to_pylist(),
                                table["requests"].to_pylist(), strict=True)]
    return statistics.median(rel)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--year", type=int, default=2016)
    ap.add_argument("--target", type=float, default=0.25)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = ingest_file("service_requests", ROOT / "tests/data/311_baltimore/311_sample.csv",
                          Path(tmp) / "c", quarantine_dir=Path(tmp) / "q",
                          key=Secret("b" * 32, "bench"), profile="baltimore-311")
        clean = pq.read_table(res.clean_path)
    prof = get_profile("service_requests", "baltimore-311")
    districts = pa.table({"district_id": [i for i, _ in prof.districts]})
    rt, cats = tuple(prof.domain("request_type")), tuple(prof.domain("agency"))
    unit = types.SimpleNamespace(name="request", level="event")
    cfg = sr.WeeklyDPConfig(epsilon=0.6, max_cells=1, max_rows_per_cell=1)
    levels = [(lv, sr.level_keys(lv, districts, rt, cats).num_rows) for lv in LADDER]
    start = datetime.fromisocalendar(args.year, 1, 1).replace(tzinfo=UTC)
    hist: list[float] = []
    chosen: Counter = Counter()
    out: dict[str, list[float]] = {k: [] for k in ("cell", "total", "bias", "fine_cell",
                                                   "fine_total", "fine_total_unfloored",
                                                   "fine_bias")}
    for i in range(52):
        s = start + timedelta(weeks=i)
        m = pc.and_(pc.greater_equal(clean["created_at"], pa.scalar(s)),
                    pc.less(clean["created_at"], pa.scalar(s + timedelta(weeks=1))))
        week = clean.filter(m)
        n = max(week.num_rows, 1)
        choice = choose_level(levels, target=args.target,
                              epsilon_per_cell=cfg.epsilon * cfg.count_share / cfg.max_cells,
                              sensitivity=cfg.max_rows_per_cell, history_totals=hist)
        chosen[choice.level] += 1
        for name, level in (("", choice.level), ("fine_", LADDER[0])):
            table, st = sr.dp_weekly_table(week, districts, s, cfg, seed=i, random_state=None,
                                           unit=unit, level=level, request_types=rt,
                                           categories=cats)
            eff = st.details["post_processing_effect"]
            out[name + "cell"].append(cell_error(week, table, level))
            out[name + "total"].append(abs(eff["sum_requests"] - week.num_rows) / n)
            out[name + "bias"].append(eff["zero_floor_bias"])
            if name:
                out["fine_total_unfloored"].append(
                    abs(eff["sum_requests_unfloored"] - week.num_rows) / n)
            else:
                hist.append(eff["sum_requests_unfloored"])
    print(f"Baltimore {args.year}, unit request (event-level), target {args.target}")
    print("levels chosen:", dict(chosen))
    for k, v in out.items():
        agg = statistics.mean if k.endswith("bias") else statistics.median
        print(f"{k:>22}: {agg(v):.3f} ({'mean' if agg is statistics.mean else 'median'})")


if __name__ == "__main__":
    main()
