"""The KPI registry: load ``kpi/registry.yaml`` into frozen, validated definitions.

Every error names the file, the KPI (by code or position) and the field, e.g.::

    kpi/registry.yaml: KPI #3 ("EN: EN: WS: 2C"): missing required field 'unit'

Checks: required fields and types, duplicate codes, FG-SSC dimension D1-D6, known source
datasets (the ``sources`` the caller passes plus ``catalog``), known computation names,
privacy treatment (public / dp / suppression), a DP KPI's privacy unit declared under
``privacy_units`` with its epsilon share in (0, 1], and the shares of one unit summing to
at most 1 (so one run never exceeds the unit's monthly cap).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from opencity.errors import ConfigError

DEFAULT_REGISTRY = Path(__file__).resolve().parent / "registry.yaml"
FGSSC_DIMENSIONS: dict[str, str] = {
    "D1": "ICT",
    "D2": "Environmental sustainability",
    "D3": "Productivity",
    "D4": "Quality of life",
    "D5": "Equity and social inclusion",
    "D6": "Physical infrastructure",
}
# Inputs every registry may name besides the canonical sources (which the caller passes:
# ``sources=``, e.g. the names of transforms.schemas.SCHEMAS; kpi imports no other stage).
OWN_SOURCES = frozenset({"catalog"})
TREATMENTS = ("public", "dp", "suppression")
CODE_STATUSES = ("verified", "unverified", "local")
AREAS = ("city", "district")
# computation name -> privacy treatment it implements (checked against the registry entry)
COMPUTATIONS: dict[str, str] = {
    "smart_meter_share": "public",
    "open_data_on_schedule": "public",
    "pt_network_convenience": "public",
    "consumption_per_capita": "dp",
    "waste_collection_rate": "dp",
    "transit_trips_per_capita": "dp",
    "sr_median_resolution": "dp",
    "sr_closed_within_target": "dp",
    "daytime_population_ratio": "dp",
    "commuter_share": "dp",
}


@dataclass(frozen=True)
class PrivacyTreatment:
    """How a KPI is protected.

    Attributes:
        treatment: "public" (registry/reference data), "dp" or "suppression".
        unit: the privacy unit of a DP KPI (a key of Registry.privacy_units).
        epsilon_share: share of the unit's per-period epsilon cap this KPI spends, (0, 1].
        max_relative_error: suppress a value whose 95 % error bound exceeds this x |value|.
    """

    treatment: str
    unit: str | None = None
    epsilon_share: float = 0.0
    max_relative_error: float | None = None


@dataclass(frozen=True)
class KpiDef:
    """One KPI of the registry (see registry.yaml for the meaning of each field)."""

    code: str
    name: str
    fgssc_dimension: str
    u4ssc_dimension: str
    u4ssc_sub_dimension: str
    u4ssc_category: str
    code_status: str
    definition: str
    formula: str
    unit: str
    source_datasets: tuple[str, ...]
    computation: str
    privacy: PrivacyTreatment
    areas: tuple[str, ...] = AREAS
    params: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def fgssc_name(self) -> str:
        return FGSSC_DIMENSIONS[self.fgssc_dimension]


@dataclass(frozen=True)
class PrivacyUnit:
    """Per-period budget cap of one privacy unit (epsilon per unit per month)."""

    name: str
    epsilon: float
    description: str = ""


@dataclass(frozen=True)
class Registry:
    """The loaded registry."""

    path: str
    kpis: tuple[KpiDef, ...]
    privacy_units: Mapping[str, PrivacyUnit]
    min_units: int
    timezone: str
    open_data_inventory: tuple[tuple[str, str], ...]  # (dataset name, cadence)

    def kpi(self, code: str) -> KpiDef:
        for k in self.kpis:
            if k.code == code:
                return k
        raise ConfigError(f"{self.path}: no KPI with code {code!r}")

    def spend_by_unit(self) -> dict[str, float]:
        """Epsilon per privacy unit that one run of every DP KPI spends."""
        out: dict[str, float] = {}
        for k in self.kpis:
            if k.privacy.treatment == "dp":
                cap = self.privacy_units[k.privacy.unit].epsilon
                out[k.privacy.unit] = out.get(k.privacy.unit, 0.0) + cap * k.privacy.epsilon_share
        return out


class _Ctx:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {msg}")


def _str(ctx: _Ctx, where: str, d: Mapping, key: str, required: bool = True) -> str:
    if key not in d or d[key] is None or d[key] == "":
        if required:
            raise ctx.fail(where, f"missing required field {key!r}")
        return ""
    value = d[key]
    if not isinstance(value, str):
        raise ctx.fail(where, f"field {key!r} must be text, got {value!r}")
    return value.strip()


def _num(ctx: _Ctx, where: str, name: str, value: Any, lo: float, hi: float,
         lo_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ctx.fail(where, f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ctx.fail(where, f"{name} must be in {interval}, got {value!r}")
    return value


def _privacy(ctx: _Ctx, where: str, raw: Any, units: Mapping[str, PrivacyUnit]
             ) -> PrivacyTreatment:
    if not isinstance(raw, Mapping):
        raise ctx.fail(where, "missing required field 'privacy' (a mapping with 'treatment')")
    treatment = _str(ctx, where, raw, "treatment")
    if treatment not in TREATMENTS:
        raise ctx.fail(where, f"privacy treatment must be one of {TREATMENTS}, got {treatment!r}")
    if treatment != "dp":
        return PrivacyTreatment(treatment)
    unit = _str(ctx, where, raw, "unit")
    if unit not in units:
        raise ctx.fail(where, f"privacy unit {unit!r} is not declared under privacy_units "
                              f"(declared: {sorted(units)})")
    share = _num(ctx, where, "privacy.epsilon_share", raw.get("epsilon_share"), 0.0, 1.0)
    mre = raw.get("max_relative_error")
    if mre is not None:
        mre = _num(ctx, where, "privacy.max_relative_error", mre, 0.0, 1e6)
    return PrivacyTreatment("dp", unit, share, mre)


def parse_registry(data: Any, path: str = "<registry>", *,
                   sources: Iterable[str] | None = None) -> Registry:
    """Validate a parsed registry document (see the module docstring for the checks).

    ``sources``: the canonical source datasets a KPI may name (besides ``catalog``), given
    by the caller (opencity.pipelines.kpi passes transforms.schemas.SCHEMAS); None checks
    only that each KPI names some.
    """
    ctx = _Ctx(path)
    known_sources = None if sources is None else frozenset(sources) | OWN_SOURCES
    if not isinstance(data, Mapping):
        raise ctx.fail("top level", "the registry must be a YAML mapping")
    raw_units = data.get("privacy_units") or {}
    if not isinstance(raw_units, Mapping):
        raise ctx.fail("privacy_units", "must map unit names to {epsilon: ...}")
    units: dict[str, PrivacyUnit] = {}
    for name, spec in raw_units.items():
        where = f"privacy unit {name!r}"
        if not isinstance(spec, Mapping):
            raise ctx.fail(where, "must be a mapping with 'epsilon'")
        eps = _num(ctx, where, "epsilon", spec.get("epsilon"), 0.0, 100.0)
        units[str(name)] = PrivacyUnit(str(name), eps, str(spec.get("description", "")))
    min_units = (data.get("suppression") or {}).get("min_units", 15)
    if isinstance(min_units, bool) or not isinstance(min_units, int) or min_units < 1:
        raise ctx.fail("suppression", f"min_units must be an integer >= 1, got {min_units!r}")
    inventory = []
    for i, item in enumerate(data.get("open_data_inventory") or [], 1):
        where = f"open_data_inventory #{i}"
        if not isinstance(item, Mapping):
            raise ctx.fail(where, "must be a mapping with 'name' and 'cadence'")
        cadence = _str(ctx, where, item, "cadence")
        if cadence not in ("daily", "weekly", "monthly"):
            raise ctx.fail(where, f"cadence must be daily, weekly or monthly, got {cadence!r}")
        inventory.append((_str(ctx, where, item, "name"), cadence))
    raw_kpis = data.get("kpis")
    if not isinstance(raw_kpis, list) or not raw_kpis:
        raise ctx.fail("kpis", "the registry must list at least one KPI under 'kpis'")
    kpis: list[KpiDef] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_kpis, 1):
        where = f"KPI #{i}"
        if not isinstance(raw, Mapping):
            raise ctx.fail(where, "each KPI must be a mapping")
        code = _str(ctx, where, raw, "code")
        where = f"KPI #{i} ({code!r})"
        if code in seen:
            raise ctx.fail(where, f"duplicate code {code!r} (first used by KPI #{seen[code]})")
        seen[code] = i
        u4 = raw.get("u4ssc")
        if not isinstance(u4, Mapping):
            raise ctx.fail(where, "missing required field 'u4ssc' (dimension, sub_dimension, "
                                  "category, code_status)")
        status = _str(ctx, where, u4, "code_status")
        if status not in CODE_STATUSES:
            raise ctx.fail(where, f"u4ssc.code_status must be one of {CODE_STATUSES}, "
                                  f"got {status!r}")
        fg = _str(ctx, where, raw, "fgssc_dimension")
        if fg not in FGSSC_DIMENSIONS:
            raise ctx.fail(where, f"fgssc_dimension must be one of {sorted(FGSSC_DIMENSIONS)}, "
                                  f"got {fg!r}")
        named = raw.get("source_datasets")
        if not isinstance(named, list) or not named:
            raise ctx.fail(where, "missing required field 'source_datasets' (a non-empty list)")
        unknown = [s for s in named if not isinstance(s, str) or not s
                   or (known_sources is not None and s not in known_sources)]
        if unknown:
            raise ctx.fail(where, f"unknown source dataset(s) {unknown}; known: "
                                  f"{sorted(known_sources or ())}")
        computation = _str(ctx, where, raw, "computation")
        if computation not in COMPUTATIONS:
            raise ctx.fail(where, f"unknown computation {computation!r}; known: "
                                  f"{sorted(COMPUTATIONS)}")
        privacy = _privacy(ctx, where, raw.get("privacy"), units)
        if COMPUTATIONS[computation] != privacy.treatment:
            raise ctx.fail(where, f"computation {computation!r} is a "
                                  f"{COMPUTATIONS[computation]!r} computation but the privacy "
                                  f"treatment is {privacy.treatment!r}")
        areas = tuple(raw.get("areas") or AREAS)
        if not set(areas) <= set(AREAS) or "city" not in areas:
            raise ctx.fail(where, f"areas must include 'city' and be within {AREAS}, got "
                                  f"{list(areas)}")
        params = raw.get("params") or {}
        if not isinstance(params, Mapping):
            raise ctx.fail(where, "params must be a mapping")
        kpis.append(KpiDef(
            code=code,
            name=_str(ctx, where, raw, "name"),
            fgssc_dimension=fg,
            u4ssc_dimension=_str(ctx, where, u4, "dimension"),
            u4ssc_sub_dimension=_str(ctx, where, u4, "sub_dimension", required=False),
            u4ssc_category=_str(ctx, where, u4, "category", required=False),
            code_status=status,
            definition=_str(ctx, where, raw, "definition"),
            formula=_str(ctx, where, raw, "formula", required=False),
            unit=_str(ctx, where, raw, "unit"),
            source_datasets=tuple(named),
            computation=computation,
            privacy=privacy,
            areas=areas,
            params=dict(params),
            notes=_str(ctx, where, raw, "notes", required=False),
        ))
    registry = Registry(
        path=path, kpis=tuple(kpis), privacy_units=units, min_units=min_units,
        timezone=str(data.get("timezone") or "UTC"), open_data_inventory=tuple(inventory),
    )
    for unit, spent in registry.spend_by_unit().items():
        if spent > units[unit].epsilon * (1 + 1e-9):
            raise ctx.fail(f"privacy unit {unit!r}",
                           f"the KPIs' epsilon shares add up to {spent / units[unit].epsilon:g} "
                           "of the cap (must be <= 1)")
    return registry


REGISTRY_ENV = "OPENCITY_KPI_REGISTRY"


def registry_path(path: str | Path | None = None) -> tuple[Path, str]:
    """The KPI registry file: ``path``, else $OPENCITY_KPI_REGISTRY (``opencity run --config
    DIR`` sets it to ``DIR/kpi_registry.yaml`` when that file exists), else the packaged
    kpi/registry.yaml. Returns the path and where it came from (for error messages)."""
    if path:
        return Path(path), "given explicitly"
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env), f"from {REGISTRY_ENV}"
    return DEFAULT_REGISTRY, "the packaged default"


def load_registry(path: str | Path | None = None, *,
                  sources: Iterable[str] | None = None) -> Registry:
    """Read and validate a registry YAML file (see :func:`registry_path` for which one);
    ``sources``: see :func:`parse_registry`.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or fails a check; the message
            names the file, the KPI and the field.
    """
    path, origin = registry_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the KPI registry ({err.strerror}; {origin}: an "
                          f"explicit path, else ${REGISTRY_ENV}, else {DEFAULT_REGISTRY})"
                          ) from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return parse_registry(data, str(path), sources=sources)
