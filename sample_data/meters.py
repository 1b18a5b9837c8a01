"""Households, the water/electricity meter registry and hourly smart-meter readings.

Each sampled household has one electricity and one water meter. The smart share differs by
district (60-90 %); legacy meters have no hourly readings. Readings are produced in fixed
blocks of meters (own random stream each), so memory is bounded at any scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sample_data.city import City
from sample_data.people import NamePools, addresses
from sample_data.util import (
    CITY_TZ,
    US_PER_H,
    day_starts_us,
    format_ids,
    rng_for,
    ts_array,
    unique_codes,
)

HOUSEHOLDS_PER_SCALE = 2_000
BLOCK = 256  # meters per random block of readings
HOUSEHOLD_SIZE_P = np.array([0.41, 0.33, 0.12, 0.10, 0.03, 0.01])  # sizes 1..6
# Local-hour profiles (relative), weekday and weekend.
ELEC_WEEKDAY = np.array([0.5, 0.4, 0.35, 0.35, 0.35, 0.45, 0.9, 1.4, 1.2, 0.8, 0.7, 0.7,
                         0.8, 0.75, 0.7, 0.75, 0.9, 1.3, 1.8, 2.0, 1.9, 1.6, 1.1, 0.7])
ELEC_WEEKEND = np.array([0.6, 0.45, 0.4, 0.35, 0.35, 0.4, 0.5, 0.8, 1.2, 1.4, 1.3, 1.3,
                         1.4, 1.2, 1.1, 1.1, 1.2, 1.4, 1.8, 2.0, 1.9, 1.6, 1.2, 0.8])
WATER_WEEKDAY = np.array([0.1, 0.05, 0.05, 0.05, 0.1, 0.6, 2.6, 3.2, 1.8, 0.9, 0.7, 0.7,
                          0.9, 0.8, 0.6, 0.6, 0.8, 1.2, 1.8, 2.2, 2.0, 1.5, 0.9, 0.4])
WATER_WEEKEND = np.array([0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.5, 1.4, 2.6, 2.8, 2.0, 1.4,
                          1.4, 1.0, 0.8, 0.8, 0.9, 1.2, 1.7, 2.0, 1.9, 1.5, 1.0, 0.5])
KWH_PER_DAY = 5.5  # one-person household, scaled by size ** 0.6
LITRES_PER_PERSON_DAY = 125.0
P_LEAK = 0.01  # water meters with a constant leak from some hour on
P_STUCK = 0.005  # electricity meters reading 0 for a day
TARIFFS = {
    "electricity": (("basic", "green", "time_of_use"), (0.55, 0.30, 0.15)),
    "water": (("standard", "social"), (0.92, 0.08)),
}


@dataclass(frozen=True)
class Households:
    """Sampled households (aligned arrays)."""

    household_id: pa.Array
    address: pa.Array
    district: np.ndarray
    size: np.ndarray

    @property
    def n(self) -> int:
        return self.size.shape[0]


def make_households(seed: int, city: City, pools: NamePools, scale: float) -> Households:
    """``2,000 * scale`` households (at most the census count), districts by households."""
    rng = rng_for(seed, "households")
    hh = city.districts.column("households").to_numpy()
    n = int(min(max(1, round(HOUSEHOLDS_PER_SCALE * scale)), hh.sum()))
    district = rng.choice(city.n_districts, size=n, p=hh / hh.sum())
    size = 1 + rng.choice(HOUSEHOLD_SIZE_P.shape[0], size=n, p=HOUSEHOLD_SIZE_P)
    return Households(format_ids(np.arange(1, n + 1), 7, "H"),
                      addresses(rng, pools, district), district, size)


def make_registry(seed: int, city: City, hh: Households, start: date) -> pa.Table:
    """The ``meter_registry`` table: electricity meters first, then water meters."""
    rng = rng_for(seed, "households", 1)
    n = hh.n
    parts = []
    for u, (utility, prefix) in enumerate((("electricity", "E"), ("water", "W"))):
        share = rng.uniform(0.6, 0.9, city.n_districts)
        smart = rng.random(n) < share[hh.district]
        names, p = TARIFFS[utility]
        tariff = np.array(names)[rng.choice(len(names), size=n, p=p)]
        # Smart meters installed 2017 onwards, legacy ones 1990-2016; a few dates unknown.
        first = np.where(smart, date(2017, 1, 1).toordinal(), date(1990, 1, 1).toordinal())
        last = np.where(smart, (start - timedelta(days=1)).toordinal(),
                        date(2016, 12, 31).toordinal())
        ordinal = first + (rng.random(n) * (last - first)).astype(np.int64)
        days_since_epoch = ordinal - date(1970, 1, 1).toordinal()
        installed = pa.array(days_since_epoch.astype(np.int32), pa.int32()).cast(pa.date32())
        installed = pc.if_else(pa.array(rng.random(n) < 0.03), pa.nulls(n, pa.date32()),
                               installed)
        parts.append(pa.table({
            "meter_id": format_ids(unique_codes(rng, n, 10**7), 7, prefix),
            "utility": pa.repeat(utility, n),
            "household_id": hh.household_id,
            "household_address": hh.address,
            "district_id": city.district_ids.take(pa.array(hh.district)),
            "smart": pa.array(smart),
            "tariff": pa.array(tariff),
            "household_size": pa.array(hh.size, pa.int64()),
            "installed_on": installed,
        }))
    return pa.concat_tables(parts).combine_chunks()


def _hour_grid(start: date, days: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UTC hours of the window: (epoch us, local hour, local weekday)."""
    t = day_starts_us(start, days)[0] + np.arange(days * 24, dtype=np.int64) * US_PER_H
    # Calendar lookup per hour of the window (not per data row).
    local = [datetime.fromtimestamp(int(x) // 1_000_000, UTC).astimezone(CITY_TZ) for x in t]
    hour = np.array([d.hour for d in local])
    wday = np.array([d.weekday() for d in local])
    return t, hour, wday


def readings_blocks(seed: int, registry: pa.Table, start: date, days: int
                    ) -> Iterator[pa.Table]:
    """Yield hourly readings of the smart meters, meter by meter, in blocks.

    Electricity in kWh per hour (daily profile with morning and evening peaks); water in litres
    per hour (morning/evening peaks, near zero at night). A few anomalies: leaking water meters
    (constant night flow) and electricity meters stuck at 0 for a day.
    """
    smart = registry.filter(registry.column("smart"))
    meter_id = smart.column("meter_id").combine_chunks()
    is_water = pc.equal(smart.column("utility"), "water").to_numpy(zero_copy_only=False)
    size = smart.column("household_size").to_numpy()
    t, hour, wday = _hour_grid(start, days)
    weekend = wday >= 5
    T = t.shape[0]
    elec = np.where(weekend, ELEC_WEEKEND[hour], ELEC_WEEKDAY[hour])
    elec = elec / ELEC_WEEKDAY.sum()
    water = np.where(weekend, WATER_WEEKEND[hour], WATER_WEEKDAY[hour])
    water = water / WATER_WEEKDAY.sum()
    units = pa.array(["kWh", "L"])
    for b, lo in enumerate(range(0, smart.num_rows, BLOCK)):
        hi = min(lo + BLOCK, smart.num_rows)
        m = hi - lo
        rng = rng_for(seed, "readings", b)
        w = is_water[lo:hi]
        daily = np.where(w, LITRES_PER_PERSON_DAY * size[lo:hi],
                         KWH_PER_DAY * size[lo:hi] ** 0.6) * rng.lognormal(0, 0.3, m)
        profile = np.where(w[:, None], water[None, :], elec[None, :])
        noise = rng.gamma(4.0, 0.25, (m, T))
        value = daily[:, None] * profile * noise
        leak = w & (rng.random(m) < P_LEAK)
        leak_from = rng.integers(0, T, m)
        value += np.where(leak[:, None] & (np.arange(T)[None, :] >= leak_from[:, None]),
                          rng.uniform(5, 30, m)[:, None], 0.0)
        stuck = ~w & (rng.random(m) < P_STUCK)
        stuck_from = rng.integers(0, max(T - 24, 1), m)
        hours = np.arange(T)[None, :]
        value = np.where(stuck[:, None] & (hours >= stuck_from[:, None])
                         & (hours < stuck_from[:, None] + 24), 0.0, value)
        value = np.where(w[:, None], np.round(value, 1), np.round(value, 3))
        idx = pa.array(np.repeat(np.arange(lo, hi), T))
        yield pa.table({
            "meter_id": meter_id.take(idx),
            "reading_time": ts_array(np.tile(t, m)),
            "value": value.ravel(),
            "unit": units.take(pa.array(np.repeat(w.astype(np.int64), T))),
        })


def n_reading_blocks(registry: pa.Table) -> int:
    """Number of tables :func:`readings_blocks` yields."""
    n_smart = pc.sum(registry.column("smart").cast(pa.int64())).as_py() or 0
    return -(-n_smart // BLOCK)
