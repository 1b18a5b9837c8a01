"""The Spark engine on a real standalone cluster (master + 2 workers from PySpark's own
launcher, 127.0.0.1): the bounded aggregates equal the embedded DuckDB engine's, and an
unreachable master is a transient EngineError with nothing computed."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pytest

from privacy.dp import ContributionBounds
from privacy.dp.engine import bounded_aggregate

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from spark_cluster import standalone_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _events(n: int = 50_000) -> pa.Table:
    rng = np.random.default_rng(11)
    units = [f"s{i}" for i in rng.integers(0, 3000, n)] + ["heavy"] * 10_000
    m = len(units)
    return pa.table({
        "unit": units,
        "region_id": [f"R{i:02d}" for i in rng.integers(0, 20, m)],
        "hour": rng.integers(0, 24, m).astype(np.int32),
        "v": np.round(rng.gamma(2.0, 3.0, m), 2),
    })


@pytest.fixture(scope="module")
def cluster_session(tmp_path_factory):
    from pyspark.sql import SparkSession

    with standalone_cluster(tmp_path_factory.mktemp("spark"), workers=2) as master:
        session = (SparkSession.builder.master(master).appName("opencity-cluster-test")
                   .config("spark.driver.bindAddress", "127.0.0.1")
                   .config("spark.driver.host", "127.0.0.1")
                   .config("spark.ui.enabled", "false")
                   .config("spark.executor.memory", "768m")
                   .config("spark.sql.shuffle.partitions", "4")
                   .getOrCreate())
        try:
            yield session
        finally:
            session.stop()


@pytest.mark.parametrize(("statistic", "value", "bounds"), [
    ("count_distinct", None, ContributionBounds(max_partitions=6)),
    ("sum", "v", ContributionBounds(max_partitions=3, max_rows_per_partition=4, lower=0.0,
                                    upper=20.0)),
], ids=["count_distinct", "sum"])
def test_cluster_bounded_aggregates_equal_duckdb(cluster_session, statistic, value, bounds):
    events = _events()
    by = ["region_id", "hour"]
    kw = {"unit": "unit", "by": by, "bounds": bounds, "statistic": statistic, "value": value,
          "seed": 7}
    sdf = cluster_session.createDataFrame(events).repartition(6)
    spark_out = bounded_aggregate(sdf, **kw).sort_by([(k, "ascending") for k in by])
    duck_out = bounded_aggregate(events, **kw).sort_by([(k, "ascending") for k in by])
    assert spark_out.num_rows == 20 * 24
    assert spark_out.equals(duck_out)
    # the work ran on the cluster's executors, not in the driver
    assert cluster_session.sparkContext.master.startswith("spark://127.0.0.1:")


def test_unreachable_master_is_transient_and_computes_nothing(tmp_path):
    """A master nobody listens on: the session cannot start; the engine says so, retryably."""
    import socket

    from opencity.errors import EngineError
    from privacy.dp.backends.spark import spark_session

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EngineError) as info:
        spark_session(f"spark://127.0.0.1:{port}", app_name="opencity-unreachable",
                      connect_timeout_s=20)
    assert info.value.transient
    assert "did not answer" in str(info.value)
