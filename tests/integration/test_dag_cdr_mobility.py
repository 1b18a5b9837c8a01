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
    assert {ti.task_id for ti in tis} == {"ingest", "release", "commit_partition", "publish",
                                           "manifest"} | gate
    assert all(ti.state == ("skipped" if ti.task_id in skipped else "success") for ti in tis)

    # Issue 19: every DAG writes a manifest, with the 311 DAG's keys and no raw identifier.
    from test_dag_cdr_mobility_manifest import _311_manifest_keys

    text = (run_dir / "manifests" / "cdr_mobility" / "dt=2026-10-06.json").read_text()
    assert set(json.loads(text)) == _311_manifest_keys(tmp_path)
    raw_ids = {v for p in (sample_raw / "cdr").glob("*.parquet")
               for c in ("subscriber_id", "imsi")
               for v in pq.read_table(p, columns=[c]).column(c).to_pylist() if v}
    assert raw_ids and not {v for v in raw_ids if v in text}

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
    # Issue 22: every mobility table loads whole from catalog/.../data/<table>/ and has a CSV
    # copy with the regions' names next to their codes.
    from catalog_checks import catalog_load_problems

    assert not catalog_load_problems(run_dir / "catalog")
    ddir = run_dir / "catalog" / "opencity-cdr-mobility-daily"
    named = pq.read_table(ddir / "data" / "hourly_presence").num_rows
    import pyarrow.csv as pacsv

    copy = pacsv.read_csv(ddir / "csv" / "hourly_presence" / "dt=2026-10-06" / "part-0.csv")
    assert copy.num_rows == named and all(copy["region_name"].to_pylist())

    # Rerun of the same day: the ledger returns the recorded release, nothing more is spent.
    before = (out / "hourly_presence.parquet").read_bytes()
    dr2 = dag.test(logical_date=datetime(2026, 10, 7, tzinfo=UTC), run_conf=conf)
    assert dr2.state == DagRunState.SUCCESS
    assert (out / "hourly_presence.parquet").read_bytes() == before
    import os

    from privacy.dp import Ledger
    ledger = Ledger(os.environ["OPENCITY_STATE_URL"])
    assert len(ledger.releases("opencity-cdr-mobility-daily")) == 1
    assert not (run_dir / "ledger").exists()  # the account is not inside the run dir

    # Issue 10 attack replay: a changed run_dir used to open a fresh ledger and spend the same
    # day again. Now the account is the portal's: the day is replayed byte for byte.
    run2 = tmp_path / "run2"
    dr3 = dag.test(logical_date=datetime(2026, 10, 7, tzinfo=UTC),
                   run_conf={"run_dir": str(run2), "raw_dir": str(sample_raw)})
    assert dr3.state == DagRunState.SUCCESS
    out2 = run2 / "outputs" / "opencity-cdr-mobility-daily" / "dt=2026-10-06"
    assert (out2 / "hourly_presence.parquet").read_bytes() == before
    assert len(ledger.releases()) == 1
    assert ledger.spent("subscriber", datetime(2026, 10, 6).date()) == pytest.approx((1.0, 0.0))

    # A trigger form cannot raise the budget: epsilon above the policy is refused when the run
    # is created (the typed param's maximum) and nothing is spent (daily_cap is no longer a
    # param).
    from airflow.sdk.exceptions import ParamValidationError

    from privacy.policy import load_policy

    assert "daily_cap" not in dag.params
    policy_eps = load_policy().dataset("opencity-cdr-mobility-daily").budget.epsilon
    with pytest.raises(ParamValidationError, match=f"maximum of {policy_eps}"):
        dag.test(logical_date=datetime(2026, 10, 8, tzinfo=UTC),
                 run_conf={**conf, "epsilon": 50.0})
    assert len(ledger.releases()) == 1
