"""The GX gate blocks publication in a real dag.test() run fed a bad partition: the run
fails before publish and the local catalog stays byte-identical."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from transforms.schemas import SERVICE_REQUEST_TYPES

DAGS = Path(__file__).resolve().parents[2] / "dags"
pytestmark = [pytest.mark.integration, pytest.mark.airflow]
WEEK2 = (datetime(2026, 10, 12, tzinfo=UTC), datetime(2026, 10, 19, tzinfo=UTC))
LEAK = "call me on +49 151 2345 6789"


def _snapshot(catalog: Path) -> dict[str, bytes]:
    return {str(p.relative_to(catalog)): p.read_bytes() for p in sorted(catalog.rglob("*"))
            if p.is_file()}


def _bad_raw(sample_raw: Path, dest: Path, kind: str) -> Path:
    shutil.copytree(sample_raw, dest)
    path = dest / "service_requests" / "requests.csv"
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in ("created_at", "closed_at")}))
    created = pc.cast(pc.utf8_slice_codeunits(table["created_at"], 0, 10), pa.date32())
    week2 = pc.and_(pc.greater_equal(created, pa.scalar(WEEK2[0].date())),
                    pc.less(created, pa.scalar(WEEK2[1].date())))
    if kind == "leak":  # free text leaked into a category column of week 2
        third = pa.array([i % 3 == 0 for i in range(table.num_rows)])
        types = pc.if_else(pc.and_(week2, third), pa.scalar(LEAK), table["request_type"])
        table = table.set_column(table.column_names.index("request_type"), "request_type",
                                 types)
    else:  # the week-2 extract lost 95 % of its rows
        idx = pc.indices_nonzero(week2).to_pylist()
        drop = set(idx[len(idx) // 20:])
        keep = pa.array([i not in drop for i in range(table.num_rows)])
        table = table.filter(keep)
    pacsv.write_csv(table, path)
    return dest


def test_gate_blocks_publication_of_a_bad_partition(airflow_db, sample_raw, tmp_path):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    dag = DagBag(dag_folder=str(DAGS / "opencity_311.py")).get_dag("opencity_311")
    run_dir = tmp_path / "run"
    dr = dag.test(logical_date=datetime(2026, 10, 12, tzinfo=UTC),
                  run_conf={"run_dir": str(run_dir), "raw_dir": str(sample_raw)})
    assert dr.state == DagRunState.SUCCESS
    catalog = run_dir / "catalog"
    before = _snapshot(catalog)
    assert "opencity-311-requests-weekly/package.json" in before
    reports = run_dir / "reports"
    assert (reports / "service_requests" / "dt=2026-10-05" / "data_docs" / "index.html").exists()
    assert (reports / "opencity-311-requests-weekly" / "dt=2026-10-05" / "data_docs"
            / "opencity-311-requests-weekly.product.html").exists()
    manifest = json.loads((run_dir / "manifests" / "opencity_311" / "dt=2026-10-05.json")
                          .read_text())
    assert manifest["validation"]["clean"]["success"]
    assert manifest["validation"]["product"]["success"]

    # Week 2 lost 95 % of its rows: the clean suite stops the run at ingest.
    raw = _bad_raw(sample_raw, tmp_path / "raw-drop", "drop")
    dr = dag.test(logical_date=WEEK2[1], run_conf={"run_dir": str(run_dir), "raw_dir": str(raw)})
    assert dr.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["ingest"] == "failed", states
    assert all(states[t] != "success" for t in ("commit_partition", "publish_weekly",
                                                "publish_microdata", "manifest")), states
    assert _snapshot(catalog) == before, "the catalog changed"
    assert not (run_dir / "outputs" / "opencity-311-requests-weekly" / "dt=2026-10-12").exists()
    summary = json.loads((reports / "service_requests" / "dt=2026-10-12"
                          / "service_requests.clean.summary.json").read_text())
    assert not summary["success"]
    assert "expect_table_row_count_to_be_between" in {f["expectation"]
                                                     for f in summary["failures"]}

    # A phone number leaked into request_type of a third of week 2. request_type has a
    # domain (the public request types): ingestion quarantines those rows with the column
    # and the check as reason (never the value), so neither the weekly counts nor the
    # microdata release see them (the microdata gate's own domain check is tested in
    # tests/unit/expectations). The number reaches no output, catalog file or report.
    raw = _bad_raw(sample_raw, tmp_path / "raw-leak", "leak")
    dr = dag.test(logical_date=WEEK2[1], run_conf={"run_dir": str(run_dir),
                                                   "raw_dir": str(raw)})
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == DagRunState.SUCCESS, states
    manifest = json.loads((run_dir / "manifests" / "opencity_311" / "dt=2026-10-12.json")
                          .read_text())
    reasons = manifest["quarantine"]["reasons"]
    assert reasons.get("request_type: value outside its domain", 0) > 10, reasons
    md = pq.read_table(run_dir / "outputs" / "opencity-311-requests-microdata" / "dt=2026-10-12"
                       / "part-0.parquet")
    assert set(md["request_type"].to_pylist()) <= set(SERVICE_REQUEST_TYPES)
    for top in ("catalog", "outputs", "reports", "manifests", "quarantine"):
        for path in (run_dir / top).rglob("*"):
            if path.is_file() and path.suffix in (".json", ".csv", ".html"):
                assert "2345 6789" not in path.read_text(encoding="utf-8"), path
            if path.is_file() and path.suffix == ".parquet":
                text = json.dumps(pq.read_table(path).to_pylist(), default=str)
                assert "2345 6789" not in text, path
