"""The real 311 extracts of Baltimore, NYC and Boston ingest through their profiles."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from opencity.secrets import Secret
from transforms.ingest import ingest_file

DATA = Path(__file__).resolve().parents[2] / "data"
KEY = Secret("r" * 32, "test")


@pytest.mark.parametrize(
    ("profile", "path", "rows"),
    [
        ("baltimore-311", "311_baltimore/311_sample.csv", 10_000),
        ("nyc-311", "311_nyc_sample/nyc311.csv", 1_000),
        ("boston-311", "311_boston_sample/boston_311.csv", 2_424),
    ],
)
def test_real_extract(tmp_path, profile, path, rows):
    res = ingest_file("service_requests", DATA / path, tmp_path / "c",
                      quarantine_dir=tmp_path / "q", key=KEY, profile=profile)
    assert res.rows_in == rows
    assert res.rows_in == res.rows_out + res.rows_quarantined
    assert res.rows_out > 0.85 * rows
    clean = pq.read_table(res.clean_path)
    assert "requester_address" not in clean.column_names
    assert clean["created_at"].null_count == 0
    created = clean["created_at"].to_pylist()
    closed = clean["closed_at"].to_pylist()
    assert all(c is None or c >= o for o, c in zip(created, closed, strict=True))
    assert set(clean["status"].to_pylist()) <= {"open", "closed", "in_progress", "cancelled"}


def test_baltimore_placeholder_coordinates_are_quarantined(tmp_path):
    res = ingest_file("service_requests", DATA / "311_baltimore/311_sample.csv", tmp_path / "c",
                      quarantine_dir=tmp_path / "q", key=KEY, profile="baltimore-311")
    # SOURCE.txt: 885 rows carry the placeholder (39, -77).
    q = pq.read_table(res.quarantine_path).to_pylist()
    outside = [r for r in q if "coordinates outside the city" in r["reason"]]
    assert len(outside) >= 885
    addresses = {r.get("requester_address") for r in q}
    assert addresses <= {None}, "raw street addresses must not reach the quarantine"
