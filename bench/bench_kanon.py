"""Benchmark ``privacy.kanon`` on Adult and on 1M synthetic rows, against anjana and DuckDB.

Usage:
    bench/setup_anjana_venv.sh                     # once: separate venv for anjana
    .venv/bin/python bench/bench_kanon.py [--rows 1000000] [--anjana-python PATH]
                                          [--anjana-timeout 900] [--skip-anjana]

For each case it prints, from the same run (the machine is shared, so compare ratios):
* our wall time for the whole optimal search + release, and peak memory (tracemalloc
  peak of Python/numpy allocations plus Arrow's pool peak);
* a plain DuckDB baseline: one GROUP BY over the quasi-identifiers of the raw data (the
  cost of evaluating a single lattice node once), and the ratio ours / baseline;
* anjana (the PyPI reference; greedy k-anonymity with the same hierarchies, k and
  suppression) run in its own venv, its time, the ratio anjana / ours, and the
  information loss of the node anjana chose, evaluated with our ARX metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import duckdb
import numpy as np
import pandas  # noqa: F401 - imported up front so its import time is not measured
import pyarrow as pa
import pyarrow.csv as pv

from privacy.kanon import Hierarchy, KAnonymity, anonymize, evaluate_node

REPO = Path(__file__).resolve().parent.parent

ADULT = REPO / "tests" / "data" / "adult_arx"
ADULT_QIS = ["sex", "age", "race", "marital-status", "education", "native-country",
             "workclass", "occupation", "salary-class"]
DEFAULT_ANJANA = Path.home() / ".cache" / "opencity" / "anjana-venv" / "bin" / "python"

ANJANA_SCRIPT = r"""
import json, sys, time
import pandas as pd
from anjana.anonymity import k_anonymity_inner
spec = json.loads(sys.argv[1])
df = pd.read_csv(spec["data"], sep=";", dtype=str, keep_default_na=False)
hs = {}
for q, path in spec["hierarchies"].items():
    h = pd.read_csv(path, sep=";", header=None, dtype=str, keep_default_na=False)
    hs[q] = {i: h[i].values for i in range(h.shape[1])}
t = time.perf_counter()
out, supp, levels = k_anonymity_inner(df, [], spec["qis"], spec["k"], spec["supp"] * 100, hs)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "cpu": time.process_time(), "suppressed": int(supp), "rows_out": len(out),
                  "levels": {q: int(v) for q, v in levels.items()}}))
"""


def read_csv(path: Path, qis: list[str]) -> pa.Table:
    return pv.read_csv(path, parse_options=pv.ParseOptions(delimiter=";"),
                       convert_options=pv.ConvertOptions(
                           column_types={c: pa.string() for c in qis}))


def synthetic(rows: int, out_dir: Path, seed: int = 7) -> tuple[Path, dict[str, Path]]:
    """1M-row 311-like microdata with 6 QIs and their hierarchies (written as ARX CSVs)."""
    rng = np.random.default_rng(seed)
    ages = np.clip(rng.normal(45, 17, rows).round(), 0, 99).astype(int)
    gender = rng.choice(["F", "M", "X"], rows, p=[0.49, 0.49, 0.02])
    district = rng.choice([f"D{i:02d}" for i in range(30)], rows,
                          p=np.r_[np.full(10, 0.05), np.full(20, 0.025)])
    day = rng.integers(0, 364, rows)
    rtype = rng.choice([f"type{i}" for i in range(12)], rows,
                       p=np.r_[np.full(4, 0.15), np.full(8, 0.05)])
    zips = rng.choice([f"{10000 + 37 * i}" for i in range(60)], rows)
    hier: dict[str, Hierarchy] = {
        "age": Hierarchy.intervals(0, 99, widths=(5, 10, 20)),
        "gender": Hierarchy.flat(["F", "M", "X"]),
        "district": Hierarchy.from_tree(
            {f"R{r}": [f"D{i:02d}" for i in range(30) if i % 5 == r] for r in range(5)}),
        "week": Hierarchy(tuple(
            (f"W{w:02d}", f"M{min(w * 12 // 52, 11):02d}", f"Q{min(w * 4 // 52, 3)}", "*")
            for w in range(52))),
        "request_type": Hierarchy.from_tree(
            {f"G{g}": [f"type{i}" for i in range(12) if i % 4 == g] for g in range(4)}),
        "zip": Hierarchy.masking([f"{10000 + 37 * i}" for i in range(60)]),
    }
    table = pa.table({
        "age": pa.array(ages.astype(str)),
        "gender": pa.array(gender),
        "district": pa.array(district),
        "week": pa.array(np.char.add("W", np.char.zfill((day // 7).astype(str), 2))),
        "request_type": pa.array(rtype),
        "zip": pa.array(zips),
    })
    data = out_dir / "synthetic.csv"
    pv.write_csv(table, data, pv.WriteOptions(delimiter=";", quoting_style="none"))
    paths = {}
    for q, h in hier.items():
        paths[q] = out_dir / f"h_{q}.csv"
        h.to_csv(paths[q])
    return data, paths


def duckdb_baseline(table: pa.Table, qis: list[str]) -> float:
    con = duckdb.connect()
    con.register("t", table)
    cols = ", ".join(f'"{q}"' for q in qis)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        con.execute(
            f"SELECT count(*), min(n) FROM (SELECT {cols}, count(*) AS n FROM t GROUP BY ALL)"
        ).fetchall()
        best = min(best, time.perf_counter() - t0)
    con.close()
    return best


def run_ours(table: pa.Table, hs: dict[str, Hierarchy], k: int, supp: float):
    """Time one run; then measure peak memory in a second run under tracemalloc.

    tracemalloc slows numpy-heavy code several-fold, so it never wraps the timed run.
    """
    cfg = KAnonymity(k, tuple(hs), supp)
    t0 = time.perf_counter()
    c0 = time.process_time()
    res = anonymize(table, hs, cfg, metric="nu-entropy")
    seconds = time.perf_counter() - t0
    res.report["search"]["cpu_seconds_total"] = time.process_time() - c0
    pool = pa.default_memory_pool()
    tracemalloc.start()
    anonymize(table, hs, cfg, metric="nu-entropy")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return res, seconds, peak, pool.max_memory()


def run_anjana(python: Path, data: Path, paths: dict[str, Path], k: int, supp: float,
               timeout: float) -> dict | None:
    spec = json.dumps({"data": str(data), "hierarchies": {q: str(p) for q, p in paths.items()},
                       "qis": list(paths), "k": k, "supp": supp})
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([str(python), "-c", ANJANA_SCRIPT, spec], capture_output=True,
                              text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    except subprocess.CalledProcessError as err:
        return {"error": err.stderr.strip().splitlines()[-1] if err.stderr else str(err)}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall"] = time.perf_counter() - t0
    return out


def case(name: str, data: Path, paths: dict[str, Path], k: int, supp: float,
         args: argparse.Namespace) -> None:
    qis = list(paths)
    table = read_csv(data, qis)
    hs = {q: Hierarchy.from_csv(p) for q, p in paths.items()}
    base = duckdb_baseline(table, qis)
    res, ours, peak, arrow_peak = run_ours(table, hs, k, supp)
    rep = res.report
    print(f"\n== {name}: {table.num_rows} rows x {len(qis)} QIs, k={k}, "
          f"suppression {supp:.0%}, lattice {rep['search']['lattice_nodes']} nodes")
    print(f"ours      : {ours:8.2f} s wall, {rep['search']['cpu_seconds_total']:.2f} s CPU "
          f"(search {rep['search']['seconds']:.2f} s, "
          f"{rep['search']['nodes_evaluated']} nodes evaluated, "
          f"{rep['search']['nodes_pruned']} pruned); peak memory "
          f"{peak / 2**20:.0f} MiB (numpy/Python) + {arrow_peak / 2**20:.0f} MiB (Arrow)")
    print(f"            node {list(res.generalization.values())}, suppressed "
          f"{rep['suppressed_records']}, nu-entropy {rep['information_loss']['nu-entropy']:.1f}")
    print(f"duckdb    : {base:8.4f} s for one GROUP BY of the raw QIs (class count and "
          f"smallest class); ours / baseline = "
          f"{ours / base:.0f}x (the search evaluates {rep['search']['nodes_evaluated']} nodes)")
    if args.skip_anjana:
        return
    if not Path(args.anjana_python).exists():
        print(f"anjana    : skipped, no venv at {args.anjana_python} "
              "(run bench/setup_anjana_venv.sh)")
        return
    an = run_anjana(Path(args.anjana_python), data, paths, k, supp, args.anjana_timeout)
    if "timeout" in an:
        print(f"anjana    : did not finish within {an['timeout']:.0f} s; "
              f"ratio anjana / ours > {an['timeout'] / ours:.1f}x")
        return
    if "error" in an:
        print(f"anjana    : failed: {an['error']}")
        return
    lv = [an["levels"][q] for q in qis]
    loss = evaluate_node(table, hs, KAnonymity(k, tuple(qis), supp), lv, "nu-entropy")
    print(f"anjana    : {an['seconds']:8.2f} s wall (process: {an['wall']:.2f} s wall, "
          f"{an['cpu']:.2f} s CPU); "
          f"anjana / ours = {an['seconds'] / ours:.1f}x")
    print(f"            greedy node {lv}, suppressed {an['suppressed']}, nu-entropy of that "
          f"node {loss['information_loss']['nu-entropy']:.1f} "
          f"({'within' if loss['anonymous'] else 'outside'} the suppression limit)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--anjana-python", default=os.environ.get("ANJANA_PYTHON",
                                                              str(DEFAULT_ANJANA)))
    ap.add_argument("--anjana-timeout", type=float, default=900.0)
    ap.add_argument("--skip-anjana", action="store_true")
    ap.add_argument("--only", choices=("adult", "synthetic"))
    args = ap.parse_args()
    if args.only in (None, "adult"):
        paths = {q: ADULT / "hierarchies" / f"adult_hierarchy_{q}.csv" for q in ADULT_QIS}
        case("Adult", ADULT / "adult.csv", paths, 5, 0.04, args)
    if args.only in (None, "synthetic"):
        with tempfile.TemporaryDirectory(prefix="kanon-bench-") as tmp:
            data, paths = synthetic(args.rows, Path(tmp))
            case("synthetic 311-like", data, paths, 5, 0.04, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
