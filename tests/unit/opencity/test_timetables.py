"""Run ids naming their partition: opencity.timetables.PartitionTimetable, as the scheduler
reads it back from a serialized DAG (through the plugin the package registers)."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pendulum
import pytest
from airflow.timetables.base import DataInterval
from airflow.utils.types import DagRunType

from opencity.timetables import OpenCityPlugin, PartitionTimetable

DAGS = Path(__file__).resolve().parents[3] / "dags"
WEEK = DataInterval(pendulum.datetime(2026, 10, 5, tz="UTC"),
                    pendulum.datetime(2026, 10, 12, tz="UTC"))
EQUALS_ALLOWED = "^[A-Za-z0-9_.~:+=-]+$"


@pytest.fixture
def equals_allowed(monkeypatch):
    monkeypatch.setenv("AIRFLOW__SCHEDULER__ALLOWED_RUN_ID_PATTERN", EQUALS_ALLOWED)


def test_scheduled_and_backfill_runs_are_named_after_the_interval_start(equals_allowed):
    tt = PartitionTimetable("0 0 * * 1", timezone="UTC")
    for kind, prefix in ((DagRunType.SCHEDULED, "scheduled"),
                         (DagRunType.BACKFILL_JOB, "backfill")):
        assert tt.generate_run_id(run_type=kind, run_after=WEEK.end,
                                  data_interval=WEEK) == f"{prefix}__dt=2026-10-05"


def test_without_the_run_id_pattern_the_run_keeps_airflows_name(monkeypatch):
    monkeypatch.setenv("AIRFLOW__SCHEDULER__ALLOWED_RUN_ID_PATTERN", "^[A-Za-z0-9_.~:+-]+$")
    tt = PartitionTimetable("0 0 * * 1", timezone="UTC")
    assert tt.generate_run_id(run_type=DagRunType.SCHEDULED, run_after=WEEK.end,
                              data_interval=WEEK) == "scheduled__2026-10-12T00:00:00+00:00"


def test_the_package_registers_the_timetable_as_an_airflow_plugin():
    eps = {ep.name: ep.value for ep in entry_points(group="airflow.plugins")}
    assert eps.get("opencity") == "opencity.timetables:OpenCityPlugin"
    assert PartitionTimetable in OpenCityPlugin.timetables


def test_every_dag_round_trips_through_serialization_with_its_partition_names(
        equals_allowed):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors and bag.dags
    for dag_id, dag in bag.dags.items():
        back = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        assert type(back.timetable) is PartitionTimetable, dag_id
        assert back.timetable.summary == dag.timetable.summary
        day = DataInterval(pendulum.datetime(2026, 10, 5, tz="UTC"),
                           pendulum.datetime(2026, 10, 6, tz="UTC"))
        assert back.timetable.generate_run_id(
            run_type=DagRunType.SCHEDULED, run_after=day.end, data_interval=day
        ) == "scheduled__dt=2026-10-05", dag_id
