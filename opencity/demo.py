"""``opencity demo --out DIR``: the main job end to end on generated sample data.

1. generates the synthetic city into DIR/raw (skipped when DIR/raw already holds the same
   seed, scale and period): whole calendar months (``--months``, default 3, from the month
   of ``--start``) so the monthly KPI dashboard shows a trend;
2. runs every OpenCity DAG for real with Airflow (``dag.test()``, SQLite metadata DB in
   DIR/airflow): the daily and weekly products over the short window ``--start`` +
   ``--days`` (default 14 days), the monthly KPIs over each of the ``--months`` months
   (this keeps the run short: 14 daily + 2 weekly + 3 monthly runs by default);
3. prints where the outputs are: DIR/outputs, DIR/quarantine, DIR/manifests, DIR/catalog.

Without OPENCITY_HMAC_KEY the demo generates a throwaway pseudonymization key and says so;
real runs refuse to start without a key. Likewise it generates a throwaway privacy-officer key
for its own state store, says so, and signs the approval of the current policy with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from opencity.errors import ConfigError, PipelineError
from opencity.settings import RunLayout

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MONTHS = 3  # KPI months of the demo: enough for a trend
DAGS_FOLDER = REPO / "dags"

# (dag_id, cadence): which DAGs the demo runs and how their intervals tile the sample period.
# A DAG missing from the DAGs folder is skipped with a note.
DEMO_DAGS: tuple[tuple[str, str], ...] = (
    ("opencity_311", "weekly"),
    ("cdr_mobility", "daily"),
    ("opencity_kpi", "monthly"),
)


def logical_dates(cadence: str, start: date, days: int, months: int = 1) -> list[date]:
    """Interval starts: daily and weekly ones that fit entirely inside [start, start + days);
    monthly ones for ``months`` calendar months from the month of ``start``."""
    if cadence == "daily":
        return [start + timedelta(days=i) for i in range(days)]
    if cadence == "weekly":
        first = start + timedelta(days=(7 - start.weekday()) % 7)
        return [first + timedelta(weeks=i) for i in range(days // 7 + 1)
                if first + timedelta(weeks=i + 1) <= start + timedelta(days=days)]
    if cadence == "monthly":
        out = [start.replace(day=1)]
        while len(out) < months:
            out.append(interval_end("monthly", out[-1]))
        return out
    raise ConfigError(f"unknown cadence {cadence!r}")


def interval_end(cadence: str, day: date) -> date:
    if cadence == "daily":
        return day + timedelta(days=1)
    if cadence == "weekly":
        return day + timedelta(weeks=1)
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on generated sample data (real Airflow, local catalog)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path, help="run directory to create or reuse")
    p.add_argument("--seed", type=int, default=42, help="sample-data seed (default 42)")
    p.add_argument("--scale", type=float, default=1.0, help="sample-data scale (default 1.0)")
    p.add_argument("--start", type=date.fromisoformat, default=date(2026, 10, 5),
                   help="first day of the sample period (default 2026-10-05, a Monday)")
    p.add_argument("--days", type=int, default=14,
                   help="days from --start covered by the daily and weekly products "
                        "(default 14)")
    p.add_argument("--months", type=int, default=DEFAULT_MONTHS,
                   help="calendar months (from the month of --start) of sample data and of "
                        f"monthly KPI runs (default {DEFAULT_MONTHS}: a trend on the "
                        "dashboard)")
    p.set_defaults(func=_cmd)


def _airflow_env(layout: RunLayout) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(layout.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{layout.airflow_home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "OPENCITY_RUN_DIR": str(layout.root),
        "OPENCITY_RAW_DIR": str(layout.raw),
        # The demo is a throwaway portal on sample data: it keeps its own state DB (ledger +
        # registry) inside its directory, named in DIR/state.url for `opencity budget DIR`.
        "OPENCITY_STATE_URL": demo_state_url(layout),
        "GX_ANALYTICS_ENABLED": "false",
        "PYTHONWARNINGS": "ignore",
    })
    return env


def demo_state_url(layout: RunLayout) -> str:
    """The demo's own state DB (never the portal's default)."""
    return str(layout.root / "state" / "state.sqlite")


def _present_dags() -> set[str]:
    text = {p.stem: p.read_text(encoding="utf-8") for p in DAGS_FOLDER.glob("*.py")}
    return {dag_id for dag_id, _ in DEMO_DAGS
            if any(f'dag_id="{dag_id}"' in body for body in text.values())}


def sample_window(start: date, days: int, months: int) -> tuple[date, int]:
    """(first day, number of days) of the sample data: whole calendar months from the month
    of ``start``, extended to ``start + days`` if the short window reaches further."""
    first = start.replace(day=1)
    end = logical_dates("monthly", start, days, months)[-1]
    end = max(interval_end("monthly", end), start + timedelta(days=days))
    return first, (end - first).days


def run_demo(out: Path, seed: int = 42, scale: float = 1.0, start: date = date(2026, 10, 5),
             days: int = 14, months: int = DEFAULT_MONTHS) -> dict:
    """Generate sample data and run every demo DAG over it; returns a summary dict.

    The sample data covers ``months`` whole calendar months from the month of ``start``
    (one KPI run each); the daily and weekly DAGs run over ``[start, start + days)``.
    """
    from opencity.secrets import throwaway_key
    from sample_data.config import MAX_DAYS
    from transforms.pseudonymize import HMAC_ENV_VAR

    if days < 7:
        raise ConfigError("the demo needs at least 7 days of sample data (--days 7 or more)")
    if isinstance(months, bool) or not isinstance(months, int) or not 1 <= months <= 12:
        raise ConfigError(f"--months must be an integer from 1 to 12, got {months!r}")
    data_start, data_days = sample_window(start, days, months)
    if data_days > MAX_DAYS:
        raise ConfigError(f"the sample period ({data_days} days from {data_start}) is longer "
                          f"than {MAX_DAYS} days; use fewer --months or --days")
    layout = RunLayout(out.resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    stamp = layout.raw / ".opencity-sample.json"
    params = {"seed": seed, "scale": scale, "start": data_start.isoformat(), "days": data_days}
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        print(f"sample data: reusing {layout.raw}", file=sys.stderr)
    else:
        from sample_data import generate

        print(f"sample data: generating into {layout.raw} (seed {seed}, scale {scale}, "
              f"{data_days} days from {data_start})", file=sys.stderr)
        generate(layout.raw, seed=seed, scale=scale, start=data_start, days=data_days,
                 progress=True)
        stamp.write_text(json.dumps(params))
    env = _airflow_env(layout)
    layout.state_pointer.write_text(env["OPENCITY_STATE_URL"] + "\n", encoding="utf-8")
    if not os.environ.get(HMAC_ENV_VAR):
        env[HMAC_ENV_VAR] = throwaway_key().reveal()  # logs that it is a throwaway key
    env.setdefault("OPENCITY_APPROVAL_MODE", "cli")  # no Airflow UI: a pending gate fails
    demo_approvals(env.get("OPENCITY_STATE_URL"))
    present = _present_dags()
    runs = []
    for dag_id, cadence in DEMO_DAGS:
        if dag_id not in present:
            print(f"note: DAG {dag_id} is not in {DAGS_FOLDER}; skipped", file=sys.stderr)
            continue
        # Airflow treats a manual run's date as "run after": the data interval it covers is
        # the one that ends there, so each run is triggered at its interval's end.
        runs += [f"{dag_id}@{interval_end(cadence, d).isoformat()}"
                 for d in logical_dates(cadence, start, days, months)]
    from opencity.io import restrict_run_tree, restricted_dir, write_json_atomic

    restricted_dir(layout.airflow_home)  # airflow.db, task logs: owner-only from the start
    cmd = [sys.executable, "-m", "opencity.airflow_runner", "--reset-db"]
    for r in runs:
        cmd += ["--run", r]
    print(f"airflow: running {len(runs)} DAG runs with dag.test() "
          f"(AIRFLOW_HOME={layout.airflow_home})", file=sys.stderr)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=str(layout.root))
    results = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.strip()
        if line.startswith("{"):
            res = json.loads(line)
            results.append(res)
            print(f"  [{len(results)}/{len(runs)}] {res['dag_id']} {res['logical_date']}: "
                  f"{res['state']} ({res['seconds']} s)", file=sys.stderr)
    stderr = proc.stderr.read() if proc.stderr else ""
    code = proc.wait()
    log_file = layout.airflow_home / "demo-runner.log"
    log_file.write_text(stderr)
    # Everything of the demo but its published catalog is owner-only, its generated raw
    # data included.
    restrict_run_tree(layout.root, include_inputs=True)
    if code != 0 or len(results) != len(runs):
        failed = next((r for r in results if r["state"] != "success"), None)
        what = (f"{failed['dag_id']} {failed['logical_date']} ended {failed['state']}"
                if failed else "the Airflow runner stopped")
        raise PipelineError(f"demo failed: {what}; task logs are in {layout.airflow_home}/logs "
                            f"and the runner's output in {log_file}")
    from opencity.review.report import write_reports

    review = write_reports(layout.root, layout.root / "review",
                           state_url=env.get("OPENCITY_STATE_URL"))
    summary = {
        "run_dir": str(layout.root),
        "review": review["index"],
        "raw": str(layout.raw),
        "clean": str(layout.root / "clean"),
        "outputs": str(layout.root / "outputs"),
        "quarantine": str(layout.root / "quarantine"),
        "manifests": str(layout.root / "manifests"),
        "catalog": str(layout.catalog),
        "reports": str(layout.root / "reports"),
        "dag_runs": results,
        "seconds": round(time.monotonic() - t0, 1),
    }
    write_json_atomic(summary, layout.root / "demo-summary.json")  # tightened just below
    restrict_run_tree(layout.root, include_inputs=True)  # the review/ report too
    return summary


def demo_approvals(state_url: str | None) -> list[str]:
    """The demo's approval step: approve every dataset's current policy version, recorded as
    the demo's (not a privacy officer's) decision, so the approval gates let the runs publish.
    """
    from opencity.review.testing import approve_policy, throwaway_key_path
    from privacy.policy import load_policy

    fresh = not throwaway_key_path(state_url).exists()
    done = approve_policy(state_url, by="opencity demo", source="demo",
                          comment="the demo's own approval (automatic; not a privacy "
                                  "officer's review)")
    if fresh:
        print(f"approval: the demo generated a throwaway privacy-officer key "
              f"({throwaway_key_path(state_url)}) and registered it in its own state store; "
              "a real portal registers its officer's key once (opencity officer register)",
              file=sys.stderr)
    if done:
        print(f"approval: the demo approves policy {load_policy().hash[:16]}… for "
              f"{', '.join(done)}, signed with its throwaway officer key (recorded as the "
              "demo's approval)", file=sys.stderr)
    return done


def _cmd(args: argparse.Namespace) -> int:
    summary = run_demo(args.out, seed=args.seed, scale=args.scale, start=args.start,
                       days=args.days, months=args.months)
    datasets = sorted(p.name for p in Path(summary["catalog"]).glob("*") if p.is_dir())
    print(f"\nOpenCity demo finished in {summary['seconds']} s "
          f"({len(summary['dag_runs'])} DAG runs, all successful).")
    for key in ("raw", "clean", "quarantine", "outputs", "manifests", "reports", "catalog",
                "review"):
        print(f"  {key:<11} {summary[key]}")
    print(f"  datasets    {', '.join(datasets) or '(none)'}")
    print(f"  summary     {Path(summary['run_dir']) / 'demo-summary.json'}")
    print(f"  budget      opencity budget {summary['run_dir']}  (privacy loss per person, "
          "state in its state/ folder)")
    return 0
