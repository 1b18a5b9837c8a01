"""Fixtures: sample-like CDR for one day, made with the project's sample-data generator."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest

DAY = date(2026, 10, 5)


def sample_day(scale: float, seed: int = 7) -> tuple[pa.Table, pa.Table]:
    """(cdr, towers) for DAY: ~100,000 * scale / 14 events, raw subscriber_id as unit."""
    from sample_data.cdr import cdr_blocks, make_subscribers
    from sample_data.city import make_city

    city = make_city(seed, scale)
    subs = make_subscribers(seed, city, scale, 1)
    cdr = pa.concat_tables(list(cdr_blocks(seed, city, subs, DAY, 1)))
    return cdr, city.towers


@pytest.fixture(scope="session")
def small_day() -> tuple[pa.Table, pa.Table]:
    return sample_day(14.0)  # ~100k events, ~27k subscribers


@pytest.fixture(scope="session")
def busy_day() -> tuple[pa.Table, pa.Table]:
    return sample_day(40.0)  # ~290k events, a busy city day
