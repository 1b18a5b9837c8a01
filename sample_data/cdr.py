"""CDR events: subscribers with home/work anchor towers, daily rhythms, commuters and visitors.

Subscribers are generated once (small: ids and anchors); events are produced in fixed blocks
of :data:`BLOCK` subscribers, each from its own random stream, so memory stays bounded and the
event sequence does not depend on how the writer splits it into part files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sample_data.city import City
from sample_data.util import (
    day_starts_us,
    format_ids,
    local_offset_hours,
    local_seconds_to_utc,
    rng_for,
    ts_array,
    unique_codes,
    weekdays,
)

BLOCK = 1_000  # subscribers per random block
EVENTS_PER_SCALE = 101_000  # expected events at scale 1 over 14 days (10M+ at scale 100)
RESIDENTS_PER_SCALE = 1_650
VISITORS_PER_SCALE = 250
COMMUTER_SHARE = 0.6
ACTIVITY_SIGMA = 1.1  # lognormal sigma of the activity per subscriber (heavy tail)
EVENT_TYPES = ("call", "sms", "data")
EVENT_TYPE_P = (0.35, 0.15, 0.50)
DAY_FACTOR = np.array([1.0, 1.0, 1.0, 1.02, 1.05, 0.8, 0.7])  # Monday..Sunday
# Relative activity per local hour: night low, commute peaks on weekdays, later on weekends.
HOURLY_WEEKDAY = np.array([0.6, 0.35, 0.25, 0.2, 0.25, 0.5, 1.5, 3.5, 4.5, 4.0, 3.8, 4.0,
                           4.2, 4.0, 3.8, 4.0, 4.6, 5.0, 4.8, 4.0, 3.6, 3.0, 2.2, 1.2])
HOURLY_WEEKEND = np.array([1.2, 0.9, 0.6, 0.4, 0.3, 0.3, 0.5, 1.0, 1.8, 2.8, 3.6, 4.0,
                           4.2, 4.2, 4.0, 3.9, 3.9, 4.0, 4.0, 3.8, 3.5, 3.0, 2.4, 1.6])
WORK_HOURS = (9, 17)  # local hours at the work anchor on weekdays (start inclusive)
P_RANDOM_TOWER = {"weekday": 0.10, "weekend": 0.25, "visitor": 0.45}


@dataclass(frozen=True)
class Subscribers:
    """Per-subscriber attributes (aligned arrays)."""

    msisdn: pa.Array
    imsi: pa.Array
    activity: np.ndarray  # expected events per active day
    home: np.ndarray  # tower index
    work: np.ndarray  # tower index (= home for non-commuters)
    commuter: np.ndarray  # bool
    visitor: np.ndarray  # bool: short stay, mostly away from the anchors
    first_day: np.ndarray  # first active day (visitors), 0 for residents
    last_day: np.ndarray  # last active day (inclusive)

    @property
    def n(self) -> int:
        return self.activity.shape[0]


def make_subscribers(seed: int, city: City, scale: float, days: int) -> Subscribers:
    """Residents (home by population, work towards the centre) and short-stay visitors.

    The activity is scaled so that the expected number of events over the window is
    ``100,000 * scale * days / 14``.
    """
    rng = rng_for(seed, "subscribers")
    n_res = max(1, round(RESIDENTS_PER_SCALE * scale))
    n_vis = round(VISITORS_PER_SCALE * scale)
    n = n_res + n_vis
    td = city.tower_district
    n_towers = td.shape[0]
    # Home: district by population, then a tower of that district.
    home_d = rng.choice(city.n_districts, size=n, p=city.population / city.population.sum())
    counts = np.bincount(td, minlength=city.n_districts)
    first_tower = np.r_[0, np.cumsum(counts)[:-1]]
    home = first_tower[home_d] + (rng.random(n) * counts[home_d]).astype(np.int64)
    # Work: towers weighted towards the centre.
    work_w = (0.2 + city.centrality[td]) ** 3
    work_any = rng.choice(n_towers, size=n, p=work_w / work_w.sum())
    commuter = np.zeros(n, dtype=bool)
    commuter[:n_res] = rng.random(n_res) < COMMUTER_SHARE
    work = np.where(commuter, work_any, home)
    # Visitors sleep near the centre and stay 1-4 days.
    home[n_res:] = work_any[n_res:]
    work[n_res:] = rng.choice(n_towers, size=n_vis, p=work_w / work_w.sum())
    first_day = np.zeros(n, dtype=np.int64)
    last_day = np.full(n, days - 1, dtype=np.int64)
    stay = np.minimum(rng.geometric(0.45, n_vis), 4)
    first_day[n_res:] = rng.integers(0, days, n_vis)
    last_day[n_res:] = np.minimum(first_day[n_res:] + stay - 1, days - 1)
    # Heavy-tailed activity, normalized to the target volume.
    activity = rng.lognormal(0.0, ACTIVITY_SIGMA, n)
    active_days = (last_day - first_day + 1).astype(float)
    mean_factor = DAY_FACTOR.mean()
    target = EVENTS_PER_SCALE * scale * days / 14
    activity *= target / (activity * active_days * mean_factor).sum()
    msisdn = format_ids(unique_codes(rng, n, 10**9), 9, "+4915")
    mnc = np.array(["01", "02", "03"])[rng.choice(3, size=n, p=[0.4, 0.35, 0.25])]
    imsi = pc.binary_join_element_wise(
        "262", pa.array(mnc), format_ids(unique_codes(rng, n, 10**10), 10), "")
    visitor = np.arange(n) >= n_res
    return Subscribers(msisdn, imsi, activity, home, work, commuter, visitor, first_day,
                       last_day)


def cdr_blocks(seed: int, city: City, subs: Subscribers, start: date, days: int
               ) -> Iterator[pa.Table]:
    """Yield the CDR events block by block (each block sorted by event time).

    Each table has the columns of the ``cdr`` schema: subscriber_id, imsi, event_time
    (timestamp[us, UTC]), cell_id, event_type.
    """
    starts = day_starts_us(start, days)
    offsets = local_offset_hours(start, days)
    wd = weekdays(start, days)
    day_factor = DAY_FACTOR[wd]
    weekend_day = wd >= 5
    cdf_weekday = np.cumsum(HOURLY_WEEKDAY)
    cdf_weekend = np.cumsum(HOURLY_WEEKEND)
    cell_ids = city.towers.column("cell_id").combine_chunks()
    n_towers = len(cell_ids)
    event_types = pa.array(EVENT_TYPES)
    type_cdf = np.cumsum(EVENT_TYPE_P)
    day_idx = np.arange(days)
    for b, lo in enumerate(range(0, subs.n, BLOCK)):
        hi = min(lo + BLOCK, subs.n)
        rng = rng_for(seed, "cdr", b)
        active = (day_idx >= subs.first_day[lo:hi, None]) & (day_idx <= subs.last_day[lo:hi, None])
        lam = subs.activity[lo:hi, None] * day_factor[None, :] * active
        counts = rng.poisson(lam).ravel()
        n = int(counts.sum())
        cell = np.repeat(np.arange(lo * days, hi * days), counts)
        sub = cell // days
        day = cell % days
        is_weekend = weekend_day[day]
        hour = np.where(is_weekend,
                        np.searchsorted(cdf_weekend, rng.random(n) * cdf_weekend[-1], "right"),
                        np.searchsorted(cdf_weekday, rng.random(n) * cdf_weekday[-1], "right"))
        local_s = hour * 3600 + rng.integers(0, 3600, n)
        at_work = (~is_weekend) & (hour >= WORK_HOURS[0]) & (hour < WORK_HOURS[1])
        tower = np.where(at_work, subs.work[sub], subs.home[sub])
        p_rand = np.where(subs.visitor[sub], P_RANDOM_TOWER["visitor"],
                          np.where(is_weekend, P_RANDOM_TOWER["weekend"],
                                   P_RANDOM_TOWER["weekday"]))
        move = rng.random(n) < p_rand
        tower = np.where(move, rng.integers(0, n_towers, n), tower)
        etype = np.searchsorted(type_cdf, rng.random(n) * type_cdf[-1], "right")
        t_us = local_seconds_to_utc(day, local_s, starts, offsets)
        order = np.argsort(t_us, kind="stable")
        idx = pa.array(sub[order])
        yield pa.table({
            "subscriber_id": subs.msisdn.take(idx),
            "imsi": subs.imsi.take(idx),
            "event_time": ts_array(t_us[order]),
            "cell_id": cell_ids.take(pa.array(tower[order])),
            "event_type": event_types.take(pa.array(etype[order])),
        })


def n_blocks(subs: Subscribers) -> int:
    """Number of tables :func:`cdr_blocks` yields."""
    return -(-subs.n // BLOCK)
