"""The one chart module: small, scriptless, accessible inline SVG for every page we render.

Used by both chart sets: the KPI dashboard (``kpi.dashboard``: trend and by-district charts)
and the privacy officer's reports (``opencity.review.render``: bars, stacked budget bars,
budget gauges). Output is plain SVG markup (``markupsafe.Markup``, safe to insert into an
autoescaped Jinja2 template): no script, no event handler attribute, no external reference;
every text (labels, titles, the text alternative) is escaped here. Every chart is a
``role="img"`` element with an ``aria-label`` and a ``<title>`` (its text alternative).

Where it lives: stage packages (kpi among them) may import only ``opencity.errors``,
``opencity.io`` and their own modules, while the review pages (``opencity.review``, outside
the stages) may import any stage. The kpi package is therefore the one place both renderers
can import without a new exception to the import contracts; the module imports nothing of
the project.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from markupsafe import Markup, escape

#: Okabe-Ito colour-blind-safe palette
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000")
AXIS = "#888"
SUPPRESSED = "#777777"

Fmt = Callable[[float], str]


def num(value: float | str) -> str:
    """An attribute number: integers as they are, others to 0.1 (SVG user units) or, below
    1, to 0.01 (opacities); trailing zeros dropped."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    text = f"{value:.2f}" if abs(value) < 1 else f"{value:.1f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def element(tag: str, content: object = None, /, **attrs: object) -> Markup:
    """``<tag a="..">content</tag>`` (or ``<tag/>`` without content).

    Attribute names: a trailing ``_`` is dropped and ``_`` becomes ``-`` (``font_size`` ->
    ``font-size``); ``None`` values are left out; numbers go through :func:`num`. Text
    content is escaped; a ``Markup`` value (a nested element) is inserted as it is.
    """
    parts = [tag]
    for name, value in attrs.items():
        if value is None:
            continue
        name = name.rstrip("_").replace("_", "-")
        if name.startswith("on"):
            raise ValueError(f"event handler attribute {name!r}: charts are scriptless")
        shown = num(value) if isinstance(value, (int, float)) else str(value)
        parts.append(f'{name}="{escape(shown)}"')
    head = " ".join(parts)
    if content is None:
        return Markup(f"<{head}/>")
    return Markup(f"<{head}>{escape(content)}</{tag}>")


def chart(alt: str, width: float, height: float, parts: Iterable[str], *,
          chart_id: str | None = None, css_class: str | None = None) -> Markup:
    """The accessible ``<svg>`` around ``parts``: ``aria-label`` and ``<title>`` are ``alt``."""
    head = element("svg", Markup(""), class_=css_class, id=chart_id, role="img",
                   aria_label=alt, width=width, height=height,
                   viewBox=f"0 0 {num(width)} {num(height)}")
    head = str(head).removesuffix("</svg>")
    return Markup(head + str(element("title", alt)) + "".join(str(Markup(p)) for p in parts)
                  + "</svg>")


def _y_axis(pad_l: float, pad_t: float, w: float, h: float, top_label: str,
            label_dx: float, top_dy: float) -> list[Markup]:
    return [element("line", x1=pad_l, y1=pad_t + h, x2=pad_l + w, y2=pad_t + h, stroke=AXIS),
            element("text", top_label, x=pad_l - label_dx, y=pad_t + top_dy,
                    text_anchor="end", font_size=10),
            element("text", "0", x=pad_l - label_dx, y=pad_t + h, text_anchor="end",
                    font_size=10)]


def bars(labels: Sequence[object], values: Sequence[float], alt: str, fmt: Fmt, *,
         width: int = 560, height: int = 200, colour: str = PALETTE[0],
         y_label: str = "") -> Markup:
    """Vertical bars with value labels above and category labels below."""
    pad_l, pad_b, pad_t, pad_r = 48, 40, 14, 10
    w, h = width - pad_l - pad_r, height - pad_b - pad_t
    top = max([float(v) for v in values] + [0.0]) or 1.0
    bw = w / max(len(values), 1)
    out = _y_axis(pad_l, pad_t, w, h, fmt(top), 6, 10)
    if y_label:
        ym = pad_t + h / 2
        out.append(element("text", y_label, x=10, y=ym, font_size=10,
                           transform=f"rotate(-90 10 {num(ym)})", text_anchor="middle"))
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        bh = h * float(v) / top
        x = pad_l + i * bw + bw * 0.12
        out.append(element("rect", x=x, y=pad_t + h - bh, width=bw * 0.76, height=bh,
                           fill=colour))
        if v:
            out.append(element("text", fmt(v), x=x + bw * 0.38, y=pad_t + h - bh - 3,
                               font_size=10, text_anchor="middle"))
        out.append(element("text", lab, x=x + bw * 0.38, y=pad_t + h + 14, font_size=10,
                           text_anchor="middle"))
    return chart(alt, width, height, out)


def stacked_bars(labels: Sequence[object], series: Mapping[str, Sequence[float]], alt: str,
                 fmt: Fmt, *, cap: float | None = None, width: int = 800, height: int = 230,
                 cumulative: bool = True, running_label: str = "— running total") -> Markup:
    """Stacked bars per label (one palette colour per series, legend on the right); with
    ``cumulative`` a running-total line, and ``cap`` as a dashed line on the same axis."""
    pad_l, pad_b, pad_t, pad_r = 48, 58, 14, 210
    w, h = width - pad_l - pad_r, height - pad_b - pad_t
    totals = [sum(s[i] for s in series.values()) for i in range(len(labels))]
    running, acc = [], 0.0
    for t in totals:
        acc += t
        running.append(acc)
    top = (max([*totals, *(running if cumulative else []), cap or 0.0, 0.0]) or 1.0) * 1.05
    bw = w / max(len(labels), 1)
    out = _y_axis(pad_l, pad_t, w, h, fmt(top), 6, 10)
    for i, lab in enumerate(labels):
        y = pad_t + h
        x = pad_l + i * bw + bw * 0.15
        for j, vals in enumerate(series.values()):
            bh = h * vals[i] / top
            if bh <= 0:
                continue
            y -= bh
            out.append(element("rect", x=x, y=y, width=bw * 0.7, height=bh,
                               fill=PALETTE[j % len(PALETTE)]))
        tx, ty = x + bw * 0.35, pad_t + h + 8
        out.append(element("text", lab, x=tx, y=ty, font_size=9, text_anchor="end",
                           transform=f"rotate(-45 {num(tx)} {num(ty)})"))
    if cumulative and running:
        pts = " ".join(f"{num(pad_l + (i + 0.5) * bw)},{num(pad_t + h - h * r / top)}"
                       for i, r in enumerate(running))
        out.append(element("polyline", points=pts, fill="none", stroke="#000",
                           stroke_width=1.5))
    if cap is not None:
        yc = pad_t + h - h * cap / top
        out.append(element("line", x1=pad_l, y1=yc, x2=pad_l + w, y2=yc, stroke=PALETTE[5],
                           stroke_dasharray="5,3"))
        out.append(element("text", f"cap {fmt(cap)}", x=pad_l + w + 4, y=yc + 3, font_size=10,
                           fill=PALETTE[5]))
    for j, name in enumerate(series):
        out.append(element("rect", x=pad_l + w + 4, y=pad_t + 14 * j + 14, width=10,
                           height=10, fill=PALETTE[j % len(PALETTE)]))
        out.append(element("text", name[:34], x=pad_l + w + 18, y=pad_t + 14 * j + 23,
                           font_size=10))
    if cumulative:
        out.append(element("text", running_label, x=pad_l + w + 4,
                           y=pad_t + 14 * len(series) + 36, font_size=10))
    return chart(alt, width, height, out)


def gauge(share: float, alt: str, *, width: int = 260) -> Markup:
    """A horizontal bar filled to ``share`` (clipped to [0, 1]); green, amber from 75 %,
    red at 100 %."""
    share = min(1.0, max(0.0, share))
    colour = PALETTE[2] if share < 0.75 else PALETTE[1] if share < 1.0 else PALETTE[5]
    return chart(alt, width, 16, [element("rect", x=0, y=2, width=width, height=12,
                                          fill="#e6e9ed"),
                                  element("rect", x=0, y=2, width=width * share, height=12,
                                          fill=colour)])


def _scale_max(values: Iterable[tuple[float | None, float | None]]) -> float:
    top = max((v + (b or 0.0) for v, b in values if v is not None), default=0.0)
    return top * 1.1 if top > 0 else 1.0


def trend(points: Sequence[Mapping], alt: str, fmt: Fmt, point_label: Callable[[Mapping], str],
          colours: Mapping[str, str], *, chart_id: str | None = None,
          css_class: str | None = "chart", width: int = 250, height: int = 150) -> Markup:
    """One value per period (``period``, ``value``, ``error_bound``, ``method``): points
    joined by a line, whiskers = error bound, a missing value marked with ×."""
    pad_l, pad_b, pad_t = 44, 24, 10
    w, h = width - pad_l - 8, height - pad_b - pad_t
    top = _scale_max([(p["value"], p["error_bound"]) for p in points])
    n = max(len(points), 1)
    out = _y_axis(pad_l, pad_t, w, h, fmt(top), 4, 8)
    xy = []
    for i, p in enumerate(points):
        x = pad_l + (i + 0.5) * w / n
        out.append(element("text", p["period"], x=x, y=height - 8, text_anchor="middle",
                           font_size=10))
        if p["value"] is None:
            out.append(element("text", "×", x=x, y=pad_t + h - 4, text_anchor="middle",
                               font_size=12, fill=colours.get("suppressed", SUPPRESSED)))
            continue
        y = pad_t + h - p["value"] / top * h
        xy.append((x, y))
        colour = colours.get(p["method"], "#000")
        if p["error_bound"]:
            y0 = pad_t + h - max(p["value"] - p["error_bound"], 0) / top * h
            y1 = pad_t + h - (p["value"] + p["error_bound"]) / top * h
            out.append(element("line", x1=x, y1=y0, x2=x, y2=y1, stroke=colour,
                               stroke_width=1.5))
        out.append(element("circle", element("title", point_label(p)), cx=x, cy=y, r=4,
                           fill=colour))
    if len(xy) > 1:
        d = " ".join(f"{'M' if i == 0 else 'L'}{num(x)},{num(y)}" for i, (x, y) in enumerate(xy))
        out.append(element("path", d=d, fill="none", stroke="#444", stroke_width=1))
    if not points:
        out.append(element("rect", x=pad_l, y=pad_t, width=w, height=h, fill="none",
                           stroke="#ccc"))
    return chart(alt, width, height, out, chart_id=chart_id, css_class=css_class)


def hbars(rows: Sequence[Mapping], alt: str, fmt: Fmt, bar_label: Callable[[Mapping], str],
          colours: Mapping[str, str], *, chart_id: str | None = None,
          css_class: str | None = "chart", width: int = 310) -> Markup:
    """One horizontal bar per row (``area``, ``value``, ``error_bound``, ``method``) with
    error whiskers and the value at the end; a missing value is a dashed empty bar."""
    bar_h, pad_l, pad_r = 14, 44, 60
    height = max(len(rows), 1) * (bar_h + 4) + 20
    w = width - pad_l - pad_r
    top = _scale_max([(r["value"], r["error_bound"]) for r in rows])
    out = []
    for i, r in enumerate(rows):
        y = 4 + i * (bar_h + 4)
        out.append(element("text", r["area"], x=pad_l - 4, y=y + bar_h - 3, text_anchor="end",
                           font_size=10))
        if r["value"] is None:
            out.append(element("rect", x=pad_l, y=y, width=w, height=bar_h, fill="none",
                               stroke=colours.get("suppressed", SUPPRESSED),
                               stroke_dasharray="3 2"))
            out.append(element("text", "suppressed", x=pad_l + 4, y=y + bar_h - 3,
                               font_size=10, fill="#444"))
            continue
        colour = colours.get(r["method"], "#000")
        out.append(element("rect", element("title", bar_label(r)), x=pad_l, y=y,
                           width=max(r["value"], 0) / top * w, height=bar_h, fill=colour,
                           fill_opacity=0.85))
        if r["error_bound"]:
            x0 = pad_l + max(r["value"] - r["error_bound"], 0) / top * w
            x1 = pad_l + (r["value"] + r["error_bound"]) / top * w
            ym = y + bar_h / 2
            out.append(element("line", x1=x0, y1=ym, x2=x1, y2=ym, stroke="#000",
                               stroke_width=1.5))
            for xw in (x0, x1):
                out.append(element("line", x1=xw, y1=y + 3, x2=xw, y2=y + bar_h - 3,
                                   stroke="#000"))
        out.append(element("text", fmt(r["value"]), x=width - pad_r + 4, y=y + bar_h - 3,
                           font_size=10))
    return chart(alt, width, height, out, chart_id=chart_id, css_class=css_class)
