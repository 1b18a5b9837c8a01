"""The composition guard's checks on small hand-built releases (each one can fail)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from opencity.errors import GuardError, PipelineError
from privacy import guard as g


def _records(rows):
    return pa.Table.from_pylist(rows)


def test_microdata_classes_counts_every_published_non_sensitive_column():
    # k = 2 holds on the declared QIs (age, gender) but not once 'status' is included
    rows = ([{"age": "[20, 30[", "gender": "f", "status": "open", "request_type": "a"}] * 1
            + [{"age": "[20, 30[", "gender": "f", "status": "closed", "request_type": "b"}] * 3)
    check = g.microdata_classes(_records(rows), sensitive=("request_type",), k=2, l=1)
    assert not check.passed
    assert check.details["columns"] == ["age", "gender", "status"]
    assert check.details["classes_below_k"] == 1
    assert check.details["records_below_k"] == 1
    ok = g.microdata_classes(_records(rows).drop_columns(["status"]),
                             sensitive=("request_type",), k=2, l=2)
    assert ok.passed and ok.details["min_distinct_sensitive"] == 2


def test_microdata_classes_l_and_policy_columns():
    rows = [{"age": "*", "request_type": "a"}] * 5
    check = g.microdata_classes(_records(rows), sensitive=("request_type",), k=2, l=2)
    assert not check.passed and check.details["classes_below_l"] == 1
    extra = g.microdata_classes(_records([{"age": "*", "x": 1, "request_type": t}
                                          for t in "abcde"]),
                                sensitive=("request_type",), k=5, l=1,
                                policy_columns=("age", "request_type"))
    assert not extra.passed and extra.details["columns_not_in_policy"] == ["x"]


@pytest.mark.parametrize("k,l", [(0, 1), (2, 0)])
def test_microdata_classes_validates_k_l(k, l):
    with pytest.raises(PipelineError):
        g.microdata_classes(_records([{"a": 1}]), sensitive=(), k=k, l=l)


def _weekly(cells):
    return pa.Table.from_pylist([{"district_id": d, "request_type": t, "requests": n,
                                  "suppressed": n is None} for (d, t), n in cells.items()])


def test_withheld_cell_recovered_from_microdata_type_total():
    weekly = _weekly({("D1", "a"): 20, ("D2", "a"): None, ("D1", "b"): None,
                      ("D2", "b"): None})
    md = _records([{"district_id": "*", "request_type": "a"}] * 23)
    check = g.withheld_cells(weekly, keys=("district_id", "request_type"), count="requests",
                             threshold=15, margins=[g.margins_from_records(
                                 md, ("district_id", "request_type"))])
    assert not check.passed
    assert check.details["recovered_exactly"] >= 1  # D2/a = 23 - 20


def test_withheld_cells_exposed_by_floors_and_narrow_intervals():
    weekly = _weekly({("D1", "a"): None, ("D2", "a"): None, ("D1", "b"): None,
                      ("D2", "b"): None})
    # the microdata still carries district on one record of D1/a: a floor of 1
    md = _records([{"district_id": "D1", "request_type": "a"}]
                  + [{"district_id": "*", "request_type": "a"}] * 3)
    check = g.withheld_cells(weekly, keys=("district_id", "request_type"), count="requests",
                             threshold=15,
                             margins=[g.margins_from_records(md, ("district_id",
                                                                  "request_type"))])
    assert not check.passed and check.details["exposed"] >= 2  # both 'a' cells <= 4
    # without any other release the 2 x 2 block is safe
    alone = g.withheld_cells(weekly, keys=("district_id", "request_type"), count="requests",
                             threshold=15)
    assert alone.passed


def test_dp_cells_requires_every_public_key_and_error_bounds():
    keys = pa.table({"district_id": ["D1", "D2"], "request_type": ["a", "a"]})
    good = pa.table({"district_id": ["D1", "D2"], "request_type": ["a", "a"],
                     "requests": [3, 0], "requests_error_bound_95": [7.0, 7.0]})
    assert g.dp_cells(good, keys=("district_id", "request_type"), count="requests",
                      error_bound="requests_error_bound_95", public_keys=keys).passed
    withheld = good.set_column(2, "requests", pa.array([3, None], pa.int64()))
    bad = g.dp_cells(withheld, keys=("district_id", "request_type"), count="requests",
                     error_bound="requests_error_bound_95", public_keys=keys)
    assert not bad.passed and bad.details["withheld"] == 1
    missing = g.dp_cells(good.slice(0, 1), keys=("district_id", "request_type"),
                         count="requests", error_bound="requests_error_bound_95",
                         public_keys=keys)
    assert not missing.passed and missing.details["keys_missing"] == 1


def test_kpi_rows():
    t = pa.table({"method": ["dp", "suppressed", "public"], "value": [1.0, 2.0, 3.0],
                  "error_bound": [0.5, None, 0.0],
                  "source_datasets": ["service_requests", "cdr", "service_requests"]})
    check = g.kpi_rows(t, person_sources=("service_requests",))
    assert not check.passed
    assert check.details["suppressed_with_value"] == 1
    assert check.details["public_rows_from_person_sources"] == 1


def test_report_raises_guard_error_with_counts_not_values(tmp_path):
    rows = [{"age": "[20, 30[", "gender": "secret-value", "request_type": "a"}]
    check = g.microdata_classes(_records(rows), sensitive=("request_type",), k=5)
    report = g.guard("ds", "dt=2026-10-05", [check], ["ds"])
    path = report.write(tmp_path / "guard.json")
    with pytest.raises(GuardError, match="microdata_classes") as err:
        report.raise_if_failed(path)
    assert isinstance(err.value, PipelineError) and not err.value.transient
    text = path.read_text()
    assert json.loads(text)["passed"] is False
    assert "secret-value" not in text and "secret-value" not in str(err.value)
    assert "[20, 30[" not in text
