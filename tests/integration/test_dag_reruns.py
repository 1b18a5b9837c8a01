"""Issue 23, parse-level and body-level checks (fast; the real-scheduler versions are in
test_airflow_operations.py): task ids `airflow tasks clear -t` can select one by one, the
catch-up settings, staged leftovers, the approval request's report links, the budget's
rejected spends."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
pytestmark = [pytest.mark.integration, pytest.mark.airflow]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag


def test_no_task_id_contains_another_so_clear_selects_one_task(dagbag):
    """Airflow 3.3's `tasks clear -t X` keeps the tasks whose id contains X as a substring
    (SerializedDAG.partial_subset): with no id inside another, -t <id> selects one task."""
    from airflow.serialization.serialized_objects import DagSerialization

    assert {"opencity_311", "cdr_mobility", "opencity_kpi"} <= set(dagbag.dags)
    for dag_id, dag in dagbag.dags.items():
        ids = dag.task_ids
        inside = [(a, b) for a in ids for b in ids if a != b and a in b]
        assert not inside, (dag_id, inside)
        served = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        for tid in ids:  # what the CLI does with -t tid
            assert served.partial_subset(task_ids=tid, include_upstream=False,
                                         include_downstream=False).task_ids == [tid]
    assert "publish_weekly" in dagbag.dags["opencity_311"].task_ids
    assert "-t TASK_ID -s DAY -e DAY -y" in dagbag.dags["opencity_311"].doc_md


def test_missed_intervals_are_caught_up_a_few_at_a_time(dagbag, monkeypatch):
    for dag_id, dag in dagbag.dags.items():
        assert dag.catchup is True, dag_id
        assert 1 < dag.max_active_runs <= 5, dag_id
    from opencity import dagkit
    from opencity.errors import ConfigError

    monkeypatch.setenv("OPENCITY_MAX_ACTIVE_RUNS", "2")
    assert dagkit.max_active_runs() == 2
    monkeypatch.setenv("OPENCITY_MAX_ACTIVE_RUNS", "0")
    with pytest.raises(ConfigError, match="at least 1"):
        dagkit.max_active_runs()


def test_staged_leftovers_of_a_partition_are_removed_and_nothing_else(tmp_path, dagbag):
    from opencity.dagkit import clean_staged_leftovers, output_datasets

    dag = dagbag.dags["opencity_311"]
    datasets = output_datasets(dag.tasks)
    assert datasets == ["opencity-311-requests-weekly", "opencity-311-requests-microdata"]
    weekly = tmp_path / "outputs" / datasets[0]
    for rel in (".dt=2026-10-05.staging/part-0.parquet", ".dt=2026-10-05.tmp123",
                "dt=2026-10-05/part-0.parquet", ".dt=2026-10-12.staging/part-0.parquet"):
        (weekly / rel).parent.mkdir(parents=True, exist_ok=True)
        (weekly / rel).write_bytes(b"x")
    other = tmp_path / "outputs" / "opencity-cdr-mobility-daily" / ".dt=2026-10-05.staging"
    other.mkdir(parents=True)
    removed = clean_staged_leftovers(tmp_path, datasets, "dt=2026-10-05")
    assert sorted(removed) == [f"{datasets[0]}/.dt=2026-10-05.staging",
                               f"{datasets[0]}/.dt=2026-10-05.tmp123"]
    assert sorted(p.name for p in weekly.iterdir()) == [".dt=2026-10-12.staging",
                                                         "dt=2026-10-05"]
    assert other.exists(), "another DAG's staging was touched"


def test_the_request_links_the_report_page_not_a_worker_file(monkeypatch):
    from opencity.review.airflow import report_links
    from opencity.review.gate import request_text

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.org")
    checked = {"partition": "dt=2026-10-05", "pending": ["ds-a"], "policy": {"ds-a": "abc"},
               "parameters": {"ds-a": {"epsilon": 1}}, "summaries": {"ds-a": "12 rows"},
               "reports": {"ds-a": "s3://bucket/city/reports/_review/ds-a.html"}}
    links = report_links("opencity_311", "manual__dt=2026-10-05", checked)
    assert links == {"ds-a": "https://airflow.example.org/opencity/report/opencity_311/"
                             "manual__dt%3D2026-10-05/ds-a"}
    _, body = request_text(checked, links)
    assert f"({links['ds-a']})" in body and "file://" not in body and "s3://" not in body
    local = {**checked, "reports": {"ds-a": "/srv/run/reports/_review/ds-a.html"}}
    _, plain = request_text(local)  # without links: the file location, as before
    assert "file:///srv/run/reports/_review/ds-a.html" in plain


def test_budget_marks_a_rejected_release(tmp_path):
    from opencity.budget import release_statuses
    from opencity.registry import Registry

    url = str(tmp_path / "state.sqlite")
    reg = Registry(url)
    reg.record_decision("ds", "dt=2026-10-05", "rejected", "officer", "no")
    reg.record_decision("ds", "dt=2026-10-12", "rejected", "officer", "no")
    reg.record_decision("ds", "dt=2026-10-12", "approved", "officer", "ok now")
    got = release_statuses(url, [("ds", "dt=2026-10-05"), ("ds", "dt=2026-10-12"),
                                 ("ds", "dt=2026-10-19")])
    assert got == {("ds", "dt=2026-10-05"): "rejected", ("ds", "dt=2026-10-12"): "spent",
                   ("ds", "dt=2026-10-19"): "spent"}
    assert datetime(2026, 10, 5, tzinfo=UTC)  # partitions are data-interval starts
