"""Every DAG writes a manifest (issue 19): a cdr_mobility run leaves one with the keys of the
311 DAG's (one writer, opencity.manifest.write_run_manifest) and no raw identifier in it,
even when identifiers are planted into every column of the raw CDR (slow: one more DAG run;
the default run checks keys and raw ids in tests/integration/test_dag_cdr_mobility.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def _311_manifest_keys(tmp_path: Path) -> set[str]:
    """The top-level keys of the 311 DAG's manifest, written by its own task body."""
    from opencity.pipelines import service_requests as p
    from opencity.settings import Settings

    start, end = datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 12, tzinfo=UTC)
    ingested = {"rows_in": 3, "rows_out": 2, "rows_quarantined": 1, "rows_other_intervals": 0,
                "input_hashes": {"requests.csv": "0" * 64}}
    staged = {"rows": 1, "rows_suppressed": 0, "method": "suppression"}
    path = p.manifest(Settings(run_dir=str(tmp_path / "run311")), "opencity_311", "r1", start,
                      end, ingested, staged, {"out_dir": "x"}, {"url": "y"},
                      extra={"microdata": {}})
    return set(json.loads(Path(path).read_text())) - {"microdata"}  # the 311 DAG's own


@pytest.mark.slow
def test_cdr_mobility_writes_a_manifest_like_the_311_one_without_identifiers(
        airflow_db, sample_raw, tmp_path):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState
    from planted import find, plant_copy

    raw = tmp_path / "raw"
    assert plant_copy(sample_raw, raw)["cdr"] > 0
    run_dir = tmp_path / "run"
    dag = DagBag(dag_folder=str(DAGS / "cdr_mobility.py")).get_dag("cdr_mobility")
    dr = dag.test(logical_date=datetime(2026, 10, 7, tzinfo=UTC),
                  run_conf={"run_dir": str(run_dir), "raw_dir": str(raw)})
    assert dr.state == DagRunState.SUCCESS
    assert {ti.task_id: ti.state for ti in dr.get_task_instances()}["manifest"] == "success"

    path = run_dir / "manifests" / "cdr_mobility" / "dt=2026-10-06.json"
    text = path.read_text()
    manifest = json.loads(text)
    assert set(manifest) == _311_manifest_keys(tmp_path)
    assert manifest["dag_id"] == "cdr_mobility" and manifest["partition"] == "dt=2026-10-06"
    assert manifest["data_interval"] == {"start": "2026-10-06T00:00:00+00:00",
                                         "end": "2026-10-07T00:00:00+00:00"}
    rc = manifest["row_counts"]
    assert rc["rows_quarantined"] > 0  # the planted rows
    assert rc["rows_in"] == rc["rows_clean"] + rc["rows_quarantined"] + rc["rows_other_intervals"]
    assert "towers.csv" in manifest["inputs"] and any(k.startswith("cdr/")
                                                      for k in manifest["inputs"])
    assert manifest["parameters"]["method"] == "differential_privacy"
    assert manifest["parameters"]["dp"]["epsilon"] == pytest.approx(1.0)
    assert manifest["validation"]["product"] and all(manifest["validation"]["product"].values())
    assert manifest["published"]["dataset"] == "opencity-cdr-mobility-daily"
    assert manifest["code_version"]["opencity"]
    assert find(text) == set(), "a planted identifier reached the manifest"
