"""Suites of the transit sources: stops (public reference) and card taps (clean partition)."""

from __future__ import annotations

import great_expectations as gx

from expectations.core import SuiteContext, new_suite, schema_expectations, source_schema

gxe = gx.expectations


def stops_suite(ctx: SuiteContext) -> gx.ExpectationSuite:
    """Suite of the public stop table (stop names are public: ``stop_name`` is allowed)."""
    exps = schema_expectations(source_schema(ctx, "transit_stops"), ctx)
    return new_suite("transit_stops.clean", exps, {"dataset": "transit_stops",
                                                   "stage": "reference"})


def taps_suite(ctx: SuiteContext) -> gx.ExpectationSuite:
    """Suite of a clean taps partition: card pseudonym present, stops known."""
    exps = schema_expectations(source_schema(ctx, "transit_taps"), ctx)
    exps.append(gxe.ExpectColumnValuesToNotBeNull(column="card_pid"))
    stop_ids = ctx.extra.get("stop_ids")
    if stop_ids is not None:
        exps.append(gxe.ExpectColumnValuesToBeInSet(column="stop_id", value_set=list(stop_ids),
                                                    notes="stops of the public stop table"))
    return new_suite("transit_taps.clean", exps, {"dataset": "transit_taps", "stage": "clean"})
