"""Frozen, validated privacy parameters of the DP engine.

Every class validates its fields in ``__post_init__`` (type, range, NaN, inf) and raises
:class:`opencity.errors.ConfigError` with the offending field and value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

from opencity.errors import ConfigError


def _check_real(owner: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{owner}.{name} must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise ConfigError(f"{owner}.{name} must be finite, got {value!r}")
    return value


def _check_int(owner: str, name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{owner}.{name} must be >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class DPBudget:
    """A privacy budget (epsilon, delta) for one release, per privacy unit.

    Attributes:
        epsilon: privacy loss, finite and > 0 (per privacy unit, per release).
        delta: failure probability, 0 <= delta < 1. 0 means pure epsilon-DP.
    """

    epsilon: float
    delta: float = 0.0

    def __post_init__(self) -> None:
        eps = _check_real("DPBudget", "epsilon", self.epsilon)
        if eps <= 0:
            raise ConfigError(f"DPBudget.epsilon must be > 0, got {self.epsilon!r}")
        delta = _check_real("DPBudget", "delta", self.delta)
        if not 0 <= delta < 1:
            raise ConfigError(f"DPBudget.delta must be in [0, 1), got {self.delta!r}")
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "delta", delta)

    def scaled(self, share: float) -> DPBudget:
        """This budget multiplied by ``share`` (0 < share <= 1), epsilon and delta alike."""
        share = _check_real("DPBudget.scaled", "share", share)
        if not 0 < share <= 1:
            raise ConfigError(f"a budget share must be in (0, 1], got {share!r}")
        return DPBudget(self.epsilon * share, self.delta * share)

    def check_delta_for_units(self, n_units: int) -> None:
        """Raise ConfigError unless 0 < delta < 1/n_units (the usual requirement for delta)."""
        if n_units > 0 and not 0 < self.delta < 1.0 / n_units:
            raise ConfigError(
                f"delta={self.delta!r} must be in (0, 1/n) = (0, {1.0 / n_units:.3g}) where n = "
                f"{n_units} privacy units in the input; choose a smaller delta"
            )


@dataclass(frozen=True)
class ContributionBounds:
    """How much one privacy unit may contribute, enforced on the data before aggregation.

    Attributes:
        max_partitions: L0, the most output rows (group-by keys) one unit may touch.
        max_rows_per_partition: L-infinity, the most input rows one unit adds to one key.
        lower: smallest value kept for sums/means (values are clamped to [lower, upper]).
        upper: largest value kept for sums/means.
    """

    max_partitions: int = 1
    max_rows_per_partition: int = 1
    lower: float = 0.0
    upper: float = 1.0

    def __post_init__(self) -> None:
        _check_int("ContributionBounds", "max_partitions", self.max_partitions)
        _check_int("ContributionBounds", "max_rows_per_partition", self.max_rows_per_partition)
        lo = _check_real("ContributionBounds", "lower", self.lower)
        hi = _check_real("ContributionBounds", "upper", self.upper)
        if lo > hi:
            raise ConfigError(f"ContributionBounds.lower={lo} is above upper={hi}")
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)

    @property
    def max_abs(self) -> float:
        """Largest absolute value one clamped row can add to a sum."""
        return max(abs(self.lower), abs(self.upper))


@dataclass(frozen=True)
class PartitionSelection:
    """Private selection of group-by keys found in the data (no public key set).

    A key is released only if its noisy count of distinct units reaches a threshold chosen
    so that a key held by a single unit is released with probability at most delta (split
    over the L0 keys one unit can touch). It consumes all of the budget's delta.

    Attributes:
        epsilon_share: share of epsilon spent on selecting keys when the released statistic
            is not itself a distinct-unit count (for such counts the same noisy count is used
            for selection and release and no split happens). 0 < share < 1.
    """

    epsilon_share: float = 0.5

    def __post_init__(self) -> None:
        share = _check_real("PartitionSelection", "epsilon_share", self.epsilon_share)
        if not 0 < share < 1:
            raise ConfigError(f"PartitionSelection.epsilon_share must be in (0, 1), got {share}")
        object.__setattr__(self, "epsilon_share", share)
