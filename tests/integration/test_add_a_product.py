"""Issue 19: a new DP product is a specification. This file defines one (requests per district
and week, DP per requester) with its policy entry, builds its DAG with the factory and runs
it end to end on the sample city with real Airflow (``dag.test()``), touching no project file:
ledger spend, composition guard, quality gate, approval gate, release registry, catalog,
manifest all come from the one release protocol (opencity.release)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

ROOT = Path(__file__).resolve().parents[2]
DATASET = "test-311-requests-per-district"
EPSILON = 0.3
WEEK_END = datetime(2026, 10, 12, tzinfo=UTC)  # manual run: the week 2026-10-05..12
POLICY_ENTRY = {
    "description": "weekly 311 requests per district, DP per requester (test product)",
    "method": "differential_privacy", "unit": "requester", "cadence": "weekly",
    "epsilon": EPSILON, "delta": 0.0,
    "columns": {c: "public" for c in ("district_id", "value", "noise_std", "error_bound_95",
                                      "mechanism")},
}


# ---------------------------------------------------------------- the product, in full
def stage(settings, ingested, _previous, start, end):
    """DP count of the week's requests per district inside the ledger's release protocol."""
    from opencity.io import STATEMENT_FILE, PrivacyStatement
    from opencity.release import Staged
    from opencity.settings import partition_name
    from privacy.dp import ContributionBounds, DPBudget, Ledger, dp_count
    from privacy.policy import load_policy

    entry = load_policy().dataset(DATASET)
    districts = pa.table({"district_id": sorted(
        set(pq.read_table(ingested["clean_path"]).column("district_id").drop_null()
            .to_pylist()))})
    part = partition_name(start)
    staging = settings.layout.output(DATASET, start).with_name(f".{part}.staging")

    def compute():
        clean = pq.read_table(ingested["clean_path"])
        table = dp_count(clean.filter(pa.compute.is_valid(clean["requester_pid"])),
                         unit="requester_pid", by=["district_id"],
                         budget=DPBudget(entry.budget.epsilon),
                         bounds=ContributionBounds(max_partitions=1,
                                                   max_rows_per_partition=3),
                         public_keys=districts, seed=settings.seed)
        table = table.select(["district_id", "value", "noise_std", "error_bound_95",
                              "mechanism"])
        buf = io.BytesIO()
        pq.write_table(table, buf)
        statement = PrivacyStatement(
            dataset=DATASET, partition=part, method="differential_privacy",
            spent={"requester": {"epsilon": entry.budget.epsilon, "delta": 0.0}},
            products={"requests": {"mechanism": "Geometric", "epsilon": entry.budget.epsilon,
                                   "max_partitions": 1, "max_rows_per_partition": 3}})
        return statement.to_dict(), {"part-0.parquet": buf.getvalue(),
                                     STATEMENT_FILE: statement.to_bytes()}

    outcome = Ledger(settings.state_url).release(
        DATASET, part, start.date(), {"requester": entry.budget}, compute)
    from opencity.io import write_bytes_atomic

    for name, content in outcome.artifacts.items():
        write_bytes_atomic(content, staging / name)
    spend = outcome.record.spend_for("requester")
    return Staged(DATASET, part, staging_dir=str(staging),
                  details={"epsilon": spend.epsilon, "delta": spend.delta,
                           "ledger_id": outcome.record.id})


def guard(settings, staged, folder, start):
    from privacy import guard as g

    table = pq.read_table(folder / "part-0.parquet")
    report = g.guard(DATASET, staged.partition,
                     [g.dp_cells(table, keys=("district_id",), count="value",
                                 error_bound="error_bound_95",
                                 public_keys=table.select(["district_id"]))], [DATASET])
    path = report.write(settings.layout.reports(DATASET, start) / "guard.json")
    report.raise_if_failed(path)
    return {"passed": True, "report": str(path)}


def gate(settings, staged, folder, start):
    from expectations.gate import validate_or_raise

    return validate_or_raise(
        DATASET, folder / "part-0.parquet", reports_dir=settings.layout.reports(DATASET, start),
        context={"privacy": {"kind": "dp", "count_columns": ["value"],
                             "statement": str(folder / "privacy.json"),
                             "ledger_epsilon": staged["epsilon"],
                             "ledger_delta": staged["delta"]}})


def release_for(settings, committed, start, end, provenance):
    from publish.base import DatasetRelease, Field, Resource

    out = Path(committed.output_dir)
    return DatasetRelease(
        name=DATASET, title="311 requests per district, weekly (test product)",
        description="Weekly number of 311 requests per district, DP per requester.",
        resources=(Resource(out / "part-0.parquet", "requests-per-district", "parquet",
                            f"Week starting {start:%Y-%m-%d}", committed.partition),),
        fields=(Field("district_id", "string", "district code"),
                Field("value", "integer", "noisy number of requests"),
                Field("noise_std", "number", "noise standard deviation"),
                Field("error_bound_95", "number", "95 % error bound"),
                Field("mechanism", "string", "noise mechanism")),
        privacy={"privacy_method": "differential_privacy", "privacy_unit": "requester",
                 "epsilon": committed["epsilon"], "delta": committed["delta"]},
        tags=("311", "test"), temporal_coverage=(f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"),
        accrual_periodicity="R/P1W", provenance=provenance)


def manifest(settings, dag_id, run_id, start, end, ingested, outcomes):
    from opencity.manifest import write_run_manifest

    o = outcomes[DATASET]
    path = settings.layout.manifest(dag_id, start)
    write_run_manifest(path, dag_id=dag_id, run_id=run_id, start=start, end=end,
                       inputs=ingested.get("input_hashes", {}),
                       row_counts={"rows_in": ingested["rows_in"],
                                   "product_rows": o.committed.rows},
                       parameters={"epsilon": o.committed["epsilon"]},
                       outputs={"output_dir": o.committed.output_dir},
                       published=o.published.to_xcom())
    return str(path)


def _spec():
    from opencity.release import ProductSpec, Step

    return ProductSpec(
        dataset=DATASET, files=("part-0.parquet", "privacy.json"), table="part-0.parquet",
        stages=(Step("count", stage),), guard=guard, gate=gate, release=release_for,
        params=lambda _s, c: {"epsilon": c["epsilon"], "delta": c["delta"]},
        commit_task="commit_count", publish_task="publish_count")


def build_dag(dag_file: str):
    """The product's DAG from the factory (what a DAG file of the product would hold)."""
    from opencity.dagkit import release_dag
    from opencity.pipelines.products_311 import ingest
    from opencity.timetables import PartitionTimetable

    return release_dag(
        dag_id="test_add_a_product", schedule=PartitionTimetable("0 0 * * 1", timezone="UTC"),
        start_date=datetime(2026, 9, 28, tzinfo=UTC), doc_md="A test product.", period="week",
        example="2026-10-05", example_end="2026-10-12", ingest=ingest, products=(_spec(),),
        manifest=manifest, fileloc=dag_file)


# ---------------------------------------------------------------- the test
def test_a_product_defined_here_runs_through_the_dag_factory(airflow_db, sample_raw, tmp_path,
                                                           monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    from opencity.review.testing import approve_policy
    from privacy.dp import Ledger

    doc = yaml.safe_load((ROOT / "privacy" / "policy.yaml").read_text())
    doc["datasets"][DATASET] = POLICY_ENTRY
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("OPENCITY_POLICY", str(tmp_path / "policy.yaml"))
    state = str(tmp_path / "state.sqlite")
    monkeypatch.setenv("OPENCITY_STATE_URL", state)
    approve_policy(state)

    # The DAG file of the product: two lines (the DagBag serializes it, as for dags/).
    dag_file = tmp_path / "dags" / "test_add_a_product_dag.py"
    dag_file.parent.mkdir()
    dag_file.write_text("# an airflow DAG file\nfrom test_add_a_product import build_dag\n\n"
                        "dag = build_dag(__file__)\n")
    # dag.test() serializes the DAGs of the configured DAG bundles: add this folder as one.
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([
        {"name": "dags-folder", "classpath": local, "kwargs": {"path": str(ROOT / "dags")}},
        {"name": "test-products", "classpath": local, "kwargs": {"path": str(dag_file.parent)}},
    ]))
    dag = DagBag(dag_folder=str(dag_file)).get_dag("test_add_a_product")
    assert dag is not None
    run_dir = tmp_path / "run"
    dr = dag.test(logical_date=WEEK_END, run_conf={"run_dir": str(run_dir),
                                                   "raw_dir": str(sample_raw)})
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == DagRunState.SUCCESS, states
    assert {"ingest", "count", "commit_count", "approval.check", "publish_count",
            "manifest"} <= set(states)

    # Spent once from the requester's account, at the policy's epsilon.
    releases = Ledger(state).releases(DATASET)
    assert len(releases) == 1 and releases[0].spend_for("requester").epsilon == EPSILON
    # Committed by the runner (guard and gate reports), published in the catalog and recorded.
    part = run_dir / "outputs" / DATASET / "dt=2026-10-05"
    table = pq.read_table(part / "part-0.parquet")
    assert table.num_rows > 0 and set(table.column_names) == set(POLICY_ENTRY["columns"])
    reports = run_dir / "reports" / DATASET / "dt=2026-10-05"
    assert json.loads((reports / "guard.json").read_text())["passed"] is True
    pkg = json.loads((run_dir / "catalog" / DATASET / "package.json").read_text())
    assert [p["partition"] for p in pkg["opencity"]["partitions"]] == ["dt=2026-10-05"]
    assert pkg["opencity"]["privacy"]["epsilon"] == EPSILON
    man = json.loads((run_dir / "manifests" / "test_add_a_product" / "dt=2026-10-05.json")
                     .read_text())
    assert man["parameters"]["epsilon"] == EPSILON and man["row_counts"]["product_rows"] > 0
    from opencity.io import read_statement

    assert read_statement(part / "privacy.json").spent == {"requester": {"epsilon": EPSILON,
                                                                        "delta": 0.0}}

    # A rerun of the week replays the recorded release: nothing more is spent.
    dr2 = dag.test(logical_date=WEEK_END, run_conf={"run_dir": str(run_dir),
                                                    "raw_dir": str(sample_raw)})
    assert dr2.state == DagRunState.SUCCESS
    assert len(Ledger(state).releases(DATASET)) == 1
    assert pq.read_table(part / "part-0.parquet").equals(table)
