"""Sources as configuration: the registry YAML and the per-source ingestion DAGs it makes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def test_registry_defines_meters_transit_and_waste():
    from opencity.source_registry import load_sources

    sources = load_sources()
    assert {"meter_readings", "transit_taps", "waste_pickups"} <= set(sources)


@pytest.mark.parametrize("body, fragment", [
    ("sources: {}", "non-empty"),
    ("sources: {waste_pickups: {path: w.parquet, schedule: '0 0 * * 1'}}", "start_date"),
    (("sources: {waste_pickups: {path: w.parquet, schedule: '0 0 * * 1', start_date: "
      "2026-10-05, shedule: x}}"), "shedule"),
    ("sources: {waste_pickups: {path: ../etc, schedule: '0 0 * * 1', start_date: 2026-10-05}}",
     "relative"),
    ("sources: {waste_pickups: {path: w, schedule: 'weekly', start_date: 2026-10-05}}", "cron"),
])
def test_registry_errors_name_the_file_and_key(tmp_path, body, fragment):
    from opencity.errors import ConfigError
    from opencity.source_registry import load_sources

    f = tmp_path / "sources.yaml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=fragment) as err:
        load_sources(f)
    assert str(f) in str(err.value)


def test_a_new_source_is_a_yaml_edit(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    f = tmp_path / "sources.yaml"
    f.write_text("sources:\n  transit_stops:\n    path: transit/stops.csv\n"
                 "    schedule: '0 0 1 * *'\n    start_date: 2026-10-01\n")
    monkeypatch.setenv("OPENCITY_SOURCES_FILE", str(f))
    bag = DagBag(dag_folder=str(DAGS / "ingest_sources.py"))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"ingest_transit_stops"}


@pytest.mark.parametrize("dag_id, logical, part", [
    ("ingest_waste_pickups", datetime(2026, 10, 12, tzinfo=UTC), "dt=2026-10-05"),
    ("ingest_transit_taps", datetime(2026, 10, 7, tzinfo=UTC), "dt=2026-10-06"),
    ("ingest_meter_readings", datetime(2026, 10, 7, tzinfo=UTC), "dt=2026-10-06"),
])
def test_source_dag_ingests_its_interval(airflow_db, sample_raw, tmp_path, dag_id, logical, part):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    dag = DagBag(dag_folder=str(DAGS / "ingest_sources.py")).get_dag(dag_id)
    run_dir = tmp_path / "run"
    dr = dag.test(logical_date=logical,
                  run_conf={"run_dir": str(run_dir), "raw_dir": str(sample_raw)})
    assert dr.state == DagRunState.SUCCESS
    source = dag_id.removeprefix("ingest_")
    clean = pq.read_table(run_dir / "clean" / source / part / "part-0.parquet")
    assert clean.num_rows > 0
    assert (run_dir / "manifests" / dag_id / f"{part}.json").exists()
