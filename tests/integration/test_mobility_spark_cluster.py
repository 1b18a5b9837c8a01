"""The whole mobility release on a real standalone Spark cluster (master + 2 workers from
PySpark's own launcher, 127.0.0.1): `opencity mobility --engine spark --spark-master
spark://...` writes the same tables and statements as `--engine duckdb` with the same seed,
and the cdr_mobility DAG's Spark path (param engine=spark, connection spark_default) runs
end to end."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from opencity.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from spark_cluster import standalone_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAY = "2026-10-05"
DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    with standalone_cluster(tmp_path_factory.mktemp("spark"), workers=2) as url:
        yield url


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mobility_spark_in")
    rng = np.random.default_rng(3)
    cells = [f"C{i:03d}" for i in range(40)]
    pacsv.write_csv(pa.table({
        "cell_id": cells, "lat": np.round(rng.uniform(-37.9, -37.7, 40), 5),
        "lon": np.round(rng.uniform(144.8, 145.1, 40), 5),
        "region_id": [f"R{i % 6}" for i in range(40)],
    }), tmp / "towers.csv")
    n = 8_000
    units = [f"pid{i:04d}" for i in rng.integers(0, 700, n)] + ["heavy"] * 10_000
    t0 = datetime.fromisoformat(DAY + "T00:00:00+00:00")
    secs = rng.integers(-1800, 86_400 + 1800, len(units))
    cell = [cells[i] for i in rng.integers(0, 40, len(units))]
    cell[5] = "NOT-A-CELL"
    (tmp / "cdr").mkdir()
    t = pa.table({"subscriber_pid": units,
                  "event_time": pa.array([t0 + timedelta(seconds=int(s)) for s in secs],
                                         pa.timestamp("us", tz="UTC")),
                  "cell_id": cell})
    pq.write_table(t.slice(0, 9000), tmp / "cdr" / "part-0.parquet")
    pq.write_table(t.slice(9000), tmp / "cdr" / "part-1.parquet")
    return tmp / "cdr", tmp / "towers.csv"


def _run(inputs, out, ledger, *extra):
    from opencity.review.testing import approve_policy

    approve_policy(str(ledger))  # each portal's officer approved the stored policy
    cdr, towers = inputs
    return main(["mobility", str(cdr), "--towers", str(towers), "--date", DAY, "--out",
                 str(out), "--ledger", str(ledger), "--quiet", "--seed", "21", *extra])


def test_cli_spark_cluster_release_equals_duckdb(master, inputs, tmp_path, capsys):
    from privacy.dp import Ledger

    assert _run(inputs, tmp_path / "duck", tmp_path / "a.sqlite") == 0
    assert _run(inputs, tmp_path / "spark", tmp_path / "b.sqlite", "--engine", "spark",
                "--spark-master", master) == 0
    capsys.readouterr()
    duck, spark = tmp_path / "duck", tmp_path / "spark"
    tables = ["hourly_presence", "od_matrix", "home_region", "gyration"]
    for name in tables:
        a, b = pq.read_table(duck / f"{name}.parquet"), pq.read_table(spark / f"{name}.parquet")
        assert a.schema == b.schema and a.equals(b), name  # keys, columns, noisy values
    da = json.loads((duck / "privacy.json").read_text())
    db = json.loads((spark / "privacy.json").read_text())
    assert da.pop("ledger")["epsilon"] == db.pop("ledger")["epsilon"] == 1.0
    assert da == db  # the same statement, product by product
    ra = json.loads((duck / "_run" / "report.json").read_text())
    rb = json.loads((spark / "_run" / "report.json").read_text())
    assert rb.pop("engine") == "spark" and rb.pop("spark_master") == master
    assert ra.pop("engine") == "duckdb"
    assert ra == rb and ra["rows_set_aside"]["unknown_cell"] == 1
    assert len(Ledger(tmp_path / "b.sqlite").releases()) == 1


@pytest.mark.airflow
def test_dag_spark_path_runs_on_the_cluster(master, airflow_db, sample_raw, tmp_path,
                                            monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    host, port = master.removeprefix("spark://").split(":")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps(
        {"conn_type": "spark", "host": f"spark://{host}", "port": int(port)}))
    monkeypatch.delenv("OPENCITY_SPARK_MASTER", raising=False)
    bag = DagBag(dag_folder=str(DAGS / "cdr_mobility.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("cdr_mobility")
    run_dir = tmp_path / "run"
    dr = dag.test(logical_date=datetime(2026, 10, 7, tzinfo=UTC),
                  run_conf={"run_dir": str(run_dir), "raw_dir": str(sample_raw),
                            "engine": "spark"})
    assert dr.state == DagRunState.SUCCESS
    out = run_dir / "outputs" / "opencity-cdr-mobility-daily" / "dt=2026-10-06"
    report = json.loads((out / "_run" / "report.json").read_text())
    assert report["engine"] == "spark" and report["spark_master"] == master
    assert pq.read_table(out / "hourly_presence.parquet").num_rows % 24 == 0
