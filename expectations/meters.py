"""Suites of the smart-meter sources: the meter registry and the readings (clean partitions).

Readings are >= 0 in kWh or litres, inside the data interval; each registry meter is unique,
in a known district, its household replaced by a pseudonym and its address dropped.
"""

from __future__ import annotations

import great_expectations as gx

from expectations.core import SuiteContext, new_suite, schema_expectations, source_schema

gxe = gx.expectations


def registry_suite(ctx: SuiteContext) -> gx.ExpectationSuite:
    """Suite of the clean meter registry."""
    exps = schema_expectations(source_schema(ctx, "meter_registry"), ctx)
    return new_suite("meter_registry.clean", exps, {"dataset": "meter_registry",
                                                    "stage": "clean"})


def readings_suite(ctx: SuiteContext) -> gx.ExpectationSuite:
    """Suite of a clean meter-readings partition."""
    exps = schema_expectations(source_schema(ctx, "meter_readings"), ctx)
    exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=["meter_id", "reading_time"]))
    return new_suite("meter_readings.clean", exps, {"dataset": "meter_readings",
                                                    "stage": "clean"})
