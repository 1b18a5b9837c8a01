"""Offline HTML of the release and portal reports: inline CSS and SVG, no script, no CDN.

Written for a privacy officer who never read the code: every figure has a sentence saying
what it means, charts have a text alternative (``role="img"`` + ``<title>``) and the data
behind them in a table. Colours are the Okabe-Ito colour-blind-safe palette. Links point only
at files next to the report (relative paths), never at a third-party host.

Pages are Jinja2 templates (``templates/``: ``release.html``, ``portal.html``, their frame
``base.html`` and the sections in ``blocks.html``) rendered with autoescape, so every value
from a report (dataset and district names, categories, comments, reasons) is escaped; charts
come from the one chart module, :mod:`kpi.svg`.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from kpi import svg

TEMPLATES = Path(__file__).resolve().parent / "templates"
PALETTE = svg.PALETTE
STATUS_COLOURS = {"published": "#009E73", "pending approval": "#E69F00", "rejected": "#D55E00",
                  "withdrawn": "#777777", "staged": "#56B4E9"}
CSS = "\n" + (TEMPLATES / "report.css").read_text(encoding="utf-8")


def _num(x: Any, digits: int = 3) -> str:
    """A number as the reports show it (text; the templates escape it)."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) < 1e-3:
            return f"{x:.2g}"
        return f"{x:,.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def _plain(v: Any) -> str:
    """A parameter value as JSON text (lists and dicts readable, None as '–')."""
    return "–" if v is None else v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def _pct(x: Any) -> str:
    return "–" if x is None else f"{float(x):.2%}"


def _rel(target: str | None, base: Path) -> str | None:
    if not target:
        return None
    try:
        return Path(os.path.relpath(target, base)).as_posix()
    except ValueError:  # pragma: no cover - other drive on Windows
        return Path(target).as_uri()


# ------------------------------------------------------------------ charts (kpi.svg)
def bar_chart(labels: list[str], values: list[float], title: str, *, width: int = 560,
              height: int = 200, colour: str = PALETTE[0], y_label: str = "") -> Markup:
    """Vertical bars with value labels; ``title`` is the text alternative."""
    alt = f"{title}: " + "; ".join(f"{lab} {_num(v)}" for lab, v in zip(labels, values,
                                                                          strict=True))
    return svg.bars(labels, values, alt, _num, width=width, height=height, colour=colour,
                    y_label=y_label)


def stacked_bars(labels: list[str], series: dict[str, list[float]], title: str, *,
                 cap: float | None = None, width: int = 800, height: int = 230,
                 cumulative: bool = True) -> Markup:
    """Stacked bars per label (one colour per series); with ``cumulative`` a running-total
    line and the cap as a dashed line, both on the same axis."""
    totals = [sum(s[i] for s in series.values()) for i in range(len(labels))]
    alt = (f"{title}: " + "; ".join(f"{lab} ε {_num(t)}" for lab, t in zip(labels, totals,
                                                                          strict=True))
           + (f"; total {_num(sum(totals))}" if totals else "")
           + (f"; cap {_num(cap)}" if cap is not None else ""))
    return svg.stacked_bars(labels, series, alt, _num, cap=cap, width=width, height=height,
                            cumulative=cumulative)


def gauge(spent: float, cap: float | None, title: str, width: int = 260) -> Markup:
    """A horizontal bar: share of the cap spent. Over the cap is flagged in words and its
    true share (e.g. 106 %), never drawn or written as a full 100 % bar alone."""
    real = 0.0 if not cap else spent / cap
    over = bool(cap) and spent > cap * (1 + 1e-9)
    alt = f"{title}: ε {_num(spent)} of {_num(cap)} spent ({real:.0%})"
    if over:
        alt += " - OVER THE CAP"
    bar = svg.gauge(real, alt, width=width)
    if over:
        bar += Markup(f' <b class="bad">OVER THE CAP ({real:.0%})</b>')
    return bar


def _budget_chart(t: dict, title: str) -> Markup:
    parts = [b["partition"] for b in t["by_partition"]]
    names = sorted({n for b in t["by_partition"] for n in b["datasets"]})
    series = {n: [b["datasets"].get(n, 0.0) for b in t["by_partition"]] for n in names}
    cap = t.get("cap_epsilon") if t.get("cap_period") in ("month", None) else None
    return stacked_bars([p.removeprefix("dt=") for p in parts], series, title, cap=cap)


def _unit_text(dp: dict) -> str:
    """' (event-level: ...)' / ' (person-level; N input rows without identifier, each its own
    unit)' after the unit name."""
    level = dp.get("privacy_unit_level")
    if level == "event":
        return (" (event-level: each event is protected on its own; a person behind several "
                "events is not bounded as one person)")
    if level == "person":
        n = dp.get("rows_without_unit_identifier")
        return (" (person-level" + (f"; {_num(n)} input rows without an identifier, each "
                                    "counted as its own unit" if n else "") + ")")
    return ""


def _portal_budget_chart(b: dict) -> Markup:
    return _budget_chart({**b, "cap_epsilon": b["epsilon_cap"], "cap_period": "month"},
                         f"Budget used per {b['privacy_unit']} in {b['month']}")


# ------------------------------------------------------------------ pages
@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True,
                             finalize=lambda v: "" if v is None else v)
    env.filters.update(num=_num, pct=_pct, plain=_plain, rel=_rel)
    env.globals.update(bar_chart=bar_chart, budget_chart=_budget_chart, gauge=gauge,
                       portal_budget_chart=_portal_budget_chart, unit_text=_unit_text,
                       status_colours=STATUS_COLOURS, css=Markup(CSS))
    return env


def _guard_block(g: dict | list | None) -> str:
    """The composition guard's report (privacy.guard.GuardReport.as_dict: passed,
    releases_considered, checks [{name, passed, ...details}])."""
    return str(_env().get_template("blocks.html").module.guard_block(g))


def release_html(r: dict, base: Path) -> str:
    """The release report page; ``base`` is the folder the page is written to (for links)."""
    return _env().get_template("release.html").render(
        r=r, base=base, title=f"{r['title']} — {r['partition']}")


def portal_html(p: dict, base: Path) -> str:
    """The portal report page (index.html of the report folder)."""
    return _env().get_template("portal.html").render(
        p=p, base=base, title="OpenCity portal — privacy review",
        n_releases=sum(len(d["releases"]) for d in p["datasets"]))
