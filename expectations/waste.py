"""Suite of the waste pickups (clean partition): status, weights >= 0, collected iff status."""

from __future__ import annotations

import great_expectations as gx

from expectations.core import SuiteContext, new_suite, schema_expectations, source_schema

gxe = gx.expectations


def clean_suite(ctx: SuiteContext) -> gx.ExpectationSuite:
    """Suite of a clean waste_pickups partition."""
    exps = schema_expectations(source_schema(ctx, "waste_pickups"), ctx)
    exps.append(gxe.ExpectColumnValuesToNotBeNull(
        column="collected_at", row_condition='status=="collected"', condition_parser="pandas",
        notes="a collected pickup has its collection time"))
    return new_suite("waste_pickups.clean", exps, {"dataset": "waste_pickups",
                                                   "stage": "clean"})
