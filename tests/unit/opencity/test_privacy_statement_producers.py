"""The producers of privacy statements (issue 19 item 1): the weekly 311 table states one
product per statistic with the legacy keys kept, and a release the ledger recorded before the
statement had one type (the producer's own earlier layout) is read back as the same
statement on a rerun, instead of failing the gate."""

from __future__ import annotations

import types
from dataclasses import replace
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from opencity.errors import DataQualityError
from opencity.io import PrivacyStatement
from opencity.pipelines import service_requests as sr
from privacy.mobility import release as mobility

WEEK = datetime(2026, 10, 5, tzinfo=UTC)
NEW_KEYS = ("statement_version", "dataset", "partition", "spent_per_unit", "products",
            "policy_hash", "release_id", "spent")


def _weekly() -> PrivacyStatement:
    rows = 12
    clean = pa.table({
        "request_id": [f"R{i}" for i in range(rows)],
        "requester_pid": [f"P{i % 5}" for i in range(rows)],
        "district_id": ["D01", "D02"] * (rows // 2),
        "request_type": ["pothole"] * rows,
        "created_at": pa.array([WEEK] * rows, pa.timestamp("us", tz="UTC")),
        "closed_at": pa.array([WEEK] * rows, pa.timestamp("us", tz="UTC"))})
    _, statement = sr.dp_weekly_table(clean, pa.table({"district_id": ["D01", "D02"]}), WEEK,
                                      sr.WeeklyDPConfig(epsilon=0.6), seed=1, random_state=2)
    return statement


def test_weekly_statement_states_each_statistic_as_a_product():
    st = _weekly()
    assert (st.dataset, st.partition, st.method) == (sr.DATASET, "dt=2026-10-05",
                                                     "differential_privacy")
    assert st.spent == {"requester": {"epsilon": 0.6, "delta": 0.0}}
    assert set(st.products) == {"counts", "median_histogram"}
    assert sum(p["epsilon"] for p in st.products.values()) == pytest.approx(0.6)
    assert {p["file"] for p in st.products.values()} == {"part-0.parquet"}
    doc = st.to_dict()
    assert doc["releases"]["counts"]["epsilon"] == st.products["counts"]["epsilon"]
    assert doc["privacy_unit_level"] == "person" and doc["epsilon"] == 0.6


def test_a_weekly_statement_recorded_in_the_earlier_layout_is_read_back_the_same():
    st = replace(_weekly(), policy_hash="abc")
    earlier = {k: v for k, v in st.to_dict().items() if k not in NEW_KEYS}
    assert "statement_version" not in earlier and "releases" in earlier
    assert sr._earlier_statement(earlier, st.partition, "abc") == st
    del earlier["releases"]
    with pytest.raises(DataQualityError, match=r"missing \['releases'\]"):
        sr._earlier_statement(earlier, st.partition, "abc")


def test_a_mobility_release_recorded_in_the_earlier_layout_is_read_back_the_same():
    product = {"mechanism": "gaussian", "epsilon": 0.2, "delta": 1e-9, "file": "x.parquet",
               "selection_threshold_subscribers": 12}
    st = PrivacyStatement(
        dataset=mobility.DATASET, partition="dt=2026-10-05", method="differential_privacy",
        spent={"subscriber": {"epsilon": 1.0, "delta": 1e-8}},
        products={"od_matrix": product | {"selection_threshold": 12}},
        details={"date": "2026-10-05", "hours": "UTC"}, policy_hash="abc",
        release_id="daily")
    earlier = {k: v for k, v in st.to_dict().items()
               if k not in ("statement_version", "partition", "spent_per_unit", "epsilon",
                            "delta")} | {"products": {"od_matrix": product}}
    entry = types.SimpleNamespace(partition="dt=2026-10-05", id=7)
    assert mobility._recorded_statement(earlier, entry) == st
    assert mobility._recorded_statement(st.to_dict(), entry) == st
