"""Districts and towers of the synthetic city."""

from __future__ import annotations

import numpy as np
import pytest

from sample_data.city import LAT_MAX, LAT_MIN, LON_MAX, LON_MIN, make_city


def test_census_is_heavy_tailed_and_sums_to_300k(city):
    d = city.read("city/districts.csv").to_pandas()
    assert len(d) == 12
    assert d.population.sum() == 300_000
    assert d.population.max() / d.population.min() > 3
    np.testing.assert_allclose(d.households, d.population / 2.1, atol=1)


def test_districts_tile_the_bounding_box(city):
    d = city.read("city/districts.csv").to_pandas()
    area = ((d.lat_max - d.lat_min) * (d.lon_max - d.lon_min)).sum()
    assert area == pytest.approx((LAT_MAX - LAT_MIN) * (LON_MAX - LON_MIN))
    # Rectangles do not overlap: a grid of probe points falls in exactly one district.
    lat, lon = np.meshgrid(np.linspace(LAT_MIN + 1e-4, LAT_MAX - 1e-4, 37),
                           np.linspace(LON_MIN + 1e-4, LON_MAX - 1e-4, 41))
    lat, lon = lat.ravel()[:, None], lon.ravel()[:, None]
    inside = ((lat >= d.lat_min.values) & (lat < d.lat_max.values)
              & (lon >= d.lon_min.values) & (lon < d.lon_max.values))
    assert (inside.sum(axis=1) == 1).all()


def test_towers_lie_in_their_region_and_are_denser_in_the_centre(city):
    d = city.read("city/districts.csv").to_pandas().set_index("district_id")
    t = city.read("city/towers.csv").to_pandas()
    assert 140 <= len(t) <= 160
    b = d.loc[t.region_id]
    assert ((t.lat.values > b.lat_min.values) & (t.lat.values < b.lat_max.values)
            & (t.lon.values > b.lon_min.values) & (t.lon.values < b.lon_max.values)).all()
    per_district = t.region_id.value_counts().reindex(d.index, fill_value=0)
    central = ["D06", "D07"]  # middle row, middle columns of the 3 x 4 grid
    corners = ["D01", "D04", "D09", "D12"]
    assert per_district[central].mean() > 2 * per_district[corners].mean()
    assert per_district.min() >= 2


def test_towers_grow_with_sqrt_scale_and_census_does_not():
    small, big = make_city(5, 1.0), make_city(5, 100.0)
    assert big.towers.num_rows == 1500
    assert small.towers.num_rows == 150
    assert big.districts.equals(small.districts)
