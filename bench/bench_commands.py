"""Whole-command benchmarks: OpenCity as a user runs it vs the leanest DuckDB script.

Every figure is one process timed from start to exit (interpreter start and imports
included; bytecode compiled once beforehand, as in an installed copy), its peak RSS and CPU
time taken from ``os.wait4``; each OpenCity command is paired with a lean
DuckDB script that computes the same non-private result, run in the same session, and the
ratio is printed. Results go to a JSON file (default ``bench/results/latest.json``) together
with the machine's load (``uptime``) at the start and end.

Cases:

* ``kanon-adult``: ``opencity kanon`` on UCI Adult (30,162 rows, 9 QIs, k = 5, 4 %
  suppression, nu-entropy) vs one DuckDB GROUP BY over the 9 QIs (read CSV, count classes,
  write Parquet). Also reports ``search.nodes_evaluated`` / ``search.lattice_nodes``.
* ``kanon-1m``: ``opencity kanon`` on 1M synthetic rows x 6 QIs (bench_kanon's generator).
* ``dp-startup``: ``python -c 'import privacy.dp.engine'`` plus building OpenDP's samplers (the
  start-up of a DP task process that releases counts).
* ``mobility-10m``: ``opencity mobility`` (four DP products, --delta for private OD keys) on
  ~10M CDR events vs ``bench/lean_mobility.py`` (the same non-private aggregates).
* ``mobility-100m`` (``--events-100m``): the same command on ~100M events (ten copies of
  the 10M-event day with distinct subscribers) with ``OPENCITY_DUCKDB_MEMORY_LIMIT``
  (default 4GB); checks peak RSS <= 6 GB. The copies are written to a temporary directory
  and deleted afterwards.

Usage: .venv/bin/python bench/bench_commands.py [--cases kanon-adult,dp-startup,...]
       [--events 10000000] [--events-100m 100000000] [--out bench/results/latest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ADULT = ROOT / "tests" / "data" / "adult_arx"
ADULT_QIS = ["sex", "age", "race", "marital-status", "education", "native-country",
             "workclass", "occupation", "salary-class"]
DAY = "2026-10-05"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except OSError:
        return ""


# Children run as a user's installed environment would: with compiled bytecode. (An
# environment that sets PYTHONDONTWRITEBYTECODE recompiles every module in every process,
# seconds of start-up that no installed copy pays.)
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
WARM_UP = ("import numpy, pyarrow, pyarrow.parquet, duckdb, opencity.cli; "
           "opencity.cli.build_parser(); import privacy.kanon.anonymize, privacy.kanon.report, "
           "privacy.mobility.release, privacy.dp.engine; from privacy.dp import mechanisms; "
           "mechanisms._opendp()")


def warm_up() -> None:
    """Import every module the commands use once, so their bytecode is on disk."""
    subprocess.run([sys.executable, "-c", WARM_UP], cwd=ROOT, env=CHILD_ENV, check=True,
                   capture_output=True, timeout=600)


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run one process: wall seconds (start to exit) and its own peak RSS (os.wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or CHILD_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"command failed ({code}): {' '.join(map(str, cmd))}")
    return {"seconds": round(wall, 3), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stdout": out}


def _pair(name: str, ours: dict, base: dict, extra: dict | None = None) -> dict:
    ratio = ours["seconds"] / base["seconds"]
    cpu_ratio = ours["cpu_seconds"] / max(base["cpu_seconds"], 1e-9)
    print(f"{name:<14} opencity {ours['seconds']:7.2f} s (cpu {ours['cpu_seconds']:.2f}) "
          f"{ours['peak_rss_mb']:6.0f} MB | lean DuckDB {base['seconds']:7.2f} s "
          f"(cpu {base['cpu_seconds']:.2f}) {base['peak_rss_mb']:6.0f} MB | "
          f"ratio {ratio:5.2f}x (cpu {cpu_ratio:.2f}x)" + (f" | {extra}" if extra else ""),
          flush=True)
    return {"opencity": _strip(ours), "baseline": _strip(base), "ratio": round(ratio, 3),
            "cpu_ratio": round(cpu_ratio, 3), **(extra or {})}


def _strip(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "stdout"}


LEAN_KANON = r"""
import sys, duckdb
src, qis, out = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
con = duckdb.connect()
cols = ", ".join('"%s"' % q for q in qis)
con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{src}', delim=';', header=true, all_varchar=true)")
n = con.execute(f"SELECT count(*), min(n) FROM (SELECT {cols}, count(*) AS n FROM t GROUP BY ALL)").fetchone()
con.execute(f"COPY t TO '{out}' (FORMAT parquet)")
print(n)
"""


def kanon_case(tmp: Path, data: Path, hier: dict[str, Path], qis: list[str], k: int,
               supp: float, sep: str = ";") -> dict:
    argv = [str(BIN / "opencity"), "kanon", str(data)]
    for q in qis:
        argv += ["--qi", f"{q}={hier[q]}"]
    report = tmp / "report.json"
    argv += ["--k", str(k), "--suppression", str(supp), "--metric", "nu-entropy", "--sep", sep,
             "--out", str(tmp / "out.parquet"), "--report", str(report)]
    ours = timed(argv)
    search = json.loads(report.read_text())["search"]
    base = timed([sys.executable, "-c", LEAN_KANON, str(data), ",".join(qis),
                  str(tmp / "lean.parquet")])
    extra = {"nodes_evaluated": search["nodes_evaluated"],
             "lattice_nodes": search["lattice_nodes"],
             "nodes_evaluated_share": round(search["nodes_evaluated"] / search["lattice_nodes"],
                                            4),
             "search_seconds": search["seconds"]}
    return _pair("kanon", ours, base, extra)


def case_kanon_adult(tmp: Path) -> dict:
    hier = {q: ADULT / "hierarchies" / f"adult_hierarchy_{q}.csv" for q in ADULT_QIS}
    return kanon_case(tmp, ADULT / "adult.csv", hier, ADULT_QIS, 5, 0.04)


def case_kanon_1m(tmp: Path, rows: int = 1_000_000) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_kanon import synthetic

    data, hier = synthetic(rows, tmp)
    return kanon_case(tmp, data, hier, list(hier), 5, 0.02)


def case_dp_startup(tmp: Path) -> dict:
    code = ("import numpy as np; from privacy.dp.engine import dp_count_distinct; "
            "from privacy.dp.mechanisms import count_noise; "
            "count_noise(1.0, 0.0, 1).randomise(np.zeros(10, dtype=np.int64)); "
            "count_noise(1.0, 1e-6, 1).randomise(np.zeros(10, dtype=np.int64))")
    ours = timed([sys.executable, "-c", code])
    base = timed([sys.executable, "-c", "import duckdb, numpy, pyarrow"])
    print(f"dp-startup     {ours['seconds']:.2f} s, cpu {ours['cpu_seconds']:.2f} s (python + "
          f"duckdb/numpy/pyarrow alone {base['seconds']:.2f} s, cpu {base['cpu_seconds']:.2f} s),"
          f" peak RSS {ours['peak_rss_mb']:.0f} MB", flush=True)
    return {"opencity": _strip(ours), "baseline": _strip(base),
            "ratio": round(ours["seconds"] / base["seconds"], 3), "target_seconds": 1.5}


def _mobility(tmp: Path, data: Path, env: dict | None = None, baseline: bool = True) -> dict:
    out = tmp / "release"
    shutil.rmtree(out, ignore_errors=True)
    ledger = tmp / "ledger.sqlite"
    ledger.unlink(missing_ok=True)
    argv = [str(BIN / "opencity"), "mobility", str(data / "cdr"), "--towers",
            str(data / "towers.csv"), "--epsilon", "1", "--delta", "1e-9", "--date", DAY,
            "--out", str(out), "--ledger", str(ledger), "--quiet"]
    ours = timed(argv, env=env)
    if not baseline:
        return {"opencity": _strip(ours)}
    base = timed([sys.executable, str(ROOT / "bench" / "lean_mobility.py"), str(data / "cdr"),
                  str(data / "towers.csv"), DAY, str(tmp / "lean")], env=env)
    return _pair("mobility", ours, base)


def case_mobility(tmp: Path, events: int, keep: Path | None) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_mobility import generate

    data = keep or tmp / "cdr10m"
    if not (data / "towers.csv").exists():
        n = generate(data, events)
        print(f"generated {n:,} events", flush=True)
    return _mobility(tmp, data)


def replicate(src: Path, dst: Path, copies: int) -> int:
    """Bench generator for large days: ``copies`` copies of a generated day, each with its
    own subscribers (ids suffixed with the copy number), written with DuckDB."""
    import duckdb

    (dst / "cdr").mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "towers.csv", dst / "towers.csv")
    con = duckdb.connect()
    n = 0
    for i in range(copies):
        con.execute(f"""
            COPY (SELECT subscriber_id || '-{i}' AS subscriber_id, imsi || '-{i}' AS imsi,
                         event_time, cell_id, event_type
                  FROM read_parquet('{src / "cdr" / "*.parquet"}'))
            TO '{dst / "cdr" / f"copy-{i:03d}.parquet"}' (FORMAT parquet)""")
        n += con.execute(f"SELECT count(*) FROM read_parquet('{src / 'cdr' / '*.parquet'}')"
                         ).fetchone()[0]
    return n


def case_mobility_100m(tmp: Path, events: int, memory_limit: str, keep: Path | None) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_mobility import generate

    data = tmp / "cdr100m"
    try:
        base = keep or tmp / "cdr10m"
        if not (base / "towers.csv").exists():
            generate(base, 10_000_000)
        n = replicate(base, data, max(1, round(events / 10_000_000)))
        print(f"generated {n:,} events (copies of a 10M-event day)", flush=True)
        env = dict(CHILD_ENV, OPENCITY_DUCKDB_MEMORY_LIMIT=memory_limit,
                   OPENCITY_DUCKDB_TEMP_DIR=str(tmp / "spill"))
        res = _mobility(tmp, data, env=env, baseline=False)
        res["events"] = n
        res["memory_limit"] = memory_limit
        res["within_6gb"] = res["opencity"]["peak_rss_mb"] <= 6144
        print(f"mobility-100m  {res['opencity']['seconds']:.1f} s, cpu "
              f"{res['opencity']['cpu_seconds']:.1f} s, peak RSS "
              f"{res['opencity']['peak_rss_mb']:.0f} MB (limit 6144 MB)", flush=True)
        return res
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(tmp / "spill", ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="kanon-adult,kanon-1m,dp-startup,mobility-10m")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--events-100m", type=int, default=100_000_000)
    ap.add_argument("--memory-limit", default="4GB")
    ap.add_argument("--keep", type=Path, default=None,
                    help="directory with (or for) the 10M-event data, kept afterwards")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = ap.parse_args()
    result = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "load_start": uptime(), "cases": {}}
    print(result["load_start"], flush=True)
    warm_up()
    tmp = Path(tempfile.mkdtemp(prefix="opencity_bench_"))
    try:
        for case in args.cases.split(","):
            sub = tmp / case
            sub.mkdir()
            if case == "kanon-adult":
                result["cases"][case] = case_kanon_adult(sub)
            elif case == "kanon-1m":
                result["cases"][case] = case_kanon_1m(sub)
            elif case == "dp-startup":
                result["cases"][case] = case_dp_startup(sub)
            elif case == "mobility-10m":
                result["cases"][case] = case_mobility(sub, args.events, args.keep)
            elif case == "mobility-100m":
                result["cases"][case] = case_mobility_100m(sub, args.events_100m,
                                                           args.memory_limit, args.keep)
            else:
                raise SystemExit(f"unknown case {case!r}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_end"] = uptime()
    print(result["load_end"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
