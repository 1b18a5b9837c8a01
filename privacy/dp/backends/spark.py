"""The operator-scale engine: contribution bounding and aggregation on Apache Spark.

Same semantics as :class:`~privacy.dp.backends.duckdb.DuckDBBackend`, on Spark SQL
DataFrames: rows with a NULL unit, key or value dropped; values clamped in integer micro-units;
keys outside the public key set dropped (left semi join) before bounding; L-inf rows per unit
and key and L0 keys per unit kept by the smallest keyed SHA-256 (``sha2``) of exactly the same
text DuckDB hashes (``sha256``). Only the per-key aggregates leave the cluster, as Arrow
(``DataFrame.toArrow()``); nothing row-level is collected or written by this module.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from opencity.errors import ConfigError, DataQualityError, EngineError
from privacy.dp.backends import AGGREGATE_FIELDS, MICRO, SEP, BoundingSpec


def _spark():
    try:
        from pyspark.sql import SparkSession, Window
        from pyspark.sql import functions as F
    except ImportError as err:  # pragma: no cover - pyspark is a declared dependency
        raise ConfigError("the Spark engine needs pyspark (pip install 'opencity[spark]')"
                          ) from err
    return SparkSession, Window, F


class SparkBackend:
    """Bounding on a Spark DataFrame (``session`` is used for the public key table; by default
    the DataFrame's own session)."""

    name = "spark"

    def __init__(self, session: Any = None) -> None:
        self.session = session

    def accepts(self, data: Any) -> bool:
        return type(data).__module__.startswith("pyspark.") and hasattr(data, "toArrow")

    def bounded_aggregate(self, data: Any, spec: BoundingSpec,
                          public_keys: pa.Table | None) -> pa.Table:
        _, Window, F = _spark()
        from pyspark.errors import PySparkException

        missing = [c for c in spec.columns if c not in data.columns]
        if missing:
            raise DataQualityError(
                f"input is missing column(s) {missing}; it has {list(data.columns)}")
        session = self.session or data.sparkSession
        by = list(spec.by)
        lo, hi = spec.micro_bounds
        cond = None
        for c in spec.columns:
            cond = F.col(c).isNotNull() if cond is None else cond & F.col(c).isNotNull()
        if spec.value:
            v = F.greatest(F.lit(lo), F.least(F.lit(hi), F.round(
                F.col(spec.value).cast("double") * F.lit(float(MICRO))))).cast("long")
        else:
            v = F.lit(0).cast("long")
        base = data.where(cond).select(F.col(spec.unit).cast("string").alias("_u"),
                                       *[F.col(k) for k in by], v.alias("_v"))
        if public_keys is not None and by:
            keys = session.createDataFrame(public_keys.select(by))
            # the key columns in the data's own types, so the semi join compares like with like
            keys = keys.select(*[F.col(k).cast(base.schema[k].dataType).alias(k) for k in by])
            base = base.join(keys, on=by, how="left_semi")
        seed = F.lit(str(int(spec.seed)))
        key_text = [F.col(k).cast("string") for k in by]
        m, l0 = spec.bounds.max_rows_per_partition, spec.bounds.max_partitions
        group = ["_u", *by]
        if spec.statistic == "count_distinct":
            per_unit = base.groupBy(*group).agg(F.lit(1).cast("long").alias("_n"),
                                                F.lit(0).cast("long").alias("_s"))
        elif spec.statistic == "count":
            per_unit = base.groupBy(*group).agg(
                F.least(F.count(F.lit(1)), F.lit(m)).cast("long").alias("_n"),
                F.lit(0).cast("long").alias("_s"))
        else:
            h = F.sha2(F.concat_ws(SEP, seed, F.col("_u"), *key_text,
                                   F.col("_v").cast("string")), 256)
            w = Window.partitionBy(*group).orderBy(h, F.col("_v"))
            per_unit = (base.withColumn("_rn", F.row_number().over(w))
                        .where(F.col("_rn") <= m)
                        .groupBy(*group).agg(F.count(F.lit(1)).cast("long").alias("_n"),
                                             F.sum("_v").cast("long").alias("_s")))
        hk = F.sha2(F.concat_ws(SEP, seed, F.col("_u"), *key_text), 256)
        w0 = Window.partitionBy("_u").orderBy(hk, *[F.col(k) for k in by])
        picked = per_unit.withColumn("_pn", F.row_number().over(w0)).where(F.col("_pn") <= l0)
        aggs = [F.count(F.lit(1)).cast("long").alias("n_units"),
                F.sum("_n").cast("long").alias("n_rows"),
                (F.sum("_s").cast("double") / F.lit(float(MICRO))).alias("value_sum")]
        out = picked.groupBy(*by).agg(*aggs) if by else picked.agg(*aggs)
        try:
            table = out.toArrow()
        except PySparkException as err:
            text = str(err).splitlines()[0][:300]
            unreachable = any(s in str(err) for s in (
                "Connection refused", "Failed to connect", "SparkContext was shut down",
                "SparkContext has been shutdown"))
            if unreachable:
                raise EngineError(f"the Spark cluster did not answer ({text}); the run is "
                                  "retried, nothing was spent", transient=True) from err
            raise EngineError(f"the Spark job failed ({text}); nothing was spent; see the "
                              "Spark UI / driver log for the failing stage") from err
        return _like_duckdb(table, by)


def _like_duckdb(table: pa.Table, by: list[str]) -> pa.Table:
    """The aggregate in the schema the DuckDB engine returns (string keys as plain strings)."""
    fields = []
    for k in by:
        typ = table.schema.field(k).type
        if pa.types.is_large_string(typ):
            typ = pa.string()
        fields.append(pa.field(k, typ))
    schema = pa.schema(fields + AGGREGATE_FIELDS)
    return table.select([f.name for f in schema]).cast(schema)


def spark_session(master: str, *, app_name: str = "opencity",
                  connect_timeout_s: float = 10.0, conf: dict[str, str] | None = None) -> Any:
    """A Spark session on ``master`` (``local[N]``, ``spark://host:port``).

    The driver binds to 127.0.0.1 unless ``conf`` says otherwise (an operator's deployment
    sets ``spark.driver.host``). A standalone master that does not accept connections is an
    :class:`EngineError` marked transient (Airflow retries the task); nothing has run then.
    """
    import socket
    from urllib.parse import urlparse

    SparkSession, _, _ = _spark()
    if master.startswith("spark://"):
        url = urlparse(master)
        host, port = url.hostname or "", url.port or 7077
        try:
            with socket.create_connection((host, port), timeout=connect_timeout_s):
                pass
        except OSError as err:
            raise EngineError(
                f"the Spark cluster did not answer: master {host}:{port} ({err.strerror or err});"
                " the run is retried, nothing was spent", transient=True) from err
    elif not master.startswith("local"):
        raise ConfigError(f"Spark master must be local[N] or spark://host:port, got {master!r}")
    builder = (SparkSession.builder.master(master).appName(app_name)
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.ui.enabled", "false"))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
