"""Issue 19 item 5: the dashboard is a Jinja2 template with autoescape, its charts come from
the one scriptless chart module (kpi.svg). A district, category or city name with markup is
shown as text, never run or parsed as markup."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from kpi import svg
from kpi.compute import KPI_SCHEMA
from kpi.dashboard import render_dashboard
from kpi.registry import load_registry

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _table(period: str, area: str) -> pa.Table:
    rows = []
    for i, k in enumerate(load_registry().kpis):
        for where, withheld in (("city", False), (area, True), ("D02", False)):
            rows.append({
                "kpi_code": k.code, "kpi_name": k.name, "fgssc_dimension": k.fgssc_dimension,
                "u4ssc_dimension": k.u4ssc_dimension, "area": where, "period": period,
                "value": None if withheld else 10.0 + i, "unit": k.unit,
                "method": "suppressed" if withheld else "dp",
                "error_bound": None if withheld else 1.5,
                "withheld_reason": f"too few in {EVIL}" if withheld else None,
                "source_datasets": ",".join(k.source_datasets),
                "computed_at": datetime(2027, 1, 1, tzinfo=UTC)})
    return pa.Table.from_pylist(rows, schema=KPI_SCHEMA)


def test_names_with_markup_are_escaped_everywhere():
    reg = load_registry()
    html = render_dashboard(_table("2026-12", EVIL), _table("2026-11", EVIL), reg,
                            f"City {EVIL}")
    # the page's own self-check is its only script; nothing of the data became markup
    assert html.count("<script") == 1 and "<img" not in html
    assert "&lt;script&gt;alert(" in html
    assert html.count("&lt;img src=x onerror=alert(1)&gt;") >= 3 * len(reg.kpis)
    assert "<title>City &lt;script&gt;" in html
    charts = html.count('<svg class="chart"')
    assert charts == 2 * len(reg.kpis)  # a trend and a by-district chart per KPI


def test_chart_module_escapes_and_stays_scriptless():
    rows = [{"area": EVIL, "value": 3.0, "error_bound": 1.0, "method": "dp"},
            {"area": "D2", "value": None, "error_bound": None, "method": "suppressed"}]
    out = svg.hbars(rows, f"alt {EVIL}", str, lambda r: f"{r['area']}", {"dp": "#D55E00"},
                    chart_id='x" onload="alert(1)')
    assert "<script" not in out and "<img" not in out
    assert 'onload="' not in out and "&#34; onload=&#34;alert(1)" in out
    assert out.startswith('<svg class="chart" id=') and 'role="img"' in out
    assert out.count("&lt;script&gt;") == 4  # aria-label, title, bar label, bar title
    with pytest.raises(ValueError, match="scriptless"):
        svg.element("rect", onclick="alert(1)")


@pytest.mark.parametrize("value,text", [(3, "3"), (3.0, "3"), (2.54, "2.5"), (0.85, "0.85"),
                                        (-1.25, "-1.2"), ("12", "12")])
def test_numbers_in_attributes(value, text):
    assert svg.num(value) == text
