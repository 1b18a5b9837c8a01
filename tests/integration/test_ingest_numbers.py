"""The KPI ingest task quarantines readings that are not numbers (NaN, +-inf, overflow, -0)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from opencity.secrets import Secret
from opencity.settings import Settings

pytestmark = [pytest.mark.integration]
KEY = Secret("n" * 32, "test")


def test_kpi_ingest_quarantines_80_non_finite_readings(sample_raw, tmp_path):
    from opencity.pipelines.kpi import ingest

    raw = tmp_path / "raw"
    shutil.copytree(sample_raw, raw)
    part = min((raw / "meters" / "readings").glob("*.parquet"))
    table = pq.read_table(part)
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    times = table["reading_time"]
    inside = pc.and_(pc.greater_equal(times, pa.scalar(start, times.type)),
                     pc.less(times, pa.scalar(end, times.type)))
    idx = [i for i, ok in enumerate(inside.to_pylist()) if ok][:80]
    assert len(idx) == 80
    bad = [float("nan"), float("inf"), float("-inf"), -0.0]
    values = table["value"].to_pylist()
    for n, i in enumerate(idx):
        values[i] = bad[n % len(bad)]
    table = table.set_column(table.column_names.index("value"), "value",
                             pa.array(values, pa.float64()))
    pq.write_table(table, part)
    before = sum(1 for v in values if v == 0.0 and str(v) == "-0.0")

    settings = Settings(run_dir=str(tmp_path / "run"), raw_dir=str(raw))
    out = ingest(settings, start, end, key=KEY)
    readings = out["sources"]["meter_readings"]
    assert readings["rows_quarantined"] == 80, readings
    assert before == 20
    clean = pq.read_table(readings["clean_path"])["value"]
    assert pc.all(pc.is_finite(clean)).as_py()
    assert readings["rows_in"] == (readings["rows_out"] + readings["rows_quarantined"]
                                   + readings["rows_other_intervals"])
