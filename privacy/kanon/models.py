"""Privacy models (frozen, validated): k-anonymity, l-diversity, t-closeness.

Definitions follow ARX so results can be compared with it:

* k-anonymity: every released equivalence class (records sharing all generalized
  quasi-identifiers) holds at least ``k`` records.
* distinct-l-diversity: at least ``l`` distinct sensitive values per class.
* entropy-l-diversity: Shannon entropy of the class's sensitive values >= log2(l).
* recursive-(c,l)-diversity: with class frequencies r1 >= r2 >= ... >= rm,
  r1 < c * (rl + ... + rm) (and m >= l).
* t-closeness: Earth Mover's Distance between a class's sensitive distribution and the
  whole table's is <= t; equal ground distance (half the L1 distance) for categorical
  attributes, ordered distance (sum of |cumulative differences| / (m - 1)) for ordered ones.

Records of classes that violate a model are suppressed (all quasi-identifiers set to '*')
as long as their number stays within ``floor(max_suppression * rows)`` (ARX's rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from opencity.errors import ConfigError

LVariant = Literal["distinct", "entropy", "recursive"]
TDistance = Literal["auto", "equal", "ordered"]


def _check_number(name: str, value: object, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class KAnonymity:
    """k-anonymity with record suppression.

    Args:
        k: minimum class size, an integer >= 2.
        quasi_identifiers: QI column names (non-empty, distinct).
        max_suppression: share of all input records that may be suppressed, in [0, 1).
        unit: column naming the privacy unit of each record (e.g. a requester pseudonym).
            When set, k counts DISTINCT UNITS per class (not records), l-diversity is
            counted over units (see ``privacy.kanon.persons``) and the column is not
            released. None: records are the units (ARX's record-level k).
    """

    k: int
    quasi_identifiers: tuple[str, ...]
    max_suppression: float = 0.0
    unit: str | None = None

    def __post_init__(self) -> None:
        _check_number("k", self.k, integer=True)
        if self.k < 2:
            raise ConfigError(f"k must be at least 2 (k=1 protects nothing), got {self.k}")
        qis = self.quasi_identifiers
        if isinstance(qis, str) or not isinstance(qis, (tuple, list)):
            raise ConfigError("quasi_identifiers must be a tuple of column names")
        object.__setattr__(self, "quasi_identifiers", tuple(qis))
        if not self.quasi_identifiers:
            raise ConfigError("at least one quasi-identifier is needed")
        if any(not isinstance(q, str) or not q for q in self.quasi_identifiers):
            raise ConfigError("quasi-identifier names must be non-empty strings")
        dup = {q for q in self.quasi_identifiers if self.quasi_identifiers.count(q) > 1}
        if dup:
            raise ConfigError(f"quasi-identifier listed twice: {sorted(dup)}")
        s = _check_number("max_suppression", self.max_suppression)
        if not 0.0 <= s < 1.0:
            raise ConfigError(
                f"max_suppression must be in [0, 1) (a share of records, e.g. 0.04), got {s}"
            )
        if self.unit is not None:
            if not isinstance(self.unit, str) or not self.unit:
                raise ConfigError("unit must be the name of the privacy-unit column")
            if self.unit in self.quasi_identifiers:
                raise ConfigError(f"the privacy-unit column {self.unit!r} cannot also be a "
                                  "quasi-identifier")


@dataclass(frozen=True)
class LDiversity:
    """l-diversity of one sensitive attribute.

    Args:
        sensitive: sensitive column name (not a quasi-identifier).
        l: required diversity (integer >= 2 for distinct/recursive; number >= 1 for entropy).
        variant: "distinct", "entropy" or "recursive".
        c: the c of recursive-(c,l)-diversity (> 0); ignored otherwise.
    """

    sensitive: str
    l: float
    variant: LVariant = "distinct"
    c: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sensitive, str) or not self.sensitive:
            raise ConfigError("l-diversity needs the name of the sensitive column")
        if self.variant not in ("distinct", "entropy", "recursive"):
            raise ConfigError(
                f"l-diversity variant must be distinct, entropy or recursive, got {self.variant!r}"
            )
        value = _check_number("l", self.l, integer=self.variant != "entropy")
        minimum = 1.0 if self.variant == "entropy" else 2.0
        if value < minimum:
            raise ConfigError(
                f"l must be at least {minimum:g} for {self.variant} l-diversity, got {self.l}")
        if self.variant == "recursive":
            if self.c is None:
                raise ConfigError("recursive-(c,l)-diversity needs c (e.g. --c 3)")
            c = _check_number("c", self.c)
            if c <= 0:
                raise ConfigError(f"c must be positive, got {self.c}")
        elif self.c is not None:
            _check_number("c", self.c)


@dataclass(frozen=True)
class TCloseness:
    """t-closeness of one sensitive attribute.

    Args:
        sensitive: sensitive column name.
        t: maximum Earth Mover's Distance, in [0, 1].
        distance: "equal", "ordered" or "auto" (ordered for numeric columns).
    """

    sensitive: str
    t: float
    distance: TDistance = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.sensitive, str) or not self.sensitive:
            raise ConfigError("t-closeness needs the name of the sensitive column")
        t = _check_number("t", self.t)
        if not 0.0 <= t <= 1.0:
            raise ConfigError(f"t must be in [0, 1], got {self.t}")
        if self.distance not in ("auto", "equal", "ordered"):
            raise ConfigError(
                f"t-closeness distance must be auto, equal or ordered, got {self.distance!r}"
            )
