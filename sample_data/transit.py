"""Transit: stops on a few routes through the centre, and card tap-ins.

Commuter cards tap in at their home stop in the morning and at their work stop in the evening on
weekdays; every card also makes occasional random trips (more on weekends). Taps are produced
in fixed blocks of cards (own random stream each).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa

from sample_data.city import LAT_MAX, LAT_MIN, LON_MAX, LON_MIN, City
from sample_data.people import NamePools
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

N_STOPS = 40
N_ROUTES = 6
CARDS_PER_SCALE = 3_000
TAPS_PER_SCALE = 20_000  # per 14 days at scale 1
COMMUTER_SHARE = 0.45
COMMUTE_SHARE_OF_TAPS = 0.7
BLOCK = 2_000  # cards per random block
HOURLY_LEISURE = np.array([0.3, 0.2, 0.1, 0.05, 0.05, 0.2, 0.6, 1.2, 1.6, 2.0, 2.4, 2.6,
                           2.8, 2.8, 2.8, 2.8, 3.0, 3.0, 2.8, 2.4, 2.0, 1.6, 1.0, 0.6])


@dataclass(frozen=True)
class Network:
    """Stops table plus which routes serve each stop (bool matrix stops x routes)."""

    stops: pa.Table
    serves: np.ndarray
    stop_weight: np.ndarray  # attractiveness (centre higher)


def make_network(seed: int, city: City, pools: NamePools) -> Network:
    """40 stops, denser near the centre, on 6 straight routes crossing the city centre."""
    rng = rng_for(seed, "transit")
    clat, clon = (LAT_MIN + LAT_MAX) / 2, (LON_MIN + LON_MAX) / 2
    angle = np.pi * (np.arange(N_ROUTES) / N_ROUTES + rng.uniform(-0.05, 0.05, N_ROUTES))
    route = rng.integers(0, N_ROUTES, N_STOPS)
    route[:N_ROUTES] = np.arange(N_ROUTES)
    # Position along the route: -1..1 of the half-width, concentrated near the centre.
    pos = np.clip(rng.normal(0, 0.45, N_STOPS), -0.95, 0.95)
    half_lat, half_lon = (LAT_MAX - LAT_MIN) / 2, (LON_MAX - LON_MIN) / 2
    lat = np.round(clat + pos * half_lat * np.sin(angle[route]), 6)
    lon = np.round(clon + pos * half_lon * np.cos(angle[route]), 6)
    # A stop is served by its route and by any other route passing within ~300 m.
    dy = (lat[:, None] - clat) / half_lat
    dx = (lon[:, None] - clon) / half_lon
    dist = np.abs(dx * np.sin(angle)[None, :] - dy * np.cos(angle)[None, :])
    serves = dist < 0.04
    serves[np.arange(N_STOPS), route] = True
    district = city.district_of(lat, lon)
    name_idx = rng.choice(len(pools.streets), size=N_STOPS, replace=False)
    stops = pa.table({
        "stop_id": format_ids(np.arange(1, N_STOPS + 1), 3, "S"),
        "stop_name": pools.streets.take(pa.array(name_idx)),
        "lat": lat,
        "lon": lon,
        "district_id": city.district_ids.take(pa.array(district)),
    })
    weight = 1.0 + 3.0 * city.centrality[district] + serves.sum(axis=1)
    return Network(stops, serves, weight)


def taps_blocks(seed: int, net: Network, scale: float, start: date, days: int
                ) -> Iterator[pa.Table]:
    """Yield tap-ins (card_id, stop_id, route_id, tap_time) in blocks, each sorted by time.

    About ``20,000 * scale * days / 14`` taps by ``3,000 * scale`` cards.
    """
    rng0 = rng_for(seed, "taps")
    n_cards = max(1, round(CARDS_PER_SCALE * scale))
    card_ids = format_ids(unique_codes(rng0, n_cards, 2**48), 12, "04", "0123456789ABCDEF")
    p_stop = net.stop_weight / net.stop_weight.sum()
    home = rng0.choice(N_STOPS, size=n_cards)
    work = rng0.choice(N_STOPS, size=n_cards, p=p_stop)
    commuter = rng0.random(n_cards) < COMMUTER_SHARE
    activity = rng0.lognormal(0, 0.8, n_cards)
    wd = weekdays(start, days)
    weekday = wd < 5
    target = TAPS_PER_SCALE * scale * days / 14
    n_commute_slots = commuter.sum() * weekday.sum() * 2
    p_commute = min(0.95, COMMUTE_SHARE_OF_TAPS * target / max(n_commute_slots, 1))
    leisure_target = target - p_commute * n_commute_slots
    day_w = np.where(weekday, 1.0, 1.6)
    activity *= leisure_target / (activity.sum() * day_w.sum())
    starts, offsets = day_starts_us(start, days), local_offset_hours(start, days)
    stop_ids = net.stops.column("stop_id").combine_chunks()
    route_ids = format_ids(np.arange(1, N_ROUTES + 1), 2, "R")
    cdf_leisure = np.cumsum(HOURLY_LEISURE)
    for b, lo in enumerate(range(0, n_cards, BLOCK)):
        hi = min(lo + BLOCK, n_cards)
        m = hi - lo
        rng = rng_for(seed, "taps", b)
        # Commute taps: morning at home (6:30-9:00), evening at work (16:00-19:00).
        go = (commuter[lo:hi, None, None] & weekday[None, :, None]
              & (rng.random((m, days, 2)) < p_commute))
        card_c, day_c, leg = np.nonzero(go)
        stop_c = np.where(leg == 0, home[lo + card_c], work[lo + card_c])
        sec_c = np.where(leg == 0, 23400 + rng.integers(0, 9000, card_c.shape[0]),
                         57600 + rng.integers(0, 10800, card_c.shape[0]))
        # Leisure taps: Poisson per card-day at random stops.
        counts = rng.poisson(activity[lo:hi, None] * day_w[None, :]).ravel()
        cell = np.repeat(np.arange(m * days), counts)
        card_l, day_l = cell // days, cell % days
        n_l = card_l.shape[0]
        stop_l = rng.choice(N_STOPS, size=n_l, p=p_stop)
        hour_l = np.searchsorted(cdf_leisure, rng.random(n_l) * cdf_leisure[-1], "right")
        sec_l = hour_l * 3600 + rng.integers(0, 3600, n_l)
        card = np.r_[card_c, card_l] + lo
        day = np.r_[day_c, day_l]
        stop = np.r_[stop_c, stop_l]
        sec = np.r_[sec_c, sec_l]
        # Route: a random route among those serving the stop.
        route = np.argmax(rng.random((stop.shape[0], N_ROUTES)) * net.serves[stop], axis=1)
        t_us = local_seconds_to_utc(day, sec, starts, offsets)
        order = np.argsort(t_us, kind="stable")
        yield pa.table({
            "card_id": card_ids.take(pa.array(card[order])),
            "stop_id": stop_ids.take(pa.array(stop[order])),
            "route_id": route_ids.take(pa.array(route[order])),
            "tap_time": ts_array(t_us[order]),
        })
