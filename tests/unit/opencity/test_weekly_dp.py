"""The DP weekly 311 table (pure function): public keys, nothing withheld, bounded
contributions, validated config."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from opencity.errors import ConfigError
from opencity.pipelines.service_requests import WeeklyDPConfig, dp_weekly_table, public_keys
from transforms.schemas import SERVICE_REQUEST_TYPES

WEEK = datetime(2026, 10, 5, tzinfo=UTC)
DISTRICTS = pa.table({"district_id": ["D02", "D01"]})


def _clean(rows):
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("request_id", pa.string()), ("requester_pid", pa.string()),
        ("district_id", pa.string()), ("request_type", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("closed_at", pa.timestamp("us", tz="UTC"))]))


def _row(i, pid, d="D01", t="pothole", hours=5.0):
    return {"request_id": f"R{i}", "requester_pid": pid, "district_id": d, "request_type": t,
            "created_at": WEEK, "closed_at": WEEK + timedelta(hours=hours)}


@pytest.mark.parametrize("kw", [{"epsilon": 0}, {"epsilon": -1}, {"epsilon": math.nan},
                                {"epsilon": math.inf}, {"epsilon": 1, "count_share": 1},
                                {"epsilon": 1, "max_cells": 0},
                                {"epsilon": 1, "max_rows_per_cell": True},
                                {"epsilon": 1, "bucket_edges_h": (1, 2, 3)},
                                {"epsilon": 1, "bucket_edges_h": (0, 5, 5)}])
def test_config_validated(kw):
    with pytest.raises(ConfigError):
        WeeklyDPConfig(**kw)


def test_keys_are_the_public_set_and_nothing_is_withheld():
    # D99 / 'unknown' are not public keys; D02 has no request at all
    rows = [_row(i, f"P{i}") for i in range(5)] + [_row(9, "P9", d="D99", t="unknown")]
    table, statement = dp_weekly_table(_clean(rows), DISTRICTS, WEEK,
                                       WeeklyDPConfig(epsilon=0.6), seed=1, random_state=3)
    assert table.num_rows == 2 * len(SERVICE_REQUEST_TYPES)
    keys = set(zip(table.column("district_id").to_pylist(),
                   table.column("request_type").to_pylist()))
    assert keys == set(zip(public_keys(DISTRICTS).column("district_id").to_pylist(),
                           public_keys(DISTRICTS).column("request_type").to_pylist()))
    assert table.column("requests").null_count == 0
    assert min(table.column("requests_error_bound_95").to_pylist()) > 0
    assert statement.epsilon == 0.6 and statement.delta == 0.0
    assert statement.units == ("requester",)
    parts = statement.details["releases"]
    assert set(statement.products) == set(parts)  # one product per statistic
    assert parts["counts"]["epsilon"] + parts["median_histogram"]["epsilon"] == (
        pytest.approx(0.6))
    assert parts["counts"]["key_source"] == "public"


def test_one_heavy_requester_is_bounded():
    """A requester with 500 requests in one cell moves that cell by at most L-inf (here 1)
    in expectation: with tiny noise (large epsilon) the cell reads about 1, not 500."""
    rows = [_row(i, "HEAVY") for i in range(500)]
    table, _ = dp_weekly_table(_clean(rows), DISTRICTS, WEEK,
                               WeeklyDPConfig(epsilon=200.0), seed=1, random_state=1)
    cell = next(r for r in table.to_pylist()
                if r["district_id"] == "D01" and r["request_type"] == "pothole")
    assert cell["requests"] <= 2
    # the median is a DP value per request type, never one request's exact 5 h
    assert cell["median_resolution_hours"] != 5.0
