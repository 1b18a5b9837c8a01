"""The generic product suite: any table about to be published, checked by how it was made.

Used for every product without a dedicated module (CDR mobility products, KPI tables,
k-anonymous microdata). ``ctx.privacy`` must say how the product was anonymized:

* ``microdata``: no identifier columns or values; every class over the quasi-identifiers
  has at least k rows;
* ``dp``: no identifier columns or values; the privacy statement exists and matches the
  ledger; counts >= 0 and >= the release threshold when there is one;
* ``suppressed``: no identifier columns or values; counts >= 0 and >= the threshold;
* ``none``: identifier checks only (public reference data).
"""

from __future__ import annotations

import great_expectations as gx

from expectations.core import SuiteContext, new_suite, privacy_expectations, row_count_expectations
from opencity.errors import ConfigError


def product_suite(ctx: SuiteContext) -> gx.ExpectationSuite:
    """Privacy expectations (and the row-count floor) of any product."""
    if ctx.privacy is None:
        raise ConfigError(
            f"product {ctx.dataset!r} has no privacy declaration: pass context['privacy'] = "
            "{'kind': 'microdata'|'dp'|'suppressed'|'none', ...} so the gate knows which "
            "privacy expectations apply")
    exps = [*row_count_expectations(ctx), *privacy_expectations(ctx)]
    return new_suite(f"{ctx.dataset}.product", exps,
                     {"dataset": ctx.dataset, "stage": "product", "privacy": ctx.privacy.kind})
