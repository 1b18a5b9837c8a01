"""Transit stops and taps; waste pickups."""

from __future__ import annotations

import numpy as np
import pytest

from sample_data.city import make_city
from sample_data.people import make_pools
from sample_data.transit import make_network


@pytest.fixture(scope="module")
def taps(city):
    df = city.read("transit/taps.parquet").to_pandas()
    df["local_hour"] = df.tap_time.dt.tz_convert("Europe/Berlin").dt.hour
    df["weekend"] = df.tap_time.dt.day_of_week >= 5
    return df


def test_stops_and_routes(city, taps):
    stops = city.read("transit/stops.csv").to_pandas()
    assert len(stops) == 40 and stops.stop_name.is_unique
    d = city.read("city/districts.csv").to_pandas().set_index("district_id").loc[stops.district_id]
    assert ((stops.lat.values >= d.lat_min.values) & (stops.lat.values < d.lat_max.values)).all()
    assert set(taps.stop_id) <= set(stops.stop_id)
    assert taps.route_id.nunique() == 6


def test_taps_use_a_route_serving_the_stop():
    city = make_city(42, 1.0)
    net = make_network(42, city, make_pools(42, city.n_districts))
    assert net.serves.any(axis=1).all() and net.serves.any(axis=0).all()


def test_tap_rhythm_and_cards(taps):
    assert 2000 < taps.card_id.nunique() <= 3000
    assert taps.card_id.str.fullmatch(r"04[0-9A-F]{12}").all()
    wk = taps[~taps.weekend].local_hour.value_counts()
    assert wk.reindex([7, 8]).mean() > 5 * wk.reindex([2, 3]).fillna(0).mean()
    per_card = taps.card_id.value_counts()
    assert per_card.max() > 3 * per_card.median()
    assert (per_card <= 2).mean() > 0.1  # occasional riders next to daily commuters


def test_waste_one_pickup_per_household_and_week(city):
    w = city.read("waste/pickups.parquet").to_pandas()
    hh = city.read("meters/registry.csv").to_pandas().drop_duplicates("household_id")
    assert set(w.household_id) == set(hh.household_id)
    week = w.scheduled_date.map(lambda d: d.isocalendar()[1])
    assert (w.assign(week=week).groupby(["household_id", "week"]).size() == 1).all()
    assert (w.groupby("district_id").scheduled_date.nunique() == 2).all()


def test_waste_missed_share_and_collection_fields(city):
    w = city.read("waste/pickups.parquet").to_pandas()
    missed = w.groupby("district_id").status.apply(lambda s: (s == "missed").mean())
    assert 0.01 < missed.mean() < 0.1
    done = w.status == "collected"
    assert w.collected_at[done].notna().all() and w.weight_kg[done].gt(0).all()
    assert w.collected_at[~done].isna().all() and w.weight_kg[~done].isna().all()
    same_day = w.collected_at[done].dt.date == w.scheduled_date[done]
    assert same_day.all()
    assert np.isclose(w.weight_kg[done].median(), 9, atol=4)
