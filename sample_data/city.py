"""The fictional city: districts (rectangles tiling a bounding box) and cell towers.

The census (district populations, households) is fixed per seed and does not depend on
``scale``; only the number of towers grows with ``sqrt(scale)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sample_data.util import format_ids, rng_for

CITY_NAME = "Neuhaven"
LAT_MIN, LAT_MAX = 52.45, 52.60
LON_MIN, LON_MAX = 13.30, 13.55
GRID_ROWS, GRID_COLS = 3, 4  # 12 districts, row 0 is the southern row
TOTAL_POPULATION = 300_000
PERSONS_PER_HOUSEHOLD = 2.1
DISTRICT_NAMES = (
    "Südhafen", "Lindenau", "Mühlenberg", "Seefeld",
    "Westpark", "Altstadt", "Marktviertel", "Ostkreuz",
    "Birkenhain", "Nordend", "Kastanienhof", "Am Wasser",
)
TOWERS_PER_SCALE = 150
MAX_TOWERS = 2_000


@dataclass(frozen=True)
class City:
    """Districts and towers as Arrow tables plus numpy views used by the other generators.

    Attributes:
        districts: table in the ``districts`` schema.
        towers: table in the ``towers`` schema.
        population: persons per district (int64, aligned with ``districts``).
        centrality: 0..1 per district, 1 = city centre (drives job and tower density).
        tower_district: district index of each tower.
    """

    districts: pa.Table
    towers: pa.Table
    population: np.ndarray
    centrality: np.ndarray
    tower_district: np.ndarray

    @property
    def n_districts(self) -> int:
        return self.districts.num_rows

    @property
    def district_ids(self) -> pa.Array:
        return self.districts.column("district_id").combine_chunks()

    def bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lat_min, lat_max, lon_min, lon_max) arrays per district."""
        d = self.districts
        return tuple(d.column(c).to_numpy() for c in ("lat_min", "lat_max", "lon_min", "lon_max"))

    def random_points(self, rng: np.random.Generator, district: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Uniform random (lat, lon) inside each given district index, rounded to 6 decimals."""
        la0, la1, lo0, lo1 = self.bounds()
        n = district.shape[0]
        lat = la0[district] + rng.random(n) * (la1[district] - la0[district])
        lon = lo0[district] + rng.random(n) * (lo1[district] - lo0[district])
        return (np.clip(np.round(lat, 6), la0[district] + 1e-6, la1[district] - 1e-6),
                np.clip(np.round(lon, 6), lo0[district] + 1e-6, lo1[district] - 1e-6))

    def district_of(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """District index of points inside the bounding box (grid lookup)."""
        row = np.clip(((lat - LAT_MIN) / (LAT_MAX - LAT_MIN) * GRID_ROWS).astype(int),
                      0, GRID_ROWS - 1)
        col = np.clip(((lon - LON_MIN) / (LON_MAX - LON_MIN) * GRID_COLS).astype(int),
                      0, GRID_COLS - 1)
        return row * GRID_COLS + col


def make_city(seed: int, scale: float) -> City:
    """Build the districts and towers of the city for one seed.

    Args:
        seed: random seed.
        scale: activity multiplier; towers = ``150 * sqrt(scale)`` (at least 2 per district,
            at most 2,000).
    """
    rng = rng_for(seed, "city")
    n = GRID_ROWS * GRID_COLS
    row, col = np.divmod(np.arange(n), GRID_COLS)
    dlat = (LAT_MAX - LAT_MIN) / GRID_ROWS
    dlon = (LON_MAX - LON_MIN) / GRID_COLS
    lat_min = np.round(LAT_MIN + row * dlat, 6)
    lat_max = np.round(LAT_MIN + (row + 1) * dlat, 6)
    lon_min = np.round(LON_MIN + col * dlon, 6)
    lon_max = np.round(LON_MIN + (col + 1) * dlon, 6)
    # Centrality: distance of the district centre from the city centre, in grid cells.
    dist = np.hypot(row + 0.5 - GRID_ROWS / 2, col + 0.5 - GRID_COLS / 2)
    centrality = np.round(1.0 - dist / dist.max(), 6)
    # Heavy-tailed populations, the largest in the most central districts (with some noise).
    weights = np.sort(rng.lognormal(0.0, 0.7, n))[::-1]
    rank = np.argsort(-(centrality + rng.normal(0, 0.15, n)), kind="stable")
    w = np.empty(n)
    w[rank] = weights
    population = np.floor(TOTAL_POPULATION * w / w.sum()).astype(np.int64)
    population[np.argmax(population)] += TOTAL_POPULATION - population.sum()
    households = np.round(population / PERSONS_PER_HOUSEHOLD).astype(np.int64)
    districts = pa.table({
        "district_id": format_ids(np.arange(1, n + 1), 2, "D"),
        "name": pa.array(DISTRICT_NAMES[:n]),
        "population": pa.array(population, pa.int64()),
        "households": pa.array(households, pa.int64()),
        "lat_min": lat_min, "lat_max": lat_max, "lon_min": lon_min, "lon_max": lon_max,
    })

    trng = rng_for(seed, "towers")
    n_towers = int(min(MAX_TOWERS, max(2 * n, round(TOWERS_PER_SCALE * np.sqrt(scale)))))
    density = population / population.sum() * (1.0 + 3.0 * centrality**2)
    alloc = 2 + trng.multinomial(n_towers - 2 * n, density / density.sum())
    tower_district = np.repeat(np.arange(n), alloc)
    tlat = lat_min[tower_district] + trng.random(n_towers) * dlat
    tlon = lon_min[tower_district] + trng.random(n_towers) * dlon
    towers = pa.table({
        "cell_id": format_ids(np.arange(1, n_towers + 1), 4, "C"),
        "lat": np.clip(np.round(tlat, 6), lat_min[tower_district] + 1e-6,
                       lat_max[tower_district] - 1e-6),
        "lon": np.clip(np.round(tlon, 6), lon_min[tower_district] + 1e-6,
                       lon_max[tower_district] - 1e-6),
        "region_id": districts.column("district_id").combine_chunks().take(tower_district),
    })
    return City(districts, towers, population, centrality, tower_district)
