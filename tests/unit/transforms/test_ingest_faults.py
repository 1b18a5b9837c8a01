"""Bad input: domains, numbers, honest messages, reruns, independent reconciliation, modes."""

import json
import os
import stat

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import transforms.ingest as ingest_mod
from opencity.errors import DataQualityError, InternalError
from opencity.secrets import Secret
from transforms.ingest import ingest_file
from transforms.schemas import SCHEMAS

KEY = Secret("k" * 32, "test")
HEADER = ("request_id,created_at,closed_at,request_type,agency,status,district_id,lat,lon,"
          "description,requester_name,requester_phone,requester_email,requester_address,"
          "requester_age,requester_gender")
ROW = ("R{i},2026-10-05T10:00:00+00:00,2026-10-06T10:00:00+00:00,pothole,Transport,closed,"
       "D01,52.5,13.4,hole in road,Hanife Tintzmann,+49 151 2345 6789,hanife@example.org,"
       "Hertha-Henck-Weg 2,34,female")
SECRETS = ("Hanife", "Tintzmann", "2345 6789", "hanife@example.org", "Hertha-Henck")


def rows(n=10):
    return [ROW.format(i=i) for i in range(n)]


def write(tmp_path, lines, name="r.csv", encoding="utf-8"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding=encoding)
    return p


def run(tmp_path, path, **kw):
    return ingest_file("service_requests", path, tmp_path / "clean",
                       quarantine_dir=tmp_path / "q", key=KEY, **kw)


def reasons_of(res):
    return [r["reason"] for r in pq.read_table(res.quarantine_path).to_pylist()]


def test_every_string_column_of_every_source_has_a_domain():
    for schema in SCHEMAS.values():
        for col in schema.columns:
            assert col.has_domain, f"{schema.name}.{col.name} has no domain, shape or type"


@pytest.mark.parametrize(("column", "value"), [
    ("request_type", "Hanife Tintzmann"),       # a name shifted into the type
    ("request_type", "hanife@example.org"),
    ("agency", "Hertha-Henck-Weg 2"),            # an address in agency
    ("requester_gender", "Zoë Müller"),
    ("status", "+49 30 1234567"),
    ("request_id", "Zoë Müller"),
    ("district_id", "52.520008 13.404954"),
])
def test_value_outside_domain_quarantined_without_the_value(tmp_path, column, value):
    cols = HEADER.split(",")
    bad = ROW.format(i=99).split(",")
    bad[cols.index(column)] = value
    res = run(tmp_path, write(tmp_path, [HEADER, *rows(3), ",".join(bad)]))
    assert (res.rows_out, res.rows_quarantined) == (3, 1)
    q = pq.read_table(res.quarantine_path).to_pylist()[0]
    assert column in q["reason"]
    assert q[column] in ("[withheld]", "[redacted]")
    blob = json.dumps(q, default=str) + json.dumps(res.as_dict())
    assert value not in blob
    assert value not in json.dumps(pq.read_table(res.clean_path).to_pylist(), default=str)


@pytest.mark.parametrize("value", ["NaN", "nan", "Infinity", "-Infinity", "inf", "1e309",
                                   "-1e309", "-0", "-0.0", "2e6"])
def test_meter_readings_not_finite_or_out_of_range_quarantined(tmp_path, value):
    p = write(tmp_path, ["meter_id,reading_time,value,unit",
                         "E0000001,2026-10-05T10:00:00Z,1.5,kWh",
                         f"E0000002,2026-10-05T10:00:00Z,{value},kWh"])
    res = ingest_file("meter_readings", p, tmp_path / "c", quarantine_dir=tmp_path / "q",
                      key=KEY)
    assert (res.rows_out, res.rows_quarantined) == (1, 1), value
    assert pq.read_table(res.clean_path)["value"].to_pylist() == [1.5]


def test_nan_and_inf_in_parquet_readings(tmp_path):
    values = [1.0, float("nan"), float("inf"), float("-inf"), -0.0, 0.0]
    t = pa.table({"meter_id": [f"E{i:07d}" for i in range(6)],
                  "reading_time": pa.array([1_790_000_000_000_000] * 6,
                                           pa.timestamp("us", tz="UTC")),
                  "value": values, "unit": ["kWh"] * 6})
    pq.write_table(t, tmp_path / "r.parquet")
    res = ingest_file("meter_readings", tmp_path / "r.parquet", tmp_path / "c",
                      quarantine_dir=tmp_path / "q", key=KEY)
    assert (res.rows_in, res.rows_out, res.rows_quarantined) == (6, 2, 4)


def test_coordinates_and_age_out_of_range(tmp_path):
    cols = HEADER.split(",")
    a = ROW.format(i=91).split(",")
    a[cols.index("lat")] = "91"
    b = ROW.format(i=92).split(",")
    b[cols.index("requester_age")] = "230"
    c = ROW.format(i=93).split(",")
    c[cols.index("closed_at")] = "2046-10-06T10:00:00+00:00"  # open for 20 years
    res = run(tmp_path, write(tmp_path, [HEADER, *rows(2), ",".join(a), ",".join(b),
                                         ",".join(c)]))
    assert (res.rows_out, res.rows_quarantined) == (2, 3)


def test_optional_identifier_columns_may_be_absent(tmp_path):
    keep = [c for c in HEADER.split(",") if c not in ("requester_email", "requester_phone")]
    cols = HEADER.split(",")
    lines = [",".join(keep)] + [",".join(v for c, v in zip(cols, r.split(","), strict=True)
                                         if c in keep) for r in rows(3)]
    res = run(tmp_path, write(tmp_path, lines))
    assert (res.rows_out, res.rows_quarantined) == (3, 0)
    clean = pq.read_table(res.clean_path)
    assert clean["requester_pid"].null_count == 0  # from the name, the only identifier left


def test_empty_file_has_its_own_message(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataQualityError, match="e.csv: the file is empty"):
        run(tmp_path, tmp_path / "e.csv")
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(DataQualityError, match="the file is empty"):
        run(tmp_path, tmp_path / "e.jsonl")


def test_utf16_needs_encoding_and_then_reads(tmp_path):
    p = write(tmp_path, [HEADER, *rows(3)], encoding="utf-16")
    with pytest.raises(DataQualityError, match="UTF-16.*--encoding utf-16") as err:
        run(tmp_path, p)
    assert "column0" not in str(err.value)
    res = run(tmp_path, p, encoding="utf-16")
    assert (res.rows_in, res.rows_out) == (3, 3)


def test_latin1_names_the_line_not_the_content(tmp_path):
    p = tmp_path / "l.csv"
    lines = [HEADER, *rows(2), ROW.format(i=7).replace("Hanife", "Hanifé")]
    p.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataQualityError, match="line 4 is not valid utf-8") as err:
        run(tmp_path, p)
    assert not any(s in str(err.value) for s in SECRETS)
    res = run(tmp_path, p, encoding="latin-1")
    assert res.rows_in == 3


def test_non_json_lines_input(tmp_path):
    arr = tmp_path / "a.jsonl"
    arr.write_text(json.dumps([{"request_id": "R1"}], indent=2))
    with pytest.raises(DataQualityError, match="one JSON array, not JSON lines"):
        run(tmp_path, arr)
    csvish = tmp_path / "c.jsonl"
    csvish.write_text("\n".join([HEADER, *rows(3)]))
    with pytest.raises(DataQualityError, match="not JSON lines") as err:
        run(tmp_path, csvish)
    assert not any(s in str(err.value) for s in SECRETS)


def test_one_unterminated_quote_quarantines_only_its_row(tmp_path):
    lines = [HEADER, *rows(10)]
    lines[5] = lines[5].replace(",pothole,", ',"pothole,')
    res = run(tmp_path, write(tmp_path, lines))
    assert (res.rows_in, res.rows_out, res.rows_quarantined) == (10, 9, 1)
    q = pq.read_table(res.quarantine_path).to_pylist()
    assert q[0]["record"] == 6 and q[0]["reason"] == "malformed CSV line: unterminated quote"


def test_quoted_newlines_are_one_record(tmp_path):
    lines = [HEADER, *rows(3)]
    lines[2] = lines[2].replace("hole in road", '"hole\nin, the\nroad"')
    res = run(tmp_path, write(tmp_path, lines))
    assert (res.rows_in, res.rows_out) == (3, 3)


def test_line_over_2mb_quarantined_without_echo(tmp_path, caplog):
    lines = [HEADER, *rows(5)]
    lines[3] = lines[3].replace("hole in road", "x" * 3_000_000)
    res = run(tmp_path, write(tmp_path, lines))
    assert (res.rows_in, res.rows_out, res.rows_quarantined) == (5, 4, 1)
    assert reasons_of(res) == ["malformed CSV line: record longer than 2 MiB"]
    assert not any(s in caplog.text for s in SECRETS)


def test_headerless_file_does_not_print_its_first_row(tmp_path):
    p = write(tmp_path, rows(3))
    with pytest.raises(DataQualityError, match="missing column") as err:
        run(tmp_path, p)
    assert not any(s in str(err.value) for s in SECRETS)
    assert "16 other column(s)" in str(err.value)


def test_rerun_replaces_the_quarantine(tmp_path):
    bad = [r.replace(",closed,", ",exploded,") for r in rows(5)]
    res = run(tmp_path, write(tmp_path, [HEADER, *rows(3), *[b.replace("R", "X") for b in bad]]))
    assert res.rows_quarantined == 5 and (tmp_path / "q" / "quarantine.parquet").exists()
    res = run(tmp_path, write(tmp_path, [HEADER, *rows(3)]))
    assert res.rows_quarantined == 0 and res.quarantine_path is None
    assert not (tmp_path / "q" / "quarantine.parquet").exists()


def test_reconciliation_fails_when_a_row_is_dropped_between_stages(tmp_path, monkeypatch):
    """A filter bug that silently drops a row (here: record 3) must fail the run."""
    p = write(tmp_path, [HEADER, *rows(6)])
    assert run(tmp_path, p).rows_out == 6
    original = ingest_mod._Builder.staged_sql

    def dropping(self):
        return f"SELECT * FROM ({original(self)}) WHERE __record <> 3"

    monkeypatch.setattr(ingest_mod._Builder, "staged_sql", dropping)
    with pytest.raises(InternalError, match="does not reconcile: 6 input records, 5 clean"):
        run(tmp_path, p)


def test_reconciliation_fails_when_the_reader_loses_a_record(tmp_path, monkeypatch):
    from transforms import rawread

    p = write(tmp_path, [HEADER, *rows(4)])
    original = rawread.scan_csv

    def losing(path, normalized, **kw):
        scan = original(path, normalized, **kw)
        lines = normalized.read_text().splitlines()
        normalized.write_text("\n".join(lines[:-1]) + "\n")  # the last record vanishes
        return scan

    monkeypatch.setattr(rawread, "scan_csv", losing)
    with pytest.raises(InternalError, match="4 input records, 3 clean"):
        run(tmp_path, p)


def test_outputs_are_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        bad = ROW.format(i=9).replace(",closed,", ",exploded,")
        res = run(tmp_path, write(tmp_path, [HEADER, *rows(2), bad]))
    finally:
        os.umask(old)
    for path in (tmp_path / "clean", tmp_path / "q"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in (res.clean_path, res.quarantine_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not list(tmp_path.rglob(".ingest-*")), "the normalized copy of the raw file is gone"


def test_leftover_work_folder_of_a_killed_run_is_removed(tmp_path):
    stale = tmp_path / "clean" / ".ingest-0123"
    stale.mkdir(parents=True)
    (stale / "records.csv").write_text(HEADER + "\n" + ROW.format(i=1) + "\n")
    run(tmp_path, write(tmp_path, [HEADER, *rows(2)]))
    assert not stale.exists()


def test_jsonl_in_utf16_with_bad_lines_and_non_finite_values(tmp_path):
    rows = [{"meter_id": "E0000001", "reading_time": "2026-10-05T10:00:00Z", "value": 1.5,
             "unit": "kWh"},
            {"meter_id": "E0000002", "reading_time": "2026-10-05T10:00:00Z", "value": "NaN",
             "unit": "kWh"},
            [1, 2],
            {"meter_id": "Zoë Müller", "reading_time": "2026-10-05T10:00:00Z", "value": 2,
             "unit": "kWh"}]
    p = tmp_path / "r.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n{oops\n", encoding="utf-16")
    res = ingest_file("meter_readings", p, tmp_path / "c", quarantine_dir=tmp_path / "q",
                      key=KEY, encoding="utf-16")
    assert (res.rows_in, res.rows_out, res.rows_quarantined) == (5, 1, 4)
    assert res.reasons == {"malformed JSON line: not a JSON object": 1,
                           "malformed JSON line: not valid JSON": 1,
                           "meter_id: value not shaped like a meter_id": 1,
                           "value: not a finite number (NaN, infinity or overflow)": 1}
