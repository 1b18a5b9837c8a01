"""Ingestion: typing, quarantine with reasons, reconciliation, no raw identifier in outputs."""

import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opencity.errors import DataQualityError
from opencity.secrets import Secret
from transforms.ingest import Reference, ingest_file
from transforms.pseudonymize import token_python

KEY = Secret("k" * 32, "test")
HEADER = ("request_id,created_at,closed_at,request_type,agency,status,district_id,lat,lon,"
          "description,requester_name,requester_phone,requester_email,requester_address,"
          "requester_age,requester_gender")
GOOD = ("R1,2026-10-05T10:00:00+00:00,2026-10-06T10:00:00+00:00,pothole,Transport,closed,D01,52.5,13.4,"
        "hole in road,Jane Roe,+49 151 2345 6789,jane@example.org,Hauptstr. 1,34,female")
DISTRICTS = pa.table({"district_id": ["D01"], "lat_min": [52.0], "lat_max": [53.0],
                      "lon_min": [13.0], "lon_max": [14.0]})


def write(tmp_path, lines, name="r.csv"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def run(tmp_path, path, **kw):
    return ingest_file("service_requests", path, tmp_path / "clean",
                       quarantine_dir=tmp_path / "q", key=KEY, **kw)


def test_good_rows_typed_and_pseudonymized(tmp_path):
    res = run(tmp_path, write(tmp_path, [HEADER, GOOD]))
    assert (res.rows_in, res.rows_out, res.rows_quarantined) == (1, 1, 0)
    t = pq.read_table(res.clean_path)
    assert t.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    row = t.to_pylist()[0]
    assert row["created_at"] == datetime(2026, 10, 5, 10, tzinfo=UTC)
    assert row["requester_pid"] == token_python(KEY, "jane@example.org")
    for col in ("requester_name", "requester_phone", "requester_email", "requester_address"):
        assert col not in t.column_names


def test_malformed_rows_quarantined_with_reasons_and_reconciled(tmp_path):
    bad_time = GOOD.replace("R1,2026-10-05T10:00:00+00:00", "R2,not-a-date")
    bad_status = GOOD.replace("R1", "R3").replace(",closed,", ",exploded,")
    bad_age = GOOD.replace("R1", "R4").replace(",34,", ",-3,")
    dup = GOOD
    too_many = GOOD.replace("R1", "R5") + ",extra,fields"
    bad_district = GOOD.replace("R1", "R6").replace(",D01,", ",D99,")
    path = write(tmp_path, [HEADER, GOOD, bad_time, bad_status, bad_age, dup, too_many,
                            bad_district])
    res = run(tmp_path, path, reference=Reference(districts=DISTRICTS))
    assert res.rows_in == 7
    assert res.rows_out == 1
    assert res.rows_quarantined == 6
    assert res.rows_in == res.rows_out + res.rows_quarantined + res.rows_other_intervals
    q = pq.read_table(res.quarantine_path).to_pylist()
    reasons = " | ".join(r["reason"] for r in q)
    # Reasons name the column and the check, never the value (it may be personal data).
    assert "created_at: cannot parse as timestamp" in reasons
    assert "status: value outside its domain" in reasons
    assert "requester_age: below minimum 0" in reasons
    assert "duplicate request_id" in reasons
    assert "malformed CSV line: expected 16 fields, found 18" in reasons
    assert "district_id: unknown district" in reasons
    for value in ("not-a-date", "exploded", "D99", "-3"):
        assert value not in reasons
    assert all(r["source_file"] == "r.csv" for r in q)


def test_no_raw_identifier_in_any_output(tmp_path):
    bad = GOOD.replace("R1", "R9").replace("2026-10-05T10:00:00+00:00", "garbage")
    leaky = GOOD.replace("R1", "R8").replace("hole in road",
                                             "call me at +49 151 2345 6789 or jane@example.org")
    path = write(tmp_path, [HEADER, GOOD, bad, leaky])
    res = run(tmp_path, path)
    blobs = b"".join(p.read_bytes() for p in tmp_path.rglob("*.parquet"))
    text = json.dumps([pq.read_table(p).to_pylist() for p in tmp_path.rglob("*.parquet")],
                      default=str)
    for raw in ("Jane Roe", "jane@example.org", "2345 6789", "Hauptstr"):
        assert raw not in text and raw.encode() not in blobs
    assert res.rows_quarantined == 1
    descriptions = pq.read_table(res.clean_path)["description"].to_pylist()
    assert "call me at [phone] or [email]" in descriptions


def test_interval_defers_or_quarantines(tmp_path):
    later = GOOD.replace("R1", "R2").replace("2026-10-05T10", "2026-10-20T10").replace(
        "2026-10-06T10", "2026-10-21T10")
    path = write(tmp_path, [HEADER, GOOD, later])
    interval = (datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 12, tzinfo=UTC))
    res = run(tmp_path, path, interval=interval)
    assert (res.rows_out, res.rows_quarantined, res.rows_other_intervals) == (1, 0, 1)
    res = run(tmp_path, path, interval=interval, strict_interval=True)
    assert (res.rows_out, res.rows_quarantined, res.rows_other_intervals) == (1, 1, 0)
    assert "outside the data interval" in pq.read_table(res.quarantine_path)["reason"][0].as_py()


def test_jsonl_and_parquet_inputs(tmp_path):
    cols = HEADER.split(",")
    row = dict(zip(cols, GOOD.split(","), strict=True))
    jl = tmp_path / "r.jsonl"
    jl.write_text(json.dumps(row) + "\n{broken json\n")
    res = run(tmp_path, jl)
    assert (res.rows_in, res.rows_out, res.rows_quarantined) == (2, 1, 1)
    assert "malformed JSON line" in pq.read_table(res.quarantine_path)["reason"][0].as_py()
    pq.write_table(pa.table({c: [v] for c, v in row.items()}), tmp_path / "r.parquet")
    res = run(tmp_path, tmp_path / "r.parquet")
    assert (res.rows_in, res.rows_out) == (1, 1)


def test_missing_column_names_file_and_column(tmp_path):
    path = write(tmp_path, ["request_id,created_at", "R1,2026-10-05"])
    with pytest.raises(DataQualityError, match="missing column.*request_type"):
        run(tmp_path, path)


def test_unreadable_file(tmp_path):
    with pytest.raises(DataQualityError, match="not found"):
        run(tmp_path, tmp_path / "nope.csv")
    binary = tmp_path / "bin.parquet"
    binary.write_bytes(b"\x00\x01 not parquet")
    with pytest.raises(DataQualityError, match="bin.parquet"):
        run(tmp_path, binary)


def test_unknown_cells_quarantined(tmp_path):
    p = tmp_path / "cdr.csv"
    p.write_text("subscriber_id,imsi,event_time,cell_id,event_type\n"
                 "+4915100000001,262011234567890,2026-10-05T01:00:00Z,C1,call\n"
                 "+4915100000002,262011234567891,2026-10-05T01:00:00Z,C404,sms\n")
    towers = pa.table({"cell_id": ["C1"], "region_id": ["D01"]})
    res = ingest_file("cdr", p, tmp_path / "c", quarantine_dir=tmp_path / "cq", key=KEY,
                      reference=Reference(towers=towers))
    assert (res.rows_out, res.rows_quarantined) == (1, 1)
    clean = pq.read_table(res.clean_path).to_pylist()[0]
    assert clean["region_id"] == "D01"
    assert clean["subscriber_pid"] == token_python(KEY, "4915100000001")
    assert "imsi" not in pq.read_table(res.clean_path).column_names
    q = pq.read_table(res.quarantine_path).to_pylist()[0]
    assert q["reason"] == "cell_id: unknown cell id"
    assert "4915100000002" not in json.dumps(q, default=str)
