"""Names shifted into request_type (a column off by one) never reach the catalog."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.slow]
DAGS = Path(__file__).resolve().parents[2] / "dags"
NAMES = ("Hanife Tintzmann", "Zoë Łukasiewicz-Müller", "Jürgen Ørsted", "Ana Ćosić",
         "Søren Kierkegaard-Brandt", "Élodie Fabré", "Małgorzata Wójcik", "Ümit Özdemir")


def test_names_in_request_type_are_quarantined_not_published(airflow_db, sample_raw, tmp_path):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    raw = tmp_path / "raw"
    shutil.copytree(sample_raw, raw)
    path = raw / "service_requests" / "requests.csv"
    names = pacsv.read_csv(path, read_options=pacsv.ReadOptions(
        skip_rows_after_names=1 << 30)).column_names
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.string())))
    data = {c: table[c].to_pylist() for c in names}
    rows = [i for i, t in enumerate(data["created_at"]) if t.startswith("2026-10-0")][:40]
    for n, i in enumerate(rows):
        data["request_type"][i] = NAMES[n % len(NAMES)]
    pacsv.write_csv(pa.table({c: pa.array(v, pa.string()) for c, v in data.items()}), path)

    run_dir = tmp_path / "run"
    dag = DagBag(dag_folder=str(DAGS / "opencity_311.py")).get_dag("opencity_311")
    dr = dag.test(logical_date=datetime(2026, 10, 12, tzinfo=UTC),
                  run_conf={"run_dir": str(run_dir), "raw_dir": str(raw)})
    catalog = "\n".join(p.read_bytes().decode("utf-8", "replace")
                        for p in (run_dir / "catalog").rglob("*") if p.is_file())
    published = sorted(n for n in NAMES if n in catalog)
    assert not published, f"{len(published)} names published: {published}"
    assert dr.state == DagRunState.SUCCESS
    manifest = json.loads((run_dir / "manifests" / "opencity_311" / "dt=2026-10-05.json")
                          .read_text())
    reasons = manifest["quarantine"]["reasons"]
    assert reasons.get("request_type: value outside its domain", 0) >= 1, reasons
