"""Engines for the DP engine's heavy step: contribution bounding and per-key aggregation.

The DP engine (:mod:`privacy.dp.engine`) splits a release into

1. **bounding and aggregation** (row-level, where the data lives): NULLs dropped, values clamped,
   keys outside the public key set dropped, each unit's rows per key capped at L-inf and its keys
   capped at L0, then per key ``n_units``, ``n_rows``, ``value_sum``;
2. **noise, selection, statement** (aggregates only, on the driver): unchanged for every engine.

Step 1 sits behind :class:`BoundingBackend` (PipelineDP's Local/Beam/Spark split is the model).
:class:`~privacy.dp.backends.duckdb.DuckDBBackend` is the embedded default;
:class:`~privacy.dp.backends.spark.SparkBackend` runs the same semantics on Spark DataFrames
inside an operator's cluster. Both sample by the same **keyed SHA-256** of the seed, the unit
and the key (and, for sums, the value in micro-units), and both sum values as integers in
micro-units (1e-6 of the value's unit), so the bounded, pre-noise aggregates of the two engines
are identical, bit for bit, for the same input and seed. Only those aggregates (Arrow) come
back to the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from opencity.errors import ConfigError
from privacy.dp.params import ContributionBounds

STATISTICS = ("count", "count_distinct", "sum", "mean")
# Values are summed as integers in micro-units, so every engine's sum is exact and identical.
MICRO = 1_000_000
# The separator of the hashed fields (ASCII unit separator; never in a pseudonym or a key).
SEP = "\x1f"


@dataclass(frozen=True)
class BoundingSpec:
    """What to bound and aggregate (validated by :func:`privacy.dp.engine.bounded_aggregate`).

    Attributes:
        unit: the privacy-unit column.
        by: the key columns (() for one overall aggregate).
        bounds: L0 (keys per unit), L-inf (rows per unit and key) and the value clamp.
        statistic: one of ``STATISTICS``.
        value: the value column for ``sum``/``mean``.
        seed: the integer key of the SHA-256 sampling (the same seed keeps the same rows).
        one_row_per_unit: a hint that the input has at most one row per unit by
            construction (e.g. one row per subscriber after a GROUP BY unit), so the
            per-unit grouping and the L0/L-inf sampling have nothing to remove. A backend
            may use it to skip them only after CHECKING it on the data (at most one row
            per unit after the NULL and key filters); if the check fails it bounds as
            usual. Never trusted: the bounded aggregates are the same with or without it.
    """

    unit: str
    by: tuple[str, ...]
    bounds: ContributionBounds
    statistic: str
    value: str | None
    seed: int
    one_row_per_unit: bool = False

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ConfigError(f"statistic must be one of {STATISTICS}, got {self.statistic!r}")
        if self.statistic in ("sum", "mean") and not self.value:
            raise ConfigError(f"statistic {self.statistic!r} needs a value column")

    @property
    def micro_bounds(self) -> tuple[int, int]:
        """The value clamp in micro-units, inside [lower, upper] (ceil / floor)."""
        import math

        return math.ceil(self.bounds.lower * MICRO), math.floor(self.bounds.upper * MICRO)

    @property
    def columns(self) -> list[str]:
        return [self.unit, *self.by, *([self.value] if self.value else [])]


# The schema every backend returns after its key columns.
AGGREGATE_FIELDS = [pa.field("n_units", pa.int64()), pa.field("n_rows", pa.int64()),
                    pa.field("value_sum", pa.float64())]


@runtime_checkable
class BoundingBackend(Protocol):
    """An engine for step 1. ``data`` is whatever the engine reads (a DuckDB relation or an
    Arrow table for DuckDB; a Spark DataFrame for Spark); ``public_keys`` is an Arrow table of
    the key columns or None. Returns an Arrow table ``<by>..., n_units, n_rows, value_sum``
    with one row per key seen in the bounded data (never published: no noise)."""

    name: str

    def accepts(self, data: Any) -> bool: ...

    def bounded_aggregate(self, data: Any, spec: BoundingSpec,
                          public_keys: pa.Table | None) -> pa.Table: ...


def backend_for(data: Any, backend: BoundingBackend | None = None) -> BoundingBackend:
    """The backend to use: the one given, else the one that reads ``data`` (DuckDB for DuckDB
    relations and Arrow tables, Spark for Spark DataFrames)."""
    if backend is not None:
        if not backend.accepts(data):
            raise ConfigError(f"the {backend.name} engine cannot read {type(data).__name__}")
        return backend
    from privacy.dp.backends.duckdb import DuckDBBackend

    duck = DuckDBBackend()
    if duck.accepts(data):
        return duck
    if type(data).__module__.startswith("pyspark."):
        from privacy.dp.backends.spark import SparkBackend

        return SparkBackend()
    raise ConfigError(
        f"data must be a DuckDB relation, an Arrow table or a Spark DataFrame, got "
        f"{type(data).__name__}")
