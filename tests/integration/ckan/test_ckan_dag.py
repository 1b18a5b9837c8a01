"""The 311 DAG publishes to the real local CKAN through the same interface as the catalog."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

DAGS = Path(__file__).resolve().parents[3] / "dags"
pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.airflow]


def test_311_dag_publishes_to_ckan(airflow_db, sample_raw, tmp_path, ckan_server, ckan_admin,
                                   ckan_anon, samples, monkeypatch):
    import ckanapi
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    # The DAG's dataset names are fixed; start from a portal without them (test CKAN only).
    from publish.ckan.partitions import partition_dataset_name

    products = ("opencity-311-requests-weekly", "opencity-311-requests-microdata")
    for name in [n for d in products for n in (d, partition_dataset_name(d, "dt=2026-10-05"))]:
        try:
            ckan_admin.action.dataset_purge(id=name)
        except ckanapi.NotFound:
            pass
    monkeypatch.setenv("OPENCITY_CKAN_TOKEN", ckan_server.token)
    monkeypatch.setenv("OPENCITY_CKAN_ORGANIZATION", "opencity-dag-test")
    dag = DagBag(dag_folder=str(DAGS / "opencity_311.py")).get_dag("opencity_311")
    run_dir = tmp_path / "run"
    conf = {"run_dir": str(run_dir), "raw_dir": str(sample_raw), "publish_target": "ckan",
            "ckan_url": ckan_server.url}
    dr = dag.test(logical_date=datetime(2026, 10, 12, tzinfo=UTC), run_conf=conf)
    assert dr.state == DagRunState.SUCCESS
    assert not (run_dir / "catalog").exists(), "the CKAN target replaces the local catalog"

    from privacy.policy import load_policy

    policy = load_policy()  # the methods come from the stored policy, not from the output
    for name in ("opencity-311-requests-weekly", "opencity-311-requests-microdata"):
        privacy_method = policy.dataset(name).method
        pkg = samples.product(ckan_anon, name)  # public: an anonymous user sees it
        extras = {e["key"]: e["value"] for e in pkg.get("extras", [])}
        assert extras["privacy_method"] == privacy_method
        # format is the EU file-type IRI (DCAT-AP dct:format), e.g. .../file-type/PARQUET
        parquet = [r for r in pkg["resources"] if r.get("format", "").endswith("/PARQUET")
                   and r.get("partition") == "dt=2026-10-05"]
        assert len(parquet) == 1
        local = pq.read_table(run_dir / "outputs" / name / "dt=2026-10-05" / "part-0.parquet")
        body = requests.get(parquet[0]["url"], timeout=60)
        body.raise_for_status()
        assert pq.read_table(io.BytesIO(body.content)).equals(local)

    # A rerun of the same interval re-uploads nothing and adds no resource: same resource
    # ids and hashes (metadata may record the new run id as provenance).
    def resources():
        return {n: sorted((r["id"], r.get("hash"), r.get("last_modified"))
                          for r in samples.product(ckan_admin, n)["resources"])
                for n in ("opencity-311-requests-weekly", "opencity-311-requests-microdata")}

    before = resources()
    dr = dag.test(logical_date=datetime(2026, 10, 12, tzinfo=UTC), run_conf=conf)
    assert dr.state == DagRunState.SUCCESS
    after = resources()
    changed = {n: (sorted(set(after[n]) - set(before[n])), sorted(set(before[n]) - set(after[n])))
               for n in before if after[n] != before[n]}
    assert not changed, changed
