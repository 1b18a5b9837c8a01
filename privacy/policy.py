"""The stored release policy (privacy/policy.yaml): budgets per person, parameters per dataset.

Usage::

    from privacy.policy import load_policy

    policy = load_policy()                       # $OPENCITY_POLICY or privacy/policy.yaml
    mob = policy.dataset("opencity-cdr-mobility-daily")
    mob.spend                                    # {"subscriber": DPBudget(1.0, 1e-07)}
    policy.unit("subscriber").epsilon            # 32.0 per subscriber per calendar month
    mob.tightened(epsilon=0.5)                   # a caller may ask for less, never for more
    micro = policy.dataset("opencity-311-requests-microdata")
    micro.k, micro.quasi_identifiers, micro.sensitive
    policy.hash                                  # sha256 of the canonical form, recorded
                                                 # with every spend and published partition

Contracts:

* Everything is validated on load; an error names the file and the key (``datasets.X.epsilon``)
  and nothing runs (:class:`opencity.errors.ConfigError`).
* Units are the known privacy units (:data:`KNOWN_UNITS`); each has a budget per period for
  the whole portal. Datasets name the unit(s) they protect; DP datasets give a per-release
  (epsilon, delta) per unit; k-anonymous datasets k, l and a suppression limit; suppressed
  tables a threshold. Every published column has a role (:data:`ROLES`).
* :meth:`DatasetPolicy.tightened` applies caller overrides that may only tighten; a looser
  value raises ConfigError naming the key, the policy value and the request.
* :meth:`DatasetPolicy.params` is the canonical privacy-parameter dict of a release (what the
  release registry compares between runs of one partition).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError
from privacy.dp.params import DPBudget

POLICY_ENV = "OPENCITY_POLICY"
DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")
SCHEMA_VERSIONS = (1,)
KNOWN_UNITS = ("subscriber", "household", "card", "requester", "request")
#: person: one account per person (the source must supply the column identifying the person);
#: event: each event (e.g. one 311 request) is its own unit, bounded to one contribution.
UNIT_LEVELS = ("person", "event")
PERIODS = ("day", "week", "month", "year")
CADENCES = {"daily": "day", "weekly": "week", "monthly": "month"}
METHODS = ("differential_privacy", "k_anonymity", "small_count_suppression")
ROLES = ("quasi_identifier", "sensitive", "public")


def period_key(period: str, when: date) -> str:
    """The key of the period ``when`` falls in: '2026-10-05', '2026-W41', '2026-10', '2026'."""
    if period == "day":
        return when.isoformat()
    if period == "week":
        iso = when.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if period == "month":
        return f"{when.year:04d}-{when.month:02d}"
    if period == "year":
        return f"{when.year:04d}"
    raise ConfigError(f"unknown period {period!r}; expected one of {PERIODS}")


@dataclass(frozen=True)
class UnitBudget:
    """The portal-wide budget of one privacy unit per period.

    Attributes:
        name: the privacy unit (one of KNOWN_UNITS).
        period: "month" (calendar month, UTC), "day", "week" (ISO) or "year".
        epsilon: most epsilon one person may lose per period over every release (> 0).
        delta: most delta per person per period (0 <= delta < 1).
        description: what one unit is.
        level: "person" (default: the unit is a person the source must identify) or "event"
            (each event, e.g. a request, is protected on its own, not the person behind it).
    """

    name: str
    period: str
    epsilon: float
    delta: float = 0.0
    description: str = ""
    level: str = "person"

    def __post_init__(self) -> None:
        where = f"units.{self.name}"
        if self.name not in KNOWN_UNITS:
            raise ConfigError(f"{where}: unknown privacy unit {self.name!r}; known units: "
                              f"{', '.join(KNOWN_UNITS)}")
        if self.period not in PERIODS:
            raise ConfigError(f"{where}.period must be one of {PERIODS}, got {self.period!r}")
        object.__setattr__(self, "epsilon", _positive(f"{where}.epsilon", self.epsilon))
        object.__setattr__(self, "delta", _delta(f"{where}.delta", self.delta))
        if self.level not in UNIT_LEVELS:
            raise ConfigError(f"{where}.level must be one of {', '.join(UNIT_LEVELS)}, got "
                              f"{self.level!r}")

    @property
    def is_event(self) -> bool:
        """True when each event is its own unit (no person is bounded)."""
        return self.level == "event"

    def period_key(self, when: date) -> str:
        """The ledger period of ``when`` for this unit."""
        return period_key(self.period, when)


@dataclass(frozen=True)
class Column:
    """A published column and its role (quasi_identifier, sensitive or public)."""

    name: str
    role: str


@dataclass(frozen=True)
class DatasetPolicy:
    """The privacy parameters of one published dataset (per release = per partition).

    Attributes:
        name: catalog name of the dataset.
        method: differential_privacy, k_anonymity or small_count_suppression.
        units: the privacy unit(s) protected (and, for DP, spent from).
        cadence: daily, weekly or monthly.
        columns: the exact published columns with their roles.
        spend: DP only: unit -> (epsilon, delta) per release, per person.
        k, l, max_suppression: k_anonymity only.
        max_records_per_person: k_anonymity only: most records of one privacy unit per
            release (None: no cap).
        threshold: small_count_suppression only (fewest distinct units behind a count).
        description: free text.
        granularity: DP only: the ladder of granularity levels, finest first (e.g.
            "district x request_type x week"); empty = the dataset's one fixed level.
        target_relative_error: DP only, with granularity: the release uses the finest level
            whose predicted median relative error per cell is at most this.
    """

    name: str
    method: str
    units: tuple[str, ...]
    cadence: str
    columns: tuple[Column, ...]
    spend: Mapping[str, DPBudget] = field(default_factory=dict)
    k: int | None = None
    l: int | None = None
    max_suppression: float | None = None
    threshold: int | None = None
    description: str = ""
    max_records_per_person: int | None = None
    granularity: tuple[str, ...] = ()
    target_relative_error: float | None = None
    # ``enabled: false`` in the policy: the dataset is not produced (its DAG task skips it).
    enabled: bool = True

    @property
    def unit(self) -> str:
        """The one privacy unit of a single-unit dataset."""
        if len(self.units) != 1:
            raise ConfigError(f"dataset {self.name!r} protects several units "
                              f"({', '.join(self.units)}); name one")
        return self.units[0]

    @property
    def cadence_period(self) -> str:
        """The ledger period of one cadence step: day, week or month."""
        return CADENCES[self.cadence]

    @property
    def budget(self) -> DPBudget:
        """The per-release budget of a single-unit DP dataset."""
        return self.spend[self.unit]

    @property
    def published_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def quasi_identifiers(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.role == "quasi_identifier")

    @property
    def sensitive(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.role == "sensitive")

    def params(self) -> dict[str, Any]:
        """Canonical privacy parameters of a release under this policy entry (JSON-able)."""
        out: dict[str, Any] = {"method": self.method, "units": list(self.units)}
        if self.method == "differential_privacy":
            out["spend"] = {u: {"epsilon": b.epsilon, "delta": b.delta}
                            for u, b in sorted(self.spend.items())}
            if self.granularity:
                out["granularity"] = list(self.granularity)
                out["target_relative_error"] = self.target_relative_error
        elif self.method == "k_anonymity":
            out.update(k=self.k, l=self.l, max_suppression=self.max_suppression,
                       quasi_identifiers=list(self.quasi_identifiers),
                       sensitive=list(self.sensitive))
            if self.max_records_per_person is not None:
                out["max_records_per_person"] = self.max_records_per_person
        else:
            out["threshold"] = self.threshold
        return out

    def tightened(self, *, epsilon: float | Mapping[str, float] | None = None,
                  delta: float | Mapping[str, float] | None = None, k: int | None = None,
                  l: int | None = None, max_suppression: float | None = None,
                  threshold: int | None = None,
                  max_records_per_person: int | None = None) -> DatasetPolicy:
        """This entry with caller overrides that may only tighten (None = keep the policy's).

        Args:
            epsilon, delta: DP: smaller or equal per-release values (a number for a
                single-unit dataset, or unit -> number).
            k, l, threshold: larger or equal; max_suppression, max_records_per_person:
                smaller or equal.

        Raises:
            ConfigError: an override loosens the policy, or does not apply to this method.
        """
        where = f"datasets.{self.name}"
        changes: dict[str, Any] = {}
        if epsilon is not None or delta is not None:
            if self.method != "differential_privacy":
                raise ConfigError(f"{where}: epsilon/delta do not apply to method {self.method}")
            eps = self._per_unit("epsilon", epsilon)
            dlt = self._per_unit("delta", delta)
            spend = dict(self.spend)
            for unit, cur in self.spend.items():
                e, d = eps.get(unit, cur.epsilon), dlt.get(unit, cur.delta)
                _not_above(f"{where}.epsilon[{unit}]", cur.epsilon, e)
                _not_above(f"{where}.delta[{unit}]", cur.delta, d)
                spend[unit] = DPBudget(e, d)
            changes["spend"] = spend
        for key, value, larger_is_tighter in (("k", k, True), ("l", l, True),
                                              ("threshold", threshold, True),
                                              ("max_suppression", max_suppression, False),
                                              ("max_records_per_person",
                                               max_records_per_person, False)):
            if value is None:
                continue
            cur = getattr(self, key)
            if cur is None:
                raise ConfigError(f"{where}: {key} does not apply to method {self.method}")
            if (value < cur) if larger_is_tighter else (value > cur):
                raise ConfigError(
                    f"{where}.{key}: the policy sets {cur!r}; a caller may only "
                    f"{'raise' if larger_is_tighter else 'lower'} it, got {value!r}. Change "
                    "the reviewed policy file instead")
            changes[key] = value
        return replace(self, **changes)

    def _per_unit(self, key: str, value: float | Mapping[str, float] | None
                  ) -> dict[str, float]:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            unknown = set(value) - set(self.spend)
            if unknown:
                raise ConfigError(f"datasets.{self.name}.{key}: unit(s) {sorted(unknown)} are "
                                  f"not spent by this dataset ({', '.join(self.units)})")
            return {u: float(v) for u, v in value.items()}
        return {self.unit: float(value)}


@dataclass(frozen=True)
class Policy:
    """The whole release policy. ``hash`` is the sha256 of its canonical JSON form."""

    version: int
    units: Mapping[str, UnitBudget]
    datasets: Mapping[str, DatasetPolicy]
    hash: str
    path: str

    def unit(self, name: str) -> UnitBudget:
        try:
            return self.units[name]
        except KeyError:
            raise ConfigError(f"privacy unit {name!r} is not in the policy {self.path} "
                              f"(units: {', '.join(self.units)})") from None

    def dataset(self, name: str) -> DatasetPolicy:
        try:
            return self.datasets[name]
        except KeyError:
            raise ConfigError(f"dataset {name!r} has no entry in the release policy "
                              f"{self.path} (datasets: {', '.join(self.datasets)}); nothing is "
                              "released without one") from None


# -- loading -------------------------------------------------------------------------------
def policy_path(path: str | Path | None = None) -> Path:
    """Explicit path, else $OPENCITY_POLICY, else the repository's privacy/policy.yaml."""
    if path:
        return Path(path)
    env = os.environ.get(POLICY_ENV)
    return Path(env) if env else DEFAULT_POLICY


def canonical_hash(data: Any) -> str:
    """sha256 hex of the canonical JSON form (sorted keys, no whitespace)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


_CACHE: dict[tuple[str, int, int], Policy] = {}


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate the release policy (cached per file version).

    Raises:
        ConfigError: the file is missing, not YAML, or any key is invalid (the message names
            the file and the key).
    """
    import yaml

    p = policy_path(path)
    try:
        st = p.stat()
    except OSError as err:
        raise ConfigError(f"release policy {p} cannot be read ({err}); set {POLICY_ENV} to a "
                          "reviewed policy file") from None
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key in _CACHE:
        return _CACHE[key]
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"release policy {p} is not valid YAML: {err}") from None
    policy = parse_policy(data, str(p))
    _CACHE[key] = policy
    return policy


def parse_policy(data: Any, source: str = "<policy>") -> Policy:
    """Validate a parsed policy document (see privacy/policy.yaml) into a :class:`Policy`."""
    try:
        return _parse(data, source)
    except ConfigError as err:
        msg = str(err)
        if not msg.startswith(f"release policy {source}"):
            raise ConfigError(f"release policy {source}: {msg}") from None
        raise


def _parse(data: Any, source: str) -> Policy:
    if not isinstance(data, Mapping):
        raise ConfigError("the document must be a mapping with version, units and datasets")
    _only(data, "", {"version", "units", "datasets"})
    version = data.get("version")
    if version not in SCHEMA_VERSIONS:
        raise ConfigError(f"version must be one of {SCHEMA_VERSIONS}, got {version!r}")
    raw_units = data.get("units")
    if not isinstance(raw_units, Mapping) or not raw_units:
        raise ConfigError("units: must map privacy units to {period, epsilon, delta}")
    units: dict[str, UnitBudget] = {}
    for name, spec in raw_units.items():
        where = f"units.{name}"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}: must be a mapping with period, epsilon and delta")
        _only(spec, where, {"period", "epsilon", "delta", "description", "level"})
        for req in ("period", "epsilon"):
            if req not in spec:
                raise ConfigError(f"{where}.{req} is missing")
        units[str(name)] = UnitBudget(str(name), spec["period"], spec["epsilon"],
                                      spec.get("delta", 0.0), str(spec.get("description", "")),
                                      spec.get("level", "person"))
    raw_ds = data.get("datasets")
    if not isinstance(raw_ds, Mapping) or not raw_ds:
        raise ConfigError("datasets: must map dataset names to their release parameters")
    datasets = {str(n): _dataset(str(n), s, units) for n, s in raw_ds.items()}
    return Policy(version=version, units=units, datasets=datasets,
                  hash=canonical_hash(data), path=source)


_COMMON = {"description", "method", "unit", "cadence", "columns", "enabled"}
_BY_METHOD = {
    "differential_privacy": {"epsilon", "delta", "granularity", "target_relative_error"},
    "k_anonymity": {"k", "l", "max_suppression", "max_records_per_person"},
    "small_count_suppression": {"threshold"},
}


def _dataset(name: str, spec: Any, units: Mapping[str, UnitBudget]) -> DatasetPolicy:
    where = f"datasets.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    method = spec.get("method")
    if method not in METHODS:
        raise ConfigError(f"{where}.method must be one of {METHODS}, got {method!r}")
    _only(spec, where, _COMMON | _BY_METHOD[method])
    raw_unit = spec.get("unit")
    if raw_unit in (None, "", []):
        raise ConfigError(f"{where}.unit is missing: every dataset names the privacy unit it "
                          f"protects (one of {', '.join(units)})")
    unit_list = [raw_unit] if isinstance(raw_unit, str) else raw_unit
    if not isinstance(unit_list, list) or not all(isinstance(u, str) for u in unit_list):
        raise ConfigError(f"{where}.unit must be a unit name or a list of unit names")
    for u in unit_list:
        if u not in units:
            raise ConfigError(f"{where}.unit: unknown privacy unit {u!r}; declared units: "
                              f"{', '.join(units)}")
    if len(set(unit_list)) != len(unit_list):
        raise ConfigError(f"{where}.unit lists a unit twice")
    cadence = spec.get("cadence")
    if cadence not in CADENCES:
        raise ConfigError(f"{where}.cadence must be one of {tuple(CADENCES)}, got {cadence!r}")
    raw_cols = spec.get("columns")
    if not isinstance(raw_cols, Mapping) or not raw_cols:
        raise ConfigError(f"{where}.columns is missing: list every published column with its "
                          f"role ({', '.join(ROLES)})")
    columns = []
    for col, role in raw_cols.items():
        if role in (None, ""):
            raise ConfigError(f"{where}.columns.{col} has no role; give one of "
                              f"{', '.join(ROLES)}")
        if role not in ROLES:
            raise ConfigError(f"{where}.columns.{col}: unknown role {role!r}; expected one of "
                              f"{', '.join(ROLES)}")
        columns.append(Column(str(col), role))
    kw: dict[str, Any] = {}
    if method == "differential_privacy":
        if any(c.role != "public" for c in columns):
            raise ConfigError(f"{where}.columns: DP outputs are aggregates; every column role "
                              "must be public")
        if "epsilon" not in spec:
            raise ConfigError(f"{where}.epsilon is missing (per release, per person)")
        eps = _unit_values(where, "epsilon", spec["epsilon"], unit_list)
        dlt = _unit_values(where, "delta", spec.get("delta", 0.0), unit_list)
        spend = {}
        for u in unit_list:
            e = _positive(f"{where}.epsilon" + (f".{u}" if len(unit_list) > 1 else ""), eps[u])
            d = _delta(f"{where}.delta" + (f".{u}" if len(unit_list) > 1 else ""), dlt[u])
            cap = units[u]
            if e > cap.epsilon or d > cap.delta:
                raise ConfigError(
                    f"{where}: one release (epsilon={e:g}, delta={d:g} per {u}) exceeds the "
                    f"unit's whole budget units.{u} (epsilon={cap.epsilon:g}, "
                    f"delta={cap.delta:g} per {cap.period})")
            spend[u] = DPBudget(e, d)
        kw["spend"] = spend
        kw.update(_ladder(where, spec))
    elif method == "k_anonymity":
        kw["k"] = _int(f"{where}.k", spec.get("k"), 2)
        kw["l"] = _int(f"{where}.l", spec.get("l", 1), 1)
        ms = _real(f"{where}.max_suppression", spec.get("max_suppression", 0.0))
        if not 0 <= ms < 1:
            raise ConfigError(f"{where}.max_suppression must be in [0, 1), got {ms!r}")
        kw["max_suppression"] = ms
        if "max_records_per_person" in spec:
            cap = _int(f"{where}.max_records_per_person", spec["max_records_per_person"], 1)
            if cap >= kw["k"]:
                raise ConfigError(
                    f"{where}.max_records_per_person must be smaller than k={kw['k']} (so no "
                    f"one person can fill a class alone), got {cap}")
            kw["max_records_per_person"] = cap
        if not any(c.role == "quasi_identifier" for c in columns):
            raise ConfigError(f"{where}.columns: k_anonymity needs at least one "
                              "quasi_identifier column")
        if kw["l"] > 1 and not any(c.role == "sensitive" for c in columns):
            raise ConfigError(f"{where}.columns: l-diversity (l > 1) needs a sensitive column")
    else:
        kw["threshold"] = _int(f"{where}.threshold", spec.get("threshold"), 2)
    enabled = spec.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled must be true or false, got {enabled!r}")
    return DatasetPolicy(name=name, method=method, units=tuple(unit_list), cadence=cadence,
                         columns=tuple(columns), description=str(spec.get("description", "")),
                         enabled=enabled, **kw)


_LEVEL_TOKEN = re.compile(r"[a-z][a-z0-9_]*")


def _ladder(where: str, spec: Mapping) -> dict[str, Any]:
    """``granularity`` (levels, finest first) and ``target_relative_error``: both or none."""
    levels, target = spec.get("granularity"), spec.get("target_relative_error")
    if levels is None and target is None:
        return {}
    if levels is None or target is None:
        raise ConfigError(f"{where}: granularity and target_relative_error go together (a "
                          "ladder of levels, finest first, and the median relative error the "
                          "release must meet)")
    if not isinstance(levels, list) or not levels:
        raise ConfigError(f"{where}.granularity must be a non-empty list of levels, finest "
                          "first, e.g. ['district x request_type x week', "
                          "'city x category x week']")
    out = []
    for i, level in enumerate(levels):
        tokens = level.split(" x ") if isinstance(level, str) else []
        if not tokens or not all(_LEVEL_TOKEN.fullmatch(t.strip()) for t in tokens):
            raise ConfigError(f"{where}.granularity[{i}]: {level!r} is not a level; write the "
                              "dimensions joined by ' x ', e.g. 'district x request_type x "
                              "week'")
        out.append(" x ".join(t.strip() for t in tokens))
    if len(set(out)) != len(out):
        raise ConfigError(f"{where}.granularity lists a level twice")
    t = _positive(f"{where}.target_relative_error", target)
    return {"granularity": tuple(out), "target_relative_error": t}


def _only(spec: Mapping, where: str, allowed: set[str]) -> None:
    unknown = sorted(set(map(str, spec)) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)}; allowed: "
                          f"{', '.join(sorted(allowed))}")


def _unit_values(where: str, key: str, value: Any, units: list[str]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        missing = [u for u in units if u not in value]
        extra = sorted(set(value) - set(units))
        if missing:
            raise ConfigError(f"{where}.{key} is missing for unit(s) {', '.join(missing)}")
        if extra:
            raise ConfigError(f"{where}.{key}: unit(s) {', '.join(extra)} are not in "
                              f"{where}.unit")
        return dict(value)
    if len(units) > 1:
        raise ConfigError(f"{where}.{key} must map each unit ({', '.join(units)}) to a value")
    return {units[0]: value}


def _real(where: str, value: Any) -> float:
    if value is None:
        raise ConfigError(f"{where} is missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be finite, got {value!r}")
    return value


def _positive(where: str, value: Any) -> float:
    value = _real(where, value)
    if value <= 0:
        raise ConfigError(f"{where} must be > 0, got {value!r}")
    return value


def _delta(where: str, value: Any) -> float:
    value = _real(where, value)
    if not 0 <= value < 1:
        raise ConfigError(f"{where} must be in [0, 1), got {value!r}")
    return value


def _int(where: str, value: Any, minimum: int) -> int:
    if value is None:
        raise ConfigError(f"{where} is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where} must be >= {minimum}, got {value!r}")
    return value


def _not_above(where: str, policy_value: float, requested: float) -> None:
    if math.isnan(requested) or requested > policy_value * (1 + 1e-12):
        raise ConfigError(
            f"{where}: the policy allows at most {policy_value:g} per release; a caller may "
            f"only lower it, got {requested:g}. Change the reviewed policy file instead")
