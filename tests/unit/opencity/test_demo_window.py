"""The demo's windows: whole KPI months of sample data, a short window of daily/weekly runs."""

from __future__ import annotations

from datetime import date

import pytest

from opencity.demo import DEFAULT_MONTHS, logical_dates, run_demo, sample_window
from opencity.errors import ConfigError

START = date(2026, 10, 5)


def test_default_demo_runs_three_months_of_kpis_and_a_short_daily_window():
    assert DEFAULT_MONTHS == 3
    assert logical_dates("monthly", START, 14, 3) == [date(2026, 10, 1), date(2026, 11, 1),
                                                      date(2026, 12, 1)]
    assert len(logical_dates("daily", START, 14, 3)) == 14
    assert logical_dates("weekly", START, 14, 3) == [date(2026, 10, 5), date(2026, 10, 12)]
    # the sample data covers the three whole months (Oct 1 .. Dec 31)
    assert sample_window(START, 14, 3) == (date(2026, 10, 1), 92)


@pytest.mark.parametrize("start,days,months,want", [
    (date(2026, 12, 20), 30, 1, (date(2026, 12, 1), 49)),  # the short window runs past
    (date(2026, 1, 31), 7, 2, (date(2026, 1, 1), 59)),  # month ends: Jan 31 -> Feb 28
    (START, 14, 1, (date(2026, 10, 1), 31)),
])
def test_sample_window_covers_months_and_short_window(start, days, months, want):
    assert sample_window(start, days, months) == want
    assert logical_dates("monthly", start, days, months)[0] == start.replace(day=1)


@pytest.mark.parametrize("months", [0, 13, True, 1.5])
def test_bad_months_are_refused_before_anything_runs(tmp_path, months):
    with pytest.raises(ConfigError, match="--months"):
        run_demo(tmp_path / "demo", months=months)
    assert not (tmp_path / "demo").exists()
