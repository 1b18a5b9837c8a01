"""Run DAGs for real with Airflow's ``dag.test()`` in this process (SQLite metadata DB).

Used by ``opencity demo`` in a subprocess whose environment already points AIRFLOW_HOME and the
DAGs folder at the run directory, because Airflow reads its configuration at import time.

    python -m opencity.airflow_runner --run opencity_311@2026-10-12 --run opencity_311@2026-10-19
    python -m opencity.airflow_runner --range opencity_311 2026-10-05 2026-10-19 --conf '{...}'

``--range`` is ``opencity run`` (opencity.run.run_range): every interval of the DAG's timetable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime


def run(dag_dates: list[tuple[str, str]], reset_db: bool, conf: dict) -> list[dict]:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState
    from airflow.utils import db

    if reset_db:
        db.resetdb()
    else:
        db.initdb()
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    results = []
    for dag_id, day in dag_dates:
        dag = bag.get_dag(dag_id)
        if dag is None:
            raise SystemExit(f"unknown DAG {dag_id!r}; known: {', '.join(sorted(bag.dag_ids))}")
        logical = datetime.fromisoformat(day).replace(tzinfo=UTC)
        t0 = time.monotonic()
        dr = dag.test(logical_date=logical, run_conf=conf or None)
        state = str(dr.state.value if hasattr(dr.state, "value") else dr.state)
        results.append({"dag_id": dag_id, "logical_date": day, "state": state,
                        "seconds": round(time.monotonic() - t0, 2)})
        print(json.dumps(results[-1]), flush=True)
        if dr.state != DagRunState.SUCCESS:
            break
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", action="append", default=[], metavar="DAG_ID@YYYY-MM-DD",
                    help="a DAG and the logical date (data interval start) to run; repeatable")
    ap.add_argument("--reset-db", action="store_true")
    ap.add_argument("--conf", default="{}", help="JSON run conf passed to every run")
    ap.add_argument("--range", nargs=3, metavar=("DAG_ID", "FROM", "TO"),
                    help="every data interval starting in [FROM, TO) (opencity run)")
    args = ap.parse_args(argv)
    if args.range:
        from datetime import date

        from opencity.run import run_range

        dag_id, start, end = args.range
        return run_range(dag_id, date.fromisoformat(start), date.fromisoformat(end),
                         json.loads(args.conf))
    pairs = [tuple(r.split("@", 1)) for r in args.run]
    results = run(pairs, args.reset_db, json.loads(args.conf))
    ok = all(r["state"] == "success" for r in results) and len(results) == len(pairs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
