"""The dashboard shows a trend over the months it is given and says why a value is withheld."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from kpi.compute import KPI_SCHEMA
from kpi.dashboard import render_dashboard
from kpi.registry import load_registry

REASON = "fewer than 15 households (noisy count) in the area & period"


def _table(period: str, withheld_city: bool = False) -> pa.Table:
    reg = load_registry()
    rows = []
    for i, k in enumerate(reg.kpis):
        for area in ("city", "D01"):
            withheld = withheld_city and area == "city"
            rows.append({
                "kpi_code": k.code, "kpi_name": k.name, "fgssc_dimension": k.fgssc_dimension,
                "u4ssc_dimension": k.u4ssc_dimension, "area": area, "period": period,
                "value": None if withheld else 10.0 + i,
                "unit": k.unit, "method": "suppressed" if withheld else "public",
                "error_bound": None if withheld else 0.0,
                "withheld_reason": REASON if withheld else None,
                "source_datasets": ",".join(k.source_datasets),
                "computed_at": datetime(2027, 1, 1, tzinfo=UTC),
            })
    return pa.Table.from_pylist(rows, schema=KPI_SCHEMA)


def test_trend_over_three_months_and_reason_in_the_page():
    reg = load_registry()
    history = pa.concat_tables([_table("2026-10"), _table("2026-11")])
    html = render_dashboard(_table("2026-12", withheld_city=True), history, reg, "Test city")
    assert html.count("City, 3 period(s)") == len(reg.kpis)
    assert "2026-10" in html and "2026-11" in html and "2026-12" in html
    # the reason is in the city card and in the data table, escaped
    assert html.count("fewer than 15 households (noisy count) in the area &amp; period") \
        == 2 * len(reg.kpis)
    plain = render_dashboard(_table("2026-12"), history, reg, "Test city")
    assert "noisy count" not in plain
