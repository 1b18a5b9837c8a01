"""One person, one unit: linkage of records that share any identifier (transforms.linkage)."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opencity.errors import ConfigError
from opencity.secrets import Secret
from transforms.ingest import ingest_file
from transforms.linkage import link_table
from transforms.pseudonymize import token_python

KEY = Secret("k" * 32, "test")
HEADER = ("request_id,created_at,closed_at,request_type,agency,status,district_id,lat,lon,"
          "description,requester_name,requester_phone,requester_email,requester_address,"
          "requester_age,requester_gender")


def _row(rid, name="", phone="", email="", address=""):
    return (f"{rid},2026-10-05T10:00:00+00:00,,pothole,Transport,open,D01,,,hole,"
            f"{name},{phone},{email},{address},34,female")


def test_components_over_any_shared_key_and_pseudonym_of_first_key_kind():
    t = pa.table({
        "e": ["a", None, None, "b", None, "c"],
        "p": ["1", "1", None, None, None, None],
        "n": [None, "x", "x", None, None, "y"],
    })
    out, fig = link_table(t, ["e", "p", "n"], "pid")
    pid = out["pid"].to_pylist()
    # rows 0-2 chain through phone 1 and name x; row 3 alone; row 4 has no key; row 5 alone
    assert pid[0] == pid[1] == pid[2] == "a"  # the e-mail token (first key kind present)
    assert pid[3] == "b" and pid[4] is None and pid[5] == "c"
    assert fig["units"] == 3 and fig["rows_linked"] == 5 and fig["merged_units"] == 0


def test_long_chain_converges():
    n = 200  # row i shares key k_i with row i+1: one component, rounds ~ chain length
    t = pa.table({"a": [f"k{i:04d}" for i in range(n)], "b": [f"k{i + 1:04d}" for i in range(n)]})
    out, fig = link_table(t, ["a", "b"], "pid")
    assert set(out["pid"].to_pylist()) == {"k0000"}
    assert fig["units"] == 1


def test_no_key_column_is_refused():
    with pytest.raises(ConfigError, match="at least one linkage key"):
        link_table(pa.table({"a": ["x"]}), [], "pid")


def test_ingest_links_a_person_across_email_phone_and_name_with_address(tmp_path):
    """Three requests, three different first identifiers, chained by shared ones: one unit.
    A name without address does not link (names alone are not unique); a stranger stays
    apart."""
    lines = [
        HEADER,
        _row("R1", email="jane@example.org", phone="+49 151 1"),
        _row("R2", phone="+49-151-1", name="Jane Roe",
             address="Hauptstr. 1"),
        _row("R3", name="jane  roe", address="Hauptstr. 1"),
        _row("R4", email="other@example.org"),
        _row("R5", name="Jane Roe"),
    ]
    path = tmp_path / "r.csv"
    path.write_text("\n".join(lines) + "\n")
    res = ingest_file("service_requests", path, tmp_path / "clean", quarantine_dir=tmp_path / "q",
                      key=KEY)
    assert res.rows_out == 5
    clean = {r["request_id"]: r["requester_pid"]
             for r in pq.read_table(res.clean_path).to_pylist()}
    jane = token_python(KEY, "jane@example.org")
    assert clean["R1"] == clean["R2"] == clean["R3"] == jane
    assert clean["R4"] == token_python(KEY, "other@example.org")
    assert clean["R5"] == token_python(KEY, "jane roe")  # name alone: its own unit, as before
    t = pq.read_table(res.clean_path)
    assert not [c for c in t.column_names if c.startswith("__link")]
    for col in ("requester_name", "requester_phone", "requester_email", "requester_address"):
        assert col not in t.column_names
