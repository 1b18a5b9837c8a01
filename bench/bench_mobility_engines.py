"""Benchmark: the whole `opencity mobility` command on DuckDB, Spark local and a standalone
Spark cluster, against the lean DuckDB script, in the same run on the same machine.

Every figure is one process timed from start to exit as a user runs it (interpreter start,
imports, Spark session start-up, the four DP products, the ledger write and the release files
included); the standalone cluster itself (master + workers, PySpark's own launcher from
tests/integration/spark_cluster.py, bound to 127.0.0.1, stopped by PID) is started once before
the runs, as an operator's cluster is already running.

Engines (``--engines``):

* ``lean``: bench/lean_mobility.py, the leanest DuckDB script for the same non-private
  aggregates (the baseline every ratio refers to);
* ``duckdb``: ``opencity mobility ... --engine duckdb`` (memory limit ``--memory-limit``);
* ``spark-local``: ``--engine spark --spark-master local[N]`` (driver memory
  ``--driver-memory``);
* ``spark-cluster``: ``--engine spark --spark-master spark://127.0.0.1:PORT`` on
  ``--workers`` workers of ``--worker-cores`` cores, one executor each
  (``--executor-memory``).

Memory: the command's own peak RSS comes from ``os.wait4`` (the Python driver); every JVM of
the run (the local driver JVM, the cluster's executors) is polled for ``VmHWM`` in
``/proc/<pid>/status`` while the command runs (executors are found by their working directory
under this run's cluster directory). Each run gets a fresh state DB and ledger with the shipped
policy approved by a throwaway test officer (opencity.review.testing.approve_policy).

Data: ``--events`` sizes (comma-separated) are generated once to Parquet under ``--data``
(default: opencity-bench-mobility in the temporary folder, never the repository) and reused: up to 10M events
with the sample-data CDR model (bench_mobility.generate), larger sizes as copies of the
10M-event day with distinct subscribers (bench_commands.replicate).

Output: JSON (``--out``, default bench/results/mobility-engines.json) with every run, the
machine's load (``uptime``) at each run, the ratio to the lean baseline, the DuckDB scaling
(largest / smallest size) and a projection for ``--events-per-day`` (default 5 billion) on
``--executors`` executors of ``--executor-cores`` cores from the measured per-core
throughput, with its assumptions; and a markdown table next to it (``.md``).

Usage: .venv/bin/python bench/bench_mobility_engines.py [--events 10000000,100000000]
       [--engines lean,duckdb,spark-local,spark-cluster] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAY = "2026-10-05"
ENGINES = ("lean", "duckdb", "spark-local", "spark-cluster")
DEFAULT_DATA = Path(tempfile.gettempdir()) / "opencity-bench-mobility"
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
BASE_EVENTS = 10_000_000  # larger sizes are copies of this day


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except OSError:
        return ""


# --- data -------------------------------------------------------------------------------

def dataset(root: Path, events: int) -> tuple[Path, int]:
    """The directory with ~``events`` events of DAY (cdr/*.parquet, towers.csv), generated
    once and reused; returns it and the exact number of events."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_commands import replicate
    from bench_mobility import generate

    out = root / f"events-{events}"
    done = out / "COUNT"
    if done.exists():
        return out, int(done.read_text())
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if events <= BASE_EVENTS:
        n = generate(out, events)
    else:
        base, _ = dataset(root, BASE_EVENTS)
        n = replicate(base, out, max(1, round(events / BASE_EVENTS)))
    done.write_text(str(n))
    print(f"generated {n:,} events in {out} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out, n


# --- process memory ---------------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (/proc/<pid>/stat utime, stime)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _role(pid: int, cluster_dir: Path | None) -> str | None:
    """What a process is: driver-jvm, executor (under this run's cluster dir), or None."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return None
    if "java" not in cmd:
        return None
    if "CoarseGrainedExecutorBackend" in cmd:
        if cluster_dir is None:
            return None
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return None
        return "executor" if cwd.startswith(str(cluster_dir)) else None
    if "SparkSubmit" in cmd:
        return "driver-jvm"
    return None


class MemoryPoller:
    """Polls VmHWM (peak RSS) of the command's JVMs and the cluster's executors."""

    def __init__(self, root_pid: int, cluster_dir: Path | None, every: float = 0.5) -> None:
        self.root_pid, self.cluster_dir, self.every = root_pid, cluster_dir, every
        self.peaks: dict[int, tuple[str, int]] = {}
        self.cpu: dict[int, float] = {}  # pid -> user + system seconds (last seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _pids(self) -> list[int]:
        kids = _children()
        seen, todo = [], [self.root_pid]
        while todo:
            pid = todo.pop()
            seen.append(pid)
            todo.extend(kids.get(pid, []))
        if self.cluster_dir is not None:  # executors are children of the cluster's workers
            mine = set(seen)
            seen.extend(p for ps in kids.values() for p in ps if p not in mine)
        return seen

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def sample(self) -> None:
        for pid in self._pids():
            role = self.peaks[pid][0] if pid in self.peaks else _role(pid, self.cluster_dir)
            if role is None:
                continue
            hwm = _status_kb(pid, "VmHWM")
            if hwm is not None:
                self.peaks[pid] = (role, max(hwm, self.peaks.get(pid, (role, 0))[1]))
            cpu = _cpu_seconds(pid)
            if cpu is not None:
                self.cpu[pid] = max(cpu, self.cpu.get(pid, 0.0))

    def by_role(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for role, kb in self.peaks.values():
            out.setdefault(role, []).append(round(kb / 1024, 1))
        return out


def timed(cmd: list[str], env: dict[str, str], cluster_dir: Path | None = None,
          log: Path | None = None) -> dict[str, Any]:
    """One process from start to exit: wall and CPU seconds, its own peak RSS (os.wait4)
    and the peak RSS of every JVM it used (driver JVM, cluster executors)."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        with MemoryPoller(proc.pid, cluster_dir) as poller:
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    finally:
        if log:
            out.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:] if log else ""
        raise SystemExit(f"command failed ({code}): {' '.join(map(str, cmd))}\n{tail}")
    jvms = poller.by_role()
    return {"seconds": round(wall, 3), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "driver_jvm_peak_rss_mb": max(jvms.get("driver-jvm", [0.0])) or None,
            "executor_peak_rss_mb": sorted(jvms.get("executor", [])),
            # CPU of the JVMs (polled, so up to one poll interval short): with cpu_seconds,
            # the whole run's CPU; comparable across engines on a loaded machine
            "jvm_cpu_seconds": round(sum(poller.cpu.values()), 1) if poller.cpu else None}


# --- one run ----------------------------------------------------------------------------

def spark_conf_dir(work: Path, conf: dict[str, str]) -> Path:
    """A SPARK_CONF_DIR whose spark-defaults.conf holds ``conf`` (how an operator sizes
    the driver and executors without touching the command)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "spark-defaults.conf").write_text(
        "".join(f"{k} {v}\n" for k, v in conf.items()), encoding="utf-8")
    return work


def run_engine(engine: str, data: Path, work: Path, args: argparse.Namespace,
               master: str | None, cluster_dir: Path | None) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    env = dict(CHILD_ENV, OPENCITY_DUCKDB_MEMORY_LIMIT=args.memory_limit,
               OPENCITY_DUCKDB_TEMP_DIR=str(work / "spill"))
    if engine == "lean":
        cmd = [sys.executable, str(ROOT / "bench" / "lean_mobility.py"), str(data / "cdr"),
               str(data / "towers.csv"), DAY, str(work / "out")]
        return timed(cmd, env, log=work / "log.txt")
    from opencity.review.testing import approve_policy

    ledger = work / "state.sqlite"  # fresh state DB and ledger per run
    approve_policy(str(ledger))
    cmd = [str(BIN / "opencity"), "mobility", str(data / "cdr"), "--towers",
           str(data / "towers.csv"), "--date", DAY, "--out",
           str(work / "release"), "--ledger", str(ledger), "--quiet"]
    if engine == "duckdb":
        cmd += ["--engine", "duckdb"]
    else:
        conf = {"spark.local.dir": str(work / "spark-scratch")}
        if engine == "spark-local":
            cmd += ["--engine", "spark", "--spark-master", f"local[{args.local_cores}]"]
            conf["spark.driver.memory"] = args.driver_memory
        else:
            cmd += ["--engine", "spark", "--spark-master", str(master)]
            conf.update({"spark.executor.memory": args.executor_memory,
                         "spark.executor.cores": str(args.worker_cores),
                         "spark.driver.memory": "1g"})
        env["SPARK_CONF_DIR"] = str(spark_conf_dir(work / "spark-conf", conf))
        env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = sys.executable
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
    res = timed(cmd, env, cluster_dir if engine == "spark-cluster" else None,
                log=work / "log.txt")
    report = json.loads((work / "release" / "_run" / "report.json").read_text())
    res["rows_read"] = report.get("rows_read")
    return res


def cores_of(engine: str, args: argparse.Namespace) -> int:
    if engine == "spark-local":
        return args.local_cores
    if engine == "spark-cluster":
        return args.workers * args.worker_cores
    return os.cpu_count() or 1  # DuckDB uses every core


# --- projection -------------------------------------------------------------------------

def projection(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Hours for ``events_per_day`` on N executors from the best measured per-core rate of
    each engine at its largest measured size."""
    out: dict[str, Any] = {
        "events_per_day": args.events_per_day,
        "executor_cores": args.executor_cores,
        "assumptions": [
            "throughput per core is the measured whole-command rate (events / wall seconds / "
            "cores given to the engine) at the largest size measured for that engine, on this "
            "2-core VM shared with other work (load in each run): a dedicated core does more",
            "the work scales linearly in events and in cores: the products are per-subscriber "
            "shuffles and group-bys with no global sort, so a day of 5 billion events from "
            "50 M subscribers (~100 each) partitions by subscriber like the measured days; "
            "shuffle volume per event is the same, network shuffle cost is not measured here",
            "executors of the same core speed with enough memory not to spill more than "
            "measured (the measured executors' peak RSS per core is given), input Parquet "
            "read from storage at least as fast as local disk",
            "fixed costs (JVM and session start-up, the driver's noise, ledger and release "
            "writing) are included in the measured rate and amortise at scale, so the "
            "projection is conservative for them",
            "DuckDB runs on one machine: its line is what one node with that many cores "
            "would take if its throughput scaled per core (it does not across machines)",
        ],
        "engines": {},
    }
    for engine in ("spark-cluster", "spark-local", "duckdb"):
        mine = [r for r in runs if r["engine"] == engine]
        if not any(r["events"] >= args.projection_min_events for r in mine):
            if mine:  # start-up dominates a small run: no basis for billions of events
                out["engines"][engine] = {"not_projected": "no run of at least "
                                          f"{args.projection_min_events:,} events"}
            continue
        top = max(r["events"] for r in mine)
        rate = max(r["events_per_s_per_core"] for r in mine if r["events"] == top)
        rows = []
        for n in args.executors:
            cores = n * args.executor_cores
            hours = args.events_per_day / (rate * cores) / 3600
            rows.append({"executors": n, "cores": cores, "hours": round(hours, 2),
                         "fits_in_a_day": hours <= 24})
        need = args.events_per_day / (rate * 4 * 3600)  # cores for a 4-hour window
        out["engines"][engine] = {
            "measured_events": top, "events_per_s_per_core": rate,
            "cores_for_4_hours": int(-(-need // 1)),
            "executors_for_4_hours": int(-(-need // args.executor_cores)),
            "by_executors": rows,
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Mobility release on three engines ({result['started']})", "",
             f"Machine: {result['machine']['cpus']} CPUs, {result['machine']['platform']}. "
             f"Load at start: `{result['load_start']}`; at end: `{result['load_end']}`.", "",
             "| events | engine | wall s | CPU s | events/s/core | ratio to lean | peak RSS "
             "driver MB | driver JVM MB | executors MB | load (1 min) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    # a merged result: one heading per run it was merged from, with its start time
    started = {m["file"]: m["started"] for m in result.get("merged_from") or []}
    source = None
    for r in result["runs"]:
        if r.get("source") and r["source"] != source:
            source = r["source"]
            lines.append(f"| **{source}** | {started.get(source, '')} |||||||||")
        ex = ", ".join(f"{m:.0f}" for m in r.get("executor_peak_rss_mb") or []) or "-"
        jvm = r.get("driver_jvm_peak_rss_mb")
        lines.append(
            f"| {r['events']:,} | {r['engine']} | {r['seconds']:.1f} | "
            f"{'-' if r.get('cpu_seconds') is None else round(r['cpu_seconds'], 1)} | "
            f"{r['events_per_s_per_core']:,.0f} | {r.get('ratio_to_lean') or '-'} | "
            f"{r['peak_rss_mb']:.0f} | {f'{jvm:.0f}' if jvm else '-'} | {ex} | "
            f"{r['load_1min']} |")
    sc = result.get("scaling") or {}
    if sc:
        lines += ["", "Scaling (largest / smallest size, same run): " + ", ".join(
            f"{k} {v['time_ratio']}x the time for {v['events_ratio']}x the events"
            for k, v in sc.items())]
    proj = result["projection"]
    lines += ["", "CPU s: user + system time of the command and the children it waited for "
              "(os.wait4); Spark's JVMs (driver JVM, executors) are in jvm_cpu_seconds of the "
              "JSON, polled from /proc. Wall time "
              "on a shared machine grows with its load; CPU time much less."]
    lines += ["", f"## Projection: {proj['events_per_day']:,.0f} events a day on executors of "
              f"{proj['executor_cores']} cores", "",
              "| engine | measured at | events/s/core | " + " | ".join(
                  f"{n} executors" for n in result["config"]["executors"]) + " | executors "
              "for 4 h |", "|---|---:|---:|" + "---:|" * (len(result["config"]["executors"]) + 1)]
    for engine, p in proj["engines"].items():
        if "not_projected" in p:
            lines.append(f"| {engine} | {p['not_projected']} |")
            continue
        lines.append(f"| {engine} | {p['measured_events']:,} | {p['events_per_s_per_core']:,.0f}"
                     " | " + " | ".join(f"{row['hours']} h" for row in p["by_executors"])
                     + f" | {p['executors_for_4_hours']} |")
    lines += ["", "Assumptions:"] + [f"- {a}" for a in proj["assumptions"]]
    return "\n".join(lines) + "\n"


# --- main -------------------------------------------------------------------------------

def _load(text: str) -> float | None:
    try:
        return float(text.split("load average:")[1].split(",")[0])
    except (IndexError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", default="10000000,100000000",
                    help="comma-separated event counts (each generated once, reused)")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="where generated Parquet is kept between runs (not the repository)")
    ap.add_argument("--memory-limit", default="6GB", help="DuckDB memory limit (both DuckDB "
                    "runs and the lean script)")
    ap.add_argument("--local-cores", type=int, default=2)
    ap.add_argument("--driver-memory", default="4g", help="driver memory of spark-local")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--worker-cores", type=int, default=1)
    ap.add_argument("--executor-memory", default="2g")
    ap.add_argument("--spark-max-events", type=int, default=None,
                    help="skip the Spark engines above this size (report what was measured)")
    ap.add_argument("--events-per-day", type=float, default=5e9)
    ap.add_argument("--executors", default="10,50,100,200")
    ap.add_argument("--executor-cores", type=int, default=4)
    ap.add_argument("--projection-min-events", type=int, default=1_000_000,
                    help="project only from runs of at least this many events")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                    "mobility-engines.json")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                    help="combine the results of earlier runs into --out (no new run)")
    args = ap.parse_args(argv)
    args.executors = [int(x) for x in args.executors.split(",")]
    if args.merge:
        return merge(args.merge, args)
    sizes = [int(float(x)) for x in args.events.split(",")]
    engines = [e.strip() for e in args.engines.split(",")]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise SystemExit(f"unknown engine(s) {sorted(unknown)}; known: {', '.join(ENGINES)}")
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "load_start": uptime(),
        "config": {"engines": engines, "events": sizes, "day": DAY,
                   "duckdb_memory_limit": args.memory_limit,
                   "spark_local": f"local[{args.local_cores}], driver {args.driver_memory}",
                   "spark_cluster": f"{args.workers} workers x {args.worker_cores} core(s), "
                                    f"executor {args.executor_memory}",
                   "executors": args.executors},
        "runs": [],
    }
    print(result["load_start"], flush=True)
    subprocess.run([sys.executable, "-c", "import opencity.cli, privacy.mobility.release, "
                    "privacy.mobility.spark_products, privacy.dp.backends.spark"],
                   cwd=ROOT, env=CHILD_ENV, check=True, timeout=600)  # bytecode on disk
    tmp = Path(tempfile.mkdtemp(prefix="opencity_bench_engines_"))
    try:
        with contextlib.ExitStack() as stack:
            master = cluster_dir = None
            if "spark-cluster" in engines:
                sys.path.insert(0, str(ROOT / "tests" / "integration"))
                from spark_cluster import standalone_cluster

                cluster_dir = tmp / "cluster"
                mem = f"{int(args.executor_memory.rstrip('gG')) + 1}g"
                master = stack.enter_context(standalone_cluster(
                    cluster_dir, workers=args.workers, cores=args.worker_cores, memory=mem))
                print(f"standalone cluster {master}", flush=True)
            for events in sizes:
                data, n = dataset(args.data, events)
                lean = None
                for engine in engines:
                    if engine.startswith("spark") and args.spark_max_events and \
                            n > args.spark_max_events:
                        continue
                    load = uptime()
                    work = tmp / f"{engine}-{events}"
                    res = run_engine(engine, data, work, args, master, cluster_dir)
                    shutil.rmtree(work, ignore_errors=True)
                    cores = cores_of(engine, args)
                    res.update({"engine": engine, "events": n, "cores": cores,
                                "events_per_s_per_core": round(n / res["seconds"] / cores),
                                "load": load, "load_1min": _load(load)})
                    if engine == "lean":
                        lean = res["seconds"]
                    if lean and engine != "lean":
                        res["ratio_to_lean"] = round(res["seconds"] / lean, 3)
                    result["runs"].append(res)
                    partial = args.out.with_suffix(".partial.json")  # survives an interrupt
                    partial.parent.mkdir(parents=True, exist_ok=True)
                    partial.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
                    print(f"{n:>12,} {engine:<14} {res['seconds']:8.1f} s  "
                          f"{res['events_per_s_per_core']:>9,} ev/s/core  "
                          f"rss {res['peak_rss_mb']:.0f} MB  jvm "
                          f"{res['driver_jvm_peak_rss_mb']} exec {res['executor_peak_rss_mb']}"
                          f"  ratio {res.get('ratio_to_lean')}  [{load}]", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_end"] = uptime()
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    return finish(result, args)


def finish(result: dict[str, Any], args: argparse.Namespace) -> int:
    """Scaling, projection, JSON and markdown of a finished (or merged) result."""
    scaling = {}  # within one run only: loads differ between runs
    for engine, source in dict.fromkeys((r["engine"], r.get("source")) for r in result["runs"]):
        mine = sorted((r for r in result["runs"]
                       if r["engine"] == engine and r.get("source") == source),
                      key=lambda r: r["events"])
        if len(mine) >= 2 and mine[-1]["events"] > mine[0]["events"]:
            scaling[engine if source is None else f"{engine} ({source})"] = {
                "events_ratio": round(mine[-1]["events"] / mine[0]["events"], 2),
                "time_ratio": round(mine[-1]["seconds"] / mine[0]["seconds"], 2)}
    result["scaling"] = scaling
    result["projection"] = projection(result["runs"], args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(result["load_end"])
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


def merge(files: list[Path], args: argparse.Namespace) -> int:
    """One result from several runs of this script (each run's load is kept per run)."""
    parts = [json.loads(f.read_text()) for f in files]
    result = {"started": parts[0]["started"], "machine": parts[0]["machine"],
              "load_start": parts[0]["load_start"],
              "load_end": parts[-1].get("load_end") or parts[-1]["runs"][-1]["load"],
              # an earlier merged result keeps the list of the runs it was merged from
              "merged_from": [m for f, p in zip(files, parts, strict=True) for m in (
                  p.get("merged_from") or [{"file": f.name, "started": p["started"],
                                            "config": p["config"]}])],
              "config": dict(parts[0]["config"], executors=args.executors),
              "runs": [dict(r, source=r.get("source") or f.name)
                       for f, p in zip(files, parts, strict=True) for r in p["runs"]]}
    return finish(result, args)

if __name__ == "__main__":
    sys.exit(main())
