"""Issue 10 attack replay on the real 311 DAG: re-running the published week dt=2026-10-05
with weaker parameters (OPENCITY_SUPPRESSION_K=10 OPENCITY_MICRODATA_K=3) used to succeed,
replace the partition's files and rewrite the package's privacy block. Now the run fails,
every published file stays byte-identical, and the package states each partition's
parameters. Whatever method the stored policy gives the weekly table (suppression or DP),
the k-anonymous microdata is where a caller could change k, so it carries the checks."""

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
    """The catalog as a reader sees it (through its ``current`` links; hidden snapshot
    folders left out, so a rewritten snapshot with the same content compares equal)."""
    import os

    out = {}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "current")
        for name in files:
            if not name.startswith("."):
                path = Path(folder) / name
                out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def _published(snap: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in snap.items() if "/data/" in k or "/csv/" in k or "/files/" in k}


def _micro(snap: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in snap.items() if k.startswith(f"{MICRO}/")}


def test_republishing_a_week_with_other_parameters_is_refused(airflow_db, sample_raw, tmp_path,
                                                              monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    from opencity.registry import Registry

    monkeypatch.setenv("OPENCITY_STATE_URL", str(tmp_path / "state.sqlite"))
    from opencity.review.testing import approve_policy

    approve_policy(str(tmp_path / "state.sqlite"))  # a fresh portal: its policy approved
    for var in ("OPENCITY_SUPPRESSION_K", "OPENCITY_MICRODATA_K"):
        monkeypatch.delenv(var, raising=False)
    dag = DagBag(dag_folder=str(DAGS / "opencity_311.py")).get_dag("opencity_311")
    run_dir = tmp_path / "run"
    conf = {"run_dir": str(run_dir), "raw_dir": str(sample_raw)}
    week = datetime(2026, 10, 12, tzinfo=UTC)  # the weekly interval starting 2026-10-05
    assert dag.test(logical_date=week, run_conf=conf).state == DagRunState.SUCCESS
    catalog = run_dir / "catalog"
    first = _snapshot(catalog)
    assert f"{WEEKLY}/data/requests-weekly/dt=2026-10-05/part-0.parquet" in first
    assert f"{MICRO}/data/requests-microdata/dt=2026-10-05/part-0.parquet" in first
    reg = Registry(tmp_path / "state.sqlite")
    k_published = reg.get(MICRO, "dt=2026-10-05").params["k"]
    assert k_published == reg.policy.dataset(MICRO).k

    # The attacker's rerun: weaker suppression and k. Refused (policy: tighten only).
    monkeypatch.setenv("OPENCITY_SUPPRESSION_K", "10")
    monkeypatch.setenv("OPENCITY_MICRODATA_K", "3")
    assert dag.test(logical_date=week, run_conf=conf).state == DagRunState.FAILED
    now = _snapshot(catalog)
    assert _published(now) == _published(first) and _micro(now) == _micro(first)

    # Other (even tighter) parameters for the already published week: refused by the
    # registry, which names the partition and both parameter sets.
    monkeypatch.delenv("OPENCITY_SUPPRESSION_K")
    monkeypatch.setenv("OPENCITY_MICRODATA_K", str(k_published + 2))
    assert dag.test(logical_date=week, run_conf=conf).state == DagRunState.FAILED
    now = _snapshot(catalog)
    assert _published(now) == _published(first) and _micro(now) == _micro(first)
    assert reg.get(MICRO, "dt=2026-10-05").params["k"] == k_published

    # The same parameters again: a replay; the published files are byte-identical.
    monkeypatch.delenv("OPENCITY_MICRODATA_K")
    assert dag.test(logical_date=week, run_conf=conf).state == DagRunState.SUCCESS
    assert _published(_snapshot(catalog)) == _published(first)
    for ds in (WEEKLY, MICRO):
        privacy = json.loads((catalog / ds / "package.json").read_text())["opencity"]["privacy"]
        assert privacy["partitions"]["dt=2026-10-05"]["params"] == reg.get(
            ds, "dt=2026-10-05").params
        assert privacy["policy_hash"] == reg.version_hash(ds)


def test_registry_refusal_message_names_partition_and_parameters(tmp_path, monkeypatch):
    """The refusal the DAG run above hits, read directly."""
    from opencity.registry import Registry, RepublishRefusedError

    reg = Registry(tmp_path / "state.sqlite")
    k = reg.policy.dataset(MICRO).k
    reg.record(MICRO, "dt=2026-10-05", {"k": k}, {}, {"params": {"k": k}})
    with pytest.raises(RepublishRefusedError) as err:
        reg.check(MICRO, "dt=2026-10-05", {"k": k + 2})
    msg = str(err.value)
    assert MICRO in msg and "dt=2026-10-05" in msg
    assert f'{{"k":{k}}}' in msg and f'{{"k":{k + 2}}}' in msg
