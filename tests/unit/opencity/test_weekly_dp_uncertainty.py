"""The DP weekly 311 table publishes each cell's noise standard deviation and the unfloored
noisy count beside the floored one; the GX product suite holds them to that; sums of the
unfloored column are unbiased where sums of the floored one are not."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from opencity.errors import DataQualityError
from opencity.pipelines.service_requests import (
    DP_FIELDS,
    POST_PROCESSING,
    WeeklyDPConfig,
    dp_weekly_table,
)

WEEK = datetime(2026, 10, 5, tzinfo=UTC)
DISTRICTS = pa.table({"district_id": ["D01", "D02", "D03"]})



def _clean(n: int) -> pa.Table:
    rows = [{"request_id": f"R{i}", "requester_pid": f"P{i}", "district_id": "D01",
             "request_type": "pothole", "created_at": WEEK,
             "closed_at": WEEK + timedelta(hours=3 + i % 40)} for i in range(n)]
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("request_id", pa.string()), ("requester_pid", pa.string()),
        ("district_id", pa.string()), ("request_type", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("closed_at", pa.timestamp("us", tz="UTC"))]))


def test_every_count_cell_has_its_sd_bound_and_unfloored_value():
    table, statement = dp_weekly_table(_clean(30), DISTRICTS, WEEK,
                                       WeeklyDPConfig(epsilon=0.6), seed=1, random_state=5)
    assert table.column_names == [f.name for f in DP_FIELDS]
    rows = table.to_pylist()
    for r in rows:
        assert r["requests"] == max(r["requests_unfloored"], 0)
        assert r["requests_noise_std"] > 0
        # a 95 % bound of integer noise is about 1.96 SD (discrete: within one unit)
        assert 1.5 * r["requests_noise_std"] < r["requests_error_bound_95"] < (
            2.5 * r["requests_noise_std"] + 1)
        if r["median_resolution_hours"] is not None:
            assert r["median_resolution_hours_noise_std"] == pytest.approx(
                r["median_resolution_hours_error_bound_95"] / 1.959963984540054, abs=1e-3)
    # with 3 x 8 cells, most empty, at epsilon 0.45 some noisy counts fall below zero
    assert any(r["requests_unfloored"] < 0 for r in rows)
    assert statement.details["post_processing"] == POST_PROCESSING
    assert "floored at 0" in POST_PROCESSING["requests"]


def test_unfloored_sums_are_unbiased_and_floored_sums_are_not():
    """Over 20 releases of an (almost) empty table, the mean published total of the floored
    column sits far above the true total; that of the unfloored column within 4 standard
    errors of it."""
    clean = _clean(3)  # true total 3 (one pothole cell), the other cells 0
    floored, unfloored = [], []
    for rs in range(20):
        t, _ = dp_weekly_table(clean, DISTRICTS, WEEK, WeeklyDPConfig(epsilon=0.6), seed=1,
                               random_state=rs)
        floored.append(sum(t.column("requests").to_pylist()))
        unfloored.append(sum(t.column("requests_unfloored").to_pylist()))
        sd = t.column("requests_noise_std")[0].as_py()
        cells = t.num_rows
    se = sd * math.sqrt(cells) / math.sqrt(len(unfloored))
    assert abs(np.mean(unfloored) - 3) < 4 * se
    assert np.mean(floored) - 3 > 5 * se


def _validate(table: pa.Table, statement, tmp_path):
    from expectations.gate import validate_or_raise
    from transforms.schemas import SCHEMAS

    return validate_or_raise(
        "opencity-311-requests-weekly", table, reports_dir=tmp_path,
        context={"schema": SCHEMAS["service_requests"],
                 "interval": (WEEK, WEEK + timedelta(weeks=1)),
                 "districts": DISTRICTS,
                 "privacy": {"kind": "dp", "count_columns": ["requests"],
                             "statement": statement, "ledger_epsilon": 0.6,
                             "ledger_delta": 0.0}})


@pytest.mark.slow  # two GX validations, ~10 s each on a loaded machine
def test_product_suite_checks_the_new_columns(tmp_path):
    table, st = dp_weekly_table(_clean(30), DISTRICTS, WEEK, WeeklyDPConfig(epsilon=0.6),
                                seed=1, random_state=5)
    assert _validate(table, st, tmp_path / "ok")["success"]
    i = table.column_names.index("requests_unfloored")
    shifted = pa.array([v + 1 for v in table.column(i).to_pylist()], pa.int64())
    with pytest.raises(DataQualityError, match="requests_unfloored"):
        _validate(table.set_column(i, "requests_unfloored", shifted), st, tmp_path / "bad")
