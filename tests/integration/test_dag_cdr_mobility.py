"""The cdr_mobility DAG runs end to end with dag.test() on sample data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def test_cdr_mobility_dag_runs_and_reruns_without_spending(airflow_db, sample_raw, tmp_path):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    bag = DagBag(dag_folder=str(DAGS / "cdr_mobility.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("cdr_mobility")
    run_dir = tmp_path / "run"
    conf = {"run_dir": str(run_dir), "raw_dir": str(sample_raw)}
    # The daily interval ending at this date: 2026-10-06.
    dr = dag.test(logical_date=datetime(2026, 10, 7, tzinfo=UTC), run_conf=conf)
    assert dr.state == DagRunState.SUCCESS
    tis = dr.get_task_instances()
    # The approval gate (opencity.review.airflow): the policy is approved, so the run takes
    # the preapproved branch and never waits.
    gate = {"approval.check", "approval.wait", "approval.approved", "approval.preapproved",
            "approval.record"}
    skipped = {"approval.wait", "approval.approved"}
    assert {ti.task_id for ti in tis} == {"ingest", "release", "publish"} | gate
    assert all(ti.state == ("skipped" if ti.task_id in skipped else "success") for ti in tis)

    parts = list((run_dir / "outputs" / "opencity-cdr-mobility-daily").iterdir())
    assert [p.name for p in parts] == ["dt=2026-10-06"]  # no temp dir left behind
    out = parts[0]
    doc = json.loads((out / "privacy.json").read_text())
    assert doc["date"] == "2026-10-06" and doc["ledger"]["epsilon"] == pytest.approx(1.0)
    hourly = pq.read_table(out / "hourly_presence.parquet")
    assert "subscriber_pid" not in hourly.column_names and hourly.num_rows % 24 == 0
    pkg = json.loads((run_dir / "catalog" / "opencity-cdr-mobility-daily" / "package.json")
                     .read_text())
    assert {r["partition"] for r in pkg["resources"]} == {"dt=2026-10-06"}

    # Rerun of the same day: the ledger returns the recorded release, nothing more is spent.
    before = (out / "hourly_presence.parquet").read_bytes()
    dr2 = dag.test(logical_date=datetime(2026, 10, 7, tzinfo=UTC), run_conf=conf)
    assert dr2.state == DagRunState.SUCCESS
    assert (out / "hourly_presence.parquet").read_bytes() == before
    from privacy.dp import BudgetCap, BudgetLedger
    ledger = BudgetLedger(run_dir / "ledger" / "privacy_budget.sqlite",
                          {"cdr_mobility": BudgetCap(1.0)})
    assert len(ledger.entries("cdr_mobility")) == 1
