"""The monitoring dashboard: one static, offline HTML page per period (inline SVG, no CDN).

``render_dashboard`` is pure: the period's KPI table, earlier KPI partitions (for trends) and
the registry in, an HTML string out. Per KPI it shows the city value with its method and
95 % error bound, a trend chart of the city value over past periods (whiskers for DP values)
and a per-district bar chart with whiskers. Colours are the Okabe-Ito colour-blind-safe
palette, every chart has a text label (``aria-label`` + ``<title>``) and a data table.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import jinja2
import pyarrow as pa

from kpi import svg
from kpi.registry import FGSSC_DIMENSIONS, KpiDef, Registry

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = TEMPLATES / "dashboard.html"
COLOURS = {"public": "#0072B2", "dp": "#D55E00", "suppressed": "#777777"}
WIDTH, HEIGHT = 250, 150


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True)


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "suppressed"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}" + (f" {unit}" if unit else "")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def trend_svg(kpi: KpiDef, points: list[dict], chart_id: str) -> str:
    """City value per period, whiskers = error bound; suppressed periods marked with ×."""
    label = (f"Trend of {kpi.name} for the city over {len(points)} period(s): "
             + "; ".join(f"{p['period']} {_fmt(p['value'], kpi.unit)}" for p in points))
    return svg.trend(points, label, _fmt,
                     lambda p: f"{p['period']}: {_fmt(p['value'], kpi.unit)}", COLOURS,
                     chart_id=chart_id, width=WIDTH, height=HEIGHT)


def districts_svg(kpi: KpiDef, rows: list[dict], chart_id: str) -> str:
    """Horizontal bars per district with error whiskers; suppressed rows labelled."""
    label = (f"{kpi.name} by district: "
             + "; ".join(f"{r['area']} {_fmt(r['value'], kpi.unit)}" for r in rows))
    return svg.hbars(rows, label, _fmt, lambda r: f"{r['area']}: {_fmt(r['value'], kpi.unit)}",
                     COLOURS, chart_id=chart_id, width=WIDTH + 60)


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def _table_rows(rows: list[dict]) -> list[dict]:
    return [{"area": r["area"], "value": _fmt(r["value"]),
             "error": "" if r["error_bound"] in (None, 0) else _fmt(r["error_bound"]),
             "method": r["method"], "reason": r.get("withheld_reason")} for r in rows]


def _card(kpi: KpiDef, mine: list[dict], past: list[dict]) -> dict:
    city = next((r for r in mine if r["area"] == "city"), mine[0])
    trend = sorted([r for r in past if r["kpi_code"] == kpi.code and r["area"] == "city"]
                   + [city], key=lambda r: r["period"])
    districts = sorted((r for r in mine if r["area"] != "city"), key=lambda r: r["area"])
    slug = _slug(kpi.code)
    code_label = ("U4SSC " if kpi.code_status != "local" else "") + kpi.code + (
        " (code not verified)" if kpi.code_status == "unverified" else "")
    charts = [{"svg": trend_svg(kpi, trend, "trend-" + slug),
               "caption": f"City, {len(trend)} period(s)"}]
    if districts:
        charts.append({"svg": districts_svg(kpi, districts, "districts-" + slug),
                       "caption": "By district"})
    return {"slug": slug, "name": kpi.name, "code_label": code_label,
            "u4ssc_dimension": kpi.u4ssc_dimension, "value": _fmt(city["value"], kpi.unit),
            "error": _fmt(city["error_bound"]) if city["error_bound"] else "",
            "method": city["method"],
            "badge": "DP" if city["method"] == "dp" else city["method"],
            "reason": city.get("withheld_reason"), "definition": kpi.definition,
            "charts": charts, "unit": kpi.unit, "rows": _table_rows([city, *districts])}


def render_dashboard(current: pa.Table, history: pa.Table, registry: Registry,
                     city_name: str = "OpenCity") -> str:
    """HTML of the dashboard for the period of ``current`` (history = earlier partitions).

    Rendered from ``templates/dashboard.html`` by Jinja2 with autoescape: every name, code,
    reason and label coming from data or configuration is escaped; charts come from
    :mod:`kpi.svg`.
    """
    rows = _rows(current)
    if not rows:
        raise ValueError("the KPI table is empty; nothing to show")
    period = rows[0]["period"]
    past = [r for r in _rows(history) if r["period"] < period]
    sections = []
    for dim in sorted({k.fgssc_dimension for k in registry.kpis}):
        cards = []
        for kpi in (k for k in registry.kpis if k.fgssc_dimension == dim):
            mine = [r for r in rows if r["kpi_code"] == kpi.code]
            if mine:
                cards.append(_card(kpi, mine, past))
        if cards:
            sections.append({"dim": dim, "name": FGSSC_DIMENSIONS[dim], "cards": cards})
    computed = rows[0]["computed_at"]
    return _env().get_template(TEMPLATE.name).render(
        title=f"{city_name}: smart sustainable city KPIs",
        period=period,
        computed_at=computed.isoformat() if hasattr(computed, "isoformat") else computed,
        n_kpis=len({r["kpi_code"] for r in rows}),
        n_dims=len({r["fgssc_dimension"] for r in rows}),
        n_districts=len({r["area"] for r in rows if r["area"] != "city"}),
        sections=sections,
    )
