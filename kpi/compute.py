"""KPI computations: pure functions from input tables + typed config to the KPI table.

No I/O, no clock: inputs arrive as Arrow tables (kpi.io reads them), ``computed_at`` comes
from the run's data interval, randomness is injected (``random_state``; None = the DP
engine's cryptographic generator). Heavy lifting (joins, per-unit aggregation, contribution
bounding) runs in DuckDB; the DP noise comes from privacy.dp.

Output: one Arrow table with KPI_SCHEMA, one row per (KPI, area) for the period, and a list
of DP release records (privacy unit, epsilon, the engine's release_info per release) that the
pipeline records in the budget ledger.

Error bounds (95 %): DP values carry the half-width of a 95 % interval for the noise
(normal / delta-method approximation for ratios, sums over districts and histogram
medians - see each function). Public values have error bound 0. Suppressed values have an
empty value and error bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kpi.registry import KpiDef, Registry
from opencity.errors import ConfigError, DataQualityError, InternalError
from privacy.dp import ContributionBounds, DPBudget, dp_count, dp_count_distinct, dp_sum
from privacy.dp import release_info as dp_release_info

Z95 = 1.959963984540054
# The reason of a withheld KPI value with no finite value (public or DP).
WITHHELD_NO_VALUE = ("no value: too little data in the area and period (e.g. a zero or "
                     "negative noisy denominator)")
CITY = "city"
KPI_SCHEMA = pa.schema([
    pa.field("kpi_code", pa.string(), nullable=False),
    pa.field("kpi_name", pa.string(), nullable=False),
    pa.field("fgssc_dimension", pa.string(), nullable=False),
    pa.field("u4ssc_dimension", pa.string(), nullable=False),
    pa.field("area", pa.string(), nullable=False),
    pa.field("period", pa.string(), nullable=False),
    pa.field("value", pa.float64()),
    pa.field("unit", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("error_bound", pa.float64()),
    pa.field("withheld_reason", pa.string()),
    pa.field("source_datasets", pa.string(), nullable=False),
    pa.field("computed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    # Uncertainty and post-processing (issue 22): approximate SD of the DP estimate (0 for
    # public values) and the value before clipping to the KPI's domain.
    pa.field("noise_std", pa.float64()),
    pa.field("value_unclipped", pa.float64()),
])
KPI_COLUMNS = tuple(KPI_SCHEMA.names)


@dataclass(frozen=True)
class KpiInputs:
    """Input tables of one period (clean, pseudonymized rows; None when a source is absent).

    ``catalog`` lists the catalog's published partitions: dataset, partition ('dt=...'),
    accrual_periodicity ('R/P1D', 'R/P1W', 'R/P1M').
    """

    districts: pa.Table
    towers: pa.Table | None = None
    meter_registry: pa.Table | None = None
    meter_readings: pa.Table | None = None
    transit_stops: pa.Table | None = None
    transit_taps: pa.Table | None = None
    waste_pickups: pa.Table | None = None
    service_requests: pa.Table | None = None
    cdr: pa.Table | None = None
    catalog: pa.Table | None = None


@dataclass(frozen=True)
class KpiRunConfig:
    """Typed parameters of one KPI run.

    Attributes:
        period_start: data-interval start (UTC, inclusive), the first day of a month.
        period_end: data-interval end (UTC, exclusive).
        computed_at: run timestamp written to every row (from the run's data interval).
        seed: key of the hash sampling that enforces contribution bounds (reruns agree).
        random_state: noise seed for tests; None = cryptographic randomness (production).
        exclude_datasets: catalog datasets left out of the open-data inventory (the KPI
            dataset itself).
    """

    period_start: datetime
    period_end: datetime
    computed_at: datetime
    seed: int = 0
    random_state: int | None = None
    exclude_datasets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("period_start", "period_end", "computed_at"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise ConfigError(f"KpiRunConfig.{name} must be a timezone-aware datetime, "
                                  f"got {value!r}")
        if self.period_end <= self.period_start:
            raise ConfigError(f"KpiRunConfig: period_end {self.period_end} is not after "
                              f"period_start {self.period_start}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"KpiRunConfig.seed must be an integer, got {self.seed!r}")

    @property
    def period(self) -> str:
        """Period label, 'YYYY-MM' for a monthly interval."""
        return f"{self.period_start:%Y-%m}"


@dataclass
class AreaValues:
    """Values of one KPI: one entry per area (city first, then districts)."""

    areas: list[str]
    values: np.ndarray
    bounds: np.ndarray
    methods: list[str]
    releases: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str | None] | None = None  # why a suppressed value is withheld, per area
    #: approximate noise SD per area (95 % bound / 1.96 before clipping); None: bounds / Z95
    stds: np.ndarray | None = None
    #: the value before clipping to the KPI's domain; None: the values
    unclipped: np.ndarray | None = None

    def std_values(self) -> np.ndarray:
        return np.asarray(self.bounds, float) / Z95 if self.stds is None else self.stds

    def unclipped_values(self) -> np.ndarray:
        return np.asarray(self.values, float) if self.unclipped is None else self.unclipped


# --------------------------------------------------------------------------------------
# helpers


def _con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _need(table: pa.Table | None, name: str, kpi: KpiDef) -> pa.Table:
    if table is None:
        raise DataQualityError(f"KPI {kpi.code!r} needs the {name!r} source, which was not "
                               "provided for this period; ingest it or drop the KPI from the "
                               "registry")
    return table


def _district_ids(inputs: KpiInputs) -> list[str]:
    return sorted(inputs.districts.column("district_id").to_pylist())


def _keys(inputs: KpiInputs) -> pa.Table:
    return pa.table({"district_id": _district_ids(inputs)})


def _public(areas: list[str], values: list[float]) -> AreaValues:
    vals = np.asarray(values, dtype=float)
    return AreaValues(areas, vals, np.zeros(len(areas)), ["public"] * len(areas),
                      stds=np.zeros(len(areas)), unclipped=vals)


def _by_key(table: pa.Table, keys: list[str], column: str = "value") -> np.ndarray:
    lookup = dict(zip(table.column("district_id").to_pylist(), table.column(column).to_pylist()))
    return np.array([float(lookup.get(k, 0.0) or 0.0) for k in keys])


def _std(table: pa.Table) -> float:
    stds = table.column("noise_std").to_pylist()
    return float(stds[0]) if stds else 0.0


def ratio_estimate(num: np.ndarray, num_std: np.ndarray, den: np.ndarray, den_std: np.ndarray,
                   scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Ratio of noisy totals and its 95 % error bound (delta method, normal approximation).

    value = scale * num / den; bound = 1.96 * scale * sqrt(num_std^2 + r^2 den_std^2) / den
    with r = num / den. Where den <= 0 the value is NaN (the caller suppresses it).
    """
    num, den = np.asarray(num, float), np.asarray(den, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(den > 0, num / den, np.nan)
        std = np.sqrt(np.asarray(num_std, float) ** 2 + r**2 * np.asarray(den_std, float) ** 2)
        bound = np.where(den > 0, Z95 * std / den, np.nan)
    return scale * r, scale * bound


def _finish_dp(kpi: KpiDef, registry: Registry, areas: list[str], values: np.ndarray,
               bounds: np.ndarray, units: np.ndarray | None, releases: list[dict],
               clip: tuple[float, float] | None = None) -> AreaValues:
    """Clip to the value domain and suppress (post-processing only; no extra budget)."""
    values = np.asarray(values, float)
    bounds = np.asarray(bounds, float)
    unclipped, stds = values.copy(), bounds / Z95
    if clip is not None:
        values = np.clip(values, *clip)
        bounds = np.minimum(bounds, clip[1] - clip[0])
    methods = []
    reasons: list[str | None] = []
    mre = kpi.privacy.max_relative_error
    for i in range(len(areas)):
        reason = None
        if not math.isfinite(values[i]) or not math.isfinite(bounds[i]):
            reason = WITHHELD_NO_VALUE
        if units is not None and units[i] < registry.min_units:
            reason = (f"fewer than {registry.min_units} {kpi.privacy.unit}s (noisy count) in "
                      "the area and period (registry suppression.min_units)")
        if mre is not None and reason is None and bounds[i] > mre * abs(values[i]):
            reason = (f"too noisy: the 95 % error bound exceeds {mre:g} x |value| (registry "
                      "privacy.max_relative_error)")
        methods.append("suppressed" if reason else "dp")
        reasons.append(reason)
    sup = np.array([m == "suppressed" for m in methods])
    values = np.where(sup, np.nan, values)
    bounds = np.where(sup, np.nan, bounds)
    return AreaValues(areas, values, bounds, methods, releases, reasons,
                      stds=np.where(sup, np.nan, stds), unclipped=np.where(sup, np.nan, unclipped))


def _budget(kpi: KpiDef, registry: Registry, parts: int = 1) -> DPBudget:
    """The KPI's epsilon (share x unit cap), split evenly over ``parts`` releases."""
    cap = registry.privacy_units[kpi.privacy.unit].epsilon
    return DPBudget(cap * kpi.privacy.epsilon_share / parts)


def _release(kpi: KpiDef, name: str, table: pa.Table) -> dict[str, Any]:
    info = dp_release_info(table)
    return {"kpi_code": kpi.code, "release": name, "privacy_unit": kpi.privacy.unit,
            "epsilon": info["epsilon"], "delta": info["delta"], "info": info}


# --------------------------------------------------------------------------------------
# public KPIs


def smart_meter_share(kpi: KpiDef, inputs: KpiInputs, cfg: KpiRunConfig,
                      registry: Registry) -> AreaValues:
    """Smart meters / all meters x 100 of one utility, from the public meter registry."""
    reg = _need(inputs.meter_registry, "meter_registry", kpi)
    utility = kpi.params.get("utility")
    con = _con()
    rel = con.from_arrow(reg)  # noqa: F841 - read by the SQL below
    rows = con.execute(
        "SELECT district_id, count(*) FILTER (WHERE smart) AS smart, count(*) AS total "
        "FROM rel WHERE utility = ? GROUP BY district_id", [utility]).fetchall()
    per = {d: (s, t) for d, s, t in rows}
    keys = _district_ids(inputs)
    smart = np.array([per.get(k, (0, 0))[0] for k in keys], float)
    total = np.array([per.get(k, (0, 0))[1] for k in keys], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        district = np.where(total > 0, 100 * smart / total, np.nan)
    city = 100 * smart.sum() / total.sum() if total.sum() else math.nan
    return _public([CITY, *keys], [city, *district])


def pt_network_convenience(kpi: KpiDef, inputs: KpiInputs, cfg: KpiRunConfig,
                           registry: Registry) -> AreaValues:
    """Share of inhabitants within ``radius_m`` of a stop, population spread uniformly.

    Each district rectangle is sampled on a grid x grid lattice of cell centres; a centre is
    covered when its equirectangular distance to the nearest stop is <= radius_m.
    """
    stops = _need(inputs.transit_stops, "transit_stops", kpi)
    radius = float(kpi.params.get("radius_m", 500.0))
    grid = int(kpi.params.get("grid", 60))
    d = inputs.districts.sort_by("district_id")
    keys = d.column("district_id").to_pylist()
    pop = np.asarray(d.column("population").to_pylist(), float)
    lat0 = np.deg2rad(np.mean(d.column("lat_min").to_numpy()))
    frac = (np.arange(grid) + 0.5) / grid
    lat = (d.column("lat_min").to_numpy()[:, None]
           + frac[None, :] * (d.column("lat_max").to_numpy() - d.column("lat_min").to_numpy())
           [:, None])  # districts x grid
    lon = (d.column("lon_min").to_numpy()[:, None]
           + frac[None, :] * (d.column("lon_max").to_numpy() - d.column("lon_min").to_numpy())
           [:, None])
    plat = np.repeat(lat, grid, axis=1).reshape(len(keys), grid, grid)
    plon = np.tile(lon, (1, grid)).reshape(len(keys), grid, grid)
    s_lat = stops.column("lat").to_numpy()
    s_lon = stops.column("lon").to_numpy()
    dy = (plat[..., None] - s_lat) * 110_540.0
    dx = (plon[..., None] - s_lon) * 111_320.0 * math.cos(lat0)
    covered = (np.sqrt(dx**2 + dy**2).min(axis=-1) <= radius).mean(axis=(1, 2))
    city = 100 * float((covered * pop).sum() / pop.sum()) if pop.sum() else math.nan
    return _public([CITY, *keys], [city, *(100 * covered)])


def _due_partitions(cadence: str, start: date, end: date) -> list[str]:
    if cadence == "daily":
        days = [start + timedelta(days=i) for i in range((end - start).days)]
    elif cadence == "weekly":
        first = start + timedelta(days=(7 - start.weekday()) % 7)
        days = [first + timedelta(weeks=i) for i in range(6)
                if first + timedelta(weeks=i + 1) <= end]
    elif cadence == "monthly":
        days = [start] if start.day == 1 else []
    else:
        raise ConfigError(f"unknown cadence {cadence!r}")
    return [f"dt={d:%Y-%m-%d}" for d in days]


_CADENCE = {"R/P1D": "daily", "R/P1W": "weekly", "R/P1M": "monthly"}


def open_data_on_schedule(kpi: KpiDef, inputs: KpiInputs, cfg: KpiRunConfig,
                          registry: Registry) -> AreaValues:
    """Inventoried datasets whose catalog holds every partition due in the period, in %.

    Inventory = the registry's open_data_inventory plus every catalog dataset (cadence from
    its accrual periodicity), minus ``cfg.exclude_datasets``.
    """
    catalog = inputs.catalog if inputs.catalog is not None else pa.table(
        {"dataset": pa.array([], pa.string()), "partition": pa.array([], pa.string()),
         "accrual_periodicity": pa.array([], pa.string())})
    inventory = dict(registry.open_data_inventory)
    published: dict[str, set[str]] = {}
    for ds, part, acc in zip(catalog.column("dataset").to_pylist(),
                             catalog.column("partition").to_pylist(),
                             catalog.column("accrual_periodicity").to_pylist()):
        published.setdefault(ds, set()).add(part)
        if ds not in inventory and acc in _CADENCE:
            inventory[ds] = _CADENCE[acc]
    for ds in cfg.exclude_datasets:
        inventory.pop(ds, None)
    if not inventory:
        return _public([CITY], [math.nan])
    start, end = cfg.period_start.date(), cfg.period_end.date()
    on_time = sum(1 for ds, cad in inventory.items()
                  if set(_due_partitions(cad, start, end)) <= published.get(ds, set()))
    return _public([CITY], [100.0 * on_time / len(inventory)])


# --------------------------------------------------------------------------------------
# DP KPIs


def consumption_per_capita(kpi: KpiDef, inputs: KpiInputs, cfg: KpiRunConfig,
                           registry: Registry) -> AreaValues:
    """DP mean over smart-metered households of daily use per household member.

    Per household (DuckDB): sum of readings / distinct reading days (local days in the
    registry's ``timezone``) / household size, clamped to [0, upper_per_person_day]. District: DP sum of that value / DP count of households
    (each half the KPI budget; L0 = 1 district, L-inf = 1 row per household). City: the
    district sums and counts added up (post-processing, no extra budget).
    """
    reg = _need(inputs.meter_registry, "meter_registry", kpi)
    readings = _need(inputs.meter_readings, "meter_readings", kpi)
    utility = kpi.params.get("utility")
    upper = float(kpi.params["upper_per_person_day"])
    con = _con()
    r = con.from_arrow(reg)  # noqa: F841
    m = con.from_arrow(readings)  # noqa: F841
    per_household = con.sql(
        """SELECT r.household_pid, any_value(r.district_id) AS district_id,
                  sum(m.value) / count(DISTINCT timezone(?, m.reading_time)::DATE)
                      / greatest(any_value(r.household_size), 1) AS per_person_day
           FROM r JOIN m USING (meter_id)
           WHERE r.utility = ? AND r.smart AND m.value IS NOT NULL
           GROUP BY r.household_pid""", params=[registry.timezone, utility]).to_arrow_table()
    keys_t = _keys(inputs)
    keys = keys_t.column("district_id").to_pylist()
    budget = _budget(kpi, registry, parts=2)
    common = {"unit": "household_pid", "by": ["district_id"], "budget": budget,
                  "public_keys": keys_t, "seed": cfg.seed, "random_state": cfg.random_state}
    sums = dp_sum(per_household, value="per_person_day",
                  bounds=ContributionBounds(1, 1, 0.0, upper), **common)
    counts = dp_count(per_household, bounds=ContributionBounds(1, 1), **common)
    return _mean_from(kpi, registry, keys, sums, counts,
                      [_release(kpi, "sum", sums), _release(kpi, "count", counts)],
                      clip=(0.0, upper))


def _mean_from(kpi: KpiDef, registry: Registry, keys: list[str], sums: pa.Table,
               counts: pa.Table, releases: list[dict], scale: float = 1.0,
               clip: tuple[float, float] | None = None) -> AreaValues:
    s, c = _by_key(sums, keys), _by_key(counts, keys)
    s_std, c_std = _std(sums), _std(counts)
    n = len(keys)
    num = np.concatenate([[s.sum()], s])
    den = np.concatenate([[c.sum()], c])
    num_std = np.concatenate([[s_std * math.sqrt(n)], np.full(n, s_std)])
    den_std = np.concatenate([[c_std * math.sqrt(n)], np.full(n, c_std)])
    values, bounds = ratio_estimate(num, num_std, den, den_std, scale)
    return _finish_dp(kpi, registry, [CITY, *keys], values, bounds, den, releases,
                      clip=None if clip is None else (clip[0] * scale, clip[1] * scale))


def waste_collection_rate(kpi: KpiDef, inputs: KpiInputs, cfg: KpiRunConfig,
                          registry: Registry) -> AreaValues:
    """DP mean over households of collected / (collected + missed) pickups, in %.

    Per household (DuckDB) its collection rate in [0, 1]; DP sum of rates / DP count of
    households per district (half the budget each; L0 = 1, L-inf = 1); city by adding up.
    """
    pickups = _need(inputs.waste_pickups, "waste_pickups", kpi)
    con = _con()
    p = con.from_arrow(pickups)  # noqa: F841
    per_household = con.sql(
        """SELECT household_pid, arg_max(district_id, scheduled_date) AS district_id,
                  avg(CASE WHEN status = 'collected' THEN 1.0 ELSE 0.0 END) AS rate
           FROM p WHERE status IN ('collected', 'missed') GROUP BY household_pid"""
    ).to_arrow_table()
    keys_t = _keys(inputs)
    keys = keys_t.column("district_id").to_pylist()
    common = {"unit": "household_pid", "by": ["district_id"], "budget": _budget(kpi, registry, 2),
                  "public_keys": keys_t, "seed": cfg.seed, "random_state": cfg.random_state}
    sums = dp_sum(per_household, value="rate", bounds=ContributionBounds(1, 1, 0.0, 1.0),
                  **common)
    counts = dp_count(per_household, bounds=ContributionBounds(1, 1), **common)
    return _mean_from(kpi, registry, keys, sums, counts,
                      [_release(kpi, "sum", sums), _release(kpi, "count", counts)],
                      scale=100.0, clip=(0.0, 1.0))


ISO_WEEKDAYS = (1, 2, 3, 4, 5, 6, 7)


def public_service_days(start: date, end: date, service_weekdays: Any = ISO_WEEKDAYS,
                        no_service_dates: Any = ()) -> int:
    """Days in [start, end) on which the public timetable schedules service (pure).

    The operator's published calendar (GTFS ``calendar.txt`` weekdays and
    ``calendar_dates.txt`` exceptions), given as ISO weekdays with service (1 = Monday) and
    dates without service; never derived from the tap data, so it costs no privacy budget
    and is the same for neighbouring datasets.

    Raises:
        ConfigError: a weekday outside 1..7 or a date that is not YYYY-MM-DD.
    """
    days = set()
    for d in service_weekdays:
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 7:
            raise ConfigError(f"service_weekdays must be ISO weekdays 1..7, got {d!r}")
        days.add(d)
    try:
        closed = {date.fromisoformat(str(x)) for x in no_service_dates}
    except ValueError as err:
        raise ConfigError(f"no_service_dates must be YYYY-MM-DD dates: {err}") from None
    n, day = 0, start
    while day < end:
        n += day.isoweekday() in days and day not in closed
        day += timedelta(days=1)
    return n


def transit_trips_per_capita(kpi: KpiDef, inputs: KpiInputs, cfg: KpiRunConfig,
                             registry: Registry) -> AreaValues:
    """DP taps per 1,000 inhabitants per service day, by the boarding stop's district.

    DP count of taps per district (L0 = max_districts, L-inf = max_rows per card); city =
    sum over districts. Service days: from the public timetable calendar
    (:func:`public_service_days`, KPI params ``service_weekdays`` / ``no_service_dates``),
    never counted from the taps. Populations are public census figures.
    """
    taps = _need(inputs.transit_taps, "transit_taps", kpi)
    stops = _need(inputs.transit_stops, "transit_stops", kpi)
    con = _con()
    t = con.from_arrow(taps)  # noqa: F841
    s = con.from_arrow(stops.select(["stop_id", "district_id"]))  # noqa: F841
    located = con.sql(
        "SELECT t.card_pid, s.district_id FROM t JOIN s USING (stop_id)").to_arrow_table()
    days = public_service_days(cfg.period_start.date(), cfg.period_end.date(),
                               kpi.params.get("service_weekdays", ISO_WEEKDAYS),
                               kpi.params.get("no_service_dates", ()))
    keys_t = _keys(inputs)
    keys = keys_t.column("district_id").to_pylist()
    bounds = ContributionBounds(int(kpi.params.get("max_districts", 2)),
                                int(kpi.params.get("max_rows", 40)))
    counts = dp_count(located, unit="card_pid", by=["district_id"], budget=_budget(kpi, registry),
                      bounds=bounds, public_keys=keys_t, seed=cfg.seed,
                      random_state=cfg.random_state)
    d = inputs.districts
    pops = dict(zip(d.column("district_id").to_pylist(), d.column("population").to_pylist()))
    pop = np.array([float(pops[k]) for k in keys])
    c, c_std = _by_key(counts, keys), _std(counts)
    n = len(keys)
    num = np.concatenate([[c.sum()], c])
    num_std = np.concatenate([[c_std * math.sqrt(n)], np.full(n, c_std)])
    den = np.concatenate([[pop.sum()], pop]) * max(days, 0)
    values, bounds95 = ratio_estimate(num, num_std, den, np.zeros(n + 1), scale=1000.0)
    return _finish_dp(kpi, registry, [CITY, *keys], values, bounds95, None,
                      [_release(kpi, "count", counts)])


def _closed_requests(kpi: KpiDef, inputs: KpiInputs) -> tuple[duckdb.DuckDBPyConnection, str]:
    sr = _need(inputs.service_requests, "service_requests", kpi)
    con = _con()
    con.register("sr", sr)
    return con, "sr"


def sr_median_resolution(kpi: KpiDef, inputs: KpiInputs, cfg: KpiRunConfig,
                         registry: Registry) -> AreaValues:
    """DP median resolution hours from a DP histogram over public hour buckets.

    DP count of closed requests per public (district, bucket) key. Bounding (in DuckDB,
    hash-sampled): each requester keeps at most max_rows requests in each of at most
    max_districts districts, so it touches <= max_districts x max_rows keys with <= max_rows
    rows each. The median interpolates linearly
    inside the bucket where the noisy CDF crosses 1/2. Error bound: the bucket edges that
    enclose the quantiles 1/2 -+ e, e = 1.96 x noise std x sqrt(buckets up to the median) /
    noisy total (conservative; an approximation).
    """
    con, _ = _closed_requests(kpi, inputs)
    edges = np.asarray(kpi.params["bucket_edges_h"], float)
    if len(edges) < 3 or np.any(np.diff(edges) <= 0) or edges[0] != 0:
        raise ConfigError(f"KPI {kpi.code!r}: bucket_edges_h must start at 0 and increase")
    nb = len(edges) - 1
    max_d = int(kpi.params.get("max_districts", 1))
    max_rows = int(kpi.params.get("max_rows", 3))
    # Bound in SQL first (L0 districts, L-inf rows per district), then bucket: every
    # requester then touches at most max_d * max_rows (district, bucket) keys, one row each.
    rows = con.sql(
        f"""WITH closed AS (
                SELECT requester_pid AS u, district_id,
                       least(greatest(date_diff('second', created_at, closed_at) / 3600.0, 0),
                             {edges[-1]} - 1e-9) AS hours
                FROM sr WHERE status = 'closed' AND closed_at IS NOT NULL
                  AND requester_pid IS NOT NULL AND district_id IS NOT NULL),
            rows_ AS (SELECT *, row_number() OVER (PARTITION BY u, district_id
                          ORDER BY hash(u, district_id, hours, {cfg.seed % 2**63}::BIGINT)) rn
                      FROM closed),
            dist_ AS (SELECT u, district_id, row_number() OVER (PARTITION BY u
                          ORDER BY hash(u, district_id, {cfg.seed % 2**63}::BIGINT)) dn
                      FROM (SELECT DISTINCT u, district_id FROM closed))
            SELECT r.u, r.district_id, r.hours FROM rows_ r JOIN dist_ d USING (u, district_id)
            WHERE r.rn <= {max_rows} AND d.dn <= {max_d}""").to_arrow_table()
    bucket = np.clip(np.searchsorted(edges, rows.column("hours").to_numpy(), side="right") - 1,
                     0, nb - 1)
    data = rows.append_column("bucket", pa.array(bucket, pa.int64()))
    keys = _district_ids(inputs)
    public = pa.table({"district_id": np.repeat(keys, nb).tolist(),
                       "bucket": np.tile(np.arange(nb), len(keys)).tolist()})
    # Unit = requester; after the SQL bounding each requester has <= max_d * max_rows rows,
    # one per (district, bucket) at most max_rows: L0 = max_d * max_rows, L-inf = max_rows.
    counts = dp_count(data, unit="u", by=["district_id", "bucket"],
                      budget=_budget(kpi, registry),
                      bounds=ContributionBounds(max_d * min(max_rows, nb), max_rows),
                      public_keys=public, seed=cfg.seed, random_state=cfg.random_state)
    lookup = {(d, b): v for d, b, v in zip(counts.column("district_id").to_pylist(),
                                           counts.column("bucket").to_pylist(),
                                           counts.column("value").to_pylist())}
    hist = np.array([[float(lookup.get((k, b), 0)) for b in range(nb)] for k in keys])
    std = _std(counts)
    all_hist = np.vstack([hist.sum(axis=0), hist])
    stds = np.concatenate([[std * math.sqrt(len(keys))], np.full(len(keys), std)])
    values, bounds, totals = histogram_median(all_hist, stds, edges)
    return _finish_dp(kpi, registry, [CITY, *keys], values, bounds, totals,
                      [_release(kpi, "histogram", counts)])


def histogram_median(hist: np.ndarray, std: np.ndarray, edges: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, 95 % error bound and total of each row of a noisy histogram.

    Args:
        hist: areas x buckets noisy counts (negative counts are treated as 0).
        std: per-area noise std of one bucket count.
        edges: bucket edges (buckets + 1 values, increasing).

    Returns:
        (median, error bound, total count) per area; NaN median where the total is 0.
    """
    hist = np.maximum(np.asarray(hist, float), 0.0)
    total = hist.sum(axis=1)
    cum = np.cumsum(hist, axis=1)
    med = np.full(len(hist), np.nan)
    bound = np.full(len(hist), np.nan)

    def quantile(i: int, p: float) -> tuple[float, int]:
        target = p * total[i]
        j = int(np.searchsorted(cum[i], target, side="left"))
        j = min(max(j, 0), hist.shape[1] - 1)
        before = cum[i, j - 1] if j > 0 else 0.0
        frac = (target - before) / hist[i, j] if hist[i, j] > 0 else 0.5
        return edges[j] + min(max(frac, 0.0), 1.0) * (edges[j + 1] - edges[j]), j

    for i in range(len(hist)):
        if total[i] <= 0:
            continue
        med[i], j = quantile(i, 0.5)
        e = Z95 * std[i] * math.sqrt(j + 1) / total[i]
        _, j_lo = quantile(i, max(0.0, 0.5 - e))
        _, j_hi = quantile(i, min(1.0, 0.5 + e))
        bound[i] = max(med[i] - edges[j_lo], edges[j_hi + 1] - med[i])
    return med, bound, total


def sr_closed_within_target(kpi: KpiDef, inputs: KpiInputs, cfg: KpiRunConfig,
                            registry: Registry) -> AreaValues:
    """DP % of (not cancelled) requests closed within target_hours, per district and city.

    DP count of requests closed within target / DP count of requests (half the budget each;
    each requester adds <= max_rows requests to <= max_districts districts).
    """
    con, _ = _closed_requests(kpi, inputs)
    target = float(kpi.params.get("target_hours", 72.0))
    rows = con.sql(
        """SELECT requester_pid, district_id,
                  (status = 'closed' AND closed_at IS NOT NULL
                   AND date_diff('second', created_at, closed_at) <= ? * 3600) AS on_time
           FROM sr WHERE status <> 'cancelled' AND requester_pid IS NOT NULL
             AND district_id IS NOT NULL""", params=[target]).to_arrow_table()
    keys_t = _keys(inputs)
    keys = keys_t.column("district_id").to_pylist()
    bounds = ContributionBounds(int(kpi.params.get("max_districts", 1)),
                                int(kpi.params.get("max_rows", 3)))
    common = {"unit": "requester_pid", "by": ["district_id"], "budget": _budget(kpi, registry, 2),
                  "bounds": bounds, "public_keys": keys_t, "seed": cfg.seed,
                  "random_state": cfg.random_state}
    on_time = dp_count(rows.filter(rows.column("on_time")), **common)
    total = dp_count(rows, **common)
    return _mean_from(kpi, registry, keys, on_time, total,
                      [_release(kpi, "on_time", on_time), _release(kpi, "total", total)],
                      scale=100.0, clip=(0.0, 1.0))


def _anchors(kpi: KpiDef, inputs: KpiInputs, registry: Registry) -> pa.Table:
    """Per subscriber: most frequent night (22-06) and weekday day (09-17) district."""
    cdr = _need(inputs.cdr, "cdr", kpi)
    con = _con()
    c = con.from_arrow(cdr.select(["subscriber_pid", "event_time", "region_id"]))  # noqa: F841
    tz = registry.timezone.replace("'", "")
    return con.sql(
        f"""WITH ev AS (
                SELECT subscriber_pid AS u, region_id AS d,
                       hour(timezone('{tz}', event_time)) AS h,
                       isodow(timezone('{tz}', event_time)) AS dow
                FROM c WHERE region_id IS NOT NULL AND subscriber_pid IS NOT NULL),
            night AS (SELECT u, d, count(*) n FROM ev WHERE h >= 22 OR h < 6 GROUP BY u, d),
            day AS (SELECT u, d, count(*) n FROM ev WHERE h >= 9 AND h < 17 AND dow <= 5
                    GROUP BY u, d),
            home AS (SELECT u, arg_max(d, n * 1000000 - hash(d) % 1000000) AS home FROM night
                     GROUP BY u),
            work AS (SELECT u, arg_max(d, n * 1000000 - hash(d) % 1000000) AS work FROM day
                     GROUP BY u)
            SELECT coalesce(home.u, work.u) AS u, home, work
            FROM home FULL OUTER JOIN work USING (u)""").to_arrow_table()


def daytime_population_ratio(kpi: KpiDef, inputs: KpiInputs, cfg: KpiRunConfig,
                             registry: Registry) -> AreaValues:
    """DP daytime subscribers per 100 night-time subscribers, per district (L0 = 1 each)."""
    anchors = _anchors(kpi, inputs, registry)
    keys_t = _keys(inputs)
    keys = keys_t.column("district_id").to_pylist()
    common = {"unit": "u", "by": ["district_id"], "budget": _budget(kpi, registry, 2),
                  "public_keys": keys_t, "seed": cfg.seed, "random_state": cfg.random_state}
    day = dp_count_distinct(anchors.rename_columns(["u", "home", "district_id"]), **common)
    night = dp_count_distinct(anchors.rename_columns(["u", "district_id", "work"]), **common)
    return _mean_from(kpi, registry, keys, day, night,
                      [_release(kpi, "day", day), _release(kpi, "night", night)], scale=100.0)


def commuter_share(kpi: KpiDef, inputs: KpiInputs, cfg: KpiRunConfig,
                   registry: Registry) -> AreaValues:
    """DP % of subscribers (with a home and a day district) whose day district differs."""
    anchors = _anchors(kpi, inputs, registry)
    both = anchors.filter(pc.and_(pc.is_valid(anchors.column("home")),
                                  pc.is_valid(anchors.column("work"))))
    both = both.rename_columns(["u", "district_id", "work"])
    commuters = both.filter(pc.not_equal(both.column("district_id"), both.column("work")))
    keys_t = _keys(inputs)
    keys = keys_t.column("district_id").to_pylist()
    common = {"unit": "u", "by": ["district_id"], "budget": _budget(kpi, registry, 2),
                  "public_keys": keys_t, "seed": cfg.seed, "random_state": cfg.random_state}
    num = dp_count_distinct(commuters, **common)
    den = dp_count_distinct(both, **common)
    return _mean_from(kpi, registry, keys, num, den,
                      [_release(kpi, "commuters", num), _release(kpi, "residents", den)],
                      scale=100.0, clip=(0.0, 1.0))


COMPUTE = {
    "smart_meter_share": smart_meter_share,
    "open_data_on_schedule": open_data_on_schedule,
    "pt_network_convenience": pt_network_convenience,
    "consumption_per_capita": consumption_per_capita,
    "waste_collection_rate": waste_collection_rate,
    "transit_trips_per_capita": transit_trips_per_capita,
    "sr_median_resolution": sr_median_resolution,
    "sr_closed_within_target": sr_closed_within_target,
    "daytime_population_ratio": daytime_population_ratio,
    "commuter_share": commuter_share,
}


# Sources whose rows belong to one period (activity of people); the others are registries.
PERIOD_SOURCES = ("meter_readings", "transit_taps", "waste_pickups", "service_requests", "cdr")


def period_without_data(rows_by_source: dict[str, int]) -> bool:
    """True when no period source has a row for the period (then nothing is computed,
    published or spent). ``rows_by_source``: clean rows per ingested source (missing = 0)."""
    return all(int(rows_by_source.get(s, 0) or 0) == 0 for s in PERIOD_SOURCES)


def compute_kpi(kpi: KpiDef, inputs: KpiInputs, cfg: KpiRunConfig,
                registry: Registry) -> AreaValues:
    """Compute one KPI (all its areas)."""
    try:
        fn = COMPUTE[kpi.computation]
    except KeyError:
        raise InternalError(f"no computation {kpi.computation!r}; this is a bug (the "
                            "registry validator should have caught it)") from None
    out = fn(kpi, inputs, cfg, registry)
    if "district" not in kpi.areas:
        keep = [i for i, a in enumerate(out.areas) if a == CITY]
        out = AreaValues([CITY], out.values[keep], out.bounds[keep],
                         [out.methods[i] for i in keep], out.releases,
                         [out.reasons[i] for i in keep] if out.reasons else None,
                         stds=out.std_values()[keep], unclipped=out.unclipped_values()[keep])
    return out


def not_registered(source: str) -> str:
    """The withheld_reason of a KPI whose source the city did not register."""
    return f"not available (source {source} is not registered)"


def unavailable_kpis(registry: Registry, unavailable: Mapping[str, str]
                     ) -> dict[str, str]:
    """KPI code -> why it is not available: the reason of its first unavailable source."""
    out = {}
    for kpi in registry.kpis:
        missing = [s for s in kpi.source_datasets if s in unavailable]
        if missing:
            out[kpi.code] = unavailable[missing[0]]
    return out


def _not_available(kpi: KpiDef, inputs: KpiInputs, reason: str) -> AreaValues:
    """Rows of a KPI that cannot be computed: no value, no noise, no privacy budget."""
    areas = [CITY] + (_district_ids(inputs) if "district" in kpi.areas else [])
    nan = np.full(len(areas), np.nan)
    return AreaValues(areas, nan, nan, ["suppressed"] * len(areas),
                      reasons=[reason] * len(areas), stds=nan, unclipped=nan)


def compute_kpis(inputs: KpiInputs, registry: Registry, cfg: KpiRunConfig,
                 progress: Any = None, unavailable: Mapping[str, str] | None = None
                 ) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Every KPI of the registry for one period.

    Args:
        inputs: the period's input tables.
        registry: validated KPI registry.
        cfg: run parameters (period, computed_at, seeds).
        progress: optional callable(kpi_code) called before each KPI (a progress bar).
        unavailable: source -> reason (e.g. :func:`not_registered`): a KPI reading such a
            source is not computed; its rows are withheld (method ``suppressed``, no value)
            with that reason, and it spends nothing.

    Returns:
        (KPI table with KPI_SCHEMA, DP release records for the budget ledger).
    """
    rows: dict[str, list] = {n: [] for n in KPI_COLUMNS}
    releases: list[dict[str, Any]] = []
    skip = unavailable_kpis(registry, unavailable or {})
    for kpi in registry.kpis:
        if progress:
            progress(kpi.code)
        if kpi.code in skip:
            out = _not_available(kpi, inputs, skip[kpi.code])
        else:
            out = compute_kpi(kpi, inputs, cfg, registry)
        releases += out.releases
        reasons = out.reasons or [None] * len(out.areas)
        for area, value, bound, method, reason, std, raw in zip(
                out.areas, out.values, out.bounds, out.methods, reasons, out.std_values(),
                out.unclipped_values(), strict=True):
            ok = method != "suppressed" and math.isfinite(value)
            rows["kpi_code"].append(kpi.code)
            rows["kpi_name"].append(kpi.name)
            rows["fgssc_dimension"].append(kpi.fgssc_dimension)
            rows["u4ssc_dimension"].append(kpi.u4ssc_dimension)
            rows["area"].append(area)
            rows["period"].append(cfg.period)
            rows["value"].append(float(value) if ok else None)
            rows["unit"].append(kpi.unit)
            rows["method"].append(method if ok else "suppressed")
            rows["error_bound"].append(float(bound) if ok else None)
            rows["withheld_reason"].append(None if ok else (reason or WITHHELD_NO_VALUE))
            rows["source_datasets"].append(",".join(kpi.source_datasets))
            rows["computed_at"].append(cfg.computed_at)
            rows["noise_std"].append(float(std) if ok and math.isfinite(std) else None)
            rows["value_unclipped"].append(float(raw) if ok and math.isfinite(raw) else None)
    return pa.table(rows, schema=KPI_SCHEMA), releases
