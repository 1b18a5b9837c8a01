"""opencity.io.PrivacyStatement: one privacy statement type, written once and read strictly
(issue 19 item 1)."""

from __future__ import annotations

import json
import math
import stat

import pytest

from opencity.errors import DataQualityError
from opencity.io import (
    STATEMENT_FILE,
    STATEMENT_VERSION,
    PrivacyStatement,
    read_statement,
    write_statement,
)


def _one_unit(**kw) -> PrivacyStatement:
    args: dict = {
        "dataset": "opencity-cdr-mobility-daily", "partition": "dt=2026-10-05",
        "method": "differential_privacy",
        "spent": {"subscriber": {"epsilon": 0.8, "delta": 1e-8}},
        "products": {"od_matrix": {"mechanism": "laplace", "epsilon": 0.2, "delta": 0.0,
                                   "file": "od_matrix.parquet"}},
        "details": {"date": "2026-10-05", "budget": {"epsilon": 1.0, "delta": 1e-6}},
        "policy_hash": "abc123", "release_id": "daily"}
    return PrivacyStatement(**(args | kw))


def _two_units() -> PrivacyStatement:
    return PrivacyStatement(dataset="opencity-kpis", partition="dt=2026-10-01",
                            method="differential_privacy",
                            spent={"resident": {"epsilon": 0.3, "delta": 0.0},
                                   "meter": {"epsilon": 0.5, "delta": 0.0}},
                            details={"period": "2026-10", "releases": []})


@pytest.mark.parametrize("make", [_one_unit, _two_units])
def test_round_trip_through_dict_bytes_and_file(tmp_path, make):
    st = make()
    assert PrivacyStatement.from_dict(st.to_dict()) == st
    assert PrivacyStatement.from_dict(json.loads(st.to_bytes())) == st
    path = write_statement(st, tmp_path / "out" / STATEMENT_FILE)
    assert read_statement(path) == st
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # restricted zone: owner-only
    text = path.read_bytes()
    assert text == st.to_bytes() and text.endswith(b"\n")
    assert list(json.loads(text)) == sorted(json.loads(text))  # sorted keys


def test_one_unit_keeps_the_legacy_keys_with_their_meaning():
    doc = _one_unit().to_dict()
    assert doc["statement_version"] == STATEMENT_VERSION
    assert doc["privacy_method"] == "differential_privacy"
    assert doc["privacy_unit"] == "subscriber"
    assert (doc["epsilon"], doc["delta"]) == (0.8, 1e-8)
    assert doc["spent"] == {"epsilon": 0.8, "delta": 1e-8}  # the mobility layout's key
    assert doc["spent_per_unit"] == {"subscriber": {"epsilon": 0.8, "delta": 1e-8}}
    assert doc["date"] == "2026-10-05" and doc["budget"]["epsilon"] == 1.0  # details kept
    st = _one_unit()
    assert (st.units, st.epsilon, st.delta) == (("subscriber",), 0.8, 1e-8)


def test_several_units_have_no_single_epsilon():
    st = _two_units()
    assert st.units == ("meter", "resident")
    doc = st.to_dict()
    assert not {"privacy_unit", "epsilon", "delta", "spent"} & set(doc)
    with pytest.raises(DataQualityError, match="2 privacy units.*spent\\[unit\\]"):
        _ = st.epsilon
    with pytest.raises(DataQualityError, match="2 privacy units"):
        _ = st.delta
    assert st.spent["meter"]["epsilon"] == 0.5


@pytest.mark.parametrize("key", ["statement_version", "dataset", "partition", "privacy_method",
                                 "spent_per_unit"])
def test_a_missing_key_is_named_with_the_file(key):
    doc = _one_unit().to_dict()
    del doc[key]
    with pytest.raises(DataQualityError, match=f"out/privacy.json.*missing key '{key}'"):
        PrivacyStatement.from_dict(doc, where="out/privacy.json")


@pytest.mark.parametrize("legacy", [
    {"epsilon": 0.5, "delta": 0.0},  # the 311 layout of earlier releases
    {"spent": {"epsilon": 0.5, "delta": 0.0}, "products": {}},  # the mobility layout
    {"dataset": "opencity-kpis", "period": "2026-10", "ledger": [], "releases": []},  # KPIs
])
def test_earlier_shapes_are_not_guessed(legacy):
    with pytest.raises(DataQualityError, match="not a privacy statement"):
        PrivacyStatement.from_dict(legacy, where="x/privacy.json")


@pytest.mark.parametrize(("change", "match"), [
    ({"statement_version": 2}, "statement_version 2 is not supported"),
    ({"partition": "2026-10-05"}, "partition must be 'dt=YYYY-MM-DD'"),
    ({"spent_per_unit": {}}, "at least one privacy unit"),
    ({"spent_per_unit": {"subscriber": {"epsilon": 0.8}}}, "has no 'delta'"),
    ({"spent_per_unit": {"subscriber": {"epsilon": math.nan, "delta": 0.0}}}, "finite"),
    ({"spent_per_unit": {"subscriber": {"epsilon": math.inf, "delta": 0.0}}}, "finite"),
    ({"spent_per_unit": {"subscriber": {"epsilon": -0.1, "delta": 0.0}}}, ">= 0"),
    ({"spent_per_unit": {"subscriber": {"epsilon": "0.8", "delta": 0.0}}}, "must be a number"),
    ({"spent_per_unit": {"subscriber": {"epsilon": True, "delta": 0.0}}}, "must be a number"),
    ({"epsilon": 0.9}, r"\['epsilon'\] contradict spent_per_unit"),
    ({"privacy_unit": "requester"}, r"\['privacy_unit'\] contradict"),
    ({"products": {"od_matrix": 3}}, "products must map"),
])
def test_invalid_values_are_rejected_with_the_key(change, match):
    doc = _one_unit().to_dict() | change
    with pytest.raises(DataQualityError, match=match):
        PrivacyStatement.from_dict(doc, where="out/privacy.json")


def test_details_may_not_take_the_statements_own_keys():
    with pytest.raises(DataQualityError, match="this is a bug in the producer"):
        _one_unit(details={"epsilon": 2.0})


def test_read_statement_missing_invalid_json_and_not_an_object(tmp_path):
    assert read_statement(tmp_path / "none.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text('{"epsilon": ')
    with pytest.raises(DataQualityError, match="bad.json is not valid JSON"):
        read_statement(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(DataQualityError, match="bad.json.*must be a JSON object"):
        read_statement(bad)
