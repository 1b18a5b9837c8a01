"""bench/bench_mobility_engines.py runs the whole mobility command on a tiny generated day and
writes its JSON (runs, ratio to the lean baseline, memory, projection) and markdown table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]



def _run(bench, tmp_path: Path, engines: str, *extra: str) -> dict:
    out = tmp_path / "result.json"
    assert bench.main(["--events", "20000", "--engines", engines, "--data",
                       str(tmp_path / "data"), "--out", str(out), "--executors", "10,100",
                       "--projection-min-events", "10000",
                       *extra]) == 0
    return json.loads(out.read_text())


def _check_run(run: dict, engine: str, events: int) -> None:
    assert run["engine"] == engine and run["events"] == events
    assert run["seconds"] > 0 and run["cpu_seconds"] > 0 and run["peak_rss_mb"] > 20
    assert run["events_per_s_per_core"] == round(events / run["seconds"] / run["cores"])
    assert "load average" in run["load"]


def test_duckdb_and_lean_on_a_tiny_day(tmp_path, bench_engines):
    res = _run(bench_engines, tmp_path, "lean,duckdb")
    assert {"started", "machine", "load_start", "load_end", "config", "runs", "scaling",
            "projection"} <= set(res)
    events = int((tmp_path / "data" / "events-20000" / "COUNT").read_text())
    assert 15_000 < events < 30_000
    lean, duck = res["runs"]
    _check_run(lean, "lean", events)
    _check_run(duck, "duckdb", events)
    assert duck["rows_read"] == events  # the command read the whole generated day
    assert duck["ratio_to_lean"] == round(duck["seconds"] / lean["seconds"], 3)
    proj = res["projection"]["engines"]["duckdb"]
    assert proj["measured_events"] == events
    assert [r["executors"] for r in proj["by_executors"]] == [10, 100]
    h10, h100 = (r["hours"] for r in proj["by_executors"])
    assert h10 == pytest.approx(5e9 / (duck["events_per_s_per_core"] * 40) / 3600, abs=0.01)
    assert h100 == pytest.approx(h10 / 10, abs=0.01)
    assert res["projection"]["assumptions"]
    assert not (tmp_path / "result.partial.json").exists()  # replaced by the final result
    md = (tmp_path / "result.md").read_text()
    assert "| duckdb |" in md and "Assumptions" in md


@pytest.mark.slow
def test_spark_local_reports_its_driver_jvm(tmp_path, bench_engines):
    res = _run(bench_engines, tmp_path, "duckdb,spark-local", "--local-cores", "1", "--driver-memory", "1g")
    duck, spark = res["runs"]
    _check_run(spark, "spark-local", duck["events"])
    assert spark["cores"] == 1 and spark["rows_read"] == duck["events"]
    assert spark["driver_jvm_peak_rss_mb"] > 100  # the JVM was found and polled
    assert spark["jvm_cpu_seconds"] > 1 and duck["jvm_cpu_seconds"] is None
    assert set(res["projection"]["engines"]) == {"duckdb", "spark-local"}
