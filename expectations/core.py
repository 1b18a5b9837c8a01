"""Shared pieces of the suites: the declared context, a column-type expectation, builders.

A suite builder is a function ``build(ctx: SuiteContext) -> gx.ExpectationSuite``. The context
is everything a suite may depend on besides the data: the data interval, the previous
partition's row count, public reference ids (districts, cells), the city bounding box and,
for products, how the product was anonymized (:class:`PrivacyChecks`).

Expectations whose failing rows can be set aside (the row stays out of the product, goes to
the quarantine with the expectation's name as reason) carry ``meta={"row_level": True}``;
every other failure is dataset-level and stops the run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import great_expectations as gx
import pyarrow as pa
from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider

from expectations import privacy as px
from opencity.errors import ConfigError

gxe = gx.expectations

# A source's typed schema (a ``transforms.schemas.Schema``: name, columns, key, time_column,
# pseudonyms, identifiers, column()). The caller passes it (``context["schema"]``): this
# package imports no other stage, so it never looks a schema up itself.
Schema = Any

ROW_LEVEL = {"row_level": True}
PRIVACY_KINDS = ("none", "microdata", "dp", "suppressed")
# Every identifier and pseudonym column of every canonical source (transforms.schemas): never
# allowed in a product. Kept here as names (this package imports no stage);
# tests/unit/expectations/test_gate_schema_input.py keeps it equal to the schemas.
SCHEMA_IDENTIFIERS: tuple[str, ...] = (
    "card_id", "card_pid", "household_address", "household_id", "household_pid", "imsi",
    "requester_address", "requester_email", "requester_name", "requester_phone",
    "requester_pid", "subscriber_id", "subscriber_pid",
)


# ------------------------------------------------------------------ column kinds (types)
def column_kind(arrow_type: pa.DataType) -> str:
    """The type family a column of ``arrow_type`` must have after Arrow -> pandas."""
    if pa.types.is_timestamp(arrow_type):
        return "timestamp_utc" if arrow_type.tz in ("UTC", "+00:00") else "timestamp"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    return str(arrow_type)


class TableColumnKinds(TableMetricProvider):
    """Type family of every column: string, integer, float, boolean, date, timestamp[_utc]."""

    metric_name = "table.opencity_column_kinds"

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics,
                runtime_configuration):
        import pandas as pd

        df, _, _ = execution_engine.get_compute_domain(
            domain_kwargs=metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE)
        out = {}
        for name in df.columns:
            s = df[name]
            t = s.dtype
            if isinstance(t, pd.DatetimeTZDtype):
                out[name] = "timestamp_utc" if str(t.tz) in ("UTC", "+00:00") else "timestamp"
            elif pd.api.types.is_datetime64_dtype(t):
                out[name] = "timestamp"
            elif pd.api.types.is_bool_dtype(t):
                out[name] = "boolean"
            elif pd.api.types.is_integer_dtype(t):
                out[name] = "integer"
            elif pd.api.types.is_float_dtype(t):
                out[name] = "float"
            elif pd.api.types.is_string_dtype(t) and not pd.api.types.is_object_dtype(t):
                out[name] = "string"
            else:
                inferred = pd.api.types.infer_dtype(s, skipna=True)
                out[name] = {"date": "date", "string": "string", "empty": "empty",
                             "boolean": "boolean"}.get(inferred, inferred)
        return out


class ExpectColumnKindsToMatch(BatchExpectation):
    """Each listed column has the declared type family (an all-missing column may be "empty").

    Args:
        kinds: column -> family (string, integer, float, boolean, date, timestamp_utc).
    """

    kinds: dict[str, str]

    library_metadata: ClassVar[dict] = {"maturity": "experimental", "tags": ["opencity"],
                                        "contributors": ["@opencity"]}
    metric_dependencies = ("table.opencity_column_kinds",)
    success_keys = ("kinds",)
    domain_keys: ClassVar[tuple[str, ...]] = ()

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        actual = metrics["table.opencity_column_kinds"]
        wrong = {c: {"expected": k, "found": actual.get(c, "missing")}
                 for c, k in self.kinds.items()
                 if actual.get(c) != k and actual.get(c) != "empty"}
        return {"success": not wrong, "result": {"observed_value": actual,
                                                 "details": {"mismatches": wrong}}}


# ---------------------------------------------------------------------------- context
@dataclass(frozen=True)
class PrivacyChecks:
    """How a product was anonymized, i.e. which privacy expectations apply.

    Attributes:
        kind: "microdata" (k-anonymity), "dp" (differential privacy), "suppressed"
            (small-count suppression) or "none" (public reference data: identifier checks
            only).
        quasi_identifiers, k: microdata only: every class over these columns has >= k rows.
        count_columns: dp / suppressed: the released counts (>= 0, >= threshold if set).
        threshold: release threshold of the counts (suppression k, or the DP selection
            threshold); None = no threshold (DP with public keys).
        statement: dp only: the privacy statement (privacy.json content), None if missing.
        ledger_epsilon, ledger_delta: dp only: what the budget ledger recorded for this
            release (None when it has no entry).
        forbidden_columns: extra direct-identifier column names from config.
        allowed_columns: public columns whose name merely looks like an identifier.
        text_columns: string columns to scan for identifier-looking values (default: all).
        domains: column -> allowed values: every published value must be one of them.
        patterns: column -> full-match regex of the values (codes, intervals, dates).
        every_column_has_domain: a string column without a domain or pattern fails (free
            text is never published); default True for microdata.
    """

    kind: str = "none"
    quasi_identifiers: tuple[str, ...] = ()
    k: int | None = None
    count_columns: tuple[str, ...] = ()
    threshold: int | None = None
    statement: Mapping[str, Any] | None = None
    ledger_epsilon: float | None = None
    ledger_delta: float | None = None
    forbidden_columns: tuple[str, ...] = ()
    allowed_columns: tuple[str, ...] = ()
    text_columns: tuple[str, ...] | None = None
    domains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    patterns: Mapping[str, str] = field(default_factory=dict)
    every_column_has_domain: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains",
                           {str(k): tuple(v) for k, v in dict(self.domains).items()})
        object.__setattr__(self, "patterns", {str(k): str(v) for k, v in
                                              dict(self.patterns).items()})
        if self.every_column_has_domain is None:
            object.__setattr__(self, "every_column_has_domain", self.kind == "microdata")
        if self.kind not in PRIVACY_KINDS:
            raise ConfigError(f"privacy kind must be one of {PRIVACY_KINDS}, got {self.kind!r}")
        for name in ("quasi_identifiers", "count_columns", "forbidden_columns",
                     "allowed_columns"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"privacy {name} must be a list of column names, got "
                                  f"{value!r}")
            object.__setattr__(self, name, tuple(value))
        if self.text_columns is not None:
            object.__setattr__(self, "text_columns", tuple(self.text_columns))
        if self.kind == "microdata":
            if not self.quasi_identifiers:
                raise ConfigError("microdata privacy checks need the quasi_identifiers")
            _check_int("k", self.k, 2)
        if self.kind in ("dp", "suppressed") and not self.count_columns:
            raise ConfigError(f"{self.kind} privacy checks need the count_columns")
        if self.kind == "suppressed" and self.threshold is None:
            raise ConfigError("suppressed aggregates need the suppression threshold")
        if self.threshold is not None:
            _check_real("threshold", self.threshold, 0)
        for name in ("ledger_epsilon", "ledger_delta"):
            if getattr(self, name) is not None:
                _check_real(name, getattr(self, name), 0)
        if self.statement is not None and not isinstance(self.statement, Mapping):
            raise ConfigError(f"privacy statement must be a JSON object, got "
                              f"{type(self.statement).__name__}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_real(name: str, value: Any, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name} must be a finite number >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class BBox:
    """City bounding box in degrees (inclusive)."""

    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float

    def __post_init__(self) -> None:
        for name in ("lat_min", "lat_max", "lon_min", "lon_max"):
            _check_real(name, getattr(self, name), -180)
        if self.lat_min > self.lat_max or self.lon_min > self.lon_max:
            raise ConfigError(f"bounding box is empty: {self}")


@dataclass(frozen=True)
class SuiteContext:
    """What a suite may depend on besides the data (see the module docstring).

    Attributes:
        dataset: dataset (suite) name, e.g. "service_requests" or a product name.
        columns: column name -> Arrow type of the table being validated.
        interval: [start, end) of the partition in UTC (tz-aware), if any.
        previous_rows: row count of the previous partition, if known.
        max_drop: fraction of rows that may disappear vs the previous partition (0.9: a
            drop of more than 90 % fails).
        min_rows: fewest rows a partition may have.
        district_ids, cell_ids: public reference ids (referential integrity), if given.
        bbox: city bounding box; coordinates outside are quarantined (row level).
        privacy: privacy checks of a product (None for clean source data).
        schema: the typed schema of the source the table is (clean suites) or derives from
            (its domains, e.g. request types), given by the caller; None if not needed.
    """

    dataset: str
    columns: Mapping[str, pa.DataType]
    interval: tuple[datetime, datetime] | None = None
    previous_rows: int | None = None
    max_drop: float = 0.9
    min_rows: int = 1
    district_ids: tuple[str, ...] | None = None
    cell_ids: tuple[str, ...] | None = None
    bbox: BBox | None = None
    privacy: PrivacyChecks | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    schema: Schema | None = None

    def __post_init__(self) -> None:
        if self.interval is not None:
            start, end = self.interval
            if not isinstance(start, datetime) or not isinstance(end, datetime) or (
                start.tzinfo is None or end.tzinfo is None
            ):
                raise ConfigError("interval must be two tz-aware datetimes (start, end)")
            if end <= start:
                raise ConfigError(f"interval end {end} is not after its start {start}")
        if self.previous_rows is not None:
            _check_int("previous_rows", self.previous_rows, 0)
        _check_real("max_drop", self.max_drop, 0)
        if self.max_drop > 1:
            raise ConfigError(f"max_drop must be in [0, 1], got {self.max_drop!r}")
        _check_int("min_rows", self.min_rows, 0)

    @property
    def string_columns(self) -> list[str]:
        return [c for c, t in self.columns.items()
                if pa.types.is_string(t) or pa.types.is_large_string(t)]


# --------------------------------------------------------------------------- builders
def new_suite(name: str, expectations: Sequence[Any], meta: dict | None = None
              ) -> gx.ExpectationSuite:
    """A suite holding ``expectations`` (built without needing an active GX context)."""
    return gx.ExpectationSuite(name=name, expectations=[copy.copy(e) for e in expectations],
                               meta=meta or {})


def row_count_expectations(ctx: SuiteContext) -> list[Any]:
    """At least ``min_rows``, and no drop of more than ``max_drop`` vs the previous partition."""
    floor = ctx.min_rows
    note = f"at least {ctx.min_rows} row(s)"
    if ctx.previous_rows:
        floor = max(floor, math.ceil(ctx.previous_rows * (1 - ctx.max_drop)))
        note += (f"; previous partition had {ctx.previous_rows} rows, a drop of more than "
                 f"{ctx.max_drop:.0%} fails")
    return [gxe.ExpectTableRowCountToBeBetween(min_value=floor, max_value=None,
                                               notes=note)]


def clean_columns(schema: Schema, extra: Sequence[str] = ()) -> list[str]:
    """Columns of a clean (ingested) partition: non-identifiers, pseudonyms, extras."""
    return ([c.name for c in schema.columns if not c.identifier]
            + [name for name, _ in schema.pseudonyms] + list(extra))


def source_schema(ctx: SuiteContext, name: str) -> Schema:
    """The typed schema of source ``name`` the caller passed (``context["schema"]``).

    Raises:
        ConfigError: none was passed, or another source's.
    """
    schema = ctx.schema
    if schema is None:
        raise ConfigError(f"the suite of {ctx.dataset} needs the schema of source {name}: "
                          f"pass context={{'schema': transforms.schemas.SCHEMAS[{name!r}], "
                          "...}")
    if getattr(schema, "name", None) != name:
        raise ConfigError(f"the suite of {ctx.dataset} needs the schema of source {name}, "
                          f"was given {getattr(schema, 'name', type(schema).__name__)!r}")
    return schema


def _profile(schema: Schema, profile: Any):
    """The input profile whose domains apply (a Profile the caller resolved, with
    ``domain(column)`` and ``pattern(column)``; None = the schema's)."""
    if profile is None:
        return None
    if isinstance(profile, str):
        raise ConfigError(f"context['profile'] must be the input profile itself "
                          f"(transforms.profiles.get_profile({schema.name!r}, {profile!r})), "
                          "not its name")
    return profile


def schema_expectations(schema: Schema, ctx: SuiteContext, extra_columns: Sequence[str] = ()
                        ) -> list[Any]:
    """Schema, types, required values, allowed values, ranges, keys, interval, references."""
    cols = clean_columns(schema, extra_columns)
    profile = _profile(schema, ctx.extra.get("profile"))
    exps: list[Any] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=cols, exact_match=True),
        ExpectColumnKindsToMatch(kinds={c.name: column_kind(c.type) for c in schema.columns
                                        if not c.identifier}),
        *row_count_expectations(ctx),
    ]
    for col in schema.columns:
        if col.identifier:
            continue
        if col.required:
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=col.name))
        domain = profile.domain(col.name) if profile is not None else col.allowed
        if domain and pa.types.is_string(col.type):
            exps.append(gxe.ExpectColumnValuesToBeInSet(column=col.name,
                                                        value_set=list(domain)))
        pattern = profile.pattern(col.name) if profile is not None else col.pattern
        if pattern and not domain:
            exps.append(gxe.ExpectColumnValuesToMatchRegex(
                column=col.name, regex=f"^(?:{pattern})$",
                notes="the column's code shape (a name, e-mail or phone number does not fit)"))
        if col.min_value is not None or col.max_value is not None:
            exps.append(gxe.ExpectColumnValuesToBeBetween(
                column=col.name, min_value=col.min_value, max_value=col.max_value))
    for key in schema.key:
        exps.append(gxe.ExpectColumnValuesToBeUnique(column=key))
    if ctx.interval is not None and schema.time_column:
        start, end = ctx.interval
        tcol = schema.column(schema.time_column)
        if pa.types.is_date(tcol.type):
            lo, hi = start.date(), end.date()
        else:
            lo, hi = start, end
        exps.append(gxe.ExpectColumnValuesToBeBetween(
            column=schema.time_column, min_value=lo, max_value=hi, strict_max=True,
            notes=f"inside the data interval [{start.isoformat()}, {end.isoformat()})"))
    names = {c.name for c in schema.columns}
    if ctx.district_ids is not None and "district_id" in names:
        exps.append(gxe.ExpectColumnValuesToBeInSet(
            column="district_id", value_set=list(ctx.district_ids),
            notes="districts of the public district table"))
    if ctx.cell_ids is not None and "cell_id" in names:
        exps.append(gxe.ExpectColumnValuesToBeInSet(
            column="cell_id", value_set=list(ctx.cell_ids),
            notes="cells of the public tower table"))
    if ctx.bbox is not None and {"lat", "lon"} <= names:
        b = ctx.bbox
        exps.append(gxe.ExpectColumnValuesToBeBetween(
            column="lat", min_value=b.lat_min, max_value=b.lat_max, meta=ROW_LEVEL,
            notes="inside the city's bounding box (rows outside are quarantined)"))
        exps.append(gxe.ExpectColumnValuesToBeBetween(
            column="lon", min_value=b.lon_min, max_value=b.lon_max, meta=ROW_LEVEL,
            notes="inside the city's bounding box (rows outside are quarantined)"))
    # Identifiers were replaced by pseudonyms on ingestion: none may survive.
    exps.append(px.ExpectTableToHaveNoDirectIdentifierColumns(
        forbidden_columns=list(schema.identifiers),
        allowed_columns=[c for c in cols if c not in schema.identifiers]))
    return exps


def privacy_expectations(ctx: SuiteContext) -> list[Any]:
    """The privacy expectations of a product, from ``ctx.privacy`` (see privacy.py)."""
    p = ctx.privacy or PrivacyChecks()
    exps: list[Any] = [px.ExpectTableToHaveNoDirectIdentifierColumns(
        forbidden_columns=sorted(set(SCHEMA_IDENTIFIERS) | set(p.forbidden_columns)),
        allowed_columns=list(p.allowed_columns))]
    text = p.text_columns if p.text_columns is not None else ctx.string_columns
    for col in text:
        exps.append(px.ExpectColumnValuesToNotContainDirectIdentifiers(column=col))
    missing = [c for c in (*p.quasi_identifiers, *p.count_columns) if c not in ctx.columns]
    if missing:
        exps.append(gxe.ExpectTableColumnsToMatchSet(
            column_set=sorted(set(ctx.columns) | set(missing)), exact_match=False,
            notes=f"declared privacy columns {missing} are missing"))
    for col, values in sorted(p.domains.items()):
        exps.append(gxe.ExpectColumnValuesToBeInSet(
            column=col, value_set=list(values),
            notes="every published value lies inside the column's declared domain"))
    for col, pattern in sorted(p.patterns.items()):
        if col in p.domains:
            continue
        exps.append(gxe.ExpectColumnValuesToMatchRegex(
            column=col, regex=f"^(?:{pattern})$",
            notes="every published value has the column's declared shape"))
    if p.every_column_has_domain:
        for col in ctx.string_columns:
            if col not in p.domains and col not in p.patterns:
                exps.append(gxe.ExpectColumnValuesToBeNull(
                    column=col, notes="string column without a declared domain: free text "
                    "is never published"))
    if p.kind == "microdata":
        exps.append(px.ExpectEquivalenceClassesToHaveAtLeastKRows(
            quasi_identifiers=list(p.quasi_identifiers), k=p.k))
    if p.kind == "dp":
        exps.append(px.ExpectPrivacyStatementToMatchLedger(
            statement=dict(p.statement) if p.statement is not None else None,
            ledger_epsilon=p.ledger_epsilon, ledger_delta=p.ledger_delta))
    if p.kind in ("dp", "suppressed"):
        for col in p.count_columns:
            if col not in ctx.columns:
                continue
            exps.append(px.ExpectCountsToBeNonNegative(column=col))
            if p.threshold is not None:
                exps.append(px.ExpectCountsToReachReleaseThreshold(
                    column=col, min_value=p.threshold,
                    notes="published counts reach the release threshold; withheld are empty"))
    return exps
