import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from opencity.errors import ConfigError, DataQualityError
from privacy.dp import (
    ContributionBounds,
    DPBudget,
    PartitionSelection,
    bounded_aggregate,
    dp_count,
    dp_count_distinct,
    dp_mean,
    dp_sum,
    release_info,
)


def _events(n_units=300, n_keys=12, per_unit=20, seed=0) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = n_units * per_unit
    return pa.table({
        "unit": np.repeat([f"u{i}" for i in range(n_units)], per_unit),
        "key": [f"k{j}" for j in rng.integers(0, n_keys, n)],
        "v": rng.uniform(-5, 15, n),
    })


KEYS = pa.table({"key": [f"k{j}" for j in range(12)] + ["never_seen"]})


def _heavy_unit(n_events=10_000) -> pa.Table:
    rng = np.random.default_rng(42)
    return pa.table({
        "unit": ["heavy"] * n_events,
        "key": [f"k{j}" for j in rng.integers(0, 12, n_events)],
        "v": np.full(n_events, 1e6),
    })


@pytest.mark.parametrize("statistic,l0,linf", [("count", 3, 4), ("count_distinct", 2, 1),
                                               ("sum", 3, 5), ("mean", 2, 2)])
def test_heavy_unit_changes_no_output_by_more_than_its_bound(statistic, l0, linf):
    """A unit with 10,000 events changes each key by <= L-inf (x max|v|) and <= L0 keys."""
    bounds = ContributionBounds(l0, linf, lower=-5.0, upper=10.0)
    base = _events()
    with_heavy = pa.concat_tables([base, _heavy_unit()])
    kw = {"unit": "unit", "by": ["key"], "bounds": bounds, "statistic": statistic,
              "value": "v" if statistic in ("sum", "mean") else None, "seed": 11}
    a = {r["key"]: r for r in bounded_aggregate(base, **kw).to_pylist()}
    b = {r["key"]: r for r in bounded_aggregate(with_heavy, **kw).to_pylist()}
    zero = {"n_units": 0, "n_rows": 0, "value_sum": 0.0}
    changed = 0
    for key in set(a) | set(b):
        ra, rb = a.get(key, zero), b.get(key, zero)
        d_rows = rb["n_rows"] - ra["n_rows"]
        d_units = rb["n_units"] - ra["n_units"]
        d_sum = rb["value_sum"] - ra["value_sum"]
        assert 0 <= d_units <= 1
        assert 0 <= d_rows <= linf
        assert abs(d_sum) <= linf * bounds.max_abs + 1e-6
        changed += d_units
    assert changed == l0  # the heavy unit touches exactly L0 keys (it has events in all 12)
    # Without bounding it would have added thousands of rows: the test data can tell.
    assert _heavy_unit().num_rows > 100 * linf


def test_bounding_is_reproducible_with_seed_and_varies_without():
    data = _events()
    kw = {"unit": "unit", "by": ["key"], "bounds": ContributionBounds(2, 1), "statistic": "count"}
    a = bounded_aggregate(data, seed=1, **kw).sort_by("key")
    assert a.equals(bounded_aggregate(data, seed=1, **kw).sort_by("key"))
    assert not a.equals(bounded_aggregate(data, seed=2, **kw).sort_by("key"))


def test_bounded_aggregate_matches_plain_sql_when_bounds_are_loose():
    data = _events()
    got = bounded_aggregate(data, unit="unit", by=["key"], statistic="sum", value="v",
                            bounds=ContributionBounds(100, 100, -1e9, 1e9)).sort_by("key")
    con = duckdb.connect()
    con.register("t", data)
    want = con.sql("SELECT key, count(DISTINCT unit) AS n_units, count(*) AS n_rows, sum(v) AS s "
                   "FROM t GROUP BY key ORDER BY key").fetchall()
    assert [(r["key"], r["n_units"], r["n_rows"]) for r in got.to_pylist()] == \
        [w[:3] for w in want]
    assert np.allclose(got.column("value_sum").to_numpy(), [w[3] for w in want])


def test_public_keys_give_exactly_those_rows():
    out = dp_count_distinct(_events(), unit="unit", by=["key"], budget=DPBudget(1.0),
                            bounds=ContributionBounds(12, 1), public_keys=KEYS, random_state=1)
    assert out.column("key").to_pylist() == sorted(KEYS.column("key").to_pylist())
    assert out.column_names == ["key", "value", "noise_std", "error_bound_95", "mechanism"]
    assert out.schema.field("value").type == pa.int64()
    assert min(out.column("value").to_pylist()) >= 0
    info = release_info(out)
    assert info["mechanisms"]["count"]["mechanism"] == "Geometric"
    assert info["mechanisms"]["count"]["epsilon"] == pytest.approx(1 / 12)


def test_rows_outside_public_keys_do_not_use_the_l0_allowance():
    data = pa.table({"unit": ["a"] * 3, "key": ["secret1", "secret2", "k1"]})
    agg = bounded_aggregate(data, unit="unit", by=["key"], bounds=ContributionBounds(1, 1),
                            public_keys=pa.table({"key": ["k1"]}), statistic="count_distinct")
    assert agg.to_pylist() == [{"key": "k1", "n_units": 1, "n_rows": 1, "value_sum": 0.0}]


def test_engine_noise_is_geometric_with_published_std():
    """End to end: noisy - true over 2,000 public keys follows the published distribution."""
    n_keys = 2000
    data = pa.table({"unit": [f"u{i}" for i in range(n_keys * 50)],
                     "key": np.repeat(np.arange(n_keys), 50)})
    keys = pa.table({"key": np.arange(n_keys)})
    out = dp_count_distinct(data, unit="unit", by=["key"], budget=DPBudget(0.5),
                            public_keys=keys, random_state=2024)
    err = np.array(out.column("value").to_pylist()) - 50
    alpha = math.exp(-0.5)
    cdf = np.cumsum([(1 - alpha) / (1 + alpha) * alpha ** abs(k) for k in range(-40, 41)])
    ecdf = np.array([(err <= k).mean() for k in range(-40, 41)])
    # Kolmogorov distance to the two-sided geometric cdf within the 99.9 % DKW band.
    assert np.max(np.abs(ecdf - cdf)) < math.sqrt(math.log(2 / 0.001) / (2 * n_keys))
    assert np.std(err) == pytest.approx(out.column("noise_std")[0].as_py(), rel=0.1)


def test_reproducible_noise_with_random_state():
    kw = {"unit": "unit", "by": ["key"], "value": "v", "budget": DPBudget(1.0),
              "bounds": ContributionBounds(3, 2, -5, 15), "public_keys": KEYS}
    a = dp_sum(_events(), random_state=5, **kw)
    assert a.equals(dp_sum(_events(), random_state=5, **kw))
    assert not a.equals(dp_sum(_events(), random_state=6, **kw))


def test_mean_close_to_truth_with_large_budget():
    data = _events(n_units=2000, per_unit=5)
    out = dp_mean(data, unit="unit", by=["key"], value="v", budget=DPBudget(20.0),
                  bounds=ContributionBounds(5, 1, -5, 15), public_keys=KEYS, random_state=1)
    vals = dict(zip(out.column("key").to_pylist(), out.column("value").to_pylist(), strict=True))
    assert abs(vals["k3"] - 5.0) < 1.0  # uniform(-5, 15) has mean 5
    assert -5 <= vals["never_seen"] <= 15


def test_single_unit_keys_are_essentially_never_released():
    n = 20_000
    data = pa.table({"unit": [f"u{i}" for i in range(n)], "key": [f"k{i}" for i in range(n)]})
    out = dp_count_distinct(data, unit="unit", by=["key"], budget=DPBudget(1.0, 1e-6),
                            partition_selection=PartitionSelection(), random_state=8)
    assert out.num_rows == 0
    # With a large delta the release rate is measurable and stays below delta (per key, L0=1).
    out = dp_count_distinct(data, unit="unit", by=["key"], budget=DPBudget(1.0, 0.02),
                            partition_selection=PartitionSelection(), random_state=8)
    assert out.num_rows / n <= 0.02 + 4 * math.sqrt(0.02 / n)
    info = release_info(out)
    assert info["key_source"] == "private_selection"
    assert info["partition_selection"]["threshold_units"] >= 2


def test_popular_keys_are_released_by_selection():
    data = pa.table({"unit": [f"u{i}" for i in range(5000)],
                     "key": [f"k{i % 5}" for i in range(5000)] })
    out = dp_count(data, unit="unit", by=["key"], budget=DPBudget(1.0, 1e-6),
                   partition_selection=PartitionSelection(0.5), random_state=8)
    assert out.column("key").to_pylist() == [f"k{i}" for i in range(5)]
    assert all(abs(v - 1000) < 100 for v in out.column("value").to_pylist())


def test_delta_gives_gaussian_mechanisms():
    out = dp_count(_events(), unit="unit", by=["key"], budget=DPBudget(1.0, 1e-6),
                   bounds=ContributionBounds(3, 2), public_keys=KEYS, random_state=1)
    assert set(out.column("mechanism").to_pylist()) == {"GaussianDiscrete"}
    out = dp_sum(_events(), unit="unit", by=["key"], value="v", budget=DPBudget(1.0, 1e-6),
                 bounds=ContributionBounds(3, 2, -5, 15), public_keys=KEYS, random_state=1)
    assert set(out.column("mechanism").to_pylist()) == {"GaussianAnalytic"}


def test_private_keys_without_selection_are_refused():
    with pytest.raises(ConfigError, match="public key set"):
        dp_count(_events(), unit="unit", by=["key"], budget=DPBudget(1.0))
    with pytest.raises(ConfigError, match="delta > 0"):
        dp_count(_events(), unit="unit", by=["key"], budget=DPBudget(1.0),
                 partition_selection=PartitionSelection())


def test_bad_inputs_name_the_problem():
    with pytest.raises(DataQualityError, match="missing column"):
        dp_count(_events(), unit="nope", by=["key"], budget=DPBudget(1.0), public_keys=KEYS)
    with pytest.raises(ConfigError, match="duplicate"):
        dp_count(_events(), unit="unit", by=["key"], budget=DPBudget(1.0),
                 public_keys=pa.table({"key": ["a", "a"]}))
    with pytest.raises(ConfigError, match="value column"):
        bounded_aggregate(_events(), unit="unit", by=["key"], statistic="sum",
                          bounds=ContributionBounds())


def test_accepts_duckdb_relation():
    con = duckdb.connect()
    rel = con.sql("SELECT 'u' || (i % 50) AS unit, 'k' || (i % 3) AS key FROM range(600) t(i)")
    out = dp_count_distinct(rel, unit="unit", by=["key"], budget=DPBudget(50.0),
                            bounds=ContributionBounds(3, 1),
                            public_keys=pa.table({"key": ["k0", "k1", "k2"]}), random_state=0)
    assert all(abs(v - 50) <= 3 for v in out.column("value").to_pylist())
