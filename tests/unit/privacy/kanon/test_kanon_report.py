"""Risk figures and histogram of the report, checked by hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from privacy.kanon.report import class_histogram, risk_summary


def test_risk_summary_by_hand():
    r = risk_summary(np.array([1, 2, 2, 5]), threshold=0.2)
    assert r["records"] == 10
    assert r["prosecutor"]["max"] == 1.0
    assert r["prosecutor"]["average"] == pytest.approx(4 / 10)
    # risks 1, 1/2, 1/2, 1/5: records strictly above 0.2 are 1 + 2 + 2
    assert r["prosecutor"]["records_above_threshold"] == pytest.approx(0.5)
    assert r["journalist"] == r["prosecutor"]
    assert r["marketer"]["average"] == pytest.approx(0.4)
    assert r["sample_uniques"] == pytest.approx(0.1)


def test_risk_summary_empty_release():
    r = risk_summary(np.array([], dtype=np.int64), threshold=0.2)
    assert r["records"] == 0 and r["prosecutor"]["max"] == 0.0


def test_histogram_buckets():
    h = class_histogram(np.array([1, 4, 5, 9, 10, 2000]))
    got = {b["size"]: (b["classes"], b["records"]) for b in h}
    assert got["1"] == (1, 1)
    assert got["4"] == (1, 4)
    assert got["5-9"] == (2, 14)
    assert got["10-19"] == (1, 10)
    assert got["1000+"] == (1, 2000)
    assert sum(c for c, _ in got.values()) == 6
