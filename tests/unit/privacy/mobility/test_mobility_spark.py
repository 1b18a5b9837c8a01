"""The mobility products on Spark (local mode) equal the DuckDB products: the same prepared
counts, the same bounded aggregates and, with the same noise ``random_state``, the same
released tables (keys, columns, values, statements), on a sample day and on a generated day
with a heavy subscriber (10,000 events). An unreachable master is a transient error with
nothing spent."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from privacy.dp import DPBudget
from privacy.mobility import spark_products
from privacy.mobility.products import (
    MobilityConfig,
    compute_products,
    connect,
    home_regions,
    od_transitions,
    prepare_events,
    product_metadata,
)
from privacy.mobility.release import read_cdr, read_towers

DAY = date(2026, 10, 5)

# Spark starts a JVM and runs ~30 small jobs per release: tens of seconds on 2 shared cores.
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def spark():
    import pyspark.sql as pyspark  # a dev dependency: missing means a broken set-up

    session = (pyspark.SparkSession.builder.master("local[2]").appName("opencity-mobility-test")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .getOrCreate())
    yield session
    session.stop()


def sample_day(scale: float, seed: int = 7) -> tuple[pa.Table, pa.Table]:
    """(cdr, towers) of DAY from the project's sample-data generator (as the demo makes)."""
    from sample_data.cdr import cdr_blocks, make_subscribers
    from sample_data.city import make_city

    city = make_city(seed, scale)
    subs = make_subscribers(seed, city, scale, 1)
    return pa.concat_tables(list(cdr_blocks(seed, city, subs, DAY, 1))), city.towers


def _heavy_day() -> tuple[pa.Table, pa.Table]:
    """A generated day: 600 subscribers and one with 10,000 events; NULLs, other days,
    unknown cells, ties in time, naive timestamps (taken as UTC)."""
    rng = np.random.default_rng(5)
    cells = [f"C{i:03d}" for i in range(60)]
    towers = pa.table({
        "cell_id": cells,
        "lat": np.round(rng.uniform(-37.9, -37.7, 60), 5),
        "lon": np.round(rng.uniform(144.8, 145.1, 60), 5),
        "region_id": [f"R{i % 7}" for i in range(60)],
    })
    n = 6_000
    units = [f"pid{i:05d}" for i in rng.integers(0, 600, n)] + ["heavy"] * 10_000
    m = len(units)
    t0 = datetime(DAY.year, DAY.month, DAY.day)
    secs = rng.integers(-3600, 86_400 + 3600, m)
    secs[n:] = rng.integers(0, 600, 10_000) * 60  # the heavy user: many events at one time
    cell = [cells[i] for i in rng.integers(0, 60, m)]
    for i in rng.integers(0, m, 40):
        cell[i] = "UNKNOWN-CELL"
    unit = pa.array([None if i % 997 == 0 else u for i, u in enumerate(units)])
    cdr = pa.table({
        "subscriber_pid": unit,
        "event_time": pa.array([t0 + timedelta(seconds=int(s)) for s in secs],
                               pa.timestamp("us")),
        "cell_id": cell,
    })
    return cdr, towers


def _write(tmp, cdr: pa.Table, towers: pa.Table):
    (tmp / "cdr").mkdir()
    half = cdr.num_rows // 2
    pq.write_table(cdr.slice(0, half), tmp / "cdr" / "part-0.parquet")
    pq.write_table(cdr.slice(half), tmp / "cdr" / "part-1.parquet")
    pacsv.write_csv(towers.select(["cell_id", "lat", "lon", "region_id"]), tmp / "towers.csv")
    return tmp / "cdr", tmp / "towers.csv"


def _both(spark, tmp, cdr, towers, cfg, noise_seed):
    cdr_path, towers_path = _write(tmp, cdr, towers)
    con = connect()
    prep_d = prepare_events(con, read_cdr(con, cdr_path), read_towers(con, towers_path), DAY)
    con2 = connect()
    prep_s = spark_products.prepare_events(
        spark, spark_products.read_cdr(spark, str(cdr_path)), read_towers(con2, towers_path),
        DAY, con=con2)
    try:
        for attr in ("regions", "rows_in", "quarantined", "unknown_cells", "n_units"):
            assert getattr(prep_d, attr) == getattr(prep_s, attr), attr
        out_d = compute_products(prep_d, cfg, random_state=noise_seed)
        out_s = compute_products(prep_s, cfg, random_state=noise_seed)
        # the row-level intermediates agree too (uid, order of moves, keyed home tie-break)
        moves_d = od_transitions(prep_d.events, "uid").to_arrow_table()
        moves_s = od_transitions(prep_s.events, "uid").toArrow()
        assert moves_d.num_rows > 0 and _sorted(moves_d) == _sorted(moves_s)
        homes_d = home_regions(prep_d.events, cfg, "uid").to_arrow_table()
        homes_s = home_regions(prep_s.events, cfg, "uid").toArrow()
        assert _sorted(homes_d) == _sorted(homes_s)
        return prep_d, out_d, out_s
    finally:
        prep_s.cache.unpersist()
        con.close()
        con2.close()


def _sorted(t: pa.Table) -> list:
    return sorted(zip(*(c.to_pylist() for c in t.columns), strict=True))


def _assert_identical(out_d, out_s, cfg):
    assert list(out_d) == list(out_s) == list(cfg.products)
    for name in out_d:
        a, b = out_d[name], out_s[name]
        assert a.schema == b.schema, name  # same columns, types and statement metadata
        assert a.equals(b), name  # same keys in the same order, same noisy values
        assert product_metadata(name, a, cfg) == product_metadata(name, b, cfg)


@slow
def test_sample_day_releases_are_identical(spark, tmp_path):
    cdr, towers = sample_day(2.0)
    cfg = MobilityConfig(budget=DPBudget(1.0), seed=11)
    prep, out_d, out_s = _both(spark, tmp_path, cdr, towers, cfg, noise_seed=3)
    assert prep.n_units > 500
    _assert_identical(out_d, out_s, cfg)


@slow
def test_heavy_subscriber_day_releases_are_identical(spark, tmp_path):
    cdr, towers = _heavy_day()
    cfg = MobilityConfig(budget=DPBudget(2.0), seed=2**40 + 7, max_region_hours=5,
                         max_od_pairs=3)
    prep, out_d, out_s = _both(spark, tmp_path, cdr, towers, cfg, noise_seed=9)
    assert set(prep.quarantined) == {"missing_value", "outside_date", "unknown_cell"}
    assert prep.unknown_cells == ("UNKNOWN-CELL",)
    _assert_identical(out_d, out_s, cfg)


@slow
def test_partition_selection_releases_are_identical(spark, tmp_path):
    """delta > 0: OD keys come from the data through private partition selection."""
    cdr, towers = _heavy_day()
    cfg = MobilityConfig(budget=DPBudget(1.0, 1e-6), seed=4)
    _, out_d, out_s = _both(spark, tmp_path, cdr, towers, cfg, noise_seed=1)
    _assert_identical(out_d, out_s, cfg)


def test_unreachable_master_is_transient_and_spends_nothing(tmp_path, capsys):
    import socket

    from opencity.cli import main
    from privacy.dp import Ledger

    cdr, towers = _heavy_day()
    cdr_path, towers_path = _write(tmp_path, cdr.slice(0, 2000), towers)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    ledger = tmp_path / "state.sqlite"
    from opencity.review.testing import approve_policy

    approve_policy(str(ledger))  # an approved portal: the failure is the unreachable master
    code = main(["mobility", str(cdr_path), "--towers", str(towers_path), "--date",
                 DAY.isoformat(), "--out", str(tmp_path / "out"), "--ledger", str(ledger),
                 "--quiet", "--engine", "spark", "--spark-master", f"spark://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code != 0
    assert f"127.0.0.1:{port}" in err and "nothing was spent" in err
    assert "Traceback" not in err and "pid0" not in err
    assert Ledger(ledger).releases() == []
    assert not (tmp_path / "out" / "privacy.json").exists()


def test_spark_master_needs_the_spark_engine(tmp_path, capsys):
    from opencity.cli import main

    code = main(["mobility", str(tmp_path), "--towers", str(tmp_path / "t.csv"), "--date",
                 DAY.isoformat(), "--out", str(tmp_path / "o"), "--quiet",
                 "--spark-master", "spark://127.0.0.1:7077"])
    assert code != 0 and "--engine spark" in capsys.readouterr().err


@slow
def test_bad_input_on_spark_is_a_clear_terminal_error(spark, tmp_path):
    """A schema that differs from the contract and a path the cluster cannot read: a clear
    DataQualityError (terminal), naming the column or the path, never a Spark traceback."""
    from opencity.errors import DataQualityError

    cdr, towers = _heavy_day()
    bad = cdr.set_column(1, "event_time", pa.array(
        [None if v is None else str(v) for v in cdr.column("event_time").to_pylist()]))
    cdr_path, towers_path = _write(tmp_path, bad.slice(0, 500), towers)
    con = connect()
    try:
        with pytest.raises(DataQualityError, match="event_time has type STRING"):
            spark_products.prepare_events(spark, spark_products.read_cdr(spark, str(cdr_path)),
                                          read_towers(con, towers_path), DAY, con=con)
        with pytest.raises(DataQualityError, match="cannot read the input") as info:
            spark_products.read_cdr(spark, f"file://{tmp_path}/missing/*.parquet")
        assert not info.value.transient
    finally:
        con.close()
