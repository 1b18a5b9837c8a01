"""Every DAG file imports cleanly without touching connections, and runs for real."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def test_dag_files_import_without_touching_connections(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import Connection, Variable

    touched = []

    def forbid(*args, **kwargs):
        touched.append(args)
        raise AssertionError("a DAG touched a connection, a Variable or the network at parse")

    monkeypatch.setattr(Connection, "get", classmethod(forbid))
    monkeypatch.setattr(Variable, "get", staticmethod(forbid))
    monkeypatch.setattr(socket.socket, "connect", forbid)
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert not touched
    files = {Path(d.fileloc).name for d in bag.dags.values()}
    assert files == {p.name for p in DAGS.glob("*.py")}, "every DAG file defines a DAG"
    for dag in bag.dags.values():
        assert dag.catchup is False
        assert dag.start_date.tzinfo is not None


def test_311_dag_runs_end_to_end(airflow_db, sample_raw, tmp_path):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    dag = DagBag(dag_folder=str(DAGS / "opencity_311.py")).get_dag("opencity_311")
    run_dir = tmp_path / "run"
    # A manual run covers the weekly interval that ends at its date: 2026-10-05..12.
    dr = dag.test(logical_date=datetime(2026, 10, 12, tzinfo=UTC),
                  run_conf={"run_dir": str(run_dir), "raw_dir": str(sample_raw)})
    assert dr.state == DagRunState.SUCCESS
    tis = dr.get_task_instances()
    assert {ti.task_id for ti in tis} == {"ingest", "aggregate", "commit_partition", "publish",
                                          "anonymize_microdata", "publish_microdata",
                                          "manifest"}
    assert all(ti.state == "success" for ti in tis)

    part = run_dir / "outputs" / "opencity-311-requests-weekly" / "dt=2026-10-05"
    table = pq.read_table(part / "part-0.parquet")
    assert table.num_rows > 0
    # outputs/ holds only Parquet (a Hive-partitioned table); the CSV copy is in csv/.
    assert sorted(p.name for p in part.iterdir()) == ["part-0.parquet"]
    assert (run_dir / "csv" / "opencity-311-requests-weekly" / "dt=2026-10-05" /
            "part-0.csv").exists()
    forbidden = {"requester_name", "requester_phone", "requester_email", "requester_address",
                 "requester_pid", "requesters", "lat", "lon", "description"}
    assert not forbidden & set(table.column_names)
    published = [r for r in table.to_pylist() if not r["suppressed"]]
    assert all(r["requests"] is not None for r in published)

    manifest = json.loads((run_dir / "manifests" / "opencity_311" / "dt=2026-10-05.json")
                          .read_text())
    counts = manifest["row_counts"]
    assert counts["rows_in"] == (counts["rows_clean"] + counts["rows_quarantined"]
                                 + counts["rows_other_intervals"])
    assert set(manifest["inputs"]) == {"requests.csv", "districts.csv"}
    assert manifest["code_version"]["opencity"]
    pkg = json.loads((run_dir / "catalog" / "opencity-311-requests-weekly" / "package.json")
                     .read_text())
    assert {r["partition"] for r in pkg["resources"]} == {"dt=2026-10-05"}
    assert (run_dir / "catalog" / "opencity-311-requests-weekly" / "datapackage.json").exists()
    from catalog_checks import (
        frictionless_errors,
        hive_problems,
        undescribed_columns,
    )

    errors = frictionless_errors(run_dir / "catalog")
    assert set(errors) == {"opencity-311-requests-weekly", "opencity-311-requests-microdata"}
    assert not any(errors.values()), errors
    assert not undescribed_columns(run_dir / "catalog")
    assert not hive_problems(run_dir / "outputs")

    # The k-anonymous microdata: recount every equivalence class independently.
    md = manifest["microdata"]
    assert md["released"] and md["published"]
    records = pq.read_table(run_dir / "outputs" / "opencity-311-requests-microdata" /
                            "dt=2026-10-05" / "part-0.parquet").to_pandas()
    qis = ["age", "gender", "district_id", "created"]
    sizes = records.groupby(qis).size()
    assert sizes.min() >= md["k"]
    assert records.groupby(qis)["request_type"].nunique().min() >= md["l"]
    assert md["suppressed_records"] <= md["suppression_limit"] * md["rows_in"]
