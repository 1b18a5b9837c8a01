"""Custom Great Expectations (GX Core 1.x) that check what is about to be published.

Every product gets the two identifier checks; the others depend on how it was anonymized:

=====================================================  ==========================================
Expectation                                            Fails when
=====================================================  ==========================================
:class:`ExpectTableToHaveNoDirectIdentifierColumns`    a column is named like a direct identifier
                                                       (configured names, or name tokens phone,
                                                       msisdn, imsi, imei, email, name, address..)
:class:`ExpectColumnValuesToNotContainDirectIdentifiers`  a string value looks like a phone
                                                       number, IMSI/IMEI, e-mail or street address
:class:`ExpectEquivalenceClassesToHaveAtLeastKRows`    microdata: a class over the declared
                                                       quasi-identifiers has fewer than k rows
:class:`ExpectPrivacyStatementToMatchLedger`           DP: the privacy statement is missing or its
                                                       epsilon/delta differ from the budget ledger
:class:`ExpectCountsToBeNonNegative`                   DP / suppressed: a count is negative
:class:`ExpectCountsToReachReleaseThreshold`           DP with a release threshold / suppressed
                                                       aggregates: a published count is below it
=====================================================  ==========================================

Importing this module registers the expectations (and their metrics) with GX. The regular
expressions are exported (``IDENTIFIER_PATTERNS``) so that reports can mask what they match:
:func:`mask_identifiers` replaces every match by a tag such as ``[phone]``.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

from great_expectations.compatibility import pydantic
from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations import (
    ExpectColumnValuesToBeBetween,
    ExpectColumnValuesToNotMatchRegexList,
)
from great_expectations.expectations.expectation import BatchExpectation
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider

# What a direct identifier looks like inside a string value. RE2-compatible (pandas runs them
# through pyarrow) and Python-compatible (masking): no look-around, only scoped (?i:...) flags.
# \b keeps digit runs glued to letters (hex pseudonyms, ids like SR0000001) from matching.
IDENTIFIER_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "imsi/imei": r"\b[0-9]{14,16}\b",
    # International (+49 30 1234567, +1 (555) 123-4567), NANP (555-123-4567, (555) 123 4567)
    # and bare national numbers of 9-13 digits (030123456789, 5551234567).
    "phone": (
        r"\+[0-9][0-9 ()./-]{6,}[0-9]"
        r"|\(?\b[0-9]{3}\)?[ .-][0-9]{3}[ .-][0-9]{4}\b"
        r"|\b0[0-9]{8,12}\b"
        r"|\b[0-9]{10,13}\b"
    ),
    # "123 Main St", "4 North Avenue"; German "Hauptstraße 12", "Am Ring 5, 10115 Berlin".
    "street address": (
        r"(?i:\b[0-9]{1,5}[a-z]?\s+(?:[a-z.'-]+\s+){0,3}"
        r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|"
        r"way|terrace|parkway|pkwy|highway|hwy|square|sq)\b)"
        r"|(?i:[a-zäöüß.-]*(?:straße|strasse|str\.|weg|gasse|allee|platz|damm|ufer|chaussee)"
        r"\s+[0-9]{1,4}[a-z]?\b)"
        r"|\b[0-9]{1,4}[a-z]?,\s*[0-9]{5}\s+[A-ZÄÖÜ][a-zäöüß]+"
    ),
}


_COMPILED = {kind: re.compile(p) for kind, p in IDENTIFIER_PATTERNS.items()}

# Column-name tokens that mark a direct identifier (split on _ - . and camelCase).
IDENTIFIER_NAME_TOKENS: tuple[str, ...] = (
    "phone", "telephone", "mobile", "msisdn", "imsi", "imei", "email", "mail", "name",
    "firstname", "lastname", "surname", "fullname", "address", "street", "ssn", "passport",
    "iban", "plate",
)


def mask_identifiers(value: Any, max_chars: int = 60) -> str:
    """``value`` as text with every identifier-looking match replaced by ``[kind]``."""
    text = str(value)
    for kind, rx in _COMPILED.items():
        text = rx.sub(f"[{kind}]", text)
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def identifier_kinds(value: Any) -> list[str]:
    """The kinds of identifier ``value`` looks like (empty when none)."""
    text = str(value)
    return [kind for kind, rx in _COMPILED.items() if rx.search(text)]


def _name_tokens(column: str) -> set[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1_\2", column)
    return {t for t in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if t}


def identifier_like_columns(columns: list[str], forbidden: list[str],
                            allowed: list[str]) -> list[str]:
    """Columns named like a direct identifier (configured names or name tokens)."""
    forbidden_l = {f.lower() for f in forbidden}
    allowed_l = {a.lower() for a in allowed}
    out = []
    for col in columns:
        low = col.lower()
        if low in allowed_l:
            continue
        compact = re.sub(r"[^a-z0-9]", "", low)
        if low in forbidden_l or _name_tokens(col) & set(IDENTIFIER_NAME_TOKENS) or any(
            compact.endswith(tok) for tok in ("msisdn", "imsi", "imei", "phone", "email")
        ):
            out.append(col)
    return out


# --------------------------------------------------------------------------------- metrics
class TableEquivalenceClasses(TableMetricProvider):
    """Sizes of equivalence classes over ``quasi_identifiers`` that have fewer than ``k`` rows."""

    metric_name = "table.opencity_small_equivalence_classes"
    value_keys = ("quasi_identifiers", "k")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics,
                runtime_configuration):
        df, _, _ = execution_engine.get_compute_domain(
            domain_kwargs=metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE)
        qis = list(metric_value_kwargs["quasi_identifiers"])
        k = int(metric_value_kwargs["k"])
        missing = [c for c in qis if c not in df.columns]
        if missing:
            return {"missing_columns": missing, "classes": 0, "smallest": None,
                    "small_classes": 0, "rows_in_small_classes": 0, "examples": []}
        if df.empty:
            return {"missing_columns": [], "classes": 0, "smallest": None, "small_classes": 0,
                    "rows_in_small_classes": 0, "examples": []}
        sizes = df.groupby(qis, dropna=False, observed=True, sort=True).size()
        small = sizes[sizes < k].sort_values(kind="stable")
        examples = []
        for key, size in small.head(5).items():
            key = key if isinstance(key, tuple) else (key,)
            examples.append({"class": {q: None if _isna(v) else str(v)
                                       for q, v in zip(qis, key, strict=True)},
                             "rows": int(size)})
        return {"missing_columns": [], "classes": len(sizes),
                "smallest": int(sizes.min()), "small_classes": len(small),
                "rows_in_small_classes": int(small.sum()), "examples": examples}


def _isna(v: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------- expectations
_META: ClassVar = {"maturity": "experimental", "tags": ["opencity", "privacy"],
                   "contributors": ["@opencity"]}


class ExpectTableToHaveNoDirectIdentifierColumns(BatchExpectation):
    """No column is a direct identifier: neither a configured name nor an identifier-like name.

    Args:
        forbidden_columns: exact column names that are direct identifiers (case-insensitive),
            e.g. every identifier column of transforms.schemas.
        allowed_columns: public columns whose name merely contains a token such as ``name``
            (e.g. ``stop_name`` of the public stop table).
    """

    forbidden_columns: list[str] = pydantic.Field(default_factory=list)
    allowed_columns: list[str] = pydantic.Field(default_factory=list)

    library_metadata: ClassVar[dict] = _META
    metric_dependencies = ("table.columns",)
    success_keys = ("forbidden_columns", "allowed_columns")
    domain_keys: ClassVar[tuple[str, ...]] = ()

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        columns = list(metrics["table.columns"])
        bad = identifier_like_columns(columns, list(self.forbidden_columns),
                                      list(self.allowed_columns))
        return {"success": not bad,
                "result": {"observed_value": bad, "details": {"columns": columns}}}


class ExpectColumnValuesToNotContainDirectIdentifiers(ExpectColumnValuesToNotMatchRegexList):
    """No value of a string column looks like a phone number, IMSI/IMEI, e-mail or address.

    A regular-expression list check whose default list is :data:`IDENTIFIER_PATTERNS`; it
    searches anywhere in the value, so a phone number hidden in free text is found.
    """

    regex_list: list[str] = pydantic.Field(
        default_factory=lambda: list(IDENTIFIER_PATTERNS.values()))
    library_metadata: ClassVar[dict] = _META


class ExpectEquivalenceClassesToHaveAtLeastKRows(BatchExpectation):
    """Microdata: every combination of the quasi-identifiers occurs in at least ``k`` rows.

    Args:
        quasi_identifiers: the declared quasi-identifier columns (all must exist).
        k: the k of k-anonymity (integer >= 2). Missing values form their own class.
    """

    quasi_identifiers: list[str]
    k: int

    library_metadata: ClassVar[dict] = _META
    metric_dependencies = ("table.opencity_small_equivalence_classes",)
    success_keys = ("quasi_identifiers", "k")
    domain_keys: ClassVar[tuple[str, ...]] = ()

    @pydantic.validator("k")
    def _k_at_least_2(cls, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise ValueError(f"k must be an integer >= 2, got {v!r}")
        return v

    @pydantic.validator("quasi_identifiers")
    def _qis_not_empty(cls, v):
        if not v:
            raise ValueError("declare at least one quasi-identifier")
        return v

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        m = metrics["table.opencity_small_equivalence_classes"]
        ok = not m["missing_columns"] and m["small_classes"] == 0
        return {"success": ok, "result": {"observed_value": m["smallest"], "details": m}}


class ExpectPrivacyStatementToMatchLedger(BatchExpectation):
    """DP release: the privacy statement exists and its epsilon/delta equal the ledger's.

    Args:
        statement: the privacy statement published with the product (privacy.json), or None
            when it is missing. Must hold numeric ``epsilon`` and ``delta`` (total, per privacy
            unit, for this release).
        ledger_epsilon, ledger_delta: what the budget ledger recorded for this release (None
            when the ledger has no entry).
        rel_tol: relative tolerance of the comparison (float sums).
    """

    statement: dict | None = None
    ledger_epsilon: float | None = None
    ledger_delta: float | None = None
    rel_tol: float = 1e-9

    library_metadata: ClassVar[dict] = _META
    metric_dependencies = ("table.row_count",)
    success_keys = ("statement", "ledger_epsilon", "ledger_delta", "rel_tol")
    domain_keys: ClassVar[tuple[str, ...]] = ()

    def _validate(self, metrics, runtime_configuration=None, execution_engine=None):
        problems = statement_problems(self.statement, self.ledger_epsilon, self.ledger_delta,
                                      self.rel_tol)
        observed = None
        if isinstance(self.statement, dict):
            observed = {"epsilon": self.statement.get("epsilon"),
                        "delta": self.statement.get("delta")}
        return {"success": not problems,
                "result": {"observed_value": observed,
                           "details": {"problems": problems,
                                       "ledger": {"epsilon": self.ledger_epsilon,
                                                  "delta": self.ledger_delta}}}}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) and v >= 0 else None


def statement_problems(statement: Any, ledger_epsilon: float | None,
                       ledger_delta: float | None, rel_tol: float = 1e-9) -> list[str]:
    """Why a DP privacy statement does not stand (empty list when it does)."""
    if not isinstance(statement, dict) or not statement:
        return ["the privacy statement is missing"]
    problems = []
    eps, delta = _number(statement.get("epsilon")), _number(statement.get("delta"))
    if eps is None:
        problems.append(f"statement epsilon {statement.get('epsilon')!r} is not a finite "
                        "number >= 0")
    if delta is None:
        problems.append(f"statement delta {statement.get('delta')!r} is not a finite "
                        "number >= 0")
    if ledger_epsilon is None or ledger_delta is None:
        problems.append("the budget ledger has no spend recorded for this release")
        return problems
    if eps is not None and not math.isclose(eps, ledger_epsilon, rel_tol=rel_tol,
                                            abs_tol=1e-12):
        problems.append(f"statement epsilon {eps:g} != ledger epsilon {ledger_epsilon:g}")
    if delta is not None and not math.isclose(delta, ledger_delta, rel_tol=rel_tol,
                                              abs_tol=1e-15):
        problems.append(f"statement delta {delta:g} != ledger delta {ledger_delta:g}")
    return problems


class ExpectCountsToBeNonNegative(ExpectColumnValuesToBeBetween):
    """A released count column holds no negative value (missing = withheld is fine)."""

    min_value: float | int | None = 0
    library_metadata: ClassVar[dict] = _META


class ExpectCountsToReachReleaseThreshold(ExpectColumnValuesToBeBetween):
    """Every published (non-missing) count is at least the release threshold ``min_value``.

    For suppressed aggregates the threshold is the suppression k (a withheld cell is empty);
    for DP releases with partition selection it is the selection threshold.
    """

    library_metadata: ClassVar[dict] = _META
