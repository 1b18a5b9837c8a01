"""Suites of the 311 service requests: the clean source partition and the weekly product.

* ``service_requests`` (clean partition after ingestion): schema and types, required values,
  allowed status, unique request ids, created_at inside the data interval, closed_at not
  before created_at, districts in the public district table, coordinates inside the city
  (row level: rows outside go to the quarantine), row count vs the previous partition, no
  identifier column left.
* ``opencity-311-requests-weekly`` (product): exact columns and types, one row per week x
  district x type, week_start = the interval start, districts from the public table,
  published counts >= the suppression threshold, withheld cells empty and flagged, plus the
  product privacy expectations (no identifier columns or values).
"""

from __future__ import annotations

import great_expectations as gx

from expectations.core import (
    ExpectColumnKindsToMatch,
    PrivacyChecks,
    SuiteContext,
    new_suite,
    privacy_expectations,
    row_count_expectations,
    schema_expectations,
    source_schema,
)

gxe = gx.expectations
SOURCE = "service_requests"
PRODUCT = "opencity-311-requests-weekly"
PRODUCT_KINDS = {"week_start": "date", "district_id": "string", "request_type": "string",
                 "requests": "integer", "median_resolution_hours": "float",
                 "suppressed": "boolean"}


def clean_suite(ctx: SuiteContext) -> gx.ExpectationSuite:
    """Suite of a clean service_requests partition."""
    exps = schema_expectations(source_schema(ctx, SOURCE), ctx)
    exps.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(
        column_A="closed_at", column_B="created_at", or_equal=True,
        ignore_row_if="either_value_is_missing"))
    exps.append(gxe.ExpectColumnValuesToBeNull(
        column="closed_at", row_condition='status=="open"', condition_parser="pandas",
        mostly=0.99, notes="open requests have no closing time"))
    return new_suite("service_requests.clean", exps,
                     {"dataset": "service_requests", "stage": "clean"})


DP_PRODUCT_KINDS = {"week_start": "date", "district_id": "string", "request_type": "string",
                    "requests": "integer", "requests_error_bound_95": "float",
                    "median_resolution_hours": "float",
                    "median_resolution_hours_error_bound_95": "float",
                    "requests_noise_std": "float", "requests_unfloored": "integer",
                    "median_resolution_hours_noise_std": "float"}


def product_suite(ctx: SuiteContext) -> gx.ExpectationSuite:
    """Suite of the weekly 311 product (differentially private, or small-count suppression)."""
    privacy = ctx.privacy or PrivacyChecks(kind="suppressed", count_columns=("requests",),
                                           threshold=ctx.extra.get("suppression_k", 2))
    ctx = SuiteContext(**{**ctx.__dict__, "privacy": privacy})
    if privacy.kind == "dp":
        return _weekly_suite(ctx, DP_PRODUCT_KINDS, [
            gxe.ExpectColumnValuesToNotBeNull(column="requests"),
            gxe.ExpectColumnValuesToNotBeNull(column="requests_error_bound_95"),
            gxe.ExpectColumnValuesToBeBetween(column="requests_error_bound_95", min_value=0,
                                              strict_min=True),
            gxe.ExpectColumnValuesToNotBeNull(column="requests_noise_std"),
            gxe.ExpectColumnValuesToBeBetween(column="requests_noise_std", min_value=0,
                                              strict_min=True),
            gxe.ExpectColumnValuesToNotBeNull(column="requests_unfloored"),
            # requests = max(requests_unfloored, 0): never below the unfloored value ...
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="requests", column_B="requests_unfloored", or_equal=True),
            # ... and equal to it wherever that is not negative.
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A="requests", column_B="requests_unfloored",
                row_condition="requests_unfloored>=0", condition_parser="pandas"),
            gxe.ExpectColumnValuesToBeBetween(column="median_resolution_hours_noise_std",
                                              min_value=0),
        ])
    return _weekly_suite(ctx, PRODUCT_KINDS, [
        gxe.ExpectColumnValuesToNotBeNull(column="suppressed"),
        # A withheld cell has no count; a published one has.
        gxe.ExpectColumnValuesToBeNull(column="requests", row_condition="suppressed==True",
                                       condition_parser="pandas"),
        gxe.ExpectColumnValuesToBeNull(column="median_resolution_hours",
                                       row_condition="suppressed==True",
                                       condition_parser="pandas"),
        gxe.ExpectColumnValuesToNotBeNull(column="requests", row_condition="suppressed==False",
                                          condition_parser="pandas"),
    ])


def _weekly_suite(ctx: SuiteContext, kinds: dict, method_checks: list
                  ) -> gx.ExpectationSuite:
    """The weekly table's suite: the checks both methods share (columns, keys, the week, the
    public key set, the privacy expectations) around the method's own ``method_checks``."""
    exps = [
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(kinds)),
        ExpectColumnKindsToMatch(kinds=kinds),
        *row_count_expectations(ctx),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["week_start", "district_id", "request_type"]),
        gxe.ExpectColumnValuesToNotBeNull(column="district_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="request_type"),
        gxe.ExpectColumnValuesToBeBetween(column="median_resolution_hours", min_value=0),
        *method_checks,
    ]
    if ctx.interval is not None:
        week = ctx.interval[0].date()
        exps.append(gxe.ExpectColumnValuesToBeBetween(
            column="week_start", min_value=week, max_value=week,
            notes="the week of the data interval"))
    if ctx.district_ids is not None:
        exps.append(gxe.ExpectColumnValuesToBeInSet(column="district_id",
                                                    value_set=list(ctx.district_ids)))
    exps.append(gxe.ExpectColumnValuesToBeInSet(
        column="request_type", value_set=list(_request_types(ctx)),
        notes="the public key set of request types"))
    exps += privacy_expectations(ctx)
    return new_suite(f"{PRODUCT}.product", exps, {"dataset": PRODUCT, "stage": "product"})


def _request_types(ctx: SuiteContext) -> tuple[str, ...]:
    """The public key set of request types: ``context["request_types"]``, else the domain of
    the source schema's ``request_type`` (``context["schema"]``, passed by the caller)."""
    if ctx.extra.get("request_types") is not None:
        return tuple(ctx.extra["request_types"])
    return tuple(source_schema(ctx, SOURCE).column("request_type").allowed)


MICRODATA = "opencity-311-requests-microdata"
TOP = r"\*"
# Shapes of the generalized quasi-identifiers (privacy.kanon.Hierarchy labels); district_id:
# '*' or the source schema's code shape (:func:`microdata_patterns`).
MICRODATA_PATTERNS = {
    "age": rf"{TOP}|[0-9]{{1,3}}|\[[0-9]{{1,3}}, [0-9]{{1,3}}\)",
    "created": rf"{TOP}|[0-9]{{4}}(?:-[0-9]{{2}}(?:-[0-9]{{2}}(?:T[0-9]{{2}})?)?)?"
               r"|W[0-9]{4}-[0-9]{2}-[0-9]{2}",
}


def microdata_patterns(ctx: SuiteContext) -> dict[str, str]:
    """:data:`MICRODATA_PATTERNS` plus district_id's shape from the source schema."""
    code = source_schema(ctx, SOURCE).column("district_id").pattern
    return {**MICRODATA_PATTERNS, "district_id": rf"{TOP}|{code}"}


def microdata_domains(ctx: SuiteContext) -> dict[str, tuple[str, ...]]:
    """Allowed values of the released microdata columns ('*' = generalized away)."""
    col = source_schema(ctx, SOURCE).column
    domains = {
        "request_type": _request_types(ctx),
        "status": (*col("status").allowed, "*"),  # a quasi-identifier: may be generalized
        "gender": (*col("requester_gender").allowed, "*"),
    }
    if ctx.district_ids is not None:
        domains["district_id"] = (*ctx.district_ids, "*")
    return domains


def microdata_suite(ctx: SuiteContext) -> gx.ExpectationSuite:
    """The k-anonymous 311 microdata: the generic product checks (no identifiers, every
    class >= k) plus every published value inside its column's domain; a string column
    without a domain fails (free text is never published).

    Generated from what is published, not from the synthetic city's columns: the
    quasi-identifiers default to every published column but the sensitive one, and domains
    and shapes apply to the published columns only (a city without requester age or gender
    publishes neither, and its suite checks neither). Domains passed by the pipeline in
    ``context["privacy"]["domains"]`` (the input profile's code lists, the public districts)
    replace the defaults.
    """
    from expectations.products import product_suite as generic

    sensitive = str(ctx.extra.get("sensitive", "request_type"))
    p = ctx.privacy or PrivacyChecks(kind="microdata", quasi_identifiers=tuple(
        c for c in ctx.columns if c != sensitive) or tuple(ctx.columns), k=2)
    published = set(ctx.columns)
    domains = {c: v for c, v in {**microdata_domains(ctx), **p.domains}.items()
               if c in published}
    patterns = {c: v for c, v in {**microdata_patterns(ctx), **p.patterns}.items()
                if c in published}
    privacy = PrivacyChecks(**{**p.__dict__, "domains": domains, "patterns": patterns,
                               "every_column_has_domain": True})
    return generic(SuiteContext(**{**ctx.__dict__, "privacy": privacy}))
