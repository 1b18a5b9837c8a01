"""``opencity run DAG_ID --raw DIR --out RUN_DIR --from YYYY-MM-DD --to YYYY-MM-DD``: history
and backfills without a scheduler.

Runs the real DAG (``dag.test()``, one run per data interval, in a subprocess with its own
AIRFLOW_HOME under ``RUN_DIR/airflow``, the way ``opencity demo`` does) for every data interval
of the DAG's timetable that starts in ``[FROM, TO)``, one after the other, with a progress bar
on stderr and a summary table at the end (interval, state, seconds, partitions published),
also written to ``RUN_DIR/run-DAG_ID-FROM-TO.json``; the runner's output (task logs) goes to
``RUN_DIR/airflow/run-runner.log``. Releases spend from the portal's budget ledger and are
recorded in its release registry (``OPENCITY_STATE_URL``, as for every DAG run).

``--config DIR`` is the city's configuration: ``DIR/sources.yaml`` (the source registry) and,
if present, ``DIR/policy.yaml`` (the release policy; a policy no privacy officer approved is
refused by the DAG's approval gate with the ``opencity approve`` command to run) and
``DIR/kpi_registry.yaml`` (the city's KPI registry, as ``OPENCITY_KPI_REGISTRY``). Without
``--config`` the shipped synthetic-city configuration is used (opencity/sources.yaml and
privacy/policy.yaml).

Intervals without input (one rule): an interval whose DAG fails at ``ingest`` because the raw
files hold no row for it is reported as ``no data`` (nothing published, no privacy budget
spent) and the run goes on with the next interval; such an interval does not fail the command.
An interval whose rows were all quarantined is a failure, not a gap. A range in which no
interval had data fails (check --raw).

Exit status: 0 only when every interval succeeded (or had no data, see above) and at least one
interval had data; 1 otherwise. Any failed interval stops the run: the later intervals are
listed as ``not run`` (rerun with ``--from`` at the failed interval). Refused before running
anything: an unknown DAG id, an empty range (FROM >= TO, or no interval of the DAG's schedule
starts in it), a range starting before the DAG's start date, a range whose last interval ends
in the future, and a DAG without tasks. A run that executed no task fails (never a green run
with zero tasks).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError, PipelineError

REPO = Path(__file__).resolve().parent.parent
SOURCES_FILE = "sources.yaml"
POLICY_FILE = "policy.yaml"
KPI_REGISTRY_FILE = "kpi_registry.yaml"  # optional: the city's KPI registry

# Interval states of the summary (the DAG run's state, or one of OpenCity's own).
SUCCESS, NO_DATA, FAILED, NOT_RUN, NO_TASKS = "success", "no data", "failed", "not run", \
    "no tasks"
OK_STATES = (SUCCESS, NO_DATA)
# The message of opencity.pipelines.partitions.require_input / require_any_input: an interval
# without input rows. With quarantined rows it is a data-quality failure, not a gap.
NO_INPUT_MARK = "no input rows for"
QUARANTINED_MARK = "were quarantined"


# --- configuration ------------------------------------------------------------------------
def config_files(config: Path | None) -> dict[str, Path]:
    """The configuration files of ``--config DIR`` (or the shipped ones), validated.

    Returns ``{"sources": path, "policy": path}``; raises ConfigError naming what is missing.
    """
    from opencity.source_registry import DEFAULT_FILE, load_sources
    from privacy.policy import DEFAULT_POLICY, load_policy

    if config is None:
        files = {"sources": DEFAULT_FILE, "policy": DEFAULT_POLICY}
    else:
        if not config.exists():
            raise ConfigError(f"--config {config}: no such directory; give the directory "
                              f"holding the city's {SOURCES_FILE} (and optionally "
                              f"{POLICY_FILE})")
        if not config.is_dir():
            raise ConfigError(f"--config {config} is a file; give the directory holding the "
                              f"city's {SOURCES_FILE} (and optionally {POLICY_FILE})")
        sources = config / SOURCES_FILE
        if not sources.is_file():
            found = sorted(p.name for p in config.iterdir())[:10]
            raise ConfigError(
                f"--config {config} has no {SOURCES_FILE} (the source registry: which sources "
                f"are read from the raw folder, with their profile, schedule and start date; "
                f"see opencity/sources.yaml); found: {', '.join(found) or 'nothing'}")
        policy = config / POLICY_FILE
        files = {"sources": sources,
                 "policy": policy if policy.is_file() else DEFAULT_POLICY}
        if (config / KPI_REGISTRY_FILE).is_file():  # the city's KPI registry, if it has one
            files["kpi_registry"] = config / KPI_REGISTRY_FILE
    load_sources(files["sources"])  # ConfigError naming the file and key
    load_policy(files["policy"])
    if "kpi_registry" in files:
        from kpi.registry import load_registry

        load_registry(files["kpi_registry"])
    return files


def check_range(start: date, end: date) -> None:
    if start >= end:
        raise ConfigError(f"empty range: --from {start} is not before --to {end}; the run "
                          "covers every interval starting in [from, to)")


# --- the Airflow side (runs in the subprocess, see opencity.airflow_runner --range) ---------
def plan_intervals(dag, start: date, end: date, now: datetime) -> list[tuple[datetime, datetime]]:
    """The DAG's data intervals that start in ``[start, end)``; ConfigError when the range is
    not runnable (before the DAG's start date, in the future, no interval, no task)."""
    from airflow.timetables.base import DataInterval, TimeRestriction

    from opencity.settings import partition_name  # noqa: F401 - same naming as the DAGs

    lo = datetime(start.year, start.month, start.day, tzinfo=UTC)
    hi = datetime(end.year, end.month, end.day, tzinfo=UTC)
    if not dag.task_dict:
        raise ConfigError(f"DAG {dag.dag_id} has no task: nothing would run")
    first = dag.start_date
    if first is not None and lo < first:
        raise ConfigError(f"--from {start} is before the start date of {dag.dag_id} "
                          f"({first:%Y-%m-%d}, from the source registry or the DAG); start the "
                          "range on or after it")
    if dag.end_date is not None and hi > dag.end_date:
        raise ConfigError(f"--to {end} is after the end date of {dag.dag_id} "
                          f"({dag.end_date:%Y-%m-%d})")
    timetable = dag.timetable
    restriction = TimeRestriction(earliest=lo, latest=None, catchup=True)
    out: list[tuple[datetime, datetime]] = []
    last: DataInterval | None = None
    while True:
        info = timetable.next_dagrun_info(last_automated_data_interval=last,
                                          restriction=restriction)
        if info is None or info.data_interval.start >= hi:
            break
        di = info.data_interval
        if di.start < lo:  # pragma: no cover - the restriction aligns to earliest
            last = di
            continue
        if di.end <= di.start:
            raise ConfigError(f"DAG {dag.dag_id}: its schedule gives zero-length data "
                              "intervals; opencity run needs a data-interval timetable")
        out.append((di.start, di.end))
        last = di
        if len(out) > 10_000:
            raise ConfigError("the range holds more than 10000 intervals; split it")
    if not out:
        raise ConfigError(f"no interval of {dag.dag_id}'s schedule starts in [{start}, {end}); "
                          "widen the range")
    future = [(s, e) for s, e in out if e > now]
    if future:
        raise ConfigError(
            f"the interval starting {future[0][0]:%Y-%m-%d} ends in the future "
            f"({future[0][1]:%Y-%m-%d %H:%M} UTC, now is {now:%Y-%m-%d %H:%M} UTC): only "
            f"intervals that are over can run; end the range (--to) on or before "
            f"{future[0][0]:%Y-%m-%d}")
    return out


_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Required)): (.*)$")
# A task's terminal failure as Airflow reports it (wrapping an OpenCity error).
_TERMINAL = "airflow.sdk.exceptions.AirflowFailException"
_OWN_ERRORS = (_TERMINAL, "opencity.", "privacy.",
               "transforms.", "publish.", "expectations.", "kpi.")


def task_error(lines: list[str]) -> str:
    """The failing task's message from the runner's output (dag.test prints task logs).

    Only OpenCity's own errors (terminal ones reach Airflow as AirflowFailException) are
    quoted: their messages name no row content. Any other exception is named by its type.
    """
    found = first_terminal = ""
    for line in lines:
        m = _EXC_LINE.match(line.strip())
        if not m:
            continue
        kind, message = m.groups()
        if kind == _TERMINAL and not first_terminal:
            # the first task that failed terminally (later tasks may fail because of it,
            # e.g. the manifest naming the products that did not go through)
            first_terminal = message
        if kind.startswith(_OWN_ERRORS):
            found = message
        else:
            found = f"{kind} (details in the runner's log)"
    return first_terminal or found


def _published(run_dir: Path, start: datetime) -> list[str]:
    """``dataset/dt=...``: the datasets of the run's local catalog holding a resource of the
    interval's partition (from each dataset's derived ``package.json``)."""
    from opencity.settings import partition_name

    part = partition_name(start)
    out = []
    for pkg in sorted((run_dir / "catalog").glob("*/package.json")):
        try:
            resources = json.loads(pkg.read_text(encoding="utf-8")).get("resources", [])
        except (OSError, ValueError):
            continue
        if any(isinstance(r, dict) and r.get("partition") == part for r in resources):
            out.append(f"{pkg.parent.name}/{part}")
    return out


def classify(states: dict[str, str | None], error: str) -> str:
    """The interval's state from its task states and the first failed task's message."""
    ran = [s for s in states.values() if s not in (None, "none", "removed")]
    if not ran:
        return NO_TASKS
    if any(s in ("failed", "upstream_failed") for s in ran):
        if NO_INPUT_MARK in error and QUARANTINED_MARK not in error:
            return NO_DATA
        return FAILED
    if not any(s == "success" for s in ran):
        return NO_TASKS
    return SUCCESS


def run_range(dag_id: str, start: date, end: date, conf: dict[str, Any]) -> int:
    """Plan and run every interval (called in the subprocess); prints JSON lines:
    ``{"plan": [...]}`` (or ``{"error": ...}``), then one line per interval."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        print(json.dumps({"error": "DAG import errors: " + "; ".join(
            f"{Path(f).name}: {str(e).strip().splitlines()[-1]}"
            for f, e in bag.import_errors.items())}), flush=True)
        return 2
    dag = bag.dags.get(dag_id)  # no metadata DB needed before the range is accepted
    if dag is None:
        print(json.dumps({"error": f"unknown DAG {dag_id!r}; known DAGs: "
                                   f"{', '.join(sorted(bag.dags))}"}), flush=True)
        return 2
    try:
        intervals = plan_intervals(dag, start, end, datetime.now(UTC))
    except ConfigError as err:
        print(json.dumps({"error": str(err)}), flush=True)
        return 2
    print(json.dumps({"plan": [[s.isoformat(), e.isoformat()] for s, e in intervals]}),
          flush=True)
    db.resetdb()  # this run's own metadata DB (RUN_DIR/airflow): runs of the range only
    run_dir = Path(conf["run_dir"])
    for s, e in intervals:
        t0 = time.monotonic()
        # A manual run's date is its "run after": the interval it covers ends there.
        dr = dag.test(logical_date=e, run_conf=conf)
        if dr.data_interval_start != s or dr.data_interval_end != e:
            raise SystemExit(f"this is a bug in OpenCity: dag.test ran [{dr.data_interval_start},"
                             f" {dr.data_interval_end}) for the interval [{s}, {e})")
        tis = dr.get_task_instances()
        states = {ti.task_id: (str(ti.state.value) if hasattr(ti.state, "value") else ti.state)
                  for ti in tis}
        failed = sorted((ti.start_date or e, ti.task_id) for ti in tis
                        if states[ti.task_id] == "failed")
        res = {"start": s.date().isoformat(), "end": e.date().isoformat(),
               "dag_run_state": str(getattr(dr.state, "value", dr.state)),
               "seconds": round(time.monotonic() - t0, 2), "task_states": states,
               "tasks": sum(1 for v in states.values() if v == "success"),
               # where the interval's time goes (seconds per task that ran)
               "task_seconds": {ti.task_id: round(ti.duration, 2) for ti in tis
                                if ti.duration is not None
                                and states[ti.task_id] in ("success", "failed")},
               "failed_task": failed[0][1] if failed else None,
               "published": _published(run_dir, s)}
        # the parent reads the task's error from this process's output, then answers
        print(json.dumps(res), flush=True)
        if sys.stdin.readline().strip() != "continue":
            break
    return 0


# --- the command --------------------------------------------------------------------------
def _message(line: str) -> dict[str, Any] | None:
    """A JSON line of the runner (plan, error or interval result), else None (a log line)."""
    if not line.startswith("{"):
        return None
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) and ({"plan", "error", "start"} & set(msg)) else None


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run a DAG locally for every interval of a date range (history, backfills)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dag_id", metavar="DAG_ID", help="the DAG to run, e.g. opencity_311")
    p.add_argument("--config", type=Path, default=None, metavar="DIR",
                   help=f"the city's configuration directory ({SOURCES_FILE}, optional "
                        f"{POLICY_FILE}); default: the shipped synthetic city")
    p.add_argument("--raw", type=Path, required=True, metavar="DIR",
                   help="the raw landing folder (the registry's paths are relative to it)")
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR",
                   help="the run directory (outputs, catalog, manifests, airflow/)")
    p.add_argument("--from", dest="start", type=_date, required=True, metavar="YYYY-MM-DD",
                   help="first day of the range (an interval starting on it is run)")
    p.add_argument("--to", dest="end", type=_date, required=True, metavar="YYYY-MM-DD",
                   help="end of the range, exclusive (intervals starting before it are run)")
    p.set_defaults(func=_cmd)


def _env(files: dict[str, Path], run_dir: Path, raw: Path) -> dict[str, str]:
    home = run_dir / "airflow"
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "OPENCITY_RUN_DIR": str(run_dir),
        "OPENCITY_RAW_DIR": str(raw),
        "OPENCITY_SOURCES_FILE": str(files["sources"]),
        "OPENCITY_POLICY": str(files["policy"]),
        **({"OPENCITY_KPI_REGISTRY": str(files["kpi_registry"])}
           if "kpi_registry" in files else {}),
        "GX_ANALYTICS_ENABLED": "false",
        "PYTHONWARNINGS": "ignore",
    })
    # No Airflow UI and nobody to answer in this scratch metadata DB: a release waiting for
    # approval fails with the `opencity approve` command instead of waiting forever.
    env["OPENCITY_APPROVAL_MODE"] = "cli"
    return env


def run(dag_id: str, raw: Path, out: Path, start: date, end: date,
        config: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run ``dag_id`` over ``[start, end)``; returns ``{"intervals": [...], "ok": bool, ...}``.

    Raises ConfigError for bad input refused before any interval ran.
    """
    from tqdm import tqdm

    check_range(start, end)
    files = config_files(config)
    if not raw.is_dir():
        raise ConfigError(f"--raw {raw}: no such directory; give the raw landing folder "
                          f"(the paths of {files['sources']} are relative to it)")
    run_dir = out.resolve()
    (run_dir / "airflow").mkdir(parents=True, exist_ok=True)
    env = _env(files, run_dir, raw.resolve())
    conf = {"run_dir": str(run_dir), "raw_dir": str(raw.resolve())}
    cmd = [sys.executable, "-m", "opencity.airflow_runner", "--range", dag_id,
           start.isoformat(), end.isoformat(), "--conf", json.dumps(conf)]
    t0 = time.monotonic()
    log_file = run_dir / "airflow" / "run-runner.log"
    plan: list[list[str]] = []
    results: list[dict[str, Any]] = []
    error = ""
    bar = None
    lines: list[str] = []  # the runner's output since the last interval (task logs)
    with log_file.open("w", encoding="utf-8") as log, subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, cwd=str(run_dir)) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        try:
            for line in proc.stdout:
                msg = _message(line)
                if msg is None:
                    log.write(line)
                    lines.append(line)
                    continue
                if "error" in msg:
                    error = msg["error"]
                elif "plan" in msg:
                    plan = msg["plan"]
                    bar = tqdm(total=len(plan), desc=dag_id, unit="interval", file=sys.stderr,
                               disable=not progress)
                else:
                    err = task_error(lines) if msg.get("failed_task") else ""
                    msg["state"] = classify(msg.pop("task_states", {}), err)
                    msg["error"] = err if msg["state"] == FAILED else ""
                    results.append(msg)
                    lines = []
                    log.write(json.dumps(msg) + "\n")
                    if bar is not None:
                        bar.set_postfix_str(f"{msg['start']} {msg['state']}")
                        bar.update(1)
                    go = msg["state"] in OK_STATES
                    try:
                        proc.stdin.write("continue\n" if go else "stop\n")
                        proc.stdin.flush()
                    except BrokenPipeError:  # pragma: no cover - the runner died
                        pass
        finally:
            if bar is not None:
                bar.close()
        code = proc.wait()
    if error:
        raise ConfigError(error)
    if not plan:
        tail = "".join(lines[-3:]).strip()
        raise PipelineError(f"the Airflow runner stopped before planning (exit {code}): "
                            f"{tail[-500:] or 'no output'}; its output is in {log_file}")
    done = {r["start"] for r in results}
    for s, e in plan:
        if s[:10] not in done:
            results.append({"start": s[:10], "end": e[:10], "state": NOT_RUN, "seconds": 0.0,
                            "tasks": 0, "published": [], "error": ""})
    with_data = [r for r in results if r["state"] == SUCCESS]
    ok = code == 0 and all(r["state"] in OK_STATES for r in results) and bool(with_data)
    summary = {"dag_id": dag_id, "from": start.isoformat(), "to": end.isoformat(),
               "run_dir": str(run_dir), "intervals": results, "ok": ok,
               "seconds": round(time.monotonic() - t0, 1), "runner_log": str(log_file)}
    if code != 0:
        summary["runner_error"] = [f"the runner exited with status {code}"]
    from opencity.io import write_json_atomic

    # the run directory's root: not a zone of its own (restrict_run_tree tightens its files)
    write_json_atomic(summary, run_dir / f"run-{dag_id}-{start}-{end}.json")
    return summary


def summary_table(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table: interval, state, seconds, partitions published."""
    rows = [("interval", "state", "seconds", "partitions published")]
    for r in summary["intervals"]:
        rows.append((f"{r['start']} .. {r['end']}", r["state"], f"{r['seconds']:.1f}",
                     ", ".join(r["published"]) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                        row[2].rjust(widths[2]), row[3]]) for row in rows]
    return "\n".join(lines)


def _cmd(args: argparse.Namespace) -> int:
    summary = run(args.dag_id, args.raw, args.out, args.start, args.end, config=args.config)
    print(summary_table(summary))
    counts: dict[str, int] = {}
    for r in summary["intervals"]:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    print(f"\n{summary['dag_id']} [{summary['from']}, {summary['to']}): "
          + ", ".join(f"{n} {s}" for s, n in counts.items())
          + f" in {summary['seconds']} s; summary: {summary['run_dir']}")
    failed = next((r for r in summary["intervals"] if r["state"] not in OK_STATES
                   and r["state"] != NOT_RUN), None)
    if failed:
        print(f"opencity run: interval {failed['start']} {failed['state']}"
              + (f" at task {failed.get('failed_task')}" if failed.get("failed_task") else "")
              + (f": {failed['error']}" if failed.get("error") else "")
              + f"; task logs in {summary['runner_log']}", file=sys.stderr)
    elif summary.get("runner_error"):
        print(f"opencity run: the Airflow runner failed: {summary['runner_error'][0]}; see "
              f"{summary['runner_log']}", file=sys.stderr)
    elif not any(r["state"] == SUCCESS for r in summary["intervals"]):
        print(f"opencity run: no interval of [{summary['from']}, {summary['to']}) had input "
              f"data in {args.raw}: nothing was published; check --raw and the paths of the "
              "source registry", file=sys.stderr)
    return 0 if summary["ok"] else 1
