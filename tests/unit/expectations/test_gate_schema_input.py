"""The gate takes a source's schema and input profile from its caller (``context["schema"]``,
``context["profile"]``): expectations imports no other stage, and a missing or wrong schema
is a clear error, never a suite without the source's checks."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from expectations.core import SCHEMA_IDENTIFIERS
from expectations.gate import build_suite, sensitive_columns, suite_context, validate_or_raise
from opencity.errors import ConfigError, DataQualityError
from transforms.profiles import get_profile
from transforms.schemas import DISTRICTS, SCHEMAS, SERVICE_REQUESTS, TOWERS

START = datetime(2026, 10, 5, tzinfo=UTC)


def test_product_identifier_names_cover_every_source_schema():
    """The names a product may never have are every identifier of the canonical schemas
    plus the pseudonyms (kept as names in expectations, which imports no stage)."""
    from_schemas = {c.name for s in SCHEMAS.values() for c in s.columns if c.identifier}
    pseudonyms = {name for s in SCHEMAS.values() for name, _ in s.pseudonyms}
    assert set(SCHEMA_IDENTIFIERS) == from_schemas | pseudonyms


@pytest.mark.parametrize("source", sorted(SCHEMAS))
def test_a_source_suite_without_its_schema_says_what_to_pass(source):
    table = pa.table({c.name: pa.array([], c.type) for c in SCHEMAS[source].columns})
    ctx = suite_context(source, table, {})
    with pytest.raises(ConfigError, match=rf"schema of source {source}.*SCHEMAS\['{source}'\]"):
        build_suite(source, ctx)
    ok = suite_context(source, table, {"schema": SCHEMAS[source]})
    assert build_suite(source, ok).expectations


def test_a_source_suite_given_another_schema_fails():
    ctx = suite_context("towers", pa.table({"x": [1]}), {"schema": DISTRICTS})
    with pytest.raises(ConfigError, match="schema of source towers, was given 'districts'"):
        build_suite("towers", ctx)


def test_a_profile_name_is_refused_the_caller_resolves_it():
    table = pa.table({"request_id": ["r1"]})
    ctx = suite_context("service_requests", table,
                        {"schema": SERVICE_REQUESTS, "profile": "nyc-311"})
    with pytest.raises(ConfigError, match=r"get_profile\('service_requests', 'nyc-311'\)"):
        build_suite("service_requests", ctx)
    nyc = get_profile("service_requests", "nyc-311")
    ctx = suite_context("service_requests", table, {"schema": SERVICE_REQUESTS, "profile": nyc})
    types = [e for e in build_suite("service_requests", ctx).expectations
             if e.expectation_type == "expect_column_values_to_be_in_set"
             and e.column == "request_type"]
    assert types and set(types[0].value_set) == set(nyc.domain("request_type"))


def test_sensitive_columns_come_from_the_given_schema():
    assert "requester_age" in sensitive_columns("service_requests", SERVICE_REQUESTS)
    assert "requester_age" not in sensitive_columns("service_requests")


def test_reference_ids_are_read_from_a_csv_path(tmp_path):
    csv = tmp_path / "towers.csv"
    csv.write_text("cell_id,lat,lon,region_id\n007,52.5,13.4,D01\nC2,52.6,13.5,D02\n")
    ctx = suite_context("x", pa.table({"a": [1]}), {"towers": csv})
    assert ctx.cell_ids == ("007", "C2")  # text: a leading zero stays
    with pytest.raises(DataQualityError, match="no readable column 'district_id'"):
        suite_context("x", pa.table({"a": [1]}), {"districts": csv})
    with pytest.raises(DataQualityError, match="reference file not found"):
        suite_context("x", pa.table({"a": [1]}), {"districts": tmp_path / "missing.csv"})


def test_the_towers_reference_suite_runs_with_its_schema(tmp_path):
    table = pa.table({"cell_id": ["C1", "C2"], "lat": [52.5, 52.6], "lon": [13.4, 13.5],
                      "region_id": ["D01", "D02"]}).cast(TOWERS.arrow_schema())
    out = validate_or_raise("towers", table, context={"schema": TOWERS,
                                                      "districts": ["D01", "D02"]},
                            reports_dir=tmp_path)
    assert out["success"]
    bad = table.set_column(3, "region_id", pa.array(["D01", "D99"]))
    with pytest.raises(DataQualityError, match="region_id"):
        validate_or_raise("towers", bad, context={"schema": TOWERS, "districts": ["D01", "D02"]},
                          reports_dir=tmp_path)
