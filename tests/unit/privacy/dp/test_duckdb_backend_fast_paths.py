"""The DuckDB bounding engine's fast paths give the SAME bounded aggregates as its general
path: the checked one-row-per-unit hint (home region, gyration) and ENUM-coded keys (the
mobility products' region ids). A wrong hint is caught by the check, never trusted."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from privacy.dp import ContributionBounds
from privacy.dp.backends import BoundingSpec
from privacy.dp.backends.duckdb import DuckDBBackend
from privacy.dp.engine import bounded_aggregate

STATS = [
    ("count", None, ContributionBounds(max_partitions=1, max_rows_per_partition=2)),
    ("count_distinct", None, ContributionBounds(max_partitions=1)),
    ("sum", "v", ContributionBounds(max_partitions=1, max_rows_per_partition=1,
                                    lower=0.0, upper=8.0)),
    ("mean", "v", ContributionBounds(max_partitions=2, max_rows_per_partition=3,
                                     lower=-2.5, upper=7.25)),
]
PUBLIC = pa.table({"region_id": [f"R{i}" for i in range(5)]})  # R5, R6 are not public


def _per_unit(n: int = 3_000, seed: int = 1) -> pa.Table:
    """One row per unit (as after GROUP BY unit), with NULL keys and values."""
    rng = np.random.default_rng(seed)
    region = [None if i % 97 == 0 else f"R{r}" for i, r in enumerate(rng.integers(0, 7, n))]
    v = [None if i % 89 == 0 else float(x) for i, x in
         enumerate(np.round(rng.normal(4, 5, n), 3))]
    return pa.table({"unit": pa.array(np.arange(n), pa.int64()), "region_id": region, "v": v})


def _agg(data, stat, value, bounds, by, keys, hint):
    return bounded_aggregate(data, unit="unit", by=by, bounds=bounds, statistic=stat,
                             value=value, seed=11, public_keys=keys,
                             backend=DuckDBBackend(one_row_per_unit=hint))


def _sorted(t: pa.Table, by) -> pa.Table:
    return t.sort_by([(k, "ascending") for k in by]) if by else t


@pytest.mark.parametrize(("stat", "value", "bounds"), STATS, ids=[s[0] for s in STATS])
@pytest.mark.parametrize(("by", "keys"), [(["region_id"], PUBLIC), ([], None)],
                         ids=["public-keys", "overall"])
def test_one_row_per_unit_hint_gives_the_same_aggregates(stat, value, bounds, by, keys):
    data = _per_unit()
    fast = _agg(data, stat, value, bounds, by, keys, hint=True)
    general = _agg(data, stat, value, bounds, by, keys, hint=False)
    assert fast.schema == general.schema
    assert _sorted(fast, by).equals(_sorted(general, by))


@pytest.mark.parametrize(("stat", "value", "bounds"), STATS, ids=[s[0] for s in STATS])
def test_a_wrong_hint_is_caught_and_the_unit_is_bounded(stat, value, bounds):
    """Unit 0 has 40 rows in every region: with the hint trusted it would count in all of
    them (and with 40 rows each); the check sees the duplicates and bounds as usual."""
    data = _per_unit()
    heavy = pa.table({"unit": pa.array([0] * 200, pa.int64()),
                      "region_id": [f"R{i % 5}" for i in range(200)],
                      "v": [7.0] * 200})
    data = pa.concat_tables([data, heavy])
    by = ["region_id"]
    got = _agg(data, stat, value, bounds, by, PUBLIC, hint=True)
    want = _agg(data, stat, value, bounds, by, PUBLIC, hint=False)
    assert _sorted(got, by).equals(_sorted(want, by))
    # the bound holds: unit 0 adds at most L0 keys x L-inf rows in all
    plain = _agg(_per_unit(), stat, value, bounds, by, PUBLIC, hint=False)
    extra = sum(got.column("n_rows").to_pylist()) - sum(plain.column("n_rows").to_pylist())
    assert extra <= bounds.max_partitions * bounds.max_rows_per_partition


def test_duplicates_only_in_filtered_rows_keep_the_fast_path_exact():
    """The check runs after the NULL and public-key filters, where the rule applies."""
    data = _per_unit()
    dup = pa.table({"unit": pa.array([5, 6], pa.int64()), "region_id": ["R6", None],
                    "v": [1.0, 2.0]})  # R6 is not public; None is dropped
    data = pa.concat_tables([data, dup])
    kw = ("count_distinct", None, ContributionBounds(1), ["region_id"], PUBLIC)
    assert _sorted(_agg(data, *kw, hint=True), ["region_id"]).equals(
        _sorted(_agg(data, *kw, hint=False), ["region_id"]))


def test_the_hint_on_the_spec_is_used_the_same_way():
    data = _per_unit()
    spec = BoundingSpec(unit="unit", by=("region_id",), bounds=ContributionBounds(1),
                        statistic="count_distinct", value=None, seed=3,
                        one_row_per_unit=True)
    plain = BoundingSpec(unit="unit", by=("region_id",), bounds=ContributionBounds(1),
                         statistic="count_distinct", value=None, seed=3)
    got = DuckDBBackend().bounded_aggregate(data, spec, PUBLIC)
    want = DuckDBBackend().bounded_aggregate(data, plain, PUBLIC)
    assert _sorted(got, ["region_id"]).equals(_sorted(want, ["region_id"]))


@pytest.mark.parametrize(("stat", "value", "bounds"), [
    ("count_distinct", None, ContributionBounds(max_partitions=2)),
    ("sum", "v", ContributionBounds(max_partitions=2, max_rows_per_partition=2,
                                    lower=0.0, upper=8.0)),
], ids=["count_distinct", "sum"])
def test_enum_keys_equal_text_keys(stat, value, bounds):
    """Region ids as a DuckDB ENUM (sorted like the text): the same sampled rows and keys as
    the text, returned as plain strings; a public key outside the ENUM matches nothing."""
    rng = np.random.default_rng(4)
    n = 6_000
    units = rng.integers(0, 300, n)
    regions = [f"R{r}" for r in rng.integers(0, 7, n)]
    v = np.round(rng.normal(4, 3, n), 3)
    text = pa.table({"unit": pa.array(units, pa.int64()), "region_id": regions, "v": v})
    con = duckdb.connect()
    enum = "ENUM(" + ", ".join(f"'R{i}'" for i in range(7)) + ")"
    coded = con.from_arrow(text).select(f"unit, region_id::{enum} AS region_id, v")
    keys = pa.table({"region_id": ["R0", "R2", "R3", "R5", "NOT-A-REGION"]})
    got = bounded_aggregate(coded, unit="unit", by=["region_id"], bounds=bounds,
                            statistic=stat, value=value, seed=2, public_keys=keys)
    want = bounded_aggregate(text, unit="unit", by=["region_id"], bounds=bounds,
                             statistic=stat, value=value, seed=2, public_keys=keys)
    assert got.schema.field("region_id").type == pa.string()
    assert _sorted(got, ["region_id"]).equals(_sorted(want, ["region_id"]))
    assert set(got.column("region_id").to_pylist()) == {"R0", "R2", "R3", "R5"}
