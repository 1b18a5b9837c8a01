"""CDR mobility products, each a DP release over DuckDB with a declared share of a daily budget.

Products (privacy unit: subscriber; budget: epsilon per subscriber per day):

* ``hourly_presence`` - distinct subscribers seen per region per UTC hour. Keys: every
  region of the tower table x hours 0-23 (public). A subscriber counts in at most
  ``max_region_hours`` (L0) region-hours (sampled by keyed hash).
* ``od_matrix`` - distinct subscribers who moved from region A to region B that day
  (consecutive events in distinct regions, in time order). At most ``max_od_pairs`` pairs
  per subscriber. With delta > 0 the pairs come from the data through private partition
  selection (delta spent there); with delta = 0 the keys are all ordered pairs of distinct
  regions (public).
* ``home_region`` - subscribers per home region, the home being the region with most events
  in ``night_hours`` (UTC); ties broken by keyed hash. One region per subscriber (L0 = 1).
* ``gyration`` - histogram of the radius of gyration (km) of each subscriber's events
  around their centroid (tower coordinates; equirectangular distance), public bins.

All functions are pure: a DuckDB relation of prepared events in, Arrow tables out.
:func:`prepare_events` turns raw CDR + towers into the prepared relation and counts the rows
it sets aside (with a reason) instead of dropping them silently.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from opencity.errors import ConfigError, DataQualityError
from privacy.dp import (
    ContributionBounds,
    DPBudget,
    PartitionSelection,
    dp_count_distinct,
    release_info,
)
from privacy.dp.params import _check_int, _check_real

PRODUCTS = ("hourly_presence", "od_matrix", "home_region", "gyration")
# The origin-destination table, the product researchers ask questions of, gets the largest
# share: at 0.4 (4 pairs per subscriber) each cell's noise has scale 10 subscribers.
DEFAULT_SHARES = (("hourly_presence", 0.3), ("od_matrix", 0.4), ("home_region", 0.2),
                  ("gyration", 0.1))
DEFAULT_NIGHT_HOURS = (22, 23, 0, 1, 2, 3, 4, 5)
DEFAULT_GYRATION_BINS_KM = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
UNIT_COLUMNS = ("subscriber_pid", "subscriber_id")  # pseudonym preferred over raw MSISDN
KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LON_EQUATOR = 111.320
# The privacy unit id in SQL over the unit column ``u``; Spark computes the same value
# (privacy.mobility.spark_products.uid_column): the first 15 hex digits of md5 (60 bits).
UID_SQL = "('0x' || md5(u::VARCHAR)[1:15])::BIGINT"


@dataclass(frozen=True)
class MobilityConfig:
    """Parameters of one daily mobility release.

    Attributes:
        budget: (epsilon, delta) per subscriber for the whole day, all products together.
        shares: product -> share of epsilon (shares sum to at most 1). delta goes entirely
            to ``od_matrix`` partition selection (other products are pure epsilon-DP).
        max_region_hours: L0 of ``hourly_presence`` (region-hours counted per subscriber).
        max_od_pairs: L0 of ``od_matrix`` (origin-destination pairs per subscriber per day).
        night_hours: UTC hours whose events decide the home region.
        gyration_bins_km: increasing bin edges in km starting at 0; the last bin is open.
        seed: key of the hash sampling that enforces the bounds (non-negative int).
    """

    budget: DPBudget
    shares: tuple[tuple[str, float], ...] = DEFAULT_SHARES
    max_region_hours: int = 24
    max_od_pairs: int = 4
    night_hours: tuple[int, ...] = DEFAULT_NIGHT_HOURS
    gyration_bins_km: tuple[float, ...] = DEFAULT_GYRATION_BINS_KM
    seed: int = 0
    _share_map: dict[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.budget, DPBudget):
            raise ConfigError("MobilityConfig.budget must be a DPBudget")
        shares = dict(self.shares.items() if isinstance(self.shares, Mapping) else self.shares)
        unknown = set(shares) - set(PRODUCTS)
        if unknown:
            raise ConfigError(f"unknown mobility product(s) {sorted(unknown)}; known: {PRODUCTS}")
        for name, share in shares.items():
            s = _check_real("MobilityConfig.shares", name, share)
            if not 0 < s <= 1:
                raise ConfigError(f"share of {name} must be in (0, 1], got {share!r}")
        total = math.fsum(shares.values())
        if total > 1 + 1e-9:
            raise ConfigError(f"product shares sum to {total:g} > 1: they must split one budget")
        if not shares:
            raise ConfigError("MobilityConfig.shares lists no product")
        _check_int("MobilityConfig", "max_region_hours", self.max_region_hours)
        _check_int("MobilityConfig", "max_od_pairs", self.max_od_pairs)
        _check_int("MobilityConfig", "seed", self.seed, minimum=0)
        hours = tuple(self.night_hours)
        if not hours or any(isinstance(h, bool) or not isinstance(h, int) or not 0 <= h <= 23
                            for h in hours):
            raise ConfigError(f"night_hours must be UTC hours 0-23, got {self.night_hours!r}")
        try:
            bins = tuple(float(b) for b in self.gyration_bins_km)
        except (TypeError, ValueError):
            bins = ()
        if len(bins) < 2 or bins[0] != 0 or not all(map(math.isfinite, bins)) or any(
            b2 <= b for b, b2 in itertools.pairwise(bins)
        ):
            raise ConfigError(
                f"gyration_bins_km must be finite, increasing and start at 0, got "
                f"{self.gyration_bins_km!r}"
            )
        object.__setattr__(self, "shares", tuple(shares.items()))
        object.__setattr__(self, "night_hours", hours)
        object.__setattr__(self, "gyration_bins_km", bins)
        object.__setattr__(self, "_share_map", shares)

    def product_budget(self, product: str) -> DPBudget:
        """The (epsilon, delta) of one product: its share of epsilon; delta only for OD."""
        share = self._share_map[product]
        delta = self.budget.delta if product == "od_matrix" else 0.0
        return DPBudget(self.budget.epsilon * share, delta)

    @property
    def products(self) -> tuple[str, ...]:
        return tuple(p for p in PRODUCTS if p in self._share_map)

    @property
    def spent(self) -> DPBudget:
        """Total (epsilon, delta) of the configured products."""
        eps = math.fsum(self.budget.epsilon * s for s in self._share_map.values())
        delta = self.budget.delta if "od_matrix" in self._share_map else 0.0
        return DPBudget(min(eps, self.budget.epsilon), delta)


@dataclass(frozen=True)
class PreparedEvents:
    """Events of one day joined with the tower table, and what was set aside.

    Attributes:
        events: relation ``unit, uid, event_time, hour, region_id, lat, lon`` (clean rows
            only). ``uid`` is :data:`UID_SQL`, the first 15 hex digits of md5(unit) as a BIGINT,
            the privacy unit of the products (cheaper to group than the pseudonym string and
            computed identically by the Spark engine; a collision would merge two subscribers
            into one bounded unit, which only tightens the bounds). ``unit`` is the same
            uid: the raw pseudonym is not kept past the scan. In DuckDB ``region_id`` is an
            ENUM of the public regions (:func:`region_enum`; its text is the region id).
        regions: public region ids (from the tower table), sorted.
        rows_in: input rows read.
        quarantined: reason -> rows set aside (``missing_value``, ``outside_date``,
            ``unknown_cell``).
        unknown_cells: up to 20 cell ids not in the tower table (network ids, not personal).
        units: distinct subscribers (uids) among the clean rows, or a callable counting
            them when first asked (read it as :attr:`n_units`; it is only needed to
            validate delta > 0, so DuckDB does not count 2M+ distinct uids otherwise).
        cache: the Spark engine's persisted scan (``unpersist()`` it when done); None in DuckDB.
    """

    events: Any  # a DuckDB relation, or a Spark DataFrame (privacy.mobility.spark_products)
    regions: tuple[str, ...]
    rows_in: int
    quarantined: dict[str, int]
    unknown_cells: tuple[str, ...]
    units: int | Callable[[], int]
    cache: Any = None

    @functools.cached_property
    def n_units(self) -> int:
        """Distinct subscribers (uids) among the clean rows (counted once, when asked)."""
        return int(self.units() if callable(self.units) else self.units)

    @property
    def rows_used(self) -> int:
        return self.rows_in - sum(self.quarantined.values())


def unit_column(columns: list[str]) -> str:
    """The privacy-unit column of a CDR table: the pseudonym if present, else the raw id."""
    for name in UNIT_COLUMNS:
        if name in columns:
            return name
    raise DataQualityError(
        f"CDR input has none of the privacy-unit columns {UNIT_COLUMNS}; it has {columns}"
    )


def validate_towers(con: duckdb.DuckDBPyConnection, towers: duckdb.DuckDBPyRelation,
                    source: str = "towers") -> None:
    """Raise DataQualityError naming row, column and value of the first bad tower row."""
    missing = [c for c in ("cell_id", "lat", "lon", "region_id") if c not in towers.columns]
    if missing:
        raise DataQualityError(f"{source}: missing column(s) {missing}; has {towers.columns}")
    bad = towers.query("t", """
        SELECT row_number() OVER () AS row_no, * FROM t
    """).query("t2", """
        SELECT row_no, CASE
            WHEN cell_id IS NULL THEN 'cell_id'
            WHEN region_id IS NULL THEN 'region_id'
            WHEN TRY_CAST(lat AS DOUBLE) IS NULL OR NOT TRY_CAST(lat AS DOUBLE) BETWEEN -90 AND 90
                THEN 'lat'
            WHEN TRY_CAST(lon AS DOUBLE) IS NULL
                OR NOT TRY_CAST(lon AS DOUBLE) BETWEEN -180 AND 180 THEN 'lon'
            END AS col, cell_id::VARCHAR, lat::VARCHAR, lon::VARCHAR, region_id::VARCHAR
        FROM t2 WHERE col IS NOT NULL ORDER BY row_no LIMIT 1
    """).fetchall()
    if bad:
        row_no, col, cell, lat, lon, region = bad[0]
        value = {"cell_id": cell, "region_id": region, "lat": lat, "lon": lon}[col]
        raise DataQualityError(
            f"{source}: data row {row_no}: column {col} has invalid value {value!r} "
            "(cell_id and region_id must be set, lat in [-90, 90], lon in [-180, 180])"
        )
    dup = towers.query("t", """
        SELECT cell_id::VARCHAR, count(*) FROM t GROUP BY 1 HAVING count(*) > 1 LIMIT 1
    """).fetchall()
    if dup:
        raise DataQualityError(f"{source}: cell_id {dup[0][0]!r} appears {dup[0][1]} times")


def prepare_events(con: duckdb.DuckDBPyConnection, cdr: duckdb.DuckDBPyRelation,
                   towers: duckdb.DuckDBPyRelation, day: date, *,
                   source: str = "CDR input") -> PreparedEvents:
    """Join one day of CDR events to the tower table; count what is set aside and why.

    ``cdr`` and ``towers`` must be relations of ``con``.

    The CDR is read once into temp table ``_mob_scan`` (every row with its set-aside reason,
    as codes: uid, time, hour, region ENUM, cell code; the unit column is read once more for
    its distinct values, whose md5 gives the uid); the clean events are the temp view
    ``mobility_events`` on ``con``. Rows with
    a NULL unit, time or cell (``missing_value``), a time outside ``day`` in UTC
    (``outside_date``) or a cell id missing from the tower table (``unknown_cell``) are
    counted, never used and never silently dropped.

    Raises:
        DataQualityError: missing columns, a non-timestamp ``event_time``, or no usable row.
    """
    unit = unit_column(list(cdr.columns))
    missing = [c for c in ("event_time", "cell_id") if c not in cdr.columns]
    if missing:
        raise DataQualityError(f"{source}: missing column(s) {missing}; has {cdr.columns}")
    ttype = str(cdr.select("event_time").types[0]).upper()
    if not ttype.startswith("TIMESTAMP"):
        raise DataQualityError(
            f"{source}: column event_time has type {ttype}, expected a UTC timestamp"
        )
    validate_towers(con, towers)
    start = day.isoformat()
    end = (day + timedelta(days=1)).isoformat()
    # Naive timestamps are taken as UTC (the data contract); TIMESTAMPTZ compares exactly.
    ts = "event_time::TIMESTAMPTZ" if "TZ" not in ttype and "TIME ZONE" not in ttype \
        else "event_time"
    in_day = (f"(c.event_time >= TIMESTAMPTZ '{start} 00:00:00+00' "
              f"AND c.event_time < TIMESTAMPTZ '{end} 00:00:00+00')")
    con.execute("SET TimeZone = 'UTC'")
    cdr.select(f'"{unit}" AS u, {ts} AS event_time, cell_id::VARCHAR AS cell_id'
               ).create_view("_mob_cdr", replace=True)
    # The public tower table, once: each cell gets a small integer code (its rank by
    # cell_id) and each region a code of a DuckDB ENUM in region_id order. The scan keeps
    # only those codes; the view below turns them back into region ids (ENUM text) and
    # coordinates (lists indexed by the cell code), so the row-level table is ~22 bytes
    # per event instead of ~100 with the unit string, region text, coordinates and the
    # unknown cell id (100M events fit the memory limit without spilling the table).
    towers.select("cell_id::VARCHAR AS cell_id, lat::DOUBLE AS lat, lon::DOUBLE AS lon, "
                  "region_id::VARCHAR AS region_id").create_view("_mob_towers", replace=True)
    cells = con.execute(
        "SELECT cell_id, lat, lon, region_id FROM _mob_towers ORDER BY cell_id").fetchall()
    regions = tuple(sorted({c[3] for c in cells}))
    enum = region_enum(regions)
    ctype = "USMALLINT" if len(cells) < 2**16 else "UINTEGER"
    # %.17e: DuckDB reads it as a DOUBLE literal, the same double (17 significant digits)
    lats = ", ".join(f"{c[1]:.17e}" for c in cells) or "NULL"
    lons = ", ".join(f"{c[2]:.17e}" for c in cells) or "NULL"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _mob_cells AS
        SELECT cell_id, (row_number() OVER (ORDER BY cell_id))::{ctype} AS cell,
               region_id::{enum} AS region_id FROM _mob_towers
    """)
    # One scan of the CDR: every row once, with the reason it is set aside (0 = clean).
    # The md5 of the unit is computed once per distinct unit (a subscriber has ~5-100
    # events a day) and joined back, not once per event.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _mob_scan AS
        WITH units AS (
            SELECT u, {UID_SQL} AS uid FROM (SELECT DISTINCT u FROM _mob_cdr WHERE u IS NOT NULL)
        )
        SELECT d.uid, c.event_time, hour(c.event_time)::TINYINT AS hour, t.region_id, t.cell,
               CASE WHEN c.u IS NULL OR c.event_time IS NULL OR c.cell_id IS NULL THEN 1
                    WHEN NOT {in_day} THEN 2
                    WHEN t.cell_id IS NULL THEN 3 ELSE 0 END::TINYINT AS reason
        FROM _mob_cdr c LEFT JOIN _mob_cells t USING (cell_id) LEFT JOIN units d ON c.u = d.u
    """)
    counts = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE reason = 1), count(*) FILTER (WHERE reason = 2),
               count(*) FILTER (WHERE reason = 3), min(event_time)::VARCHAR,
               max(event_time)::VARCHAR, count(*) FILTER (WHERE reason = 0)
        FROM _mob_scan
    """).fetchall()[0]
    rows_in, n_missing, n_outside, n_unknown, tmin, tmax, n_clean = counts
    unknown_cells: tuple[str, ...] = ()
    if n_unknown:  # a second, narrow scan only when there are unknown cells
        unknown_cells = tuple(r[0] for r in con.execute(f"""
            SELECT DISTINCT c.cell_id FROM _mob_cdr c ANTI JOIN _mob_towers t USING (cell_id)
            WHERE c.u IS NOT NULL AND c.event_time IS NOT NULL AND c.cell_id IS NOT NULL
              AND {in_day} ORDER BY 1 LIMIT 20
        """).fetchall())
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW mobility_events AS
        SELECT uid AS unit, uid, event_time, hour, region_id,
               ([{lats}]::DOUBLE[])[cell] AS lat, ([{lons}]::DOUBLE[])[cell] AS lon
        FROM _mob_scan WHERE reason = 0
    """)
    quarantined = {k: int(v) for k, v in (("missing_value", n_missing),
                                           ("outside_date", n_outside),
                                           ("unknown_cell", n_unknown)) if v}
    if rows_in == 0:
        raise DataQualityError(f"{source}: no rows")
    if n_clean == 0:  # a clean row has a unit: no clean row = no subscriber
        raise DataQualityError(
            f"{source}: no usable event on {start} (UTC): {rows_in} rows read, set aside "
            f"{quarantined}; event_time spans {tmin} .. {tmax}. Check --date."
        )

    def count_units() -> int:
        # the privacy unit the products bound (uid; the raw unit is not kept)
        return con.execute(
            "SELECT count(DISTINCT uid) FROM _mob_scan WHERE reason = 0").fetchall()[0][0]

    return PreparedEvents(con.table("mobility_events"), regions, int(rows_in), quarantined,
                          unknown_cells, count_units)


def region_enum(regions: tuple[str, ...]) -> str:
    """The DuckDB type of region ids: an ENUM of the public regions in sorted order (so
    grouping, sorting and windows carry a 1-2 byte code; its text and its order are the
    region id's), or VARCHAR when there is none."""
    if not regions:
        return "VARCHAR"
    return "ENUM(" + ", ".join("'" + r.replace("'", "''") + "'" for r in regions) + ")"


def connect() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for a mobility release: bounded memory, spilling to disk.

    ``OPENCITY_DUCKDB_MEMORY_LIMIT`` (default 4GB) caps DuckDB's memory and
    ``OPENCITY_DUCKDB_TEMP_DIR`` (default: the system temp directory) is where it spills
    larger-than-memory joins, sorts and aggregations, so 100M events fit a small machine.
    """
    import atexit
    import os
    import shutil
    import tempfile

    limit = os.environ.get("OPENCITY_DUCKDB_MEMORY_LIMIT", "4GB")
    temp = os.environ.get("OPENCITY_DUCKDB_TEMP_DIR")
    if not temp:
        temp = tempfile.mkdtemp(prefix="opencity-duckdb-")
        atexit.register(shutil.rmtree, temp, True)
    try:
        return duckdb.connect(config={"memory_limit": limit, "temp_directory": temp,
                                      "preserve_insertion_order": False})
    except duckdb.Error as err:
        raise ConfigError(
            f"cannot open DuckDB with memory_limit={limit!r} (OPENCITY_DUCKDB_MEMORY_LIMIT) and "
            f"temp_directory={temp!r} (OPENCITY_DUCKDB_TEMP_DIR): {err}"
        ) from err


def _is_spark(data: Any) -> bool:
    return type(data).__module__.startswith("pyspark.")


def _one_row_per_unit(events: Any) -> Any:
    """The bounding backend for a per-subscriber table (home region, gyration: one row per
    subscriber by construction): DuckDB told so, which it checks before skipping the
    per-unit grouping and L0 sampling; None (the default engine) for Spark data."""
    if _is_spark(events):
        return None
    from privacy.dp.backends.duckdb import DuckDBBackend

    return DuckDBBackend(one_row_per_unit=True)


def _regions_table(regions: tuple[str, ...]) -> pa.Table:
    return pa.table({"region_id": pa.array(regions, pa.string())})


def hourly_presence(events: duckdb.DuckDBPyRelation, regions: tuple[str, ...],
                    cfg: MobilityConfig, random_state: Any = None) -> pa.Table:
    """Distinct subscribers per (region_id, hour UTC), exactly regions x 24 rows."""
    keys = pa.table({
        "region_id": pa.array([r for r in regions for _ in range(24)], pa.string()),
        "hour": pa.array([h for _ in regions for h in range(24)], pa.int32()),
    })
    unit = "uid" if "uid" in events.columns else "unit"
    return dp_count_distinct(
        events, unit=unit, by=["region_id", "hour"], budget=cfg.product_budget("hourly_presence"),
        bounds=ContributionBounds(max_partitions=cfg.max_region_hours),
        public_keys=keys, seed=cfg.seed, random_state=random_state, with_unclamped=True,
    )


def od_transitions(events: duckdb.DuckDBPyRelation, unit: str = "unit"
                   ) -> duckdb.DuckDBPyRelation:
    """Per subscriber, each move between consecutive events in distinct regions (no noise)."""
    if _is_spark(events):
        from privacy.mobility import spark_products

        return spark_products.od_transitions(events, unit)
    return events.query("ev", f"""
        SELECT {unit} AS unit, origin, destination FROM (
            SELECT {unit}, region_id AS destination,
                   lag(region_id) OVER (PARTITION BY {unit} ORDER BY event_time, region_id)
                       AS origin
            FROM ev)
        WHERE origin IS NOT NULL AND origin <> destination
    """)


def od_pairs(regions: tuple[str, ...]) -> pa.Table:
    """Every ordered pair of distinct regions of the public tower table (the OD key set)."""
    return pa.table({
        "origin": pa.array([a for a in regions for b in regions if a != b], pa.string()),
        "destination": pa.array([b for a in regions for b in regions if a != b], pa.string()),
    })


def od_matrix(events: duckdb.DuckDBPyRelation, regions: tuple[str, ...], cfg: MobilityConfig,
              random_state: Any = None) -> pa.Table:
    """Distinct subscribers moving origin -> destination, one row per ordered region pair.

    The policy decides the keys through its delta: with delta = 0 the keys are every ordered
    pair of distinct regions (public, from the tower table) and every cell is published with
    its noise; with delta > 0 a pair is released only if it passes private partition
    selection. Either way the table lists every public pair, and its ``status``
    (:data:`OD_PUBLISHED` / :data:`OD_WITHHELD`) and ``withheld_reason`` columns say in the
    data itself why a cell has no value (listing the pairs that were not selected reveals
    nothing beyond the selected set, since the pair list is public).
    """
    budget = cfg.product_budget("od_matrix")
    pairs = od_pairs(regions)
    kw: dict[str, Any] = {}
    if budget.delta > 0:
        kw["partition_selection"] = PartitionSelection()
    else:
        kw["public_keys"] = pairs
    out = dp_count_distinct(
        od_transitions(events, "uid" if "uid" in events.columns else "unit"), unit="unit",
        by=["origin", "destination"], budget=budget,
        bounds=ContributionBounds(max_partitions=cfg.max_od_pairs), seed=cfg.seed,
        random_state=random_state, with_unclamped=True, **kw,
    )
    return with_od_status(out, pairs)


OD_PUBLISHED = "published"
OD_WITHHELD = "withheld"


def with_od_status(released: pa.Table, pairs: pa.Table) -> pa.Table:
    """Every public pair once, in the pair order, with ``status`` and ``withheld_reason``.

    Pairs missing from ``released`` (not selected by private partition selection) get empty
    value columns, status ``withheld`` and a reason naming the selection threshold.
    Post-processing only: it reads the released table and the public pair list.
    """
    meta = released.schema.metadata
    info = release_info(released)
    sel = info.get("partition_selection") or {}
    reason = (f"fewer subscribers than the private selection threshold "
              f"({sel.get('threshold_units')} noisy subscribers) that day; see privacy.json")
    con = duckdb.connect()
    try:
        con.register("rel", released.replace_schema_metadata(None))
        con.register("pairs", pairs)
        value_cols = [c for c in released.column_names if c not in ("origin", "destination")]
        picked = ", ".join(f"r.{c}" for c in value_cols)
        out = con.sql(f"""
            SELECT p.origin, p.destination, {picked},
                   CASE WHEN r.origin IS NULL THEN '{OD_WITHHELD}' ELSE '{OD_PUBLISHED}' END
                       AS status,
                   CASE WHEN r.origin IS NULL THEN ? END AS withheld_reason
            FROM (SELECT *, row_number() OVER () AS _i FROM pairs) p
            LEFT JOIN rel r USING (origin, destination)
            ORDER BY p._i
        """, params=[reason]).to_arrow_table()
    finally:
        con.close()
    schema = pa.schema([released.schema.field(c) if c in released.column_names
                        else pa.field(c, pa.string()) for c in out.column_names])
    return out.cast(schema).replace_schema_metadata(meta)


def home_regions(events: duckdb.DuckDBPyRelation, cfg: MobilityConfig, unit: str = "unit"
                 ) -> duckdb.DuckDBPyRelation:
    """One row per subscriber with night events: its modal night-time region (no noise).

    Ties are broken by the smallest keyed SHA-256 of ``seed, unit, region_id`` (joined by
    the unit separator), the same text in both engines."""
    if _is_spark(events):
        from privacy.mobility import spark_products

        return spark_products.home_regions(events, cfg, unit)
    hours = ", ".join(str(h) for h in cfg.night_hours)
    # The regions with the most night events per subscriber; the keyed hash is computed
    # only where two or more tie (the same pick as ordering every region by count, hash,
    # region id, without hashing every subscriber's regions).
    return events.query("ev", f"""
        WITH g AS (
            SELECT {unit} AS unit, region_id, count(*) AS n FROM ev
            WHERE hour IN ({hours}) GROUP BY ALL),
        top AS (
            SELECT unit, region_id FROM (
                SELECT *, rank() OVER (PARTITION BY unit ORDER BY n DESC) AS r FROM g)
            WHERE r = 1),
        ties AS (SELECT unit FROM top GROUP BY unit HAVING count(*) > 1)
        SELECT unit, region_id FROM top ANTI JOIN ties USING (unit)
        UNION ALL
        SELECT unit, arg_min(region_id, (
            sha256(concat_ws(chr(31), '{int(cfg.seed)}', unit::VARCHAR, region_id)), region_id))
        FROM top SEMI JOIN ties USING (unit) GROUP BY unit
    """)


def home_region(events: duckdb.DuckDBPyRelation, regions: tuple[str, ...], cfg: MobilityConfig,
                random_state: Any = None) -> pa.Table:
    """Subscribers per home region (modal night-time region), every region one row."""
    return dp_count_distinct(
        home_regions(events, cfg, "uid" if "uid" in events.columns else "unit"), unit="unit",
        by=["region_id"],
        budget=cfg.product_budget("home_region"), bounds=ContributionBounds(max_partitions=1),
        public_keys=_regions_table(regions), seed=cfg.seed, random_state=random_state,
        with_unclamped=True, backend=_one_row_per_unit(events),
    )


def gyration_bins(events: duckdb.DuckDBPyRelation, cfg: MobilityConfig, unit: str = "unit"
                  ) -> duckdb.DuckDBPyRelation:
    """One row per subscriber: radius of gyration (km) and its histogram bin (no noise)."""
    if _is_spark(events):
        from privacy.mobility import spark_products

        return spark_products.gyration_bins(events, cfg, unit)
    edges = cfg.gyration_bins_km
    case = "CASE " + " ".join(f"WHEN rg_km >= {e!r} THEN {e!r}" for e in reversed(edges)) \
        + " END"
    return events.query("ev", f"""
        WITH m AS (
            SELECT {unit} AS unit, avg(lat) AS clat, avg(lon) AS clon,
                   var_pop(lat) AS vlat, var_pop(lon) AS vlon
            FROM ev GROUP BY {unit}),
        r AS (
            SELECT unit, sqrt(greatest(0.0,
                       ({KM_PER_DEG_LAT} ^ 2) * vlat
                       + ({KM_PER_DEG_LON_EQUATOR} * cos(radians(clat))) ^ 2 * vlon)) AS rg_km
            FROM m)
        SELECT unit, rg_km,
               ({case})::DOUBLE AS bin_lower_km
        FROM r
    """)


def gyration(events: duckdb.DuckDBPyRelation, cfg: MobilityConfig,
             random_state: Any = None) -> pa.Table:
    """Histogram of subscribers by radius of gyration, one row per public bin."""
    edges = cfg.gyration_bins_km
    keys = pa.table({"bin_lower_km": pa.array(edges, pa.float64())})
    out = dp_count_distinct(
        gyration_bins(events, cfg, "uid" if "uid" in events.columns else "unit"), unit="unit",
        by=["bin_lower_km"],
        budget=cfg.product_budget("gyration"), bounds=ContributionBounds(max_partitions=1),
        public_keys=keys, seed=cfg.seed, random_state=random_state, with_unclamped=True,
        backend=_one_row_per_unit(events),
    )
    uppers = pa.array(list(edges[1:]) + [None], pa.float64())
    meta = out.schema.metadata
    out = out.add_column(1, "bin_upper_km", uppers)
    return out.replace_schema_metadata(meta)


def compute_products(prepared: PreparedEvents, cfg: MobilityConfig, random_state: Any = None,
                     progress: Any = None) -> dict[str, pa.Table]:
    """Every configured product for the prepared day, keyed by product name.

    Args:
        prepared: output of :func:`prepare_events`.
        cfg: budget, shares and bounds.
        random_state: noise RNG (int seed or RandomState); None = cryptographic RNG.
        progress: optional callable(product_name) called before each product.
    """
    if cfg.budget.delta > 0:
        cfg.budget.check_delta_for_units(prepared.n_units)
    from privacy.dp.mechanisms import as_random_state

    rs = as_random_state(random_state)
    ev, regions = prepared.events, prepared.regions
    makers = {
        "hourly_presence": lambda: hourly_presence(ev, regions, cfg, rs),
        "od_matrix": lambda: od_matrix(ev, regions, cfg, rs),
        "home_region": lambda: home_region(ev, regions, cfg, rs),
        "gyration": lambda: gyration(ev, cfg, rs),
    }
    out = {}
    for name in cfg.products:
        if progress is not None:
            progress(name)
        out[name] = makers[name]()
    return out


def product_metadata(name: str, table: pa.Table, cfg: MobilityConfig) -> dict[str, Any]:
    """privacy.json entry of one product: mechanism, epsilon, delta, bounds, threshold."""
    info = release_info(table)
    mech = info["mechanisms"]["count"]
    sel = info.get("partition_selection")
    budget = cfg.product_budget(name)
    return {
        "share": cfg._share_map[name],
        "epsilon": budget.epsilon,
        "delta": budget.delta,
        "statistic": "distinct subscribers",
        "keys": info["keys"],
        "key_source": info["key_source"],
        "mechanism": mech["mechanism"],
        "per_row_epsilon": mech["epsilon"],
        "noise_std": mech["noise_std"],
        "error_bound_95": mech["error_bound_95"],
        "bounds": {
            "max_partitions_per_subscriber": info["bounds"]["max_partitions"],
            "max_rows_per_partition": info["bounds"]["max_rows_per_partition"],
        },
        "selection_threshold_subscribers": sel["threshold_units"] if sel else None,
        "rows": table.num_rows,
    } | (_od_statement(table, sel) if name == "od_matrix" else {})


def _od_statement(table: pa.Table, sel: dict[str, Any] | None) -> dict[str, Any]:
    """What the statement says about the OD keys and the cells without a value."""
    status = table.column("status").to_pylist() if "status" in table.column_names else []
    return {
        "key_set": ("every ordered pair of distinct regions of the public tower table"
                    + ("; a pair is published only if it passes private partition selection"
                       if sel else "; every pair is published with its noise (no selection "
                       "threshold)")),
        "published_rows": sum(s == OD_PUBLISHED for s in status),
        "withheld_rows": sum(s == OD_WITHHELD for s in status),
        "withheld_reason_column": "withheld_reason (empty when the cell is published)",
    }
