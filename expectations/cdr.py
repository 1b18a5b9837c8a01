"""Suites of the CDR (call detail records) clean partition.

Clean CDR rows (after ingestion) carry the subscriber pseudonym, never the MSISDN or IMSI;
cells must be in the public tower table (``region_id`` is added from it). The DP mobility
products are checked by the generic product suite (expectations.products) with
``privacy={"kind": "dp", ...}``.
"""

from __future__ import annotations

import great_expectations as gx

from expectations.core import SuiteContext, new_suite, schema_expectations, source_schema

gxe = gx.expectations


def clean_suite(ctx: SuiteContext) -> gx.ExpectationSuite:
    """Suite of a clean CDR partition (with ``region_id`` when towers were given)."""
    extra = ["region_id"] if "region_id" in ctx.columns else []
    exps = schema_expectations(source_schema(ctx, "cdr"), ctx, extra)
    exps.append(gxe.ExpectColumnValuesToNotBeNull(column="subscriber_pid"))
    if extra:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column="region_id"))
    return new_suite("cdr.clean", exps, {"dataset": "cdr", "stage": "clean"})
