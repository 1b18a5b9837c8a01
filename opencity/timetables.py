"""Run ids that name the partition they produce, and the Airflow plugin that registers them.

Airflow names a scheduled or backfill run after the moment it may run (``scheduled__`` /
``backfill__`` + the end of its data interval), so the run that produces ``dt=2026-10-05``
reads ``backfill__2026-10-06T00:00:00+00:00``. :class:`PartitionTimetable` is Airflow's own
cron data-interval timetable with one change: the scheduler's runs are called
``scheduled__dt=2026-10-05`` (the data-interval start, OpenCity's partition). Backfills of
Airflow 3.3.2 do not ask the timetable for a run id (``DagRun.generate_run_id`` in
``airflow.models.backfill``), so their runs keep Airflow's names; the method names them too
should a later Airflow ask. Airflow accepts "=" in run ids only when
``[scheduler] allowed_run_id_pattern`` allows it (README "Production Airflow"; compose sets
it); without that setting the run keeps Airflow's usual id rather than failing.

A custom timetable must be registered as an Airflow plugin for the scheduler to read it from a
serialized DAG; ``opencity[...]`` installs :class:`OpenCityPlugin` through the
``airflow.plugins`` entry point, nothing to copy into a plugins folder.
"""

from __future__ import annotations

import re
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.interval import CronDataIntervalTimetable


def partition_run_id(run_type: Any, start: Any) -> str:
    """``<run type>__dt=YYYY-MM-DD`` for a data interval starting at ``start``."""
    from opencity.settings import partition_name

    return f"{getattr(run_type, 'value', run_type)}__{partition_name(start)}"


class PartitionTimetable(CronDataIntervalTimetable):
    """Airflow's cron data-interval timetable whose runs are named after their partition."""


    def generate_run_id(self, *, run_type, run_after, data_interval, **extra) -> str:
        if data_interval is not None:
            candidate = partition_run_id(run_type, data_interval.start)
            from airflow.configuration import conf

            pattern = conf.get("scheduler", "allowed_run_id_pattern", fallback="").strip()
            if pattern and re.match(pattern, candidate):
                return candidate
        return super().generate_run_id(run_type=run_type, run_after=run_after,
                                       data_interval=data_interval, **extra)


class _Listeners:
    """``OpenCityPlugin.listeners``, imported when Airflow asks (the scheduler)."""

    def __get__(self, obj, owner) -> list:
        from opencity import airflow_listeners

        return [airflow_listeners]


class _FastAPIApps:
    """``OpenCityPlugin.fastapi_apps``, built when Airflow asks (the API server)."""

    def __get__(self, obj, owner) -> list:
        from opencity.review.airflow_app import LazyApps

        return LazyApps().__get__(obj, owner)


class OpenCityPlugin(AirflowPlugin):
    """OpenCity's Airflow plugin: its timetable (scheduler, API server, dag-processor), the
    listener that fails runs which cannot produce a partition (opencity.airflow_listeners)
    and the release-report app the approval request links to (opencity.review.airflow_app).
    """

    name = "opencity"
    timetables = [PartitionTimetable]  # noqa: RUF012 - AirflowPlugin reads a list
    listeners = _Listeners()
    fastapi_apps = _FastAPIApps()
