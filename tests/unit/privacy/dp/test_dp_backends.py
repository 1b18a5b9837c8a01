"""The bounding engines: DuckDB (default) and Spark (local mode here; the standalone cluster in
tests/integration) give IDENTICAL bounded, pre-noise aggregates for the same input and seed.

Inputs are built to exercise every rule: NULL units, keys and values; values outside the
clamp; units over L-inf in a key (sampled rows) and over L0 keys (sampled keys); keys outside
the public key set; a heavy unit with 10,000 events.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from privacy.dp import ContributionBounds
from privacy.dp.backends.duckdb import DuckDBBackend
from privacy.dp.engine import bounded_aggregate


def _events(seed: int = 0, n: int = 20_000, heavy: int = 10_000) -> pa.Table:
    rng = np.random.default_rng(seed)
    units = [f"u{i}" for i in rng.integers(0, 800, n)] + ["heavy"] * heavy
    regions = [f"R{i:02d}" for i in rng.integers(0, 14, n + heavy)]
    hours = rng.integers(0, 24, n + heavy).astype(np.int32)
    values = np.round(rng.normal(5, 4, n + heavy), 3)
    t = pa.table({"unit": units, "region_id": regions, "hour": hours, "v": values})
    # NULLs in every column the engine reads
    mask = rng.random(n + heavy) < 0.01
    unit = pa.array([None if m else u for m, u in zip(mask, units, strict=True)])
    region = pa.array([None if m else r for m, r in
                       zip(np.roll(mask, 7), regions, strict=True)])
    v = pa.array([None if m else x for m, x in zip(np.roll(mask, 13), values, strict=True)])
    return t.set_column(0, "unit", unit).set_column(1, "region_id", region).set_column(
        3, "v", v)


PUBLIC = pa.table({
    "region_id": [f"R{i:02d}" for i in range(12) for _ in range(24)],  # R12, R13 are not public
    "hour": pa.array([h for _ in range(12) for h in range(24)], pa.int32()),
})

CASES = [
    ("count", None, ContributionBounds(max_partitions=3, max_rows_per_partition=2)),
    ("count_distinct", None, ContributionBounds(max_partitions=5)),
    ("sum", "v", ContributionBounds(max_partitions=2, max_rows_per_partition=3,
                                    lower=0.0, upper=8.0)),
    ("mean", "v", ContributionBounds(max_partitions=4, max_rows_per_partition=1,
                                     lower=-2.5, upper=7.25)),
]


def _sorted(t: pa.Table, by) -> pa.Table:
    return t.sort_by([(k, "ascending") for k in by]) if by else t


@pytest.fixture(scope="module")
def spark():
    import pyspark.sql as pyspark  # a dev dependency: missing means a broken set-up, not a skip

    session = (pyspark.SparkSession.builder.master("local[2]").appName("opencity-test")
               .config("spark.ui.enabled", "false")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.sql.shuffle.partitions", "4")
               .getOrCreate())
    yield session
    session.stop()


@pytest.mark.slow  # a Spark job per case (~3 s each on 2 idle cores)
@pytest.mark.parametrize(("statistic", "value", "bounds"), CASES,
                         ids=[c[0] for c in CASES])
@pytest.mark.parametrize("public", [True, False], ids=["public-keys", "all-keys"])
def test_spark_and_duckdb_bounded_aggregates_are_identical(spark, statistic, value, bounds,
                                                           public):
    events = _events()
    by = ["region_id", "hour"]
    kw = {"unit": "unit", "by": by, "bounds": bounds, "statistic": statistic, "value": value,
          "seed": 20261206, "public_keys": PUBLIC if public else None}
    duck = _sorted(bounded_aggregate(events, **kw), by)
    sdf = spark.createDataFrame(events)
    spk = _sorted(bounded_aggregate(sdf, **kw), by)
    assert duck.schema == spk.schema
    assert duck.num_rows > 100
    assert duck.equals(spk), "the engines' bounded aggregates differ"
    # the bounds hold: no unit above L0 keys in total, rows per key within L-inf * units
    n_units = np.array(duck.column("n_units").to_pylist())
    n_rows = np.array(duck.column("n_rows").to_pylist())
    assert (n_rows <= n_units * bounds.max_rows_per_partition).all()
    if public:
        assert set(duck.column("region_id").to_pylist()) <= {f"R{i:02d}" for i in range(12)}


@pytest.mark.slow
def test_spark_and_duckdb_agree_without_keys_and_on_empty_input(spark):
    events = _events(seed=3, n=2000, heavy=0)
    bounds = ContributionBounds(max_partitions=1, max_rows_per_partition=2, lower=0.0,
                                upper=3.0)
    for data in (events, events.slice(0, 0)):
        duck = bounded_aggregate(data, unit="unit", by=[], bounds=bounds, statistic="sum",
                                 value="v", seed=1)
        spk = bounded_aggregate(spark.createDataFrame(data, schema=_spark_schema(data)),
                                unit="unit", by=[], bounds=bounds, statistic="sum", value="v",
                                seed=1)
        assert duck.equals(spk)


def _spark_schema(t: pa.Table) -> str:
    return "unit string, region_id string, hour int, v double"


@pytest.mark.slow
def test_the_seed_changes_the_sample_identically_in_both_engines(spark):
    events = _events(seed=5, n=3000, heavy=3000)
    bounds = ContributionBounds(max_partitions=1, max_rows_per_partition=1)
    kw = {"unit": "unit", "by": ["region_id"], "bounds": bounds, "statistic": "count"}
    a = _sorted(bounded_aggregate(events, seed=1, **kw), ["region_id"])
    b = _sorted(bounded_aggregate(events, seed=2, **kw), ["region_id"])
    assert not a.equals(b), "the L0 sample does not depend on the seed"
    sdf = spark.createDataFrame(events)
    assert _sorted(bounded_aggregate(sdf, seed=2, **kw), ["region_id"]).equals(b)


def test_duckdb_is_the_default_engine_and_a_wrong_engine_is_refused():
    from opencity.errors import ConfigError
    from privacy.dp.backends import backend_for

    assert backend_for(_events(n=10, heavy=0)).name == "duckdb"
    with pytest.raises(ConfigError, match="cannot read"):
        backend_for(object(), DuckDBBackend())
    with pytest.raises(ConfigError, match="Spark DataFrame"):
        backend_for([1, 2, 3])
