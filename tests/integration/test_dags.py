"""Every DAG file imports cleanly without touching connections, and runs for real."""

from __future__ import annotations

import json
import os
import socket
import stat
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
pytestmark = [pytest.mark.integration, pytest.mark.airflow]
# Zones of a run holding personal or unreleased data: owner-only folders and files.
RESTRICTED_ZONES = ("raw", "clean", "quarantine", "outputs", "ledger", "registry", "state")


def assert_restricted(run_dir: Path, raw_dir: Path) -> None:
    """Every folder (0700) and file (0600) of the restricted zones, and the raw input."""
    roots = [raw_dir] + [run_dir / z for z in RESTRICTED_ZONES if (run_dir / z).exists()]
    assert len(roots) >= 3, roots  # raw, clean, outputs at least (quarantine when any)
    wrong = []
    for root in roots:
        for path in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            want = 0o700 if path.is_dir() else 0o600
            if mode != want:
                wrong.append(f"{path.relative_to(root.parent)} {mode:04o}")
    assert not wrong, f"{len(wrong)} restricted path(s) too open: {wrong[:20]}"
    leftovers = [p for p in run_dir.rglob(".ingest-*")]
    assert not leftovers, leftovers


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
        assert dag.catchup is True  # missed intervals are scheduled (issue 23)
        assert dag.start_date.tzinfo is not None


def test_311_dag_runs_end_to_end(airflow_db, sample_raw, tmp_path):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    dag = DagBag(dag_folder=str(DAGS / "opencity_311.py")).get_dag("opencity_311")
    run_dir = tmp_path / "run"
    # A manual run covers the weekly interval that ends at its date: 2026-10-05..12.
    old_umask = os.umask(0o002)  # a permissive umask: restricted zones must not depend on it
    try:
        dr = dag.test(logical_date=datetime(2026, 10, 12, tzinfo=UTC),
                      run_conf={"run_dir": str(run_dir), "raw_dir": str(sample_raw)})
    finally:
        os.umask(old_umask)
    assert dr.state == DagRunState.SUCCESS
    assert_restricted(run_dir, sample_raw)
    tis = dr.get_task_instances()
    # The approval gate (opencity.review.airflow): the policy is approved, so the run takes
    # the preapproved branch and never waits.
    gate = {"approval.check", "approval.wait", "approval.approved", "approval.preapproved",
            "approval.record"}
    skipped = {"approval.wait", "approval.approved"}
    assert {ti.task_id for ti in tis} == {"ingest", "aggregate", "commit_partition",
                                          "publish_weekly",
                                          "anonymize_microdata", "commit_microdata",
                                          "publish_microdata",
                                          "manifest"} | gate
    assert all(ti.state == ("skipped" if ti.task_id in skipped else "success") for ti in tis)

    part = run_dir / "outputs" / "opencity-311-requests-weekly" / "dt=2026-10-05"
    table = pq.read_table(part / "part-0.parquet")
    assert table.num_rows > 0
    # outputs/ holds the table as Parquet (a Hive-partitioned table) and the DP release's
    # privacy statement (a JSON file, which a *.parquet reader skips); the CSV copy is in csv/.
    assert sorted(p.name for p in part.iterdir()) == ["part-0.parquet", "privacy.json"]
    assert (run_dir / "csv" / "opencity-311-requests-weekly" / "dt=2026-10-05" /
            "part-0.csv").exists()
    forbidden = {"requester_name", "requester_phone", "requester_email", "requester_address",
                 "requester_pid", "requesters", "lat", "lon", "description"}
    assert not forbidden & set(table.column_names)
    # DP per requester (the policy's method): every public cell published with an error
    # bound, nothing withheld (issue 10)
    assert "suppressed" not in table.column_names
    assert table.num_rows == 12 * 10  # districts x request types, from public keys
    assert all(r["requests"] is not None and r["requests_error_bound_95"] > 0
               for r in table.to_pylist())
    guard = json.loads((run_dir / "reports" / "opencity-311-requests-weekly" / "dt=2026-10-05"
                        / "guard.json").read_text())
    assert guard["passed"]

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
        catalog_load_problems,
        frictionless_errors,
        hive_problems,
        undescribed_columns,
    )

    errors = frictionless_errors(run_dir / "catalog")
    assert set(errors) == {"opencity-311-requests-weekly", "opencity-311-requests-microdata",
                           "opencity-districts", "opencity-regions", "opencity-request-types"}
    assert not catalog_load_problems(run_dir / "catalog")
    assert not any(errors.values()), errors
    assert not undescribed_columns(run_dir / "catalog")
    assert not hive_problems(run_dir / "outputs")

    # The k-anonymous microdata: recount every equivalence class independently.
    md = manifest["microdata"]
    assert md["released"] and md["published"]
    records = pq.read_table(run_dir / "outputs" / "opencity-311-requests-microdata" /
                            "dt=2026-10-05" / "part-0.parquet").to_pandas()
    # every published non-sensitive column, not only the declared quasi-identifiers
    qis = [c for c in records.columns if c != "request_type"]
    assert "status" in qis
    sizes = records.groupby(qis).size()
    assert sizes.min() >= md["k"]
    assert records.groupby(qis)["request_type"].nunique().min() >= md["l"]
    assert md["suppressed_records"] <= md["suppression_limit"] * md["rows_in"]
