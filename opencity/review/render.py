"""Offline HTML of the release and portal reports: inline CSS and SVG, no script, no CDN.

Written for a privacy officer who never read the code: every figure has a sentence saying
what it means, charts have a text alternative (``role="img"`` + ``<title>``) and the data
behind them in a table. Colours are the Okabe-Ito colour-blind-safe palette. Links point only
at files next to the report (relative paths), never at a third-party host.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000")
STATUS_COLOURS = {"published": "#009E73", "pending approval": "#E69F00", "rejected": "#D55E00",
                  "withdrawn": "#777777", "staged": "#56B4E9"}

CSS = """
:root { --ink:#1d2733; --muted:#5b6673; --line:#d9dee4; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0; background: #fff; }
header { background: #12324f; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #cfe0ef; }
main { padding: 8px 28px 40px; max-width: 1180px; }
h2 { font-size: 18px; border-bottom: 2px solid var(--line); padding-bottom: 4px; margin-top: 28px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.note, .note { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .hash { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px;
              word-break: break-all; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff;
         font-size: 12.5px; font-weight: 600; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 150px;
        background: var(--bg); }
.card .v { font-size: 22px; font-weight: 700; }
.card .l { font-size: 12.5px; color: var(--muted); }
.ok { color: #007a55; font-weight: 600; } .bad { color: #b3261e; font-weight: 600; }
.box { border-left: 4px solid #E69F00; background: #fff8e6; padding: 8px 12px; margin: 10px 0; }
.box.gone { border-color: #777; background: #f1f1f1; }
.box.red { border-color: #D55E00; background: #fdeee8; }
svg { display: block; margin: 6px 0 4px; }
nav a { color: #cfe0ef; }
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _num(x: Any, digits: int = 3) -> str:
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
    return _e(x)


def _plain(v: Any) -> str:
    """A parameter value as JSON text (lists and dicts readable, None as '–')."""
    import json

    return "–" if v is None else v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def _pct(x: Any) -> str:
    return "–" if x is None else f"{float(x):.2%}"


def _badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#555")
    return f'<span class="badge" style="background:{colour}">{_e(status)}</span>'


def _table(head: list[str], rows: list[list[str]], num_cols: tuple[int, ...] = ()) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in num_cols else f"<td>{c}</td>"
                         for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _rel(target: str | None, base: Path) -> str | None:
    if not target:
        return None
    try:
        return Path(os.path.relpath(target, base)).as_posix()
    except ValueError:  # pragma: no cover - other drive on Windows
        return Path(target).as_uri()


# ------------------------------------------------------------------ charts
def _chart_frame(alt: str, width: float, height: float, pad_l: float, pad_t: float,
                 w: float, h: float, top: float) -> list[str]:
    """Opening of a bar chart: the accessible svg element, the x axis and the y scale."""
    return [(f'<svg role="img" aria-label="{_e(alt)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">'),
            f"<title>{_e(alt)}</title>",
            (f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" '
             'stroke="#888"/>'),
            (f'<text x="{pad_l - 6}" y="{pad_t + 10}" text-anchor="end" font-size="10">'
             f"{_e(_num(top))}</text>"),
            f'<text x="{pad_l - 6}" y="{pad_t + h}" text-anchor="end" font-size="10">0</text>']


def bar_chart(labels: list[str], values: list[float], title: str, *, width: int = 560,
              height: int = 200, colour: str = PALETTE[0], y_label: str = "") -> str:
    """Vertical bars with value labels; ``title`` is the text alternative."""
    pad_l, pad_b, pad_t, pad_r = 48, 40, 14, 10
    w, h = width - pad_l - pad_r, height - pad_b - pad_t
    top = max([float(v) for v in values] + [0.0]) or 1.0
    n = max(len(values), 1)
    bw = w / n
    alt = f"{title}: " + "; ".join(f"{lab} {_num(v)}" for lab, v in zip(labels, values,
                                                                          strict=True))
    out = _chart_frame(alt, width, height, pad_l, pad_t, w, h, top)
    if y_label:
        out.append(f'<text x="10" y="{pad_t + h / 2}" font-size="10" transform="rotate(-90 10 '
                   f'{pad_t + h / 2})" text-anchor="middle">{_e(y_label)}</text>')
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        bh = h * float(v) / top
        x = pad_l + i * bw + bw * 0.12
        out.append(f'<rect x="{x:.1f}" y="{pad_t + h - bh:.1f}" width="{bw * 0.76:.1f}" '
                   f'height="{bh:.1f}" fill="{colour}"/>')
        if v:
            out.append(f'<text x="{x + bw * 0.38:.1f}" y="{pad_t + h - bh - 3:.1f}" '
                       f'font-size="10" text-anchor="middle">{_e(_num(v))}</text>')
        out.append(f'<text x="{x + bw * 0.38:.1f}" y="{pad_t + h + 14}" font-size="10" '
                   f'text-anchor="middle">{_e(lab)}</text>')
    out.append("</svg>")
    return "".join(out)


def stacked_bars(labels: list[str], series: dict[str, list[float]], title: str, *,
                 cap: float | None = None, width: int = 800, height: int = 230,
                 cumulative: bool = True) -> str:
    """Stacked bars per label (one colour per series); with ``cumulative`` a running-total
    line and the cap as a dashed line, both on the same axis."""
    pad_l, pad_b, pad_t, pad_r = 48, 58, 14, 210
    w, h = width - pad_l - pad_r, height - pad_b - pad_t
    totals = [sum(s[i] for s in series.values()) for i in range(len(labels))]
    running = []
    acc = 0.0
    for t in totals:
        acc += t
        running.append(acc)
    top = max([*totals, *(running if cumulative else []), cap or 0.0, 0.0]) or 1.0
    top *= 1.05
    n = max(len(labels), 1)
    bw = w / n
    alt = (f"{title}: " + "; ".join(f"{lab} ε {_num(t)}" for lab, t in zip(labels, totals,
                                                                          strict=True))
           + (f"; total {_num(running[-1])}" if running else "")
           + (f"; cap {_num(cap)}" if cap is not None else ""))
    out = _chart_frame(alt, width, height, pad_l, pad_t, w, h, top)
    for i, lab in enumerate(labels):
        y = pad_t + h
        x = pad_l + i * bw + bw * 0.15
        for j, (_name, vals) in enumerate(series.items()):
            bh = h * vals[i] / top
            if bh <= 0:
                continue
            y -= bh
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw * 0.7:.1f}" '
                       f'height="{bh:.1f}" fill="{PALETTE[j % len(PALETTE)]}"/>')
        tx, ty = x + bw * 0.35, pad_t + h + 8
        out.append(f'<text x="{tx:.1f}" y="{ty}" font-size="9" text-anchor="end" '
                   f'transform="rotate(-45 {tx:.1f} {ty})">{_e(lab)}</text>')
    if cumulative and running:
        pts = " ".join(f"{pad_l + (i + 0.5) * bw:.1f},{pad_t + h - h * r / top:.1f}"
                       for i, r in enumerate(running))
        out.append(f'<polyline points="{pts}" fill="none" stroke="#000" stroke-width="1.5"/>')
    if cap is not None:
        yc = pad_t + h - h * cap / top
        out.append(f'<line x1="{pad_l}" y1="{yc:.1f}" x2="{pad_l + w}" y2="{yc:.1f}" '
                   'stroke="#D55E00" stroke-dasharray="5,3"/>')
        out.append(f'<text x="{pad_l + w + 4}" y="{yc + 3:.1f}" font-size="10" '
                   f'fill="#D55E00">cap {_e(_num(cap))}</text>')
    ly = pad_t
    for j, name in enumerate(series):
        out.append(f'<rect x="{pad_l + w + 4}" y="{ly + 14 * j + 14}" width="10" height="10" '
                   f'fill="{PALETTE[j % len(PALETTE)]}"/>')
        out.append(f'<text x="{pad_l + w + 18}" y="{ly + 14 * j + 23}" font-size="10">'
                   f"{_e(name[:34])}</text>")
    if cumulative:
        out.append(f'<text x="{pad_l + w + 4}" y="{ly + 14 * len(series) + 36}" '
                   'font-size="10">— running total</text>')
    out.append("</svg>")
    return "".join(out)


def gauge(spent: float, cap: float | None, title: str, width: int = 260) -> str:
    """A horizontal bar: share of the cap spent. Over the cap is flagged in words and its
    true share (e.g. 106 %), never drawn or written as a full 100 % bar alone."""
    real = 0.0 if not cap else spent / cap
    share = min(1.0, real)
    over = bool(cap) and spent > cap * (1 + 1e-9)
    colour = "#009E73" if share < 0.75 else "#E69F00" if share < 1.0 else "#D55E00"
    alt = f"{title}: ε {_num(spent)} of {_num(cap)} spent ({real:.0%})"
    if over:
        alt += " - OVER THE CAP"
    bar = (f'<svg role="img" aria-label="{_e(alt)}" width="{width}" height="16" '
           f'viewBox="0 0 {width} 16"><title>{_e(alt)}'
           f'</title><rect x="0" y="2" width="{width}" height="12" fill="#e6e9ed"/>'
           f'<rect x="0" y="2" width="{width * share:.1f}" height="12" fill="{colour}"/>'
           "</svg>")
    if over:
        bar += f' <b class="bad">OVER THE CAP ({real:.0%})</b>'
    return bar


# ------------------------------------------------------------------ pages
def _page(title: str, subtitle: str, body: str, nav: str = "") -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src 'self' data:\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>{subtitle}</p>{nav}</header>"
            f"<main>{body}</main></body></html>\n")


def _policy_block(r: dict) -> str:
    pol = r["policy"]
    decisions = pol.get("decisions") or []
    if decisions:
        d = decisions[-1]
        who = (f"<span class=\"{'ok' if d['decision'] == 'approved' else 'bad'}\">"
               f"{_e(d['decision'])}</span> by <b>{_e(d['decided_by'])}</b> on "
               f"{_e(d['decided_at'])} ({_e(d['source'])})"
               + (f" — “{_e(d['comment'])}”" if d.get("comment") else ""))
    else:
        who = '<span class="bad">not approved yet</span>'
    return (f"<p>Policy version <span class=\"hash\">{_e(pol['hash'])}</span> "
            f"<span class=\"note\">({_e(pol.get('source'))})</span><br>Decision: {who}</p>")


def _changes_block(r: dict) -> str:
    ch = r.get("changes") or {}
    if not ch or ch.get("first_release"):
        return ("<p>This is the <b>first release</b> of this dataset: a privacy officer must "
                "approve it before it is published.</p>")
    head = (f"<p>Compared with the previous release <b>{_e(ch['previous_partition'])}</b>: "
            + ("<span class=\"bad\">the policy version changed</span> (was "
               f"<span class=\"hash\">{_e(ch.get('previous_policy_hash', '')[:16])}…</span>)"
               if ch.get("policy_changed") else "same policy version")
            + ".</p>")
    if not ch.get("parameters"):
        return head + "<p>No privacy parameter changed.</p>"
    rows = [[f"<code>{_e(d['key'])}</code>", _e(d["before"]), _e(d["after"])]
            for d in ch["parameters"]]
    return head + _table(["parameter", "previous release", "this release"], rows)


def _microdata_block(m: dict) -> str:
    if not m.get("achievable"):
        return f"<p class=\"bad\">Not released: {_e(m.get('reason'))}</p>"
    cards = [("k", m.get("k"), ("every combination of the identifying columns is shared by "
                                "at least this many records")),
             ("l", m.get("l"), (f"different values of '{m.get('sensitive')}' in every group "
                                f"({m.get('l_variant') or 'distinct'} l-diversity)")),
             ("t", m.get("t"), "t-closeness: distance of each group's distribution from the "
              "whole table's" if m.get("t") else "t-closeness not used"),
             ("records removed", m.get("suppressed_records"),
              (f"{_pct(m.get('suppressed_share'))} of the records (limit "
               f"{_pct(m.get('suppression_limit'))})"))]
    out = ['<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{_num(v)}</div><div class="l"><b>{_e(k)}</b>: '
        f"{_e(t)}</div></div>" for k, v, t in cards) + "</div>"]
    hist = (m.get("classes") or {}).get("histogram") or []
    if hist:
        out.append("<h3>Group sizes</h3><p class=\"note\">How many groups (records that look "
                   "alike on the identifying columns) have each size. Groups smaller than k "
                   "must be empty.</p>")
        out.append(bar_chart([h["size"] for h in hist], [h["classes"] for h in hist],
                             "Number of groups per group size", y_label="groups"))
        out.append(_table(["group size", "groups", "records"],
                          [[_e(h["size"]), _num(h["classes"]), _num(h["records"])]
                           for h in hist], (1, 2)))
    risk = m.get("risk") or {}
    before = m.get("risk_before") or {}
    if risk:
        out.append("<h3>Re-identification risk</h3><p class=\"note\"><b>Prosecutor</b>: the "
                   "attacker knows the person is in this table. <b>Journalist</b>: the "
                   "attacker knows the person lives in the city (population table). "
                   "<b>Marketer</b>: the share of records an attacker matching everyone "
                   f"would re-identify on average. Population model: "
                   f"{_e(risk.get('population_model'))}.</p>")
        rows = []
        for name in ("prosecutor", "journalist"):
            r_ = risk.get(name) or {}
            rows.append([name, _pct(r_.get("max")), _pct(r_.get("average")),
                         _pct(r_.get("records_above_threshold")),
                         _pct((before.get(name) or {}).get("max"))])
        rows.append(["marketer", "–", _pct((risk.get("marketer") or {}).get("average")), "–",
                     _pct((before.get("marketer") or {}).get("average"))])
        persons = m.get("persons") or {}
        if persons:
            rows.append(["person (prosecutor, 1 / fewest persons in a group)",
                         _pct(persons.get("prosecutor_max")),
                         _pct(persons.get("prosecutor_average")), "–", "–"])
        out.append(_table(["attacker", "highest risk", "average risk",
                           f"records above {_pct(risk.get('threshold'))}",
                           "highest risk before anonymization (sample)"], rows, (1, 2, 3, 4)))
    util = (m.get("utility") or {}).get("information_loss") or {}
    if util:
        out.append("<h3>Usefulness (information loss)</h3><p class=\"note\">How much detail "
                   f"the generalization removed; the search minimised "
                   f"<b>{_e(m['utility'].get('metric'))}</b>. Lower is better.</p>")
        out.append(_table(["measure", "value"], [[_e(k), _num(v)] for k, v in
                                                 sorted(util.items())], (1,)))
    gen = m.get("generalization") or {}
    if gen:
        heights = m.get("hierarchy_heights") or {}
        out.append("<h3>Generalization per identifying column</h3>")
        out.append(_table(["column", "level used", "highest level (fully hidden)"],
                          [[f"<code>{_e(q)}</code>", _num(lv), _num(heights.get(q))]
                           for q, lv in gen.items()], (1, 2)))
    out.append(f"<p class=\"note\">Records in: {_num(m.get('rows_in'))}; published: "
               f"{_num(m.get('rows_out'))}; left out for a missing identifying value: "
               f"{_num(m.get('rows_missing_quasi_identifier'))}.</p>")
    return "".join(out)


def _budget_chart(t: dict, title: str) -> str:
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


def _granularity_block(g: dict | None, effect: dict | None) -> list[str]:
    out = []
    if g:
        out.append(f"<p>Granularity of this release: <b>{_e(g.get('level'))}</b>"
                   + (f" (target median relative error {_num(g['target_relative_error'])}; "
                      f"{'met' if g.get('target_met') else 'NOT met by any level'}). "
                      f"{_e(g.get('basis') or '')}" if g.get("predictions") else "")
                   + "</p>")
        rows = [[_e(p["level"]), _num(p.get("cells")), _num(p.get("expected_cell_count")),
                 _num(p.get("noise_median_abs")),
                 _num(p.get("predicted_median_relative_error")),
                 "yes" if p.get("meets_target") else "no"]
                for p in g.get("predictions") or []]
        if rows:
            head = ["level (finest first)", "public cells", "expected count per cell",
                    "median |noise|", "predicted median relative error", "meets target"]
            out.append(_table(head, rows, (1, 2, 3, 4)))
    if effect and "zero_floor_bias" in effect:
        out.append(f"<p>Zero floor: the sum of published counts is "
                   f"{_num(effect.get('sum_requests'))}, "
                   f"{_num(effect['zero_floor_bias'])} above the unbiased sum of the unfloored "
                   f"noisy counts ({_num(effect.get('sum_requests_unfloored'))}).</p>")
    return out


def _dp_block(dp: dict) -> str:
    out = [(f"<p>Privacy unit: <b>{_e(dp.get('privacy_unit'))}</b>{_e(_unit_text(dp))}. "
            "Budget of this release: "
            f"<code>{_e(_plain(dp.get('spent') or dp.get('budget')))}</code>. Contribution "
            f"bounding: {_e(dp.get('contribution_bounding') or 'per product, see the table')}."
            "</p>"),
           ("<p class=\"note\">ε (epsilon) and δ (delta) measure the privacy loss: smaller "
            "is more private. The error bound is the largest error of a published number with "
            "95 % probability; the table shows it for the middle cell (median) and the worst "
            "cell.</p>")]
    rows = []
    for p in dp.get("products") or []:
        eb = p.get("error_bound") or {}
        bounds = ", ".join(f"{k} {v}" for k, v in (p.get("contribution_bounds") or {}).items())
        rows.append([_e(p["name"]), _e(p.get("mechanism")), _num(p.get("epsilon")),
                     _num(p.get("delta")), _e(bounds or "–"),
                     _num(p.get("selection_threshold")) if p.get("selection_threshold")
                     is not None else ("public keys" if p.get("key_source") == "public"
                                       else "–"),
                     _num(eb.get("median")), _num(eb.get("worst")), _num(eb.get("cells"))])
    out.append(_table(["product", "mechanism", "ε", "δ", "contribution bounds",
                       "selection threshold", "error bound (median)", "error bound (worst)",
                       "cells"], rows, (2, 3, 6, 7, 8)))
    out += _granularity_block(dp.get("granularity"), dp.get("post_processing_effect"))
    for t in dp.get("portal_totals") or []:
        cap = t.get("cap_epsilon")
        out.append(f"<h3>Each {_e(t['privacy_unit'])}'s total privacy loss in {_e(t['month'])}"
                   " across the whole portal</h3>")
        out.append(f"<p>ε <b>{_num(t['epsilon'])}</b> spent per {_e(t['privacy_unit'])} "
                   + (f"of a cap of {_num(cap)} per {_e(t.get('cap_period'))}"
                      if cap is not None else "(no cap recorded)")
                   + f"; δ {_num(t['delta'])}. By dataset: "
                   + ", ".join(f"{_e(k)} ε {_num(v)}" for k, v in sorted(t["datasets"].items()))
                   + ".</p>")
        out.append(_budget_chart(t, f"Budget used per {t['privacy_unit']} in {t['month']}"))
    return "".join(out)


def _guard_block(g: dict | list | None) -> str:
    """The composition guard's report (privacy.guard.GuardReport.as_dict: passed,
    releases_considered, checks [{name, passed, ...details}])."""
    if g is None:
        return ("<p class=\"note\">No composition-guard findings were recorded for this "
                "release (the guard checks releases that share a source period).</p>")
    if isinstance(g, dict) and isinstance(g.get("checks"), list):
        verdict = ('<p class="ok">The composition guard passed: combining this release with '
                   "the others of its period reveals nothing the policy forbids.</p>"
                   if g.get("passed") else
                   '<p class="bad">The composition guard refused this release.</p>')
        considered = g.get("releases_considered") or []
        rows = []
        for c in g["checks"]:
            details = ", ".join(f"{_e(k)} {_e(_plain(v))}" for k, v in sorted(c.items())
                                if k not in ("name", "passed"))
            rows.append([_e(c.get("name")), '<span class="ok">passed</span>' if c.get("passed")
                         else '<span class="bad">failed</span>', details or "–"])
        return (verdict + (f"<p class=\"note\">Releases considered: "
                           f"{_e(', '.join(map(str, considered)))}</p>" if considered else "")
                + _table(["check", "result", "details"], rows))
    return f"<pre>{_e(_plain(g))}</pre>"


def release_html(r: dict, base: Path) -> str:
    """The release report page; ``base`` is the folder the page is written to (for links)."""
    body = [(f"<p>Status: {_badge(r['status'])} &nbsp; Privacy method: "
             f"<b>{_e(r['privacy_method'].replace('_', ' '))}</b></p>"), _policy_block(r)]
    spent = r.get("budget_spent") or []
    kept = ("; ".join(f"ε {_num(x['epsilon'])}, δ {_num(x['delta'])} per "
                      f"{_e(x['privacy_unit'])} ({_e(x['period'])})" for x in spent))
    if r.get("withdrawal"):
        w = r["withdrawal"]
        body.append(f"<div class=\"box gone\"><b>Withdrawn</b> on {_e(w['withdrawn_at'])} by "
                    f"{_e(w['withdrawn_by'])}: {_e(w['reason'])}. Its files were removed "
                    f"from the {_e(w['target'])} catalog; the record stays"
                    + (f", and so does the privacy budget it spent ({kept}): spent budget "
                       "cannot be given back" if spent else "") + ".</div>")
    if r["status"] == "rejected":
        body.append("<div class=\"box red\"><b>Rejected</b>: nothing of this release was "
                    "published and its staged files were discarded."
                    + (f" The privacy budget it spent stays spent ({kept}): the ledger "
                       "recorded it when the release was computed." if spent else "")
                    + "</div>")
    body.append("<h2>What changed since the previous release</h2>" + _changes_block(r))
    body.append("<h2>Privacy guarantee</h2>")
    if r.get("microdata"):
        body.append(_microdata_block(r["microdata"]))
    elif r.get("dp"):
        body.append(_dp_block(r["dp"]))
    elif r.get("suppression"):
        s = r["suppression"]
        cells = (f" <b>{_num(s.get('cells_suppressed'))}</b> of {_num(s.get('cells'))} cells "
                 "are withheld." if s.get("cells") is not None else "")
        body.append(f"<p>Every count backed by fewer than <b>{_num(s['threshold'])}</b> "
                    f"distinct {_e(s.get('unit') or 'people')}s is withheld (published empty "
                    f"and flagged).{cells}</p>")
    body.append("<h3>Parameters of this release</h3>" + _table(
        ["parameter", "value"], [[f"<code>{_e(k)}</code>", f"<code>{_e(_plain(v))}</code>"]
                                 for k, v in sorted(r["parameters"].items())]))
    body.append("<h2>Composition guard</h2>" + _guard_block(r.get("guard")))
    body.append("<h2>Data quality</h2>")
    if r["data_quality"]:
        rows = []
        for q in r["data_quality"]:
            link = _rel(q.get("data_docs"), base)
            rows.append([_e(q["suite"]),
                         '<span class="ok">passed</span>' if q["success"]
                         else '<span class="bad">failed</span>',
                         _num(q["evaluated"]), _num(q.get("rows")),
                         ", ".join(f"{_e(f['expectation'])} ({_e(f['column'])})"
                                   for f in q["failures"]) or "–",
                         f'<a href="{_e(link)}">Data Docs</a>' if link else "–"])
        body.append(_table(["check suite", "result", "checks", "rows", "failing checks",
                            "details"], rows, (2, 3)))
    else:
        body.append("<p class=\"note\">No data-quality results were recorded.</p>")
    body.append("<h2>Inputs and row reconciliation</h2>")
    rec = (r.get("inputs") or {}).get("reconciliation")
    if rec:
        ok = rec.get("reconciles")
        body.append(_table(["count", "rows"], [[_e(k), _num(v)] for k, v in rec.items()
                                               if k not in ("reconciles", "source")], (1,)))
        verdict = ('<span class="ok">Every input row is accounted for.</span>' if ok else
                   '<span class="bad">The row counts do not add up.</span>' if ok is False
                   else "Not enough counts to reconcile.")
        body.append(f"<p>{verdict} <span class=\"note\">(from the "
                    f"{_e(rec.get('source'))})</span></p>")
    if not rec:
        body.append("<p class=\"note\">The row counts and input hashes of this release are in "
                    "the run's manifest, which is written once the run has published.</p>")
    hashes = (r.get("inputs") or {}).get("hashes") or {}
    if hashes:
        body.append(_table(["input file", "SHA-256"],
                           [[_e(k), f"<span class=\"hash\">{_e(v)}</span>"]
                            for k, v in hashes.items()]))
    if r.get("resources"):
        body.append("<h2>Published files</h2>" + _table(
            ["resource", "format", "bytes", "hash"],
            [[_e(x["name"]), _e(x["format"]), _num(x.get("size")),
              f"<span class=\"hash\">{_e(x.get('hash'))}</span>"] for x in r["resources"]],
            (2,)))
    body.append(f"<p class=\"note\">Generated {_e(r['generated_at'])}. This page needs no "
                "network access. Machine-readable copy: the .json file next to it.</p>")
    nav = '<nav><a href="../../index.html">← portal report</a></nav>'
    return _page(f"{r['title']} — {r['partition']}",
                 f"Release report for the privacy officer · dataset <b>{_e(r['dataset'])}</b>",
                 "".join(body), nav)


def portal_html(p: dict, base: Path) -> str:
    """The portal report page (index.html of the report folder)."""
    n_rel = sum(len(d["releases"]) for d in p["datasets"])
    open_ = p["approvals"]["open"]
    cards = [("datasets", len(p["datasets"])), ("releases", n_rel),
             ("waiting for approval", len(open_)), ("withdrawn", len(p["withdrawn"]))]
    body = ['<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{_num(v)}</div><div class="l">{_e(k)}</div></div>'
        for k, v in cards) + "</div>"]
    body.append("<h2>Waiting for your approval</h2>")
    if open_:
        body.append("<p>Approve in the Airflow UI (Browse → Required actions) or on the "
                    "command line with the command shown.</p>")
        body.append(_table(["dataset", "release", "policy version", "requested", "report",
                            "to approve"],
                           [[_e(o["dataset"]), _e(o["partition"]),
                             f"<span class=\"hash\">{_e(o['policy_hash'][:16])}…</span>",
                             _e(o["requested_at"]),
                             (f'<a href="releases/{_e(o["dataset"])}/{_e(o["partition"])}'
                              '.html">release report</a>'),
                             (f"<code>opencity approve {_e(o['dataset'])} --policy "
                              f"{_e(o['policy_hash'])}</code>")] for o in open_]))
    else:
        body.append("<p class=\"ok\">Nothing is waiting for approval.</p>")
    body.append("<h2>Privacy budget per person</h2><p class=\"note\">Every differentially "
                "private release spends from the budget of the people it protects (the "
                "privacy unit), across all datasets of the portal. The cap is what one person "
                "may lose in a month.</p>")
    if p["budget"]:
        rows = []
        for b in p["budget"]:
            rows.append([_e(b["privacy_unit"]), _e(b["month"]), _num(b["epsilon_spent"]),
                         _num(b["epsilon_cap"]) if b["epsilon_cap"] is not None
                         else _e(b.get("cap_note")),
                         _num(b["epsilon_remaining"]),
                         gauge(b["epsilon_spent"], b["epsilon_cap"],
                               f"{b['privacy_unit']} {b['month']}")
                         if b["epsilon_cap"] else "–",
                         _num(b["delta_spent"]),
                         ", ".join(f"{_e(k)} {_num(v)}" for k, v in sorted(b["datasets"].items()))])
        body.append(_table(["privacy unit", "month", "ε spent", "ε cap", "ε remaining", "used",
                            "δ spent", "by dataset (ε)"], rows, (2, 3, 4, 6)))
        for b in p["budget"]:
            if len(b["by_partition"]) > 1:
                body.append(f"<h3>{_e(b['privacy_unit'])}, {_e(b['month'])}: budget used per "
                            "release</h3>")
                body.append(_budget_chart({**b, "cap_epsilon": b["epsilon_cap"],
                                           "cap_period": "month"},
                                          f"Budget used per {b['privacy_unit']} in "
                                          f"{b['month']}"))
    else:
        body.append("<p>No differentially private release has spent budget yet.</p>")
    non_dp = p.get("non_dp_releases") or []
    if non_dp:
        body.append("<h3>Releases about the same people that spend no ε</h3><p class=\"note\">"
                    "Not differentially private: protected by k-anonymity (k counts persons "
                    "when stated) or small-count suppression. They are in no ε total above.</p>")
        body.append(_table(
            ["privacy unit", "month", "dataset", "release", "protection"],
            [[_e(r["privacy_unit"]), _e(r["period"] or "–"), _e(r["dataset"]),
              _e(r["partition"]),
              _e(f"k = {r['k']} {r['k_counts'] or 'records'} per group"
                 + (f", at most {r['max_records_per_person']} records per person"
                    if r.get("max_records_per_person") else "")
                 if r["method"] == "k_anonymity"
                 else f"counts below {r.get('threshold')} withheld")] for r in non_dp]))
    body.append("<h2>Datasets and their releases</h2>")
    for d in p["datasets"]:
        body.append(f"<h3>{_e(d['title'])} <span class=\"note\">({_e(d['name'])}, "
                    f"{_e(d['privacy_method'].replace('_', ' '))})</span></h3>")
        body.append(_table(["release", "status", "guarantee", "policy version", "approved",
                            "report"],
                           [[_e(r["partition"]), _badge(r["status"]), _e(r["summary"]),
                             f"<span class=\"hash\">{_e(r['policy_hash'][:12])}…</span>",
                             '<span class="ok">yes</span>' if r["policy_approved"]
                             else '<span class="bad">no</span>',
                             f'<a href="{_e(r["report"])}">open</a>'] for r in d["releases"]]))
    body.append("<h2>Withdrawn releases</h2>")
    if p["withdrawn"]:
        body.append(_table(["dataset", "release", "when", "by", "reason", "catalog"],
                           [[_e(w["dataset"]), _e(w["partition"]), _e(w["withdrawn_at"]),
                             _e(w["withdrawn_by"]), _e(w["reason"]), _e(w["target"])]
                            for w in p["withdrawn"]]))
    else:
        body.append("<p>No release has been withdrawn.</p>")
    body.append("<h2>Decisions</h2>")
    if p["approvals"]["decisions"]:
        body.append(_table(["when", "dataset", "decision", "by", "policy version", "via",
                            "comment"],
                           [[_e(x["decided_at"]), _e(x["dataset"]),
                             (f"<span class=\"{'ok' if x['decision'] == 'approved' else 'bad'}\">"
                              f"{_e(x['decision'])}</span>"), _e(x["decided_by"]),
                             f"<span class=\"hash\">{_e(x['policy_hash'][:16])}…</span>",
                             _e(x["source"]), _e(x["comment"])]
                            for x in p["approvals"]["decisions"]]))
    else:
        body.append("<p>No decision recorded yet.</p>")
    body.append(f"<p class=\"note\">Generated {_e(p['generated_at'])} from "
                f"<code>{_e(p['run_dir'])}</code>. This page needs no network access; "
                "portal.json next to it is the machine-readable copy.</p>")
    return _page("OpenCity portal — privacy review", "Every release, its guarantees and each "
                 "person's total privacy budget", "".join(body))
