"""Differentially private aggregates with contribution bounding, and the budget ledger.

Usage (e.g. a KPI: DP mean daily water use per district, privacy unit = household)::

    import duckdb
    from privacy.dp import ContributionBounds, DPBudget, dp_mean, release_info

    con = duckdb.connect()
    readings = con.read_parquet("readings/*.parquet")          # household_pid, district_id, kwh
    districts = con.read_csv("districts.csv").select("district_id").to_arrow_table()
    out = dp_mean(
        readings, unit="household_pid", by=["district_id"], value="kwh",
        budget=DPBudget(epsilon=0.5),                          # per household, this release
        bounds=ContributionBounds(max_partitions=1, max_rows_per_partition=31,
                                  lower=0.0, upper=50.0),      # kWh per reading
        public_keys=districts,                                 # output has exactly these rows
        seed=20261005,                                         # hash sampling of the bounds
    )
    out.column_names  # ['district_id', 'value', 'noise_std', 'error_bound_95', 'mechanism']
    release_info(out)  # statistic, budget, bounds, mechanisms, selection threshold

Functions (all take ``data`` = DuckDB relation or Arrow table, ``unit``, ``by``, ``budget``,
``bounds`` and either ``public_keys`` or ``partition_selection``):

* :func:`dp_count` - rows per key (each unit adds <= L-inf rows to <= L0 keys);
* :func:`dp_count_distinct` - distinct units per key (households, cards, subscribers);
* :func:`dp_sum` - sum of a value clamped to [lower, upper];
* :func:`dp_mean` - noisy sum / noisy count, half the budget each;
* :func:`bounded_aggregate` - the exact aggregates after bounding (tests, audits; never
  publish).

Contracts:

* Contribution bounding runs in DuckDB before aggregation: at most L0 keys per unit and L-inf
  rows per unit and key, sampled by ``hash(unit, key, seed)``.
* Noise (:mod:`privacy.dp.mechanisms`): OpenDP's exact discrete Laplace (Geometric) for
  counts, diffprivlib's Snapping for sums and means, discrete Gaussian (OpenDP) /
  GaussianAnalytic (diffprivlib) when ``delta > 0`` with public keys; drawn for all keys at
  once. Each key gets (epsilon / L0, delta / L0).
* Keys come from a public table (``public_keys``: output has exactly those rows, zeros where
  the data has none) or pass private selection (``partition_selection=PartitionSelection()``,
  needs ``delta > 0``): a key is released only if its Geometric-noised distinct-unit count
  reaches a threshold that a single unit reaches with probability <= delta / L0.
* Post-processing: counts are integers >= 0; sums of non-negative values are >= 0; means are
  clamped to [lower, upper]. Every row carries ``noise_std`` and ``error_bound_95`` (for
  counts and sums exact for the mechanism; for means a delta-method approximation).
* ``random_state`` (int or numpy RandomState) makes noise reproducible in tests; ``None``
  uses a cryptographic generator (production).

Budget: :class:`privacy.dp.ledger.Ledger` (SQLite or PostgreSQL) keeps one account per
person, (privacy unit, period), across every dataset, capped by the stored policy
(privacy/policy.yaml); :meth:`~privacy.dp.ledger.Ledger.release` runs the release protocol
(recorded -> check -> compute -> spend -> artefacts; reruns return the recorded release).
"""

from importlib import import_module
from typing import Any

# Lazy exports (PEP 562): the ledger and parameters import without diffprivlib/scikit-learn,
# which keeps ledger-only processes (and their spawned workers) light.
_EXPORTS = {
    "bounded_aggregate": "privacy.dp.engine",
    "dp_count": "privacy.dp.engine",
    "dp_count_distinct": "privacy.dp.engine",
    "dp_mean": "privacy.dp.engine",
    "dp_sum": "privacy.dp.engine",
    "release_info": "privacy.dp.engine",
    "Ledger": "privacy.dp.ledger",
    "LedgerRelease": "privacy.dp.ledger",
    "ReleaseOutcome": "privacy.dp.ledger",
    "ContributionBounds": "privacy.dp.params",
    "DPBudget": "privacy.dp.params",
    "PartitionSelection": "privacy.dp.params",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'privacy.dp' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [
    "ContributionBounds",
    "DPBudget",
    "Ledger",
    "LedgerRelease",
    "PartitionSelection",
    "ReleaseOutcome",
    "bounded_aggregate",
    "dp_count",
    "dp_count_distinct",
    "dp_mean",
    "dp_sum",
    "release_info",
]
