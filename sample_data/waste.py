"""Waste collection: one scheduled pickup per household and week; 3-8 % missed per district."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sample_data.city import City
from sample_data.meters import Households
from sample_data.util import (
    day_starts_us,
    format_ids,
    local_offset_hours,
    local_seconds_to_utc,
    rng_for,
    ts_array,
    weekdays,
)
from transforms.schemas import WASTE_PICKUPS

P_CANCELLED = 0.005
KG_PER_PICKUP = 6.0  # one-person household, scaled by size ** 0.7


def make_pickups(seed: int, city: City, hh: Households, start: date, days: int) -> pa.Table:
    """The ``waste_pickups`` table for the window, sorted by scheduled date and household.

    District ``i`` is collected on weekday ``i % 5`` (Mon-Fri) between 06:00 and 14:00 local
    time; missed and cancelled pickups have no collected_at and no weight.
    """
    rng = rng_for(seed, "waste")
    wd = weekdays(start, days)
    collection_wd = hh.district % 5
    # All (household, day) pairs where the day is the household's collection weekday.
    match = collection_wd[:, None] == wd[None, :]
    house, day = np.nonzero(match)
    order = np.lexsort((house, day))
    house, day = house[order], day[order]
    n = house.shape[0]
    if n == 0:
        return WASTE_PICKUPS.arrow_schema().empty_table()
    miss_rate = rng.uniform(0.03, 0.08, city.n_districts)
    u = rng.random(n)
    district = hh.district[house]
    status = np.where(u < P_CANCELLED, "cancelled",
                      np.where(u < P_CANCELLED + miss_rate[district], "missed", "collected"))
    done = status == "collected"
    local_s = 6 * 3600 + rng.integers(0, 8 * 3600, n)
    collected = local_seconds_to_utc(day, local_s, day_starts_us(start, days),
                                     local_offset_hours(start, days))
    weight = np.round(KG_PER_PICKUP * hh.size[house] ** 0.7 * rng.lognormal(0, 0.35, n), 1)
    start_days = (start - date(1970, 1, 1)).days
    scheduled = pa.array((start_days + day).astype(np.int32), pa.int32()).cast(pa.date32())
    done_a = pa.array(done)
    return pa.table({
        "pickup_id": format_ids(np.arange(1, n + 1), 8, "WP"),
        "household_id": hh.household_id.take(pa.array(house)),
        "district_id": city.district_ids.take(pa.array(district)),
        "scheduled_date": scheduled,
        "collected_at": pc.if_else(done_a, ts_array(collected),
                                   pa.nulls(n, pa.timestamp("us", tz="UTC"))),
        "status": pa.array(status),
        "weight_kg": pc.if_else(done_a, pa.array(weight), pa.nulls(n, pa.float64())),
    })



