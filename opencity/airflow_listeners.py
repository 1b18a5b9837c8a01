"""Runs that cannot produce a partition fail the moment the scheduler starts them.

Registered with Airflow by OpenCity's plugin (:class:`opencity.timetables.OpenCityPlugin`,
``listeners``), so it runs inside the scheduler for the DAGs tagged ``opencity``. Airflow 3.3
would otherwise

* run an interval **before the DAG's start date** with no task at all (a task starts with the
  DAG, so none is created) and mark it a green success;
* leave a run of an interval that is **not over yet** "running": its tasks wait for their
  logical date, and with bounded ``max_active_runs`` it holds back the runs after it;
* mark any other run **with no task** a success.

:func:`refusal` says why such a run must not go ahead; :func:`on_dag_run_running` fails the
run as it starts, writes the reason into the run's note (shown in the grid) and logs it.
Nothing here reads data: only the run's interval, the DAG's start date and the task count.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

TAG = "opencity"


def refusal(start: datetime | None, end: datetime | None, dag_start: datetime | None,
            now: datetime, tasks: int) -> str | None:
    """Why a run of the interval [start, end) must not run, or None when it may.

    Args:
        start, end: the run's data interval (None for a run without one).
        dag_start: the DAG's start date (its first interval's start).
        now: the current time (tz-aware).
        tasks: how many task instances the run has.
    """
    if start is not None and dag_start is not None and start < dag_start:
        return (f"refused: the interval {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC "
                f"starts before the DAG's start date {dag_start:%Y-%m-%d %H:%M} UTC; no "
                "partition exists there. Trigger an interval on or after the start date.")
    if end is not None and end > now:
        return (f"refused: the interval {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC is "
                f"not over yet (now {now:%Y-%m-%d %H:%M} UTC); its data is incomplete. The "
                "scheduler runs it after it ends; trigger only finished intervals.")
    if tasks == 0:
        return ("refused: this run has no task to execute, so it would publish nothing while "
                "showing success. Check the run's interval and the DAG's start date.")
    return None


def _is_opencity(dag: Any) -> bool:
    return dag is not None and TAG in set(getattr(dag, "tags", None) or ())


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    """Fail an OpenCity run that cannot produce a partition, as the scheduler starts it."""
    dag = getattr(dag_run, "dag", None)
    if not _is_opencity(dag):
        return
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils import timezone
    from airflow.utils.state import DagRunState
    from sqlalchemy import func, select
    from sqlalchemy.orm import object_session

    session = object_session(dag_run)
    if session is None:  # not the scheduler's own object: nothing safe to change
        return
    tasks = session.scalar(select(func.count()).select_from(TaskInstance).where(
        TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id))
    reason = refusal(dag_run.data_interval_start, dag_run.data_interval_end,
                     getattr(dag, "start_date", None), timezone.utcnow(), int(tasks or 0))
    if reason is None:
        return
    log.error("OpenCity run %s of %s %s", dag_run.run_id, dag_run.dag_id, reason)
    dag_run.set_state(DagRunState.FAILED)
    dag_run.note = reason
    session.flush()
