"""Each custom privacy expectation fails on a crafted table that violates it, and passes on a
table that does not; failures never carry a raw identifier into messages or reports."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expectations import privacy as px
from expectations.core import PrivacyChecks, new_suite
from expectations.gate import _to_pandas, run_suite, validate_or_raise
from opencity.errors import ConfigError, DataQualityError
from opencity.io import PrivacyStatement, write_statement
from transforms.schemas import SERVICE_REQUESTS

PHONE = "+49 151 2345 6789"


def _run(table: pa.Table, *exps):
    res = run_suite(new_suite("t", exps), _to_pandas(table))
    return [r.success for r in res.results]


@pytest.mark.parametrize("text", [
    f"Pothole in front of my house, call me at {PHONE} please",
    "reach me: jane.doe@example.org",
    "SIM 262011234567890 stopped working",  # IMSI-like 15 digits
    "Glass on the road near 123 Main Street",
    "Müll vor der Tür, Hoffmanngasse 83, 10638 Neuhaven",
    "call 555-123-4567",
])
def test_identifier_in_free_text_fails(text):
    table = pa.table({"note": ["all fine", text, None]})
    assert _run(table, px.ExpectColumnValuesToNotContainDirectIdentifiers(column="note")) \
        == [False]


@pytest.mark.parametrize("text", [
    "2026-10-05", "W2026-10-05", "D01", "streetlight_out", "[20, 30[", "SR0000001",
    "a3f09b1234567890123cd4e5f6a7b8c9", "52.474876", "council-12", "Geometric", "*",
])
def test_ordinary_product_values_pass(text):
    table = pa.table({"v": [text]})
    assert _run(table, px.ExpectColumnValuesToNotContainDirectIdentifiers(column="v")) == [True]


@pytest.mark.parametrize(("columns", "ok"), [
    (["district_id", "requests"], True),
    (["district_id", "requester_phone"], False),
    (["MSISDN", "value"], False),
    (["subscriberImsi", "value"], False),
    (["email_address"], False),
    (["full_name"], False),
    (["household_id"], False),  # a configured identifier name
    (["stop_name"], False),  # a name token, unless allowed
])
def test_identifier_column_names(columns, ok):
    table = pa.table({c: [1] for c in columns})
    exp = px.ExpectTableToHaveNoDirectIdentifierColumns(forbidden_columns=["household_id"])
    assert _run(table, exp) == [ok]


def test_allowed_public_name_column_passes():
    table = pa.table({"stop_name": ["Hauptbahnhof"]})
    exp = px.ExpectTableToHaveNoDirectIdentifierColumns(allowed_columns=["stop_name"])
    assert _run(table, exp) == [True]


def test_class_of_size_k_minus_1_fails_and_k_passes():
    k = 5
    rows = [("30-40", "D01")] * k + [("40-50", "D02")] * (k - 1)
    table = pa.table({"age": [r[0] for r in rows], "district_id": [r[1] for r in rows]})
    exp = px.ExpectEquivalenceClassesToHaveAtLeastKRows(quasi_identifiers=["age", "district_id"],
                                                       k=k)
    assert _run(table, exp) == [False]
    ok = pa.concat_tables([table, pa.table({"age": ["40-50"], "district_id": ["D02"]})])
    assert _run(ok, exp) == [True]


def test_missing_quasi_identifier_values_form_their_own_class():
    table = pa.table({"age": ["30-40"] * 3 + [None], "sex": ["f"] * 4})
    exp = px.ExpectEquivalenceClassesToHaveAtLeastKRows(quasi_identifiers=["age", "sex"], k=2)
    assert _run(table, exp) == [False]


@pytest.mark.parametrize("k", [0, 1, -3, 2.5, True, float("nan")])
def test_invalid_k_is_rejected(k):
    with pytest.raises(ConfigError):
        PrivacyChecks(kind="microdata", quasi_identifiers=("a",), k=k)


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from("ab")), min_size=1, max_size=40),
       st.integers(2, 6))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_k_anonymity_expectation_matches_an_independent_count(rows, k):
    table = pa.table({"q1": [r[0] for r in rows], "q2": [r[1] for r in rows]})
    expected = min(Counter(rows).values()) >= k
    exp = px.ExpectEquivalenceClassesToHaveAtLeastKRows(quasi_identifiers=["q1", "q2"], k=k)
    assert _run(table, exp) == [expected]


COUNTS = pa.table({"region_id": ["R1", "R2", "R3"], "value": [40, 25, 31]})


def _statement(epsilon: float, delta: float) -> PrivacyStatement:
    return PrivacyStatement(dataset="opencity-cdr-mobility-daily", partition="dt=2026-10-05",
                            method="differential_privacy",
                            spent={"subscriber": {"epsilon": epsilon, "delta": delta}},
                            release_id="daily")


@pytest.mark.parametrize(("statement", "ledger", "ok"), [
    (_statement(0.5, 1e-6).to_dict(), (0.5, 1e-6), True),  # privacy.json's content
    (_statement(0.5, 0.0), (0.5, 0.0), True),  # the statement itself
    (None, (0.5, 0.0), False),  # missing statement
    (_statement(0.5, 0.0), None, False),  # nothing in the ledger
    (_statement(0.7, 0.0), (0.5, 0.0), False),  # epsilon differs
    (_statement(0.5, 1e-5), (0.5, 0.0), False),  # delta differs
])
def test_privacy_statement_against_ledger(tmp_path, statement, ledger, ok):
    privacy = {"kind": "dp", "count_columns": ["value"], "statement": statement}
    if ledger is not None:
        privacy.update(ledger_epsilon=ledger[0], ledger_delta=ledger[1])
    if ok:
        validate_or_raise("test-dp", COUNTS, context={"privacy": privacy},
                          reports_dir=tmp_path)
    else:
        with pytest.raises(DataQualityError, match="expect_privacy_statement_to_match_ledger"):
            validate_or_raise("test-dp", COUNTS, context={"privacy": privacy},
                              reports_dir=tmp_path)


@pytest.mark.parametrize(("statement", "match"), [
    ({"epsilon": 0.5, "delta": 0.0}, "missing key 'statement_version'"),  # earlier 311 shape
    ({"spent": {"epsilon": 0.5, "delta": 0.0}}, "missing key"),  # earlier mobility shape
    (_statement(0.5, 0.0).to_dict() | {"spent_per_unit": {"subscriber": {
        "epsilon": float("nan"), "delta": 0.0}}}, "finite number"),
    (_statement(0.5, 0.0).to_dict() | {"spent_per_unit": {"subscriber": {
        "epsilon": "0.5", "delta": 0.0}}}, "must be a number"),
    (_statement(0.5, 0.0).to_dict() | {"epsilon": 0.7}, "contradict spent_per_unit"),
])
def test_a_statement_that_is_not_one_fails_the_gate_without_guessing(tmp_path, statement,
                                                                      match):
    privacy = {"kind": "dp", "count_columns": ["value"], "statement": statement,
               "ledger_epsilon": 0.5, "ledger_delta": 0.0}
    with pytest.raises(DataQualityError, match=match):
        validate_or_raise("test-dp", COUNTS, context={"privacy": privacy},
                          reports_dir=tmp_path)


def test_a_statement_of_several_units_has_no_single_budget_to_compare(tmp_path):
    two = PrivacyStatement(dataset="opencity-kpis", partition="dt=2026-10-01",
                           method="differential_privacy",
                           spent={"resident": {"epsilon": 0.3, "delta": 0.0},
                                  "meter": {"epsilon": 0.5, "delta": 0.0}})
    privacy = {"kind": "dp", "count_columns": ["value"], "statement": two,
               "ledger_epsilon": 0.8, "ledger_delta": 0.0}
    with pytest.raises(DataQualityError, match="2 privacy units"):
        validate_or_raise("test-dp", COUNTS, context={"privacy": privacy},
                          reports_dir=tmp_path)


def test_statement_is_read_from_privacy_json_and_the_ledger_api(tmp_path):
    """The gate reads the portal ledger through its API (Ledger.recorded_spend)."""
    from datetime import date

    from privacy.dp import DPBudget, Ledger

    ledger = Ledger(tmp_path / "state.sqlite")
    ledger.spend("opencity-cdr-mobility-daily", "dt=2026-10-05", "daily", date(2026, 10, 5),
                 {"subscriber": DPBudget(0.8, 0.0)})
    write_statement(_statement(0.8, 0.0), tmp_path / "privacy.json")
    privacy = {"kind": "dp", "count_columns": ["value"], "statement": tmp_path / "privacy.json",
               "ledger": ledger, "ledger_dataset": "opencity-cdr-mobility-daily",
               "partition": "dt=2026-10-05", "release_id": "daily"}
    out = validate_or_raise("cdr_mobility.x", COUNTS, context={"privacy": privacy},
                            reports_dir=tmp_path / "r")
    assert out["success"]
    (tmp_path / "privacy.json").unlink()
    with pytest.raises(DataQualityError, match="privacy statement is missing"):
        validate_or_raise("cdr_mobility.x", COUNTS, context={"privacy": privacy},
                          reports_dir=tmp_path / "r")
    write_statement(_statement(0.8, 1e-8), tmp_path / "privacy.json")
    with pytest.raises(DataQualityError, match="statement delta 1e-08 != ledger delta 0"):
        validate_or_raise("cdr_mobility.x", COUNTS, context={"privacy": privacy},
                          reports_dir=tmp_path / "r")
    (tmp_path / "privacy.json").write_text(json.dumps({"spent": {"epsilon": 0.8,
                                                                 "delta": 0.0}}))
    with pytest.raises(DataQualityError, match="privacy.json: not a privacy statement"):
        validate_or_raise("cdr_mobility.x", COUNTS, context={"privacy": privacy},
                          reports_dir=tmp_path / "r")
    write_statement(_statement(0.8, 0.0), tmp_path / "privacy.json")
    # A path is not the ledger: the gate no longer opens the database itself.
    with pytest.raises(ConfigError, match="must be the budget ledger object"):
        validate_or_raise("cdr_mobility.x", COUNTS,
                          context={"privacy": privacy | {"ledger": tmp_path / "state.sqlite"}},
                          reports_dir=tmp_path / "r")


def test_negative_dp_count_fails():
    table = pa.table({"value": [3, 0, -2]})
    assert _run(table, px.ExpectCountsToBeNonNegative(column="value")) == [False]
    assert _run(pa.table({"value": [3, 0, None]}),
                px.ExpectCountsToBeNonNegative(column="value")) == [True]


@pytest.mark.parametrize(("counts", "ok"), [
    ([15, 40, None], True),  # None = withheld (suppressed) cell
    ([15, 14, None], False),  # a count under the threshold was published
])
def test_count_under_threshold_fails(counts, ok):
    table = pa.table({"requests": pa.array(counts, pa.int64())})
    exp = px.ExpectCountsToReachReleaseThreshold(column="requests", min_value=15)
    assert _run(table, exp) == [ok]


def test_failure_message_and_reports_mask_identifiers(tmp_path):
    table = pa.table({"request_type": ["pothole", f"call {PHONE}", "noise"],
                      "requests": pa.array([20, 20, 20], pa.int64())})
    with pytest.raises(DataQualityError) as err:
        validate_or_raise("leaky-product", table, context={"privacy": {
            "kind": "suppressed", "count_columns": ["requests"], "threshold": 15}},
            reports_dir=tmp_path)
    message = str(err.value)
    assert "expect_column_values_to_not_contain_direct_identifiers" in message
    assert "'request_type'" in message and "[phone]" in message
    digits = PHONE.replace(" ", "")[3:]
    for path in [*tmp_path.rglob("*.json"), *tmp_path.rglob("*.html")]:
        text = path.read_text(encoding="utf-8")
        assert PHONE not in text and digits not in text.replace(" ", ""), path
    assert PHONE not in message


def test_mask_identifiers_keeps_the_kind():
    masked = px.mask_identifiers(f"mail a.b@example.com or {PHONE}")
    assert masked == "mail [email] or [phone]"
    assert px.identifier_kinds("x@example.org") == ["email"]
    assert {"email", "phone"} <= set(px.IDENTIFIER_PATTERNS)


def _microdata(**overrides):
    cols = {"age": ["[20, 30)"] * 4, "gender": ["female"] * 4, "district_id": ["D01"] * 4,
            "created": ["W2026-10-05"] * 4,
            "request_type": ["pothole", "noise", "pothole", "noise"],
            "status": ["closed"] * 4}
    cols.update(overrides)
    return pa.table(cols)


MICRODATA_CTX = {"privacy": {"kind": "microdata", "k": 2,
                             "quasi_identifiers": ["age", "gender", "district_id", "created"]},
                 "schema": SERVICE_REQUESTS}


def test_microdata_gate_passes_values_inside_their_domains(tmp_path):
    out = validate_or_raise("opencity-311-requests-microdata", _microdata(),
                            context=MICRODATA_CTX, reports_dir=tmp_path)
    assert out["success"]


@pytest.mark.parametrize(("column", "value"), [
    ("request_type", "Hanife Tintzmann"),      # a name shifted into the type
    ("request_type", "hanife@example.org"),
    ("status", "Hertha-Henck-Weg 2"),
    ("gender", "Zoë Müller"),
    ("district_id", "Zoë Müller"),
    ("age", "Tintzmann"),
    ("created", "+49 30 9018 2277"),
])
def test_microdata_gate_rejects_a_value_outside_its_domain(tmp_path, column, value):
    table = _microdata(**{column: [value] * 4})
    with pytest.raises(DataQualityError, match=column) as err:
        validate_or_raise("opencity-311-requests-microdata", table, context=MICRODATA_CTX,
                          reports_dir=tmp_path)
    assert value not in str(err.value)
    for path in [*tmp_path.rglob("*.json"), *tmp_path.rglob("*.html")]:
        assert value not in path.read_text(encoding="utf-8"), path


def test_microdata_string_column_without_a_domain_fails(tmp_path):
    table = _microdata().append_column("note", pa.array(["hole in road"] * 4))
    with pytest.raises(DataQualityError, match="free text is never published"):
        validate_or_raise("opencity-311-requests-microdata", table, context=MICRODATA_CTX,
                          reports_dir=tmp_path)


def test_weekly_product_request_types_come_from_the_public_key_set(tmp_path):
    from expectations.gate import suite_context
    from expectations.service_requests import product_suite

    ctx = suite_context("opencity-311-requests-weekly", pa.table({"request_type": ["x"]}),
                        {"privacy": {"kind": "suppressed", "count_columns": ["requests"],
                                     "threshold": 2}, "schema": SERVICE_REQUESTS})
    sets = [e for e in product_suite(ctx).expectations
            if e.expectation_type == "expect_column_values_to_be_in_set"]
    assert any(e.column == "request_type" and "pothole" in e.value_set for e in sets)
