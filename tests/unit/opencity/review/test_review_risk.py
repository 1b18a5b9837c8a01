"""Journalist and marketer risk from the population table, checked by hand."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opencity.review.collect import microdata_risk
from opencity.review.render import bar_chart, stacked_bars


def _write(tmp_path, rows):
    p = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), p)
    return p


def test_population_scales_each_class(tmp_path):
    # District D1: classes of 2 and 3 records (n=5) among 100 residents -> F = 40 and 60.
    # '*': a class of 5 records of the whole city (n=10 released, N=1100) -> F = 550.
    rows = ([{"age": "a", "district_id": "D1"}] * 2 + [{"age": "b", "district_id": "D1"}] * 3
            + [{"age": "a", "district_id": "*"}] * 5)
    res = microdata_risk(_write(tmp_path, rows), ["age", "district_id"],
                         {"D1": 100, "D2": 1000})
    assert res["prosecutor"]["max"] == pytest.approx(1 / 2)
    assert res["journalist"]["max"] == pytest.approx(1 / 40)
    avg = (2 / 40 + 3 / 60 + 5 / 550) / 10
    assert res["journalist"]["average"] == pytest.approx(avg)
    assert res["marketer"]["average"] == pytest.approx(avg)
    assert res["population_total"] == 1100


def test_population_never_smaller_than_the_class(tmp_path):
    rows = [{"age": "a", "district_id": "D1"}] * 4
    res = microdata_risk(_write(tmp_path, rows), ["age", "district_id"], {"D1": 2})
    assert res["journalist"]["max"] == pytest.approx(1 / 4)  # F = max(f, f*N/n) = 4


def test_without_population_journalist_equals_prosecutor(tmp_path):
    rows = [{"age": "a", "district_id": "D1"}] * 3
    res = microdata_risk(_write(tmp_path, rows), ["age", "district_id"], None)
    assert res["journalist"] == res["prosecutor"]
    assert "no population table" in res["population_model"]


def test_charts_escape_labels_and_have_text_alternatives():
    svg = bar_chart(["<b>", "2"], [3, 0], "Groups & sizes")
    assert "&lt;b&gt;" in svg and "<b>" not in svg
    assert 'role="img"' in svg and "<title>Groups &amp; sizes" in svg
    svg = stacked_bars(["d1", "d2"], {"x": [1.0, 2.0]}, "Budget", cap=5.0)
    assert "cap 5" in svg and "total 3" in svg


def test_guard_findings_render_each_check():
    from opencity.review.render import _guard_block

    html = _guard_block({"dataset": "d", "partition": "dt=2026-10-05", "passed": False,
                         "releases_considered": ["opencity-311-requests-weekly dt=2026-10-05"],
                         "checks": [{"name": "differencing", "passed": False, "cells": 2},
                                    {"name": "small_counts", "passed": True}]})
    assert "refused" in html and "differencing" in html and "cells 2" in html
    assert html.count("<tr>") == 3  # header + one row per check
    assert "nothing the policy forbids" in _guard_block({"passed": True, "checks": []})
    assert "No composition-guard findings" in _guard_block(None)
