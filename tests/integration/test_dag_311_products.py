"""Issue 21 item 6: one 311 product's failure does not block the other (real Airflow,
``dag.test()`` on the sample city), and a city whose policy turns the microdata off runs
the weekly table alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

DAGS = Path(__file__).resolve().parents[2] / "dags"
POLICY = Path(__file__).resolve().parents[2] / "privacy" / "policy.yaml"
pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.slow]  # ~30 s a run
WEEK_END = datetime(2026, 10, 12, tzinfo=UTC)  # manual run: the week 2026-10-05..12
WEEKLY = "opencity-311-requests-weekly"
MICRODATA = "opencity-311-requests-microdata"


def _run(tmp_path, monkeypatch, sample_raw, edit):
    """dag.test() of opencity_311 under a copy of the policy changed by ``edit``, on a
    portal of its own whose officer approved that policy."""
    from airflow.dag_processing.dagbag import DagBag

    from opencity.review.testing import approve_policy

    doc = yaml.safe_load(POLICY.read_text())
    edit(doc)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("OPENCITY_POLICY", str(policy))
    state = str(tmp_path / "state.sqlite")
    monkeypatch.setenv("OPENCITY_STATE_URL", state)
    approve_policy(state)
    dag = DagBag(dag_folder=str(DAGS / "opencity_311.py")).get_dag("opencity_311")
    run_dir = tmp_path / "run"
    dr = dag.test(logical_date=WEEK_END, run_conf={"run_dir": str(run_dir),
                                                   "raw_dir": str(sample_raw)})
    return dr, {ti.task_id: ti for ti in dr.get_task_instances()}, run_dir


def test_failing_microdata_does_not_stop_the_weekly_table(airflow_db, sample_raw, tmp_path,
                                                          monkeypatch):
    from airflow.sdk import DagRunState

    def unbuildable(doc):  # a column the microdata cannot build: a real ConfigError
        doc["datasets"][MICRODATA]["columns"]["income"] = "quasi_identifier"

    dr, tis, run_dir = _run(tmp_path, monkeypatch, sample_raw, unbuildable)
    assert tis["anonymize_microdata"].state == "failed"
    assert tis["publish_microdata"].state == "upstream_failed"
    # The weekly table went through the gate and was published.
    assert tis["approval.check"].state == "success"
    assert tis["publish_weekly"].state == "success"
    assert (run_dir / "outputs" / WEEKLY / "dt=2026-10-05" / "part-0.parquet").exists()
    assert (run_dir / "catalog" / WEEKLY / "package.json").exists()
    assert not (run_dir / "outputs" / MICRODATA / "dt=2026-10-05").exists()
    assert not (run_dir / "catalog" / MICRODATA / "package.json").exists()  # unpublished
    # The manifest records what got through, then the run is red, naming the product.
    assert tis["manifest"].state == "failed"
    assert dr.state == DagRunState.FAILED
    manifest = json.loads((run_dir / "manifests" / "opencity_311" / "dt=2026-10-05.json")
                          .read_text())
    assert manifest["failed_products"] == [MICRODATA]
    assert manifest["microdata"]["failed"] is True
    assert manifest["published"]["target"] == "local"


def _disabled(doc):
    doc["datasets"][MICRODATA]["enabled"] = False


def _absent(doc):
    del doc["datasets"][MICRODATA]


@pytest.mark.parametrize("turned_off", [_disabled, _absent], ids=["enabled-false", "absent"])
def test_policy_without_microdata_runs_the_weekly_table_alone(airflow_db, sample_raw,
                                                              tmp_path, monkeypatch,
                                                              turned_off):
    from airflow.sdk import DagRunState

    dr, tis, run_dir = _run(tmp_path, monkeypatch, sample_raw, turned_off)
    assert dr.state == DagRunState.SUCCESS
    skipped = {"approval.wait", "approval.approved"}
    assert all(ti.state == ("skipped" if t in skipped else "success") for t, ti in tis.items())
    assert (run_dir / "outputs" / WEEKLY / "dt=2026-10-05" / "part-0.parquet").exists()
    assert not (run_dir / "outputs" / MICRODATA).exists()
    manifest = json.loads((run_dir / "manifests" / "opencity_311" / "dt=2026-10-05.json")
                          .read_text())
    assert manifest["microdata"]["skipped"] is True
    assert "turned off by the city's release policy" in manifest["microdata"]["reason"]
    assert manifest["failed_products"] == []
