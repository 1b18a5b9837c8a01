"""The monitoring dashboard: one static, offline HTML page per period (inline SVG, no CDN).

``render_dashboard`` is pure: the period's KPI table, earlier KPI partitions (for trends) and
the registry in, an HTML string out. Per KPI it shows the city value with its method and
95 % error bound, a trend chart of the city value over past periods (whiskers for DP values)
and a per-district bar chart with whiskers. Colours are the Okabe-Ito colour-blind-safe
palette, every chart has a text label (``aria-label`` + ``<title>``) and a data table.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from string import Template

import pyarrow as pa

from kpi.registry import FGSSC_DIMENSIONS, KpiDef, Registry

TEMPLATE = Path(__file__).resolve().parent / "templates" / "dashboard.html"
COLOURS = {"public": "#0072B2", "dp": "#D55E00", "suppressed": "#777777"}
WIDTH, HEIGHT = 250, 150


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "suppressed"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}" + (f" {unit}" if unit else "")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _scale_max(values: list[tuple[float | None, float | None]]) -> float:
    top = max((v + (b or 0.0) for v, b in values if v is not None), default=0.0)
    return top * 1.1 if top > 0 else 1.0


def trend_svg(kpi: KpiDef, points: list[dict], chart_id: str) -> str:
    """City value per period, whiskers = error bound; suppressed periods marked with ×."""
    pad_l, pad_b, pad_t = 44, 24, 10
    w, h = WIDTH - pad_l - 8, HEIGHT - pad_b - pad_t
    top = _scale_max([(p["value"], p["error_bound"]) for p in points])
    n = max(len(points), 1)
    label = (f"Trend of {kpi.name} for the city over {len(points)} period(s): "
             + "; ".join(f"{p['period']} {_fmt(p['value'], kpi.unit)}" for p in points))
    out = [(f'<svg class="chart" id="{chart_id}" role="img" aria-label="{_e(label)}" '
           f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">'),
           f"<title>{_e(label)}</title>",
           (f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" '
           'stroke="#888"/>'),
           (f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end" font-size="10">'
           f"{_e(_fmt(top))}</text>"),
           f'<text x="{pad_l - 4}" y="{pad_t + h}" text-anchor="end" font-size="10">0</text>']
    xy = []
    for i, p in enumerate(points):
        x = pad_l + (i + 0.5) * w / n
        out.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle" font-size="10">'
                   f"{_e(p['period'])}</text>")
        if p["value"] is None:
            out.append(f'<text x="{x:.1f}" y="{pad_t + h - 4}" text-anchor="middle" '
                       f'font-size="12" fill="{COLOURS["suppressed"]}">×</text>')
            continue
        y = pad_t + h - p["value"] / top * h
        xy.append((x, y))
        colour = COLOURS.get(p["method"], "#000")
        if p["error_bound"]:
            y0 = pad_t + h - max(p["value"] - p["error_bound"], 0) / top * h
            y1 = pad_t + h - (p["value"] + p["error_bound"]) / top * h
            out.append(f'<line x1="{x:.1f}" y1="{y0:.1f}" x2="{x:.1f}" y2="{y1:.1f}" '
                       f'stroke="{colour}" stroke-width="1.5"/>')
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}">'
                   f"<title>{_e(p['period'])}: {_e(_fmt(p['value'], kpi.unit))}</title></circle>")
    if len(xy) > 1:
        d = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(xy))
        out.append(f'<path d="{d}" fill="none" stroke="#444" stroke-width="1"/>')
    if not points:
        out.append(f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="none" '
                   'stroke="#ccc"/>')
    out.append("</svg>")
    return "".join(out)


def districts_svg(kpi: KpiDef, rows: list[dict], chart_id: str) -> str:
    """Horizontal bars per district with error whiskers; suppressed rows labelled."""
    bar_h, pad_l, pad_r = 14, 44, 60
    height = max(len(rows), 1) * (bar_h + 4) + 20
    width = WIDTH + 60
    w = width - pad_l - pad_r
    top = _scale_max([(r["value"], r["error_bound"]) for r in rows])
    label = (f"{kpi.name} by district: "
             + "; ".join(f"{r['area']} {_fmt(r['value'], kpi.unit)}" for r in rows))
    out = [(f'<svg class="chart" id="{chart_id}" role="img" aria-label="{_e(label)}" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'),
           f"<title>{_e(label)}</title>"]
    for i, r in enumerate(rows):
        y = 4 + i * (bar_h + 4)
        out.append(f'<text x="{pad_l - 4}" y="{y + bar_h - 3}" text-anchor="end" '
                   f'font-size="10">{_e(r["area"])}</text>')
        if r["value"] is None:
            out.append(f'<rect x="{pad_l}" y="{y}" width="{w}" height="{bar_h}" fill="none" '
                       f'stroke="{COLOURS["suppressed"]}" stroke-dasharray="3 2"/>'
                       f'<text x="{pad_l + 4}" y="{y + bar_h - 3}" font-size="10" '
                       f'fill="#444">suppressed</text>')
            continue
        colour = COLOURS.get(r["method"], "#000")
        bw = max(r["value"], 0) / top * w
        out.append(f'<rect x="{pad_l}" y="{y}" width="{bw:.1f}" height="{bar_h}" '
                   f'fill="{colour}" fill-opacity="0.85"><title>{_e(r["area"])}: '
                   f'{_e(_fmt(r["value"], kpi.unit))}</title></rect>')
        if r["error_bound"]:
            x0 = pad_l + max(r["value"] - r["error_bound"], 0) / top * w
            x1 = pad_l + (r["value"] + r["error_bound"]) / top * w
            ym = y + bar_h / 2
            out.append(f'<line x1="{x0:.1f}" y1="{ym}" x2="{x1:.1f}" y2="{ym}" '
                       'stroke="#000" stroke-width="1.5"/>'
                       f'<line x1="{x0:.1f}" y1="{y + 3}" x2="{x0:.1f}" y2="{y + bar_h - 3}" '
                       'stroke="#000"/>'
                       f'<line x1="{x1:.1f}" y1="{y + 3}" x2="{x1:.1f}" y2="{y + bar_h - 3}" '
                       'stroke="#000"/>')
        out.append(f'<text x="{width - pad_r + 4}" y="{y + bar_h - 3}" font-size="10">'
                   f"{_e(_fmt(r['value']))}</text>")
    out.append("</svg>")
    return "".join(out)


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def _reason(row: dict) -> str:
    """' (why it is withheld)' for a withheld row, else ''."""
    reason = row.get("withheld_reason")
    return f" <span class='note'>({_e(reason)})</span>" if reason else ""


def _table_html(kpi: KpiDef, rows: list[dict]) -> str:
    body = "".join(
        f"<tr><td>{_e(r['area'])}</td><td class='num'>{_e(_fmt(r['value']))}</td>"
        f"<td class='num'>{'' if r['error_bound'] in (None, 0) else '± ' + _fmt(r['error_bound'])}"
        f"</td><td>{_e(r['method'])}{_reason(r)}</td></tr>" for r in rows)
    return (f"<details><summary>Data table ({_e(kpi.unit)})</summary><table><thead><tr>"
            "<th scope='col'>Area</th><th scope='col'>Value</th><th scope='col'>95 % error</th>"
            f"<th scope='col'>Method</th></tr></thead><tbody>{body}</tbody></table></details>")


def render_dashboard(current: pa.Table, history: pa.Table, registry: Registry,
                     city_name: str = "OpenCity") -> str:
    """HTML of the dashboard for the period of ``current`` (history = earlier partitions)."""
    rows = _rows(current)
    if not rows:
        raise ValueError("the KPI table is empty; nothing to show")
    period = rows[0]["period"]
    past = [r for r in _rows(history) if r["period"] < period]
    sections = []
    dims = sorted({k.fgssc_dimension for k in registry.kpis})
    n_districts = len({r["area"] for r in rows if r["area"] != "city"})
    for dim in dims:
        cards = []
        for kpi in (k for k in registry.kpis if k.fgssc_dimension == dim):
            mine = [r for r in rows if r["kpi_code"] == kpi.code]
            if not mine:
                continue
            city = next((r for r in mine if r["area"] == "city"), mine[0])
            trend = sorted([r for r in past if r["kpi_code"] == kpi.code and r["area"] == "city"]
                           + [city], key=lambda r: r["period"])
            districts = sorted((r for r in mine if r["area"] != "city"), key=lambda r: r["area"])
            slug = _slug(kpi.code)
            code_label = ("U4SSC " if kpi.code_status != "local" else "") + kpi.code + (
                " (code not verified)" if kpi.code_status == "unverified" else "")
            err = ("" if not city["error_bound"] else
                   f" <span class='note'>± {_e(_fmt(city['error_bound']))} (95 %)</span>")
            charts = [(f"<figure>{trend_svg(kpi, trend, 'trend-' + slug)}<figcaption>City, "
                      f"{len(trend)} period(s)</figcaption></figure>")]
            if districts:
                charts.append(f"<figure>{districts_svg(kpi, districts, 'districts-' + slug)}"
                              "<figcaption>By district</figcaption></figure>")
            cards.append(
                f"<article class='kpi' aria-labelledby='h-{slug}'>"
                f"<h3 id='h-{slug}'>{_e(kpi.name)}</h3>"
                f"<p class='code'>{_e(code_label)} &middot; U4SSC dimension "
                f"{_e(kpi.u4ssc_dimension)}</p>"
                f"<p><span class='value'>{_e(_fmt(city['value'], kpi.unit))}</span>{err} "
                f"<span class='badge {_e(city['method'])}'>"
                f"{'DP' if city['method'] == 'dp' else _e(city['method'])}</span>"
                f"{_reason(city)}</p>"
                f"<p class='note'>{_e(kpi.definition)}</p>"
                f"<div class='charts'>{''.join(charts)}</div>"
                f"{_table_html(kpi, [city, *districts])}</article>")
        if cards:
            sections.append(f"<section aria-labelledby='dim-{dim}'><h2 id='dim-{dim}'>{dim} "
                            f"{_e(FGSSC_DIMENSIONS[dim])}</h2><div class='grid'>"
                            f"{''.join(cards)}</div></section>")
    computed = rows[0]["computed_at"]
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        title=_e(f"{city_name}: smart sustainable city KPIs"),
        period=_e(period),
        computed_at=_e(computed.isoformat() if hasattr(computed, "isoformat") else computed),
        n_kpis=len({r["kpi_code"] for r in rows}),
        n_dims=len({r["fgssc_dimension"] for r in rows}),
        n_districts=n_districts,
        sections="\n".join(sections),
    )
