"""A period without input data, run through the real DAGs (dag.test): the run fails at its
first task with "no input rows" (issue 12: a trigger for an interval without input fails early
and says so), nothing downstream runs, nothing is published and the ledger is unchanged
(issue 10: an empty period publishes nothing and spends nothing)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def _dag(dag_id: str, file: str):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS / file)).get_dag(dag_id)


def _ledger_rows(state_url: str) -> list:
    from privacy.dp import Ledger

    ledger = Ledger(state_url)
    return [r.as_dict() for r in ledger.releases()] + ledger.accounts()


@pytest.mark.parametrize("dag_id,logical_date,dataset,partition", [
    # the sample covers 2026-10-05..18: the week of 2026-11-30 and December have no rows
    ("opencity_311", datetime(2026, 12, 7, tzinfo=UTC), "opencity-311-requests-weekly",
     "dt=2026-11-30"),
    ("opencity_kpi", datetime(2027, 1, 1, tzinfo=UTC), "opencity-kpis", "dt=2026-12-01"),
])
def test_empty_period_publishes_nothing_and_spends_nothing(airflow_db, sample_raw, tmp_path,
                                                           dag_id, logical_date, dataset,
                                                           partition):
    from airflow.sdk import DagRunState

    from opencity.settings import Settings

    run_dir = tmp_path / "run"
    state = Settings().state_url
    before = _ledger_rows(state)
    dr = _dag(dag_id, f"{dag_id}.py").test(
        logical_date=logical_date, run_conf={"run_dir": str(run_dir),
                                             "raw_dir": str(sample_raw)})
    assert dr.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["ingest"] == "failed"
    assert not any(st == "success" for tid, st in states.items()
                   if tid.startswith(("publish", "commit", "compute", "aggregate", "release")))
    assert not (run_dir / "outputs" / dataset / partition).exists()
    assert not (run_dir / "catalog" / dataset).exists()
    assert _ledger_rows(state) == before
