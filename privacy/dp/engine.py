"""DP release engine: contribution bounding in an engine (DuckDB by default, or Spark; see
:mod:`privacy.dp.backends`), then vectorised noise for all cells on the driver.

Every public function takes a DuckDB relation or an Arrow table with one row per event, the
name of the privacy-unit column and the group-by columns, and returns an Arrow table with
one row per released key and the columns ``<keys>..., value, noise_std, error_bound_95,
mechanism``. The table's schema metadata (``release_info(table)``) records the statistic,
budget, bounds, mechanism and selection threshold.

Accounting (per privacy unit, for one call): after bounding, one unit touches at most
``max_partitions`` (L0) keys and adds at most ``max_rows_per_partition`` (L-inf) rows to a key.
Each key's statistic is released with budget (epsilon / L0, delta / L0) and sensitivity
L-inf (counts), 1 (distinct-unit counts) or L-inf * max(|lower|, |upper|) (sums), so the whole
call is (epsilon, delta)-DP by basic composition.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from opencity.errors import ConfigError, InternalError
from privacy.dp.backends import STATISTICS, BoundingBackend, BoundingSpec, backend_for
from privacy.dp.backends.duckdb import DuckDBBackend
from privacy.dp.mechanisms import (
    Noise,
    as_random_state,
    count_noise,
    opendp_threshold_privacy,
    real_noise,
    selection_threshold,
)
from privacy.dp.params import ContributionBounds, DPBudget, PartitionSelection

METADATA_KEY = b"opencity.dp"
#: What the engine does to a noisy value before publishing it (the column ``value``); the
#: column ``value_unclamped`` (``with_unclamped=True``) is the value before it.
POST_PROCESSING = {
    "count": "integer noise; negative noisy counts are floored at 0 (biases sums upward)",
    "count_distinct": "integer noise; negative noisy counts are floored at 0 (biases sums "
                      "upward)",
    "sum": "noisy sums are clipped to the sign of the value bounds (biases sums)",
    "mean": "noisy sum / max(noisy count, 1), clipped to [lower, upper]; the bounds' midpoint "
            "when the noisy count is below 1",
}
# One row per unit and key (L-inf = 1) in one key (L0 = 1).
DEFAULT_BOUNDS = ContributionBounds()

_Data = duckdb.DuckDBPyRelation | pa.Table


def bounded_aggregate(
    data: _Data | Any,
    *,
    unit: str,
    by: Sequence[str],
    bounds: ContributionBounds,
    statistic: str = "count",
    value: str | None = None,
    seed: int = 0,
    public_keys: pa.Table | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    backend: BoundingBackend | None = None,
) -> pa.Table:
    """Exact per-key aggregates after contribution bounding (no noise; never publish this).

    Bounding, in the engine that holds the data (:mod:`privacy.dp.backends`: DuckDB by
    default, Spark for a Spark DataFrame): rows with a NULL unit, key or value are ignored;
    values are clamped to [lower, upper] in integer micro-units; each unit keeps at most L-inf
    rows per key and at most L0 keys, both sampled by a keyed SHA-256 of (seed, unit, key, ...)
    so a rerun with the same seed keeps the same rows, in every engine. With ``public_keys``,
    rows whose key is not in that table are dropped before bounding.

    Returns:
        Arrow table ``<by>..., n_units, n_rows, value_sum`` (keys seen in the data only).
    """
    if statistic not in STATISTICS:
        raise ConfigError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    spec = BoundingSpec(unit=unit, by=tuple(by), bounds=bounds, statistic=statistic,
                        value=value, seed=int(seed) % 2**63)
    if backend is None and con is not None:
        backend = DuckDBBackend(con)
    engine = backend_for(data, backend)
    keys = public_keys.select(list(by)) if (public_keys is not None and by) else None
    return engine.bounded_aggregate(data, spec, keys)


def _public_key_table(public_keys: pa.Table, by: Sequence[str]) -> pa.Table:
    missing = [k for k in by if k not in public_keys.column_names]
    if missing:
        raise ConfigError(f"public_keys lacks key column(s) {missing}")
    keys = public_keys.select(list(by))
    n_distinct = keys.group_by(list(by)).aggregate([]).num_rows
    if n_distinct != keys.num_rows:
        raise ConfigError(f"public_keys has duplicate keys ({keys.num_rows - n_distinct} rows)")
    return keys


def _noises(statistic: str, budget: DPBudget, bounds: ContributionBounds,
            rs: Any) -> dict[str, Noise]:
    """The mechanisms of one statistic, each at the per-key budget (epsilon / L0, delta / L0)."""
    l0 = bounds.max_partitions
    eps, delta = budget.epsilon / l0, budget.delta / l0
    linf = bounds.max_rows_per_partition
    if statistic == "count_distinct":
        return {"count": count_noise(eps, delta, 1, rs)}
    if statistic == "count":
        return {"count": count_noise(eps, delta, linf, rs)}
    sum_sens = linf * bounds.max_abs
    if sum_sens <= 0:
        raise ConfigError("sum/mean need bounds with max(|lower|, |upper|) > 0")
    if statistic == "sum":
        return {"sum": real_noise(eps, delta, sum_sens, rs)}
    # mean = noisy sum / noisy count, budget split in half.
    return {
        "sum": real_noise(eps / 2, delta / 2, sum_sens, rs),
        "count": count_noise(eps / 2, delta / 2, linf, rs),
    }


def _release(
    data: _Data,
    *,
    statistic: str,
    unit: str,
    by: Sequence[str],
    budget: DPBudget,
    bounds: ContributionBounds,
    value: str | None = None,
    public_keys: pa.Table | None = None,
    partition_selection: PartitionSelection | None = None,
    seed: int = 0,
    random_state: Any = None,
    con: duckdb.DuckDBPyConnection | None = None,
    backend: BoundingBackend | None = None,
    with_unclamped: bool = False,
) -> pa.Table:
    if not isinstance(budget, DPBudget):
        raise ConfigError(f"budget must be a DPBudget, got {type(budget).__name__}")
    if not isinstance(bounds, ContributionBounds):
        raise ConfigError(f"bounds must be ContributionBounds, got {type(bounds).__name__}")
    by = list(by)
    if public_keys is not None and partition_selection is not None:
        raise ConfigError("give either public_keys or partition_selection, not both")
    if by and public_keys is None and partition_selection is None:
        raise ConfigError(
            f"keys {by} need a public key set (public_keys=...) or private partition selection "
            "(partition_selection=PartitionSelection(...) with delta > 0): keys read from the "
            "data alone would reveal who is in them"
        )
    if partition_selection is not None and budget.delta <= 0:
        raise ConfigError("partition selection needs a budget with delta > 0")
    rs = as_random_state(random_state)
    if public_keys is not None:
        public_keys = _public_key_table(public_keys, by)
    agg = bounded_aggregate(
        data, unit=unit, by=by, bounds=bounds, statistic=statistic, value=value, seed=seed,
        public_keys=public_keys, con=con, backend=backend,
    )
    l0 = bounds.max_partitions
    info: dict[str, Any] = {
        "statistic": statistic,
        "privacy_unit": unit,
        "keys": by,
        "value_column": value,
        "epsilon": budget.epsilon,
        "delta": budget.delta,
        "bounds": {
            "max_partitions": l0,
            "max_rows_per_partition": bounds.max_rows_per_partition,
            "lower": bounds.lower,
            "upper": bounds.upper,
        },
        "key_source": "public" if public_keys is not None or not by else "private_selection",
    }
    value_budget = budget
    if partition_selection is not None:
        # Selection uses all of delta and (unless the value is a distinct count) a share of eps.
        if statistic == "count_distinct":
            value_budget = DPBudget(budget.epsilon)
            sel_eps = budget.epsilon
        else:
            sel_eps = budget.epsilon * partition_selection.epsilon_share
            value_budget = DPBudget(budget.epsilon - sel_eps)
        sel_noise = count_noise(sel_eps / l0, 0.0, 1, rs)
        threshold = selection_threshold(sel_eps / l0, budget.delta / l0)
        # OpenDP's proof of the same threshold mechanism must stay within the budget
        od_eps, od_delta = opendp_threshold_privacy(sel_eps / l0, threshold, l0)
        if od_eps > sel_eps * (1 + 1e-9) or od_delta > budget.delta:
            raise InternalError(
                f"partition selection threshold {threshold} exceeds its budget by OpenDP's "
                f"accounting (epsilon {od_eps:.6g} > {sel_eps:.6g} or delta {od_delta:.3g} > "
                f"{budget.delta:.3g}); this is a bug"
            )
        info["partition_selection"] = {
            "method": "geometric_threshold",
            "accounting_check": "opendp make_laplace_threshold",
            "epsilon": sel_eps,
            "delta": budget.delta,
            "threshold_units": threshold,
            "noise": sel_noise.describe(),
        }
    if public_keys is not None:
        agg = _left_join_keys(public_keys, agg, by)
    elif by:
        # A stable row order, so a seeded random_state gives the same noise to the same key.
        agg = agg.sort_by([(k, "ascending") for k in by])
    noises = _noises(statistic, value_budget, bounds, rs)
    n_units = agg.column("n_units").to_numpy(zero_copy_only=False).astype(np.int64)
    keep = np.ones(agg.num_rows, dtype=bool)
    noisy_units = None
    if partition_selection is not None:
        noisy_units = sel_noise.randomise(n_units)
        keep = noisy_units >= threshold
    agg = agg.filter(pa.array(keep))
    n_rows = agg.column("n_rows").to_numpy(zero_copy_only=False).astype(np.int64)
    sums = agg.column("value_sum").to_numpy(zero_copy_only=False).astype(np.float64)
    if statistic == "count_distinct":
        if noisy_units is not None:
            values = noisy_units[keep]
        else:
            values = noises["count"].randomise(n_units[keep])
        raw = values
        values = np.maximum(values, 0)
        std = np.full(len(values), noises["count"].std)
        bound = np.full(len(values), float(noises["count"].error_bound_95))
    elif statistic == "count":
        raw = noises["count"].randomise(n_rows)
        values = np.maximum(raw, 0)
        std = np.full(len(values), noises["count"].std)
        bound = np.full(len(values), float(noises["count"].error_bound_95))
    elif statistic == "sum":
        raw = noises["sum"].randomise(sums)
        values = _clip_sum(raw, bounds)
        std = np.full(len(values), noises["sum"].std)
        bound = np.full(len(values), float(noises["sum"].error_bound_95))
    elif statistic == "mean":
        s = noises["sum"].randomise(sums)
        c = noises["count"].randomise(n_rows).astype(np.float64)
        denom = np.maximum(c, 1.0)
        mid = (bounds.lower + bounds.upper) / 2
        values = np.where(c >= 1, np.clip(s / denom, bounds.lower, bounds.upper), mid)
        raw = values  # a ratio: no unclamped form (clipping keeps it inside the bounds)
        # Delta-method approximation (documented as approximate in the metadata).
        std = np.sqrt(noises["sum"].std ** 2 + values**2 * noises["count"].std ** 2) / denom
        bound = np.minimum(1.959963984540054 * std, bounds.upper - bounds.lower)
        info["error_bound_note"] = "mean: delta-method approximation from the noisy count"
    else:  # pragma: no cover - validated in bounded_aggregate
        raise InternalError(f"unknown statistic {statistic}")
    info["mechanisms"] = {k: n.describe() for k, n in noises.items()}
    mech_name = "+".join(sorted({n.mechanism for n in noises.values()}))
    cols = {k: agg.column(k) for k in by}
    integer = statistic in ("count", "count_distinct")
    cols["value"] = pa.array(values, pa.int64() if integer else pa.float64())
    if with_unclamped:
        # The same noisy value before the zero floor / sign clip: unbiased for the bounded
        # true value, so sums over cells are unbiased too (post-processing, no extra budget).
        cols["value_unclamped"] = pa.array(raw, pa.int64() if integer else pa.float64())
        info["post_processing"] = POST_PROCESSING.get(statistic, "")
    cols["noise_std"] = pa.array(std, pa.float64())
    cols["error_bound_95"] = pa.array(bound, pa.float64())
    cols["mechanism"] = pa.array([mech_name] * len(values), pa.string())
    out = pa.table(cols)
    return out.replace_schema_metadata({METADATA_KEY: json.dumps(info).encode()})


def _clip_sum(values: np.ndarray, bounds: ContributionBounds) -> np.ndarray:
    if bounds.lower >= 0:
        return np.maximum(values, 0.0)
    if bounds.upper <= 0:
        return np.minimum(values, 0.0)
    return values


def _left_join_keys(keys: pa.Table, agg: pa.Table, by: Sequence[str]) -> pa.Table:
    """Exactly the public key rows (sorted), with zero aggregates where the data has none."""
    agg = agg.cast(pa.schema([keys.schema.field(k) for k in by]
                             + [agg.schema.field(c) for c in agg.column_names if c not in by]))
    joined = keys.join(agg, keys=list(by), join_type="left outer")
    cols = {k: joined.column(k) for k in by}
    for c, typ, zero in (("n_units", pa.int64(), 0), ("n_rows", pa.int64(), 0),
                         ("value_sum", pa.float64(), 0.0)):
        cols[c] = pc.fill_null(joined.column(c).cast(typ), zero)
    return pa.table(cols).sort_by([(k, "ascending") for k in by])


def release_info(table: pa.Table) -> dict[str, Any]:
    """The privacy metadata a release function stored in ``table``'s schema metadata."""
    meta = table.schema.metadata or {}
    if METADATA_KEY not in meta:
        raise ConfigError("this table was not produced by the DP engine (no privacy metadata)")
    return json.loads(meta[METADATA_KEY])


_DOC_ARGS = """
    Args:
        data: DuckDB relation or Arrow table, one row per event (record).
        unit: column holding the privacy unit (subscriber, household, card pseudonym).
        by: group-by key columns; () for one overall value.
        budget: (epsilon, delta) for the whole call, per privacy unit.
        bounds: contribution bounds (L0, L-inf, value clamp).
        public_keys: Arrow table of the key columns; the output has exactly these rows.
        partition_selection: release only keys whose noisy distinct-unit count passes a
            threshold (needs budget.delta > 0; spends all of it).
        seed: integer key of the hash sampling that enforces the bounds (reproducible reruns).
        random_state: int seed or numpy RandomState for the noise; None = cryptographic RNG.
        con: DuckDB connection to use when ``data`` is an Arrow table.
        backend: the engine of the bounding step (privacy.dp.backends); default: the one that
            reads ``data`` (DuckDB for relations and Arrow tables, Spark for Spark DataFrames).
        with_unclamped: also return ``value_unclamped``, the noisy value before the zero
            floor (counts) or sign clip (sums): negative values possible, unbiased.

    Returns:
        Arrow table ``<by>..., value, noise_std, error_bound_95, mechanism``; privacy metadata
        in ``release_info(table)``.
"""


def dp_count(data: _Data, *, unit: str, by: Sequence[str], budget: DPBudget,
             bounds: ContributionBounds = DEFAULT_BOUNDS, **kw: Any) -> pa.Table:
    """DP number of rows per key; each unit adds at most L-inf rows to at most L0 keys."""
    return _release(data, statistic="count", unit=unit, by=by, budget=budget, bounds=bounds, **kw)


def dp_count_distinct(data: _Data, *, unit: str, by: Sequence[str], budget: DPBudget,
                      bounds: ContributionBounds = DEFAULT_BOUNDS, **kw: Any) -> pa.Table:
    """DP number of distinct privacy units per key; each unit counts in at most L0 keys."""
    return _release(data, statistic="count_distinct", unit=unit, by=by, budget=budget,
                    bounds=bounds, **kw)


def dp_sum(data: _Data, *, unit: str, by: Sequence[str], value: str, budget: DPBudget,
           bounds: ContributionBounds, **kw: Any) -> pa.Table:
    """DP sum of ``value`` (clamped to [lower, upper]) per key, in the value's units."""
    return _release(data, statistic="sum", unit=unit, by=by, value=value, budget=budget,
                    bounds=bounds, **kw)


def dp_mean(data: _Data, *, unit: str, by: Sequence[str], value: str, budget: DPBudget,
            bounds: ContributionBounds, **kw: Any) -> pa.Table:
    """DP mean of ``value`` per key = noisy sum / noisy count (half the budget each)."""
    return _release(data, statistic="mean", unit=unit, by=by, value=value, budget=budget,
                    bounds=bounds, **kw)


for _f in (dp_count, dp_count_distinct, dp_sum, dp_mean):
    _f.__doc__ = (_f.__doc__ or "") + "\n" + _DOC_ARGS
del _f
