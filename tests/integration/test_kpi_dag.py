"""The KPI DAG runs for real with dag.test() after the 311 source DAG, and reruns reuse the
recorded DP release instead of drawing new noise."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
pytestmark = [pytest.mark.integration, pytest.mark.airflow]

RAW_IDENTIFIERS = ("requester_name", "requester_phone", "requester_email", "requester_address",
                   "household_id", "household_address", "card_id", "subscriber_id", "imsi")


def _dag(dag_id: str, file: str):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS / file)).get_dag(dag_id)


def test_kpi_dag_runs_after_sources_and_publishes(airflow_db, sample_raw, tmp_path):
    from airflow.sdk import DagRunState

    from kpi.compute import KPI_COLUMNS

    run_dir = tmp_path / "run"
    conf = {"run_dir": str(run_dir), "raw_dir": str(sample_raw)}
    # the source DAG first: its catalog entry feeds the open-data KPI
    src = _dag("opencity_311", "opencity_311.py").test(
        logical_date=datetime(2026, 10, 12, tzinfo=UTC), run_conf=conf)
    assert src.state == DagRunState.SUCCESS

    dag = _dag("opencity_kpi", "opencity_kpi.py")
    # a manual run covers the monthly interval that ends at its date: October 2026
    dr = dag.test(logical_date=datetime(2026, 11, 1, tzinfo=UTC), run_conf=conf)
    assert dr.state == DagRunState.SUCCESS
    tis = dr.get_task_instances()
    # The approval gate (opencity.review.airflow): the policy is approved, so the run takes
    # the preapproved branch and never waits.
    gate = {"approval.check", "approval.wait", "approval.approved", "approval.preapproved",
            "approval.record"}
    skipped = {"approval.wait", "approval.approved"}
    assert {ti.task_id for ti in tis} == {"ingest", "compute", "dashboard", "commit_partition",
                                          "publish", "manifest"} | gate
    assert all(ti.state == ("skipped" if ti.task_id in skipped else "success") for ti in tis)

    part = run_dir / "outputs" / "opencity-kpis" / "dt=2026-10-01"
    table = pq.read_table(part / "kpis.parquet")
    assert tuple(table.column_names) == KPI_COLUMNS
    rows = table.to_pylist()
    assert len({r["kpi_code"] for r in rows}) >= 10
    assert len({r["fgssc_dimension"] for r in rows}) >= 4
    assert {r["period"] for r in rows} == {"2026-10"}
    assert {r["method"] for r in rows} <= {"public", "dp", "suppressed"}
    assert all(r["computed_at"] == datetime(2026, 11, 1, tzinfo=UTC) for r in rows)
    # the 311 weekly release of 2026-10-05 is in the catalog, the later weeks are not: the
    # 311 dataset is not on schedule for October
    open_data = next(r for r in rows if r["kpi_code"] == "EC: ICT: PS: 1A")
    assert open_data["value"] < 100

    html = (part / "dashboard.html").read_text()
    assert "<svg" in html and "http://" not in html.replace("http://www.w3.org", "")
    published = b"".join(p.read_bytes() for p in part.iterdir())
    assert not any(name.encode() in published for name in RAW_IDENTIFIERS)

    pkg = json.loads((run_dir / "catalog" / "opencity-kpis" / "package.json").read_text())
    assert {r["name"] for r in pkg["resources"]} == {"kpis", "kpis-csv", "dashboard"}
    assert pkg["opencity"]["primary_key"] == ["kpi_code", "area", "period"]

    manifest = json.loads((run_dir / "manifests" / "opencity_kpi" / "dt=2026-10-01.json")
                          .read_text())
    assert {e["privacy_unit"] for e in manifest["ledger"]} == {"household", "card", "requester",
                                                               "subscriber"}
    assert manifest["kpis"]["reused_release"] is False

    # a rerun of the same month republishes the recorded release: same noisy values
    dr2 = dag.test(logical_date=datetime(2026, 11, 1, tzinfo=UTC), run_conf=conf)
    assert dr2.state == DagRunState.SUCCESS
    again = pq.read_table(part / "kpis.parquet")
    assert again.column("value").to_pylist() == table.column("value").to_pylist()
    manifest2 = json.loads((run_dir / "manifests" / "opencity_kpi" / "dt=2026-10-01.json")
                           .read_text())
    assert manifest2["kpis"]["reused_release"] is True
