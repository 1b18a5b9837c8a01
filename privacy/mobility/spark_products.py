"""The mobility products' row-level steps on Apache Spark (the operator's cluster).

The same semantics as the DuckDB steps of :mod:`privacy.mobility.products`, on Spark
DataFrames, so that with the same seed both engines produce identical bounded aggregates and,
with the same noise ``random_state``, identical released tables:

* :func:`prepare_events` - CDR Parquet (a path or URL the cluster reads: file, directory,
  glob, ``hdfs://``, ``s3a://``) joined to the public tower table; rows set aside counted per
  reason exactly as in DuckDB. The privacy unit ``uid`` is the first 15 hex digits of
  ``md5(unit)`` as a BIGINT in both engines.
* :func:`od_transitions` - moves between consecutive events (ordered by time, then region)
  per subscriber.
* :func:`home_regions` - modal night-time region, ties broken by the keyed SHA-256 of
  ``seed, uid, region_id`` (the text DuckDB hashes).
* :func:`gyration_bins` - radius of gyration (km) per subscriber and its public bin.

Nothing here collects or writes rows: the prepared events are persisted in Spark's own
storage (memory, then the executors' scratch disk) and only counts and the per-key
aggregates of the DP engine come back to the driver.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from opencity.errors import ConfigError, DataQualityError, EngineError
from privacy.dp.backends import SEP
from privacy.mobility.products import (
    KM_PER_DEG_LAT,
    KM_PER_DEG_LON_EQUATOR,
    MobilityConfig,
    PreparedEvents,
    unit_column,
)


def _f():
    try:
        from pyspark.sql import Window
        from pyspark.sql import functions as F
    except ImportError as err:  # pragma: no cover - pyspark is a declared dependency
        raise ConfigError("the Spark engine needs pyspark (pip install 'opencity[spark]')"
                          ) from err
    return Window, F


def is_spark(data: Any) -> bool:
    """True for a Spark DataFrame (the Spark engine's data)."""
    return type(data).__module__.startswith("pyspark.")


def uid_column(unit_col: Any) -> Any:
    """The privacy unit as in DuckDB: first 15 hex digits of md5(unit text) as BIGINT."""
    _, F = _f()
    return F.conv(F.substring(F.md5(unit_col.cast("string")), 1, 15), 16, 10).cast("long")


def _job(what: str, fn: Any) -> Any:
    """Run a Spark action; a Spark failure becomes an EngineError (nothing spent yet)."""
    from pyspark.errors import PySparkException

    try:
        return fn()
    except PySparkException as err:
        text = str(err).splitlines()[0][:300]
        if any(s in str(err) for s in ("PATH_NOT_FOUND", "Path does not exist")):
            raise DataQualityError(f"{what}: the cluster cannot read the input ({text})"
                                   ) from err
        unreachable = any(s in str(err) for s in (
            "Connection refused", "Failed to connect", "SparkContext was shut down",
            "SparkContext has been shutdown"))
        raise EngineError(f"{what}: the Spark job failed ({text}); nothing was spent",
                          transient=unreachable) from err


def read_cdr(session: Any, path: str) -> Any:
    """CDR Parquet where the operator keeps it (a file, a directory read recursively, a glob
    or a URL the cluster can read)."""
    from pathlib import Path

    p = str(path)
    reader = session.read
    if "://" not in p and Path(p).is_dir():
        reader = reader.option("recursiveFileLookup", "true").option("pathGlobFilter",
                                                                     "*.parquet")
    elif "://" not in p and not any(c in p for c in "*?") and not Path(p).exists():
        raise DataQualityError(f"CDR input {path}: no such file or directory")
    return _job(f"CDR input {path}", lambda: reader.parquet(p))


def prepare_events(session: Any, cdr: Any, towers: Any, day: date, *, con: Any = None,
                   source: str = "CDR input") -> PreparedEvents:
    """Spark twin of :func:`privacy.mobility.products.prepare_events`.

    Args:
        session: the Spark session.
        cdr: Spark DataFrame of raw events (unit column, event_time, cell_id).
        towers: the public tower table as a DuckDB relation of ``con`` (validated there, as in
            the DuckDB engine, then shipped to the cluster: it is public reference data).
        day: the UTC day.

    Returns:
        PreparedEvents whose ``events`` is a persisted Spark DataFrame
        ``unit, uid, event_time, hour, region_id, lat, lon`` (``unit`` = ``uid``; call
        ``cache.unpersist()``).
    """
    from privacy.mobility.products import validate_towers

    Window, F = _f()
    del Window
    unit = unit_column(list(cdr.columns))
    missing = [c for c in ("event_time", "cell_id") if c not in cdr.columns]
    if missing:
        raise DataQualityError(f"{source}: missing column(s) {missing}; has {cdr.columns}")
    ttype = cdr.schema["event_time"].dataType.typeName()
    if not ttype.startswith("timestamp"):
        raise DataQualityError(
            f"{source}: column event_time has type {ttype.upper()}, expected a UTC timestamp")
    validate_towers(con, towers)
    session.conf.set("spark.sql.session.timeZone", "UTC")
    tw = towers.select("cell_id::VARCHAR AS cell_id, lat::DOUBLE AS lat, lon::DOUBLE AS lon, "
                       "region_id::VARCHAR AS region_id").to_arrow_table()
    regions = tuple(sorted(set(tw.column("region_id").to_pylist())))
    t = F.broadcast(session.createDataFrame(tw))
    # Naive timestamps are taken as UTC (session time zone UTC), as in DuckDB.
    c = cdr.select(F.col(unit).alias("u"), F.col("event_time").cast("timestamp")
                   .alias("event_time"), F.col("cell_id").cast("string").alias("cell_id"))
    start = F.lit(f"{day.isoformat()} 00:00:00").cast("timestamp")
    end = F.lit(f"{(day + timedelta(days=1)).isoformat()} 00:00:00").cast("timestamp")
    in_day = (F.col("event_time") >= start) & (F.col("event_time") < end)
    reason = (F.when(F.col("u").isNull() | F.col("event_time").isNull()
                     | F.col("cell_id").isNull(), 1)
              .when(~in_day, 2).when(F.col("t_cell").isNull(), 3).otherwise(0))
    scan = (c.join(t.withColumnRenamed("cell_id", "t_cell"),
                   F.col("cell_id") == F.col("t_cell"), "left")
            .select(uid_column(F.col("u")).alias("uid"), "event_time", F.hour("event_time").alias("hour"), "region_id", "lat", "lon",
                    reason.alias("reason"), F.col("cell_id"), F.col("t_cell")))
    from pyspark import StorageLevel

    scan = scan.persist(StorageLevel.MEMORY_AND_DISK)

    def count(r: int):
        return F.sum(F.when(F.col("reason") == r, 1).otherwise(0)).cast("long")

    row = _job(source, lambda: scan.agg(
        F.count(F.lit(1)).alias("n"), count(1).alias("m"), count(2).alias("o"),
        count(3).alias("k"), F.min("event_time").cast("string").alias("tmin"),
        F.max("event_time").cast("string").alias("tmax"),
        count(0).alias("clean"),
    ).collect()[0])
    rows_in, n_missing, n_outside, n_unknown = (int(row["n"]), int(row["m"] or 0),
                                                int(row["o"] or 0), int(row["k"] or 0))
    n_clean = int(row["clean"] or 0)
    unknown_cells: tuple[str, ...] = ()
    if n_unknown:
        unknown_cells = tuple(r[0] for r in _job(source, lambda: scan.where(
            F.col("reason") == 3).select("cell_id").distinct().orderBy("cell_id")
            .limit(20).collect()))
    quarantined = {k: v for k, v in (("missing_value", n_missing),
                                     ("outside_date", n_outside),
                                     ("unknown_cell", n_unknown)) if v}
    if rows_in == 0:
        scan.unpersist()
        raise DataQualityError(f"{source}: no rows")
    if n_clean == 0:  # a clean row has a unit: no clean row = no subscriber
        scan.unpersist()
        raise DataQualityError(
            f"{source}: no usable event on {day.isoformat()} (UTC): {rows_in} rows read, set "
            f"aside {quarantined}; event_time spans {row['tmin']} .. {row['tmax']}. "
            "Check --date.")
    # as in DuckDB, the raw unit is not kept: ``unit`` is the privacy unit id (uid)
    events = scan.where(F.col("reason") == 0).select(
        F.col("uid").alias("unit"), "uid", "event_time", "hour", "region_id", "lat", "lon")

    def count_units() -> int:
        # Distinct subscribers, only when asked (delta > 0): a count(DISTINCT) beside the
        # other aggregates of the scan ran out of executor memory at 100 M events (2 x 3 GB).
        return int(_job(source, lambda: scan.where(F.col("reason") == 0)
                        .select("uid").distinct().count()))

    return PreparedEvents(events, regions, rows_in, quarantined, unknown_cells, count_units,
                          cache=scan)


def od_transitions(events: Any, unit: str = "unit") -> Any:
    """Per subscriber, each move between consecutive events in distinct regions (no noise)."""
    Window, F = _f()
    w = Window.partitionBy(unit).orderBy("event_time", "region_id")
    moves = events.select(F.col(unit).alias("unit"), F.col("region_id").alias("destination"),
                          F.lag("region_id").over(w).alias("origin"))
    return moves.where(F.col("origin").isNotNull()
                       & (F.col("origin") != F.col("destination"))
                       ).select("unit", "origin", "destination")


def home_regions(events: Any, cfg: MobilityConfig, unit: str = "unit") -> Any:
    """One row per subscriber with night events: its modal night-time region (no noise)."""
    Window, F = _f()
    tie = F.sha2(F.concat_ws(SEP, F.lit(str(int(cfg.seed))), F.col("unit").cast("string"),
                             F.col("region_id")), 256)
    per = (events.where(F.col("hour").isin(list(cfg.night_hours)))
           .groupBy(F.col(unit).alias("unit"), "region_id").agg(F.count(F.lit(1)).alias("n")))
    w = Window.partitionBy("unit").orderBy(F.col("n").desc(), tie, F.col("region_id"))
    return per.withColumn("rn", F.row_number().over(w)).where(F.col("rn") == 1).select(
        "unit", "region_id")


def gyration_bins(events: Any, cfg: MobilityConfig, unit: str = "unit") -> Any:
    """One row per subscriber: radius of gyration (km) and its histogram bin (no noise)."""
    _, F = _f()
    m = events.groupBy(F.col(unit).alias("unit")).agg(
        F.avg("lat").alias("clat"), F.var_pop("lat").alias("vlat"),
        F.var_pop("lon").alias("vlon"))
    rg = F.sqrt(F.greatest(F.lit(0.0), F.lit(KM_PER_DEG_LAT ** 2) * F.col("vlat")
                           + F.pow(F.lit(KM_PER_DEG_LON_EQUATOR) * F.cos(F.radians("clat")),
                                   2) * F.col("vlon")))
    case = None
    for e in reversed(cfg.gyration_bins_km):
        cond = F.col("rg_km") >= F.lit(float(e))
        case = F.when(cond, F.lit(float(e))) if case is None else case.when(cond, F.lit(float(e)))
    return m.select("unit", rg.alias("rg_km")).select(
        "unit", "rg_km", case.cast("double").alias("bin_lower_km"))
