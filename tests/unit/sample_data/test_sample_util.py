"""Vectorized helpers: id formatting, distinct codes, calendar."""

from __future__ import annotations

from datetime import date

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sample_data.util import (
    day_starts_us,
    format_ids,
    local_offset_hours,
    local_seconds_to_utc,
    unique_codes,
)


@given(st.lists(st.integers(0, 10**9 - 1), max_size=50), st.sampled_from(["", "+4915", "X"]))
def test_format_ids_matches_python_formatting(values, prefix):
    out = format_ids(np.array(values, dtype=np.int64), 9, prefix).to_pylist()
    assert out == [f"{prefix}{v:09d}" for v in values]


@given(st.lists(st.integers(0, 16**6 - 1), max_size=20))
def test_format_ids_hex(values):
    out = format_ids(np.array(values, dtype=np.int64), 6, "04", "0123456789ABCDEF").to_pylist()
    assert out == [f"04{v:06X}" for v in values]


@settings(max_examples=30)
@given(st.integers(0, 5000), st.sampled_from([10**4, 10**9, 10**10, 2**48]), st.integers(0, 99))
def test_unique_codes_are_distinct_and_in_range(n, modulus, seed):
    if n > modulus:
        return
    codes = unique_codes(np.random.default_rng(seed), n, modulus)
    assert len(np.unique(codes)) == n
    assert n == 0 or int(codes.max()) < modulus


def test_calendar_handles_daylight_saving_end():
    start = date(2026, 10, 24)  # DST ends on Sunday 25 October 2026 in Europe/Berlin
    offsets = local_offset_hours(start, 3)
    assert offsets.tolist() == [2, 1, 1]
    starts = day_starts_us(start, 3)
    assert np.all(np.diff(starts) == 86_400 * 10**6)
    # Local 08:00 on each day -> 06:00 UTC then 07:00 UTC; always inside its UTC day.
    t = local_seconds_to_utc(np.arange(3), np.full(3, 8 * 3600), starts, offsets)
    assert ((t - starts[:3]) // 3_600_000_000).tolist() == [6, 7, 7]
    late = local_seconds_to_utc(np.arange(3), np.full(3, 1 * 3600), starts, offsets)
    assert ((late >= starts[:3]) & (late < starts[1:])).all()
