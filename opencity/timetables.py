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


class OpenCityPlugin(AirflowPlugin):
    """Registers OpenCity's timetable with Airflow (scheduler, API server, dag-processor)."""

    name = "opencity"
    timetables = [PartitionTimetable]  # noqa: RUF012 - AirflowPlugin reads a list
