"""The review reads a release's privacy statement through opencity.io.PrivacyStatement: one
product loop for every producer, and a file that is not a statement is left out (with a
warning) instead of being guessed (issue 19 item 1)."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq

from opencity.io import PrivacyStatement, write_statement
from opencity.review import collect
from opencity.review.report import release_parameters


def _kpi_like(tmp_path) -> PrivacyStatement:
    pq.write_table(pa.table({"value": [1.0, 2.0], "error_bound_95": [0.5, 1.5]}),
                   tmp_path / "kpis.parquet")
    product = {"mechanism": "laplace", "statistic": "mean", "bounds": {"max_partitions": 1},
               "selection_threshold": None, "key_source": "public", "file": "kpis.parquet"}
    return PrivacyStatement(
        dataset="opencity-kpis", partition="dt=2026-10-01", method="differential_privacy",
        spent={"resident": {"epsilon": 0.3, "delta": 0.0},
               "meter": {"epsilon": 0.5, "delta": 0.0}},
        products={"K2 (share)": product | {"epsilon": 0.5, "delta": 0.0,
                                           "privacy_unit": "meter"},
                  "K1 (count)": product | {"epsilon": 0.3, "delta": 0.0,
                                           "privacy_unit": "resident"}},
        details={"budget_per_unit": {"meter": {"epsilon": 0.5}}})


def test_products_of_a_statement_with_several_units(tmp_path):
    statement = _kpi_like(tmp_path)
    write_statement(statement, tmp_path / "privacy.json")
    assert collect.statement(tmp_path) == statement
    assert collect.privacy_method(None, tmp_path, tmp_path / "reports") == (
        "differential_privacy")
    products = collect.dp_products(statement, tmp_path)
    assert [p["name"] for p in products] == ["K1 (count)", "K2 (share)"]
    assert [p["privacy_unit"] for p in products] == ["resident", "meter"]
    assert products[0]["error_bound"]["worst"] == 1.5  # from the product's file
    params = release_parameters("differential_privacy", None, statement, None, {})
    assert params["spent"] is None  # no single (epsilon, delta) for two units
    assert params["spent_per_unit"]["meter"] == {"epsilon": 0.5, "delta": 0.0}
    assert params["budget"] == {"meter": {"epsilon": 0.5}}


def test_a_file_that_is_not_a_statement_is_left_out_with_a_warning(tmp_path, caplog):
    (tmp_path / "privacy.json").write_text(json.dumps({"epsilon": 0.5, "delta": 0.0}))
    with caplog.at_level(logging.WARNING, logger="opencity.review.collect"):
        assert collect.statement(tmp_path) is None
    assert "missing key 'statement_version'" in caplog.text
    assert collect.privacy_method(None, tmp_path, tmp_path / "reports") == "unknown"
    assert collect.statement(tmp_path / "nothing-here") is None
