"""Every suite passes on good sample data and on the real 311 extracts (ingested through
their profiles); dataset-level failures stop, row-level failures go to the quarantine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from expectations.gate import QUARANTINE_FILE, validate_or_raise
from opencity.errors import DataQualityError
from opencity.io import read_reference_csv
from opencity.secrets import Secret
from transforms.ingest import Reference, ingest_file
from transforms.profiles import get_profile
from transforms.schemas import DISTRICTS, SCHEMAS, SERVICE_REQUESTS, TOWERS, TRANSIT_STOPS

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"
KEY = Secret("g" * 32, "test")
START = datetime(2026, 10, 5, tzinfo=UTC)
END = START + timedelta(weeks=1)


@pytest.fixture(scope="module")
def refs(sample_raw):
    return {"districts": read_reference_csv(sample_raw / "city" / "districts.csv", DISTRICTS),
            "towers": read_reference_csv(sample_raw / "city" / "towers.csv", TOWERS)}


def _ingest(source, path, tmp_path, refs, interval=(START, END), profile="opencity"):
    ref = Reference(districts=refs.get("districts"), towers=refs.get("towers"))
    return ingest_file(source, path, tmp_path / "clean" / source, quarantine_dir=tmp_path / "q",
                       key=KEY, interval=interval, reference=ref, profile=profile)


@pytest.mark.parametrize(("source", "raw"), [
    ("service_requests", "service_requests/requests.csv"),
    ("cdr", "cdr"),
    ("meter_readings", "meters/readings"),
    ("meter_registry", "meters/registry.csv"),
    ("transit_taps", "transit/taps.parquet"),
    ("waste_pickups", "waste/pickups.parquet"),
])
def test_clean_suites_pass_on_sample_data(source, raw, sample_raw, refs, tmp_path):
    interval = None if source == "meter_registry" else (START, END)
    res = _ingest(source, sample_raw / raw, tmp_path, refs, interval)
    ctx = {"interval": interval, "districts": refs["districts"], "bbox": "districts",
           "quarantine_dir": tmp_path / "q", "schema": SCHEMAS[source]}
    if source == "cdr":
        ctx["towers"] = refs["towers"]
    if source == "transit_taps":
        stops = read_reference_csv(sample_raw / "transit" / "stops.csv", TRANSIT_STOPS)
        ctx["stop_ids"] = stops["stop_id"].to_pylist()
    out = validate_or_raise(source, res.clean_path, context=ctx, reports_dir=tmp_path / "r")
    assert out["success"] and out["rows"] == res.rows_out > 0
    assert out["rows_quarantined"] == 0
    assert (tmp_path / "r" / "data_docs" / "index.html").exists()


@pytest.mark.parametrize(("name", "schema", "file"), [
    ("districts", DISTRICTS, "city/districts.csv"),
    ("towers", TOWERS, "city/towers.csv"),
    ("transit_stops", TRANSIT_STOPS, "transit/stops.csv"),
])
def test_reference_suites_pass_on_sample_data(name, schema, file, sample_raw, refs, tmp_path):
    table = read_reference_csv(sample_raw / file, schema)
    out = validate_or_raise(name, table, context={"districts": refs["districts"],
                                                  "schema": schema},
                            reports_dir=tmp_path)
    assert out["success"]


@pytest.mark.parametrize(("profile", "path"), [
    ("baltimore-311", "311_baltimore/311_sample.csv"),
    ("nyc-311", "311_nyc_sample/nyc311.csv"),
    ("boston-311", "311_boston_sample/boston_311.csv"),
])
def test_service_request_suite_passes_on_real_extracts(profile, path, tmp_path):
    res = ingest_file("service_requests", DATA / path, tmp_path / "c",
                      quarantine_dir=tmp_path / "q", key=KEY, profile=profile)
    created = pq.read_table(res.clean_path)["created_at"]
    lo, hi = pc.min(created).as_py(), pc.max(created).as_py()
    day = timedelta(days=1)
    interval = (datetime(lo.year, lo.month, lo.day, tzinfo=UTC),
                datetime(hi.year, hi.month, hi.day, tzinfo=UTC) + day)
    bbox = get_profile("service_requests", profile).bbox
    out = validate_or_raise(
        "service_requests", res.clean_path,
        context={"interval": interval, "bbox": vars(bbox), "quarantine_dir": tmp_path / "q",
                 "profile": get_profile("service_requests", profile),
                 "schema": SERVICE_REQUESTS},
        reports_dir=tmp_path / "r")
    assert out["success"] and out["rows"] == res.rows_out
    assert out["rows_quarantined"] == 0


def test_weekly_product_suite_passes_on_the_sample_product(sample_raw, refs, tmp_path):
    from privacy.suppression import SmallCountSuppression, suppress_small_counts
    from transforms.service_requests import weekly_requests

    res = _ingest("service_requests", sample_raw / "service_requests/requests.csv", tmp_path,
                  refs)
    counts = weekly_requests(pq.read_table(res.clean_path), refs["districts"], START)
    product = suppress_small_counts(counts, SmallCountSuppression(
        5, ("requests", "median_resolution_hours"), "requesters"))
    ctx = {"interval": (START, END), "districts": refs["districts"], "schema": SERVICE_REQUESTS,
           "privacy": {"kind": "suppressed", "count_columns": ["requests"], "threshold": 5}}
    assert validate_or_raise("opencity-311-requests-weekly", product, context=ctx,
                             reports_dir=tmp_path)["success"]
    # The same product checked against a higher threshold than it was suppressed with fails.
    ctx["privacy"]["threshold"] = 10_000
    with pytest.raises(DataQualityError, match="expect_counts_to_reach_release_threshold"):
        validate_or_raise("opencity-311-requests-weekly", product, context=ctx,
                          reports_dir=tmp_path)


def test_row_count_drop_of_more_than_90_percent_stops(sample_raw, refs, tmp_path):
    res = _ingest("service_requests", sample_raw / "service_requests/requests.csv", tmp_path,
                  refs)
    table = pq.read_table(res.clean_path)
    few = tmp_path / "few.parquet"
    pq.write_table(table.slice(0, table.num_rows // 20), few)
    with pytest.raises(DataQualityError, match="expect_table_row_count_to_be_between"):
        validate_or_raise("service_requests", few,
                          context={"interval": (START, END), "previous_rows": table.num_rows,
                                   "schema": SERVICE_REQUESTS},
                          reports_dir=tmp_path / "r")
    summary = json.loads((tmp_path / "r" / "service_requests.clean.summary.json").read_text())
    assert not summary["success"]


def test_schema_mismatch_stops(sample_raw, refs, tmp_path):
    res = _ingest("service_requests", sample_raw / "service_requests/requests.csv", tmp_path,
                  refs)
    table = pq.read_table(res.clean_path)
    bad = table.set_column(table.column_names.index("requester_age"), "requester_age",
                           pc.cast(table["requester_age"], pa.string()))
    with pytest.raises(DataQualityError, match="expect_column_kinds_to_match"):
        validate_or_raise("service_requests", bad, context={"schema": SERVICE_REQUESTS},
                          reports_dir=tmp_path)
    with pytest.raises(DataQualityError, match="expect_table_columns_to_match_set"):
        validate_or_raise("service_requests", table.drop_columns(["status"]),
                          context={"schema": SERVICE_REQUESTS}, reports_dir=tmp_path)


def test_rows_outside_the_city_are_quarantined_and_counts_reconcile(sample_raw, refs, tmp_path):
    res = _ingest("service_requests", sample_raw / "service_requests/requests.csv", tmp_path,
                  refs)
    table = pq.read_table(res.clean_path)
    lat = table["lat"].to_pylist()
    bad_rows = [i for i, v in enumerate(lat) if v is not None][:3]
    for i in bad_rows:
        lat[i] = 0.0  # placeholder coordinates
    path = tmp_path / "clean.parquet"
    pq.write_table(table.set_column(table.column_names.index("lat"), "lat",
                                    pa.array(lat, pa.float64())), path)
    out = validate_or_raise("service_requests", path,
                            context={"interval": (START, END), "districts": refs["districts"],
                                     "bbox": "districts", "quarantine_dir": tmp_path / "qq",
                                     "schema": SERVICE_REQUESTS},
                            reports_dir=tmp_path / "r")
    assert out["success"]
    assert out["rows_quarantined"] == len(bad_rows)
    assert out["reasons"] == {
        "gx:expect_column_values_to_be_between(lat)": len(bad_rows)}
    kept = pq.read_table(path)
    quarantined = pq.read_table(tmp_path / "qq" / QUARANTINE_FILE)
    assert kept.num_rows + quarantined.num_rows == table.num_rows
    assert set(quarantined["request_id"].to_pylist()) == {
        table["request_id"][i].as_py() for i in bad_rows}
    assert not set(quarantined["request_id"].to_pylist()) & set(kept["request_id"].to_pylist())


def test_data_docs_are_offline(sample_raw, refs, tmp_path):
    table = read_reference_csv(sample_raw / "city/districts.csv", DISTRICTS)
    out = validate_or_raise("districts", table, context={"schema": DISTRICTS},
                            reports_dir=tmp_path)
    page = Path(out["data_docs"]).read_text(encoding="utf-8")
    assert "expect_column_values_to_be_unique" in page or "unique" in page
    for marker in ("http://", "https://", "<script", "<link", "<img"):
        assert marker not in page, marker
