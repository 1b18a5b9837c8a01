"""Issue 23 item 4: in command-line mode (no Airflow UI) a release that needs approval fails
at once, once, and names the command to run.

Before, ``approval.check`` raised a plain error that Airflow retried with the DAG's
backoff (3 retries, 697-708 s in the issue) and logged the same message four times. The DAG
below is the approval gate exactly as the DAG files wire it (opencity.review.airflow), with
the production retry policy of opencity.dagkit (3 retries, 60 s doubling)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.slow]

DATASET = "opencity-311-requests-weekly"


def _serialize(dag) -> None:
    """Write a DAG defined in this test to the metadata DB (dag.test() runs serialized DAGs
    only; the DAGs folder's bundle does not hold this one)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def test_cli_mode_approval_fails_at_once_naming_the_command(airflow_db, tmp_path, monkeypatch,
                                                            capfd):
    from airflow.sdk import DAG, DagRunState

    from opencity import dagkit
    from opencity.review.airflow import approval_gate
    from opencity.review.approvals import ReviewStore

    state = tmp_path / "state.sqlite"  # nobody approved anything here
    monkeypatch.setenv("OPENCITY_STATE_URL", str(state))
    monkeypatch.setenv("OPENCITY_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("OPENCITY_APPROVAL_MODE", "cli")
    monkeypatch.setenv("OPENCITY_TASK_RETRIES", "3")  # the production defaults
    monkeypatch.setenv("OPENCITY_RETRY_DELAY_SECONDS", "60")
    args = dagkit.default_args()
    assert args["retries"] == 3 and args["retry_delay"].total_seconds() == 60
    with DAG("opencity_test_cli_approval", schedule=None,
             start_date=datetime(2026, 10, 1, tzinfo=UTC), default_args=args) as dag:
        approval_gate(DATASET)
    _serialize(dag)

    t0 = time.monotonic()
    dr = dag.test(logical_date=datetime(2026, 10, 5, tzinfo=UTC))
    elapsed = time.monotonic() - t0
    assert elapsed < 60, f"the approval wait took {elapsed:.0f} s to fail"
    assert dr.state == DagRunState.FAILED
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    check = tis["approval.check"]
    assert check.state == "failed" and check.try_number == 1  # no retry
    assert tis["approval.record"].state != "success"
    # One request is open, and the failure names the command that resolves it, once.
    (req,) = ReviewStore(str(state)).requests(status="open")
    assert req.dataset == DATASET
    command = f"opencity approve {DATASET} --policy {req.policy_hash}"
    out = "".join(capfd.readouterr())
    assert command in out
    assert out.count("Task failed with exception") == 1  # once, not after every retry
