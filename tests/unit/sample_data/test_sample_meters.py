"""Meter registry and hourly readings: smart-only readings, profiles, units."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def registry(city) -> pd.DataFrame:
    return city.read("meters/registry.csv").to_pandas()


@pytest.fixture(scope="module")
def readings(city) -> pd.DataFrame:
    df = city.read("meters/readings").to_pandas()
    df["local_hour"] = df.reading_time.dt.tz_convert("Europe/Berlin").dt.hour
    return df


def test_each_household_has_one_meter_per_utility(registry):
    per_house = registry.groupby("household_id").utility.agg(["size", "nunique"])
    assert (per_house["size"] == 2).all() and (per_house["nunique"] == 2).all()
    assert (registry.utility == "water").sum() == 2000
    assert registry.household_size.between(1, 6).all()
    # Household attributes agree between the two meters.
    assert (registry.groupby("household_id")[["household_address", "district_id"]]
            .nunique() == 1).all().all()


def test_smart_share_differs_by_district(registry):
    share = registry.groupby("district_id").smart.mean()
    assert share.between(0.45, 0.97).all()
    assert share.max() - share.min() > 0.1


def test_only_smart_meters_have_readings_and_every_hour_once(registry, readings):
    smart = set(registry.meter_id[registry.smart])
    assert set(readings.meter_id) == smart
    per_meter = readings.groupby("meter_id").reading_time.agg(["size", "nunique"])
    assert (per_meter["size"] == 14 * 24).all() and (per_meter["nunique"] == 14 * 24).all()
    unit = registry.set_index("meter_id").utility.map({"electricity": "kWh", "water": "L"})
    assert (readings.unit.values == unit.loc[readings.meter_id].values).all()
    assert (readings.value >= 0).all()


def test_daily_profiles(readings):
    elec = readings[readings.unit == "kWh"].groupby("local_hour").value.mean()
    water = readings[readings.unit == "L"].groupby("local_hour").value.mean()
    assert elec[[18, 19, 20]].mean() > 3 * elec[[2, 3, 4]].mean()
    assert water[[6, 7]].mean() > 10 * water[[1, 2, 3]].mean()
    daily_kwh = readings[readings.unit == "kWh"].value.sum() / readings[
        readings.unit == "kWh"].meter_id.nunique() / 14
    assert 3 < daily_kwh < 15  # kWh per household and day


def test_some_anomalies(readings):
    water = readings[readings.unit == "L"]
    last_night = water[water.local_hour.isin([2, 3, 4])
                       & (water.reading_time >= water.reading_time.max() - pd.Timedelta("1D"))]
    night_min = last_night.groupby("meter_id").value.min()
    assert 1 <= (night_min > 4).sum() <= 0.05 * len(night_min)  # leaks: flow all night
    elec = readings[readings.unit == "kWh"]
    zero_days = (elec.value == 0).groupby(elec.meter_id).sum()
    assert (zero_days >= 24).sum() >= 1  # a meter stuck at 0 for a day
