"""Suites of the public reference tables: districts and cell towers.

They are published as they are, so they get the product identifier checks too (their names
are public place names, hence ``name`` is an allowed column).
"""

from __future__ import annotations

import great_expectations as gx

from expectations.core import (
    PrivacyChecks,
    SuiteContext,
    new_suite,
    privacy_expectations,
    schema_expectations,
    source_schema,
)

gxe = gx.expectations


def districts_suite(ctx: SuiteContext) -> gx.ExpectationSuite:
    """District table: unique ids, non-negative population, rectangles with min < max."""
    exps = schema_expectations(source_schema(ctx, "districts"), ctx)
    exps += [
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="lat_max", column_B="lat_min"),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="lon_max", column_B="lon_min"),
        gxe.ExpectColumnValuesToBeBetween(column="lat_min", min_value=-90, max_value=90),
        gxe.ExpectColumnValuesToBeBetween(column="lat_max", min_value=-90, max_value=90),
        gxe.ExpectColumnValuesToBeBetween(column="lon_min", min_value=-180, max_value=180),
        gxe.ExpectColumnValuesToBeBetween(column="lon_max", min_value=-180, max_value=180),
    ]
    ref = SuiteContext(**{**ctx.__dict__, "privacy": PrivacyChecks(
        kind="none", allowed_columns=("name",), text_columns=("district_id",))})
    exps += privacy_expectations(ref)
    return new_suite("districts.reference", exps, {"dataset": "districts",
                                                   "stage": "reference"})


def towers_suite(ctx: SuiteContext) -> gx.ExpectationSuite:
    """Tower table: unique cell ids, coordinates on Earth, regions in the district table."""
    exps = schema_expectations(source_schema(ctx, "towers"), ctx)
    if ctx.district_ids is not None:
        exps.append(gxe.ExpectColumnValuesToBeInSet(column="region_id",
                                                    value_set=list(ctx.district_ids)))
    return new_suite("towers.reference", exps, {"dataset": "towers", "stage": "reference"})
