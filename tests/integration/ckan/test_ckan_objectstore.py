"""The 311 DAG with its run directory on object storage (a real S3-compatible server, moto's),
its state in PostgreSQL and CKAN as the publish target: the set-up of workers that share no
disk. Every task pulls what it needs into a scratch copy and pushes its results back; tasks
exchange s3:// URIs; nothing of the run stays in the worker's temporary directory."""

from __future__ import annotations

import io
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

DAGS = Path(__file__).resolve().parents[3] / "dags"
pytestmark = [pytest.mark.integration, pytest.mark.ckan, pytest.mark.airflow]
WEEKLY = "opencity-311-requests-weekly"
MICRO = "opencity-311-requests-microdata"


def test_311_dag_on_object_storage_publishes_to_ckan(airflow_db, sample_raw, s3_env,
                                                     postgres_state_url, ckan_server,
                                                     ckan_admin, ckan_partition_table,
                                                     monkeypatch):
    import ckanapi
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.sdk import DagRunState
    from airflow.utils.session import create_session

    from opencity.review.testing import approve_policy
    from publish.ckan.partitions import partition_dataset_name

    # the products and their partition datasets (publish.ckan.partitions)
    for name in [n for d in (WEEKLY, MICRO) for n in (d, partition_dataset_name(d, "dt=2026-10-05"))]:
        try:
            ckan_admin.action.dataset_purge(id=name)
        except ckanapi.NotFound:
            pass
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    run = f"{s3_env}/city-run"
    fs.put(str(sample_raw) + "/", f"{run}/raw/", recursive=True)
    monkeypatch.setenv("OPENCITY_STATE_URL", postgres_state_url)
    approve_policy(postgres_state_url)
    monkeypatch.setenv("OPENCITY_CKAN_TOKEN", ckan_server.token)
    monkeypatch.setenv("OPENCITY_CKAN_ORGANIZATION", "opencity-dag-test")
    scratch_before = set(Path(tempfile.gettempdir()).glob("opencity-task-*"))

    dag = DagBag(dag_folder=str(DAGS / "opencity_311.py")).get_dag("opencity_311")
    conf = {"run_dir": run, "publish_target": "ckan", "ckan_url": ckan_server.url}
    dr = dag.test(logical_date=datetime(2026, 10, 12, tzinfo=UTC), run_conf=conf)
    assert dr.state == DagRunState.SUCCESS

    # The store holds the run: restricted clean partition, outputs, manifest, reports.
    key = run.removeprefix("s3://")
    held = {p[len(key) + 1:] for p in fs.find(run)}
    assert any(p.startswith("clean/service_requests/dt=2026-10-05/") for p in held)
    assert f"outputs/{WEEKLY}/dt=2026-10-05/part-0.parquet" in held
    assert "manifests/opencity_311/dt=2026-10-05.json" in held
    assert not any("/_staging" in p or p.startswith("catalog/") for p in held), sorted(held)
    manifest = fs.cat_file(f"{run}/manifests/opencity_311/dt=2026-10-05.json").decode()
    assert "opencity-task-" not in manifest and run in manifest
    json.loads(manifest)

    # Tasks exchanged URIs of the store, never a worker's local path.
    with create_session() as session:
        values = [json.dumps(x.value, default=str) for x in session.query(XComModel).filter(
            XComModel.dag_id == "opencity_311", XComModel.run_id == dr.run_id)]
    assert values and any(run in v for v in values)
    assert not any("opencity-task-" in v for v in values), "a scratch path reached XCom"
    # ... and no scratch copy (restricted rows) is left on this worker's disk.
    assert set(Path(tempfile.gettempdir()).glob("opencity-task-*")) == scratch_before

    # CKAN serves the very bytes the store holds.
    for name in (WEEKLY, MICRO):
        stored = pq.read_table(io.BytesIO(fs.cat_file(
            f"{run}/outputs/{name}/dt=2026-10-05/part-0.parquet")))
        assert ckan_partition_table(name, "dt=2026-10-05").equals(stored), name

    # The budget was spent once, in the shared PostgreSQL ledger; a rerun spends nothing.
    from privacy.dp.ledger import Ledger

    def spent():
        return json.dumps(Ledger(postgres_state_url).accounts(), sort_keys=True, default=str)

    first = spent()
    assert any(a["unit"] == "requester" and a["spent_epsilon"] > 0
               for a in json.loads(first)), first
    dr = dag.test(logical_date=datetime(2026, 10, 12, tzinfo=UTC), run_conf=conf)
    assert dr.state == DagRunState.SUCCESS
    assert spent() == first
