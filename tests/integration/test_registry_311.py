"""Issue 10 attack replay on the real 311 DAG: re-running the published week dt=2026-10-05
with weaker parameters (OPENCITY_SUPPRESSION_K=10 OPENCITY_MICRODATA_K=3) used to succeed,
replace the partition's files and rewrite the package's privacy block. Now the run fails,
the catalog stays byte-identical, and the package states each partition's parameters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
pytestmark = [pytest.mark.integration, pytest.mark.airflow]
WEEKLY = "opencity-311-requests-weekly"
MICRO = "opencity-311-requests-microdata"


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_republishing_a_week_with_other_parameters_is_refused(airflow_db, sample_raw, tmp_path,
                                                              monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    from opencity.registry import Registry

    monkeypatch.setenv("OPENCITY_STATE_URL", str(tmp_path / "state.sqlite"))
    dag = DagBag(dag_folder=str(DAGS / "opencity_311.py")).get_dag("opencity_311")
    run_dir = tmp_path / "run"
    conf = {"run_dir": str(run_dir), "raw_dir": str(sample_raw)}
    week = datetime(2026, 10, 12, tzinfo=UTC)  # the weekly interval starting 2026-10-05
    assert dag.test(logical_date=week, run_conf=conf).state == DagRunState.SUCCESS
    catalog = run_dir / "catalog"
    first = _snapshot(catalog)
    assert any(k.startswith(f"{WEEKLY}/resources/dt=2026-10-05") for k in first)

    # The attacker's rerun: weaker suppression and k. Refused by the policy.
    monkeypatch.setenv("OPENCITY_SUPPRESSION_K", "10")
    monkeypatch.setenv("OPENCITY_MICRODATA_K", "3")
    dr = dag.test(logical_date=week, run_conf=conf)
    assert dr.state == DagRunState.FAILED
    failed = {ti.task_id for ti in dr.get_task_instances() if ti.state == "failed"}
    # k = 3 is looser than the policy: refused where the microdata parameters are read (the
    # k-anonymity step, and the composition guard that re-checks the published microdata
    # before the weekly commit). The weekly table is DP (i10-releases): suppression_k does not
    # apply to it, and its recorded release would be replayed byte for byte.
    assert {"anonymize_microdata", "commit_partition"} <= failed
    assert _snapshot(catalog) == first

    # Other (even tighter) parameters for an already published week: refused by the registry.
    monkeypatch.delenv("OPENCITY_SUPPRESSION_K")
    monkeypatch.setenv("OPENCITY_MICRODATA_K", "6")
    dr = dag.test(logical_date=week, run_conf=conf)
    assert dr.state == DagRunState.FAILED
    now = _snapshot(catalog)
    # the weekly DP release was replayed from the ledger (same bytes; only package.json's
    # provenance names the new run); the microdata with k = 6 was refused: every published
    # file is the same bytes, and the microdata package is untouched
    assert {k: v for k, v in now.items() if k.startswith(MICRO)} == {
        k: v for k, v in first.items() if k.startswith(MICRO)}
    assert {k: v for k, v in now.items() if "/resources/" in k} == {
        k: v for k, v in first.items() if "/resources/" in k}
    reg = Registry(tmp_path / "state.sqlite")
    from privacy.policy import load_policy

    weekly_params = reg.get(WEEKLY, "dt=2026-10-05").params
    assert weekly_params["epsilon"] == load_policy().dataset(WEEKLY).budget.epsilon
    assert reg.get(MICRO, "dt=2026-10-05").params["k"] == 5

    # The same parameters again: a replay, the published files are byte-identical.
    monkeypatch.delenv("OPENCITY_MICRODATA_K")
    assert dag.test(logical_date=week, run_conf=conf).state == DagRunState.SUCCESS
    again = _snapshot(catalog)
    assert {k: v for k, v in again.items() if "/resources/" in k} == {
        k: v for k, v in first.items() if "/resources/" in k}
    pkg = json.loads((catalog / WEEKLY / "package.json").read_text())
    assert pkg["opencity"]["privacy"]["partitions"]["dt=2026-10-05"]["params"] == (
        weekly_params)
    assert pkg["opencity"]["privacy"]["policy_hash"] == reg.policy.hash
    if (catalog / MICRO).exists():
        assert reg.get(MICRO, "dt=2026-10-05").params["k"] == 5
