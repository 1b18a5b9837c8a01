"""The release gate: validate a table with its suite, keep the results, stop the run on failure.

One call per table::

    from expectations.gate import validate_or_raise

    summary = validate_or_raise(
        "opencity-311-requests-weekly", staged_parquet,
        context={"interval": (start, end), "districts": districts_table,
                 "privacy": {"kind": "suppressed", "count_columns": ["requests"],
                             "threshold": settings.suppression_k},
                 "previous_partition": output_dir_of_this_partition, "run_id": run_id},
        reports_dir=settings.layout.reports("opencity-311-requests-weekly", start))

``validate_or_raise`` picks the suite of ``dataset`` (:data:`SUITES`, else the generic product
suite), runs it with an ephemeral GX context, writes the (masked) results and GX Data Docs
into ``reports_dir`` and returns a JSON-able summary. If any dataset-level expectation fails
it raises :class:`opencity.errors.DataQualityError` listing each failing expectation, its
column and up to three example values, masked (identifier-looking text becomes ``[phone]``,
``[email]``...; values of identifier and personal columns are withheld).

Row-level failures (expectations with ``meta={"row_level": True}``, e.g. coordinates outside
the city) do not stop the run when ``context["quarantine_dir"]`` is given and the table is a
Parquet file: the failing rows are moved to ``quarantine_dir/quarantine-gx.parquet`` with the
expectation as ``reason``, the Parquet file is rewritten without them and the summary reports
``rows_quarantined`` and ``reasons`` so the caller's counts still reconcile.

Context keys (all optional): ``interval`` (start, end) tz-aware; ``previous_rows`` or
``previous_partition`` (a ``dt=...`` directory whose latest earlier sibling is counted);
``max_drop`` (0.9); ``min_rows`` (1); ``districts`` / ``towers`` (Arrow table, list of ids
or CSV path); ``schema`` (the typed schema of the source the table is or derives from, e.g.
``transforms.schemas.SCHEMAS["service_requests"]``: required by the source suites and the
311 products; this package imports no other stage); ``profile`` (the input Profile whose
domains apply to a clean source); ``bbox`` (dict lat_min.. or "districts" for the union of the district
rectangles); ``privacy`` (dict, see :func:`privacy_checks`); ``quarantine_dir``; ``run_id``;
any other key is passed to the suite builder as ``ctx.extra``.
"""

from __future__ import annotations

import copy
import html
import importlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from opencity.errors import ConfigError, DataQualityError, InternalError, PipelineError
from opencity.io import STATEMENT_FILE, PrivacyStatement, read_statement, write_text_atomic

log = logging.getLogger(__name__)

# dataset -> "module:function" building its suite from a SuiteContext.
SUITES: dict[str, str] = {
    "service_requests": "expectations.service_requests:clean_suite",
    "opencity-311-requests-weekly": "expectations.service_requests:product_suite",
    "opencity-311-requests-microdata": "expectations.service_requests:microdata_suite",
    "cdr": "expectations.cdr:clean_suite",
    "meter_registry": "expectations.meters:registry_suite",
    "meter_readings": "expectations.meters:readings_suite",
    "transit_stops": "expectations.transit:stops_suite",
    "transit_taps": "expectations.transit:taps_suite",
    "waste_pickups": "expectations.waste:clean_suite",
    "districts": "expectations.reference:districts_suite",
    "towers": "expectations.reference:towers_suite",
}
GENERIC_PRODUCT = "expectations.products:product_suite"
MAX_EXAMPLES = 3
MAX_FAILURES_IN_MESSAGE = 10
QUARANTINE_FILE = "quarantine-gx.parquet"
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 10}


# ------------------------------------------------------------------------ inputs
def load_table(table_or_path: Any) -> pa.Table:
    """An Arrow table from a table, a pandas DataFrame, a Parquet file/dir or a CSV file."""
    if isinstance(table_or_path, pa.Table):
        return table_or_path
    if hasattr(table_or_path, "to_arrow_table"):  # DuckDB relation
        return table_or_path.to_arrow_table()
    try:
        import pandas as pd

        if isinstance(table_or_path, pd.DataFrame):
            return pa.Table.from_pandas(table_or_path, preserve_index=False)
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    path = Path(table_or_path)
    if not path.exists():
        raise DataQualityError(f"{path}: nothing to validate, the file does not exist")
    try:
        if path.suffix == ".csv":
            import pyarrow.csv as pacsv

            return pacsv.read_csv(path)
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataQualityError(f"{path}: cannot read the table to validate ({err})") from err


def _ids(value: Any, column: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | Path):
        value = _reference_ids_csv(Path(value), column)
    if isinstance(value, pa.Table):
        if column not in value.column_names:
            raise ConfigError(f"reference table has no column {column!r}")
        return tuple(str(v) for v in value.column(column).to_pylist() if v is not None)
    return tuple(str(v) for v in value)


def _reference_ids_csv(path: Path, column: str) -> pa.Table:
    """The ``column`` of a public reference CSV (districts, towers), read as text."""
    import pyarrow.csv as pacsv

    if not path.is_file():
        raise DataQualityError(f"{path}: reference file not found")
    try:
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            include_columns=[column], column_types={column: pa.string()}))
    except (pa.ArrowInvalid, KeyError) as err:
        raise DataQualityError(f"{path}: reference table has no readable column {column!r} "
                               f"({type(err).__name__})") from None


def _bbox(value: Any, districts: Any):
    from expectations.core import BBox

    if value is None:
        return None
    if value == "districts":
        if not isinstance(districts, pa.Table):
            raise ConfigError("bbox='districts' needs context['districts'] as a table")
        import pyarrow.compute as pc

        return BBox(pc.min(districts["lat_min"]).as_py(), pc.max(districts["lat_max"]).as_py(),
                    pc.min(districts["lon_min"]).as_py(), pc.max(districts["lon_max"]).as_py())
    if isinstance(value, BBox):
        return value
    try:
        return BBox(**dict(value))
    except TypeError as err:
        raise ConfigError(f"bbox must have lat_min, lat_max, lon_min, lon_max: {err}") from err


def previous_partition_rows(partition_dir: str | Path, not_before: str | None = None
                            ) -> int | None:
    """Rows of the latest ``dt=...`` sibling before ``partition_dir`` (None if there is none).

    ``not_before`` (``dt=YYYY-MM-DD``): ignore siblings older than that, so a backfill of a
    sparse history (weeks or years apart) is not compared with a distant partition."""
    part = Path(partition_dir)
    if not part.parent.is_dir():
        return None
    earlier = sorted(p for p in part.parent.glob("dt=*") if p.is_dir() and p.name < part.name
                     and (not_before is None or p.name >= not_before))
    for prev in reversed(earlier):
        files = sorted(prev.glob("*.parquet"))
        if files:
            return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return None


def read_privacy_statement(value: Any) -> PrivacyStatement | None:
    """The privacy statement of a release: a :class:`opencity.io.PrivacyStatement`, its JSON
    form (a dict) or the path of its file (``privacy.json``); None when there is none (no
    value, or the file is missing).

    Raises:
        DataQualityError: the dict or the file is not a privacy statement (never guessed).
    """
    if value is None or isinstance(value, PrivacyStatement):
        return value
    if isinstance(value, Mapping):
        return PrivacyStatement.from_dict(value)
    return read_statement(Path(value))


def statement_budget(statement: PrivacyStatement | None) -> dict | None:
    """The ``{"epsilon", "delta"}`` a statement claims per person of its privacy unit (None
    without a statement).

    Raises:
        DataQualityError: the statement spends for several privacy units (compare each
            ``statement.spent[unit]`` with the ledger instead).
    """
    if statement is None:
        return None
    return {"epsilon": statement.epsilon, "delta": statement.delta}


def ledger_spend(ledger: Any, dataset: str, partition: str,
                 release_id: str | None = None) -> tuple[float, float] | None:
    """(epsilon, delta) the budget ledger recorded for a release (None if none).

    ``ledger`` is the portal ledger (``privacy.dp.ledger.Ledger``), read through its API
    (``recorded_spend``); it is passed in by the pipeline, so this stage package neither
    imports the ledger nor reads its tables.
    """
    reader = getattr(ledger, "recorded_spend", None)
    if not callable(reader):
        raise ConfigError("privacy 'ledger' must be the budget ledger object (privacy.dp.ledger."
                          f"Ledger), got {type(ledger).__name__}")
    try:
        spent = reader(dataset, partition, release_id)
    except PipelineError as err:
        raise DataQualityError(f"cannot read the budget ledger {ledger!r}: {err}") from err
    return (float(spent[0]), float(spent[1])) if spent else None


def privacy_checks(spec: Mapping[str, Any] | None):
    """A PrivacyChecks from a context dict.

    Keys: ``kind``; ``quasi_identifiers`` + ``k`` (microdata); ``count_columns`` +
    ``threshold`` (dp, suppressed); ``statement`` (dp: a PrivacyStatement, its dict or
    the path of its privacy.json);
    ``ledger`` (the Ledger object) + ``ledger_dataset`` + ``partition`` [+ ``release_id``], or
    ``ledger_epsilon`` + ``ledger_delta`` directly (dp); ``forbidden_columns``,
    ``allowed_columns``, ``text_columns``.
    """
    from expectations.core import PrivacyChecks

    if spec is None:
        return None
    spec = dict(spec)
    known = {"kind", "quasi_identifiers", "k", "count_columns", "threshold", "statement",
             "ledger", "ledger_dataset", "partition", "release_id", "ledger_epsilon",
             "ledger_delta", "forbidden_columns", "allowed_columns", "text_columns",
             "domains", "patterns", "every_column_has_domain"}
    unknown = set(spec) - known
    if unknown:
        raise ConfigError(f"unknown privacy key(s) {sorted(unknown)}; known: {sorted(known)}")
    statement = read_privacy_statement(spec.get("statement"))
    claimed = statement_budget(statement)
    eps, delta = spec.get("ledger_epsilon"), spec.get("ledger_delta")
    if spec.get("ledger") is not None:
        if not spec.get("ledger_dataset") or not spec.get("partition"):
            raise ConfigError("privacy 'ledger' needs 'ledger_dataset' and 'partition'")
        spent = ledger_spend(spec["ledger"], spec["ledger_dataset"], spec["partition"],
                             spec.get("release_id"))
        eps, delta = spent if spent else (None, None)
    text = spec.get("text_columns")
    return PrivacyChecks(
        kind=spec.get("kind", "none"),
        quasi_identifiers=tuple(spec.get("quasi_identifiers", ())),
        k=spec.get("k"),
        count_columns=tuple(spec.get("count_columns", ())),
        threshold=spec.get("threshold"),
        statement=claimed,
        ledger_epsilon=eps, ledger_delta=delta,
        forbidden_columns=tuple(spec.get("forbidden_columns", ())),
        allowed_columns=tuple(spec.get("allowed_columns", ())),
        text_columns=tuple(text) if text is not None else None,
        domains=dict(spec.get("domains") or {}),
        patterns=dict(spec.get("patterns") or {}),
        every_column_has_domain=spec.get("every_column_has_domain"),
    )


_CONTEXT_KEYS = {"interval", "previous_rows", "previous_partition", "max_drop", "min_rows",
                 "districts", "towers", "bbox", "privacy", "quarantine_dir", "run_id",
                 "schema"}


def suite_context(dataset: str, table: pa.Table, context: Mapping[str, Any] | None):
    """Build the SuiteContext of ``table`` from the caller's context dict."""
    from expectations.core import SuiteContext

    c = dict(context or {})
    interval = c.get("interval")
    prev = c.get("previous_rows")
    if prev is None and c.get("previous_partition") is not None:
        # Only the partitions of the last two intervals count as "the previous partition".
        not_before = (f"dt={(interval[0] - 2 * (interval[1] - interval[0])):%Y-%m-%d}"
                      if interval is not None else None)
        prev = previous_partition_rows(c["previous_partition"], not_before)
    kwargs: dict[str, Any] = {}
    for key in ("max_drop", "min_rows"):
        if c.get(key) is not None:
            kwargs[key] = c[key]
    return SuiteContext(
        dataset=dataset,
        columns={f.name: f.type for f in table.schema},
        interval=tuple(interval) if interval is not None else None,
        previous_rows=prev,
        district_ids=_ids(c.get("districts"), "district_id"),
        cell_ids=_ids(c.get("towers"), "cell_id"),
        bbox=_bbox(c.get("bbox"), c.get("districts")),
        privacy=privacy_checks(c.get("privacy")),
        extra={k: v for k, v in c.items() if k not in _CONTEXT_KEYS},
        schema=c.get("schema"),
        **kwargs,
    )


def build_suite(dataset: str, ctx):
    """The suite of ``dataset`` (registered builder, else the generic product suite)."""
    target = SUITES.get(dataset, GENERIC_PRODUCT)
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(ctx)


# ------------------------------------------------------------------------ running GX
def _gx_context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx


def _to_pandas(table: pa.Table):
    import pandas as pd

    # Nullable integers and booleans stay integers/booleans (not float/object).
    mapping = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype(),
               pa.bool_(): pd.BooleanDtype()}
    return table.to_pandas(types_mapper=mapping.get)


def run_suite(suite, df, result_format: Any = None):
    """Validate a pandas DataFrame with ``suite`` in a fresh ephemeral GX context."""
    import great_expectations as gx

    ctx = _gx_context()
    batch = (ctx.data_sources.add_pandas("opencity").add_dataframe_asset(suite.name)
             .add_batch_definition_whole_dataframe("partition"))
    suite = ctx.suites.add(suite)
    vd = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=suite))
    return vd.run(batch_parameters={"dataframe": df},
                  result_format=result_format or _RESULT_FORMAT)


# ------------------------------------------------------------------------ masking
def sensitive_columns(dataset: str, schema: Any = None) -> set[str]:
    """Identifier, personal and pseudonym columns of a source (``schema``: its typed schema,
    from ``context["schema"]``): their values are withheld."""
    out = {"subscriber_pid", "requester_pid", "household_pid", "card_pid"}
    if schema is not None:
        out |= {c.name for c in schema.columns if c.identifier or c.personal}
    return out


def domains_of(dataset: str, schema: Any = None) -> dict[str, set[str]]:
    """Column -> allowed values of a source (``schema``: its typed schema, from
    ``context["schema"]``; values inside may appear in reports)."""
    if schema is None:
        return {}
    return {c.name: set(c.allowed) for c in schema.columns
            if c.allowed and not (c.identifier or c.personal)}


def _mask(value: Any, withhold: bool, domain: set[str] | None = None) -> Any:
    """A value for a report: numbers of non-personal columns and strings inside the column's
    domain are shown; any other string is withheld (it may be personal data misplaced)."""
    if value is None or isinstance(value, bool | int) or (
        isinstance(value, float) and math.isfinite(value)
    ):
        return "(withheld)" if withhold and value is not None else value
    if withhold:
        return "(withheld)"
    if isinstance(value, str) and not (domain and value in domain):
        from expectations.privacy import identifier_kinds

        kinds = identifier_kinds(value)
        return "(withheld" + "".join(f" [{k}]" for k in kinds) + ")"
    if isinstance(value, float):
        return str(value)
    return value if isinstance(value, str) else str(value)


def mask_result(result, sensitive: set[str],
                domains: Mapping[str, set[str]] | None = None) -> None:
    """Mask example values of every expectation result in place (never raw identifiers)."""
    from expectations.privacy import mask_identifiers

    domains = domains or {}
    for r in result.results:
        kwargs = r.expectation_config.kwargs
        column = kwargs.get("column")
        identifier_check = r.expectation_config.type == \
            "expect_column_values_to_not_contain_direct_identifiers"
        withhold = column in sensitive
        domain = domains.get(column)
        res = r.result or {}
        for key in ("partial_unexpected_list", "unexpected_list"):
            if key in res and res[key] is not None:
                res[key] = [_mask(v, withhold, domain) for v in res[key]]
        if res.get("partial_unexpected_counts"):
            res["partial_unexpected_counts"] = [
                {"value": _mask(d.get("value"), withhold, domain), "count": d.get("count")}
                for d in res["partial_unexpected_counts"]]
        if identifier_check:
            res.pop("unexpected_list", None)
        details = res.get("details")
        if isinstance(details, dict) and details.get("examples"):
            details["examples"] = [
                {"class": {k: (None if v is None else mask_identifiers(v))
                           for k, v in ex["class"].items()}, "rows": ex["rows"]}
                for ex in details["examples"]]
        obs = res.get("observed_value")
        if isinstance(obs, str):
            res["observed_value"] = _mask(obs, withhold, domain)


# ------------------------------------------------------------------------ reporting
def _describe(r) -> dict[str, Any]:
    cfg = r.expectation_config
    kwargs = dict(cfg.kwargs)
    res = r.result or {}
    out: dict[str, Any] = {"expectation": cfg.type, "column": kwargs.get("column")}
    for k in ("column_A", "column_B", "column_list", "quasi_identifiers", "min_value",
              "max_value", "value_set", "k", "row_condition"):
        if k in kwargs and kwargs[k] is not None:
            v = kwargs[k]
            if isinstance(v, list) and len(v) > 12:
                v = v[:12] + ["..."]
            out[k] = v if isinstance(v, int | float | str | list | bool) else str(v)
    if "unexpected_count" in res:
        out["unexpected"] = res.get("unexpected_count")
        out["of"] = res.get("element_count")
        out["examples"] = (res.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]
    if res.get("observed_value") is not None:
        obs = res["observed_value"]
        out["observed"] = obs if isinstance(obs, int | float | str | list | dict) else str(obs)
    details = res.get("details")
    if isinstance(details, dict):
        if details.get("problems"):
            out["problems"] = details["problems"]
        if details.get("examples"):
            out["examples"] = details["examples"][:MAX_EXAMPLES]
        if details.get("mismatches"):
            out["mismatches"] = details["mismatches"]
        if details.get("missing_columns"):
            out["missing_columns"] = details["missing_columns"]
    if r.exception_info and r.exception_info.get("raised_exception"):
        out["error"] = str(r.exception_info.get("exception_message"))[:300]
    if cfg.notes:
        out["notes"] = str(cfg.notes)
    return out


def _failure_line(f: dict[str, Any]) -> str:
    where = f" column {f['column']!r}" if f.get("column") else ""
    for k in ("column_A", "quasi_identifiers", "column_list"):
        if f.get(k):
            where = f" {k.replace('_', ' ')} {f[k]}"
            if k == "column_A":
                where += f" vs {f.get('column_B')!r}"
            break
    parts = [f"- {f['expectation']}{where}"]
    if "unexpected" in f:
        parts.append(f": {f['unexpected']} of {f['of']} rows unexpected")
        bounds = [f"{k}={f[k]}" for k in ("min_value", "max_value") if k in f]
        if bounds:
            parts.append(f" ({', '.join(bounds)})")
        if f.get("examples"):
            parts.append(f", e.g. {f['examples']}")
    elif f.get("problems"):
        parts.append(": " + "; ".join(f["problems"]))
    elif f.get("mismatches"):
        parts.append(f": {f['mismatches']}")
    elif f.get("examples"):
        parts.append(f": classes below k, e.g. {f['examples']}")
    elif "observed" in f:
        obs = f["observed"]
        parts.append(f": observed {obs}" + (f" (min_value={f['min_value']})"
                                            if "min_value" in f else ""))
    if f.get("error"):
        parts.append(f" [error: {f['error']}]")
    if f.get("notes"):
        parts.append(f" - {f['notes']}")
    return "".join(parts)


_EXTERNAL = [
    re.compile(r"<script\b[^>]*>.*?</script>", re.DOTALL | re.IGNORECASE),
    re.compile(r"<link\b[^>]*>", re.IGNORECASE),
    re.compile(r"<img\b[^>]*>", re.DOTALL | re.IGNORECASE),
    re.compile(r"<p>[^<]*newsletter.*?</p>", re.DOTALL | re.IGNORECASE),
]
_OFFLINE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;
vertical-align:top;font-size:.9rem}.text-danger{color:#b00020}.text-success{color:#1b7f3b}
.collapse{display:block}.d-none{display:none}nav,.navbar,.sticky{position:static}
code,pre{background:#f5f5f5;padding:0 .2rem}.ge-breadcrumbs{display:none}
"""


def offline_html(page: str) -> str:
    """GX Data Docs HTML with every external reference removed and a small inline style.

    GX pages load Bootstrap, jQuery, Vega and Font Awesome from CDNs and a logo from GX's
    web-assets bucket; a steward's browser would fetch them (and the page would be unstyled
    offline). This removes every script, stylesheet link and image, and inlines basic CSS.
    """
    for rx in _EXTERNAL:
        page = rx.sub("", page)
    page = re.sub(r'href="(?:\.\./)+[^"#]*"', 'href="index.html"', page)
    page = re.sub(r'href="https?://[^"]*"', 'href="#"', page)
    page = re.sub(r"url\((['\"]?)https?://[^)]*\)", "none", page)
    return page.replace("</head>", f"<style>{_OFFLINE_CSS}</style></head>", 1)


def _atomic_write(path: Path, text: str) -> None:
    # Validation results may quote values of the clean data: a restricted zone.
    write_text_atomic(text, path, restricted=True)


def write_data_docs(result, reports_dir: Path, suite_name: str) -> Path:
    """Static, offline GX Data Docs page of ``result`` plus an index of the directory."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    docs = reports_dir / "data_docs"
    page = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
    path = docs / f"{suite_name}.html"
    _atomic_write(path, offline_html(page))
    rows = []
    for summary in sorted(reports_dir.glob("*.summary.json")):
        s = json.loads(summary.read_text(encoding="utf-8"))
        status = "passed" if s["success"] else "FAILED"
        rows.append(f"<tr><td><a href=\"{html.escape(s['suite'])}.html\">"
                    f"{html.escape(s['suite'])}</a></td><td>{status}</td>"
                    f"<td>{s['evaluated'] - len(s['failures'])}/{s['evaluated']}</td>"
                    f"<td>{html.escape(str(s.get('run_id') or ''))}</td></tr>")
    _atomic_write(docs / "index.html", (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>OpenCity validation"
        f"</title><style>{_OFFLINE_CSS}</style></head><body><h1>Validation results</h1>"
        "<table><tr><th>suite</th><th>status</th><th>expectations met</th><th>run</th></tr>"
        + "".join(rows) + "</table></body></html>"))
    return path


# ------------------------------------------------------------------------ the gate
def _row_level_failures(result) -> list:
    return [r for r in result.results if not r.success
            and (r.expectation_config.meta or {}).get("row_level")]


def _quarantine_rows(table: pa.Table, suite, failing, df, sensitive: set[str],
                     quarantine_dir: Path, source_file: str) -> tuple[pa.Table, dict[str, int]]:
    """Move the rows failing row-level expectations to the quarantine; return the rest."""
    import great_expectations as gx
    import numpy as np

    probe = gx.ExpectationSuite(name=f"{suite.name}.row_level",
                                expectations=[copy.copy(r.expectation_config.to_domain_obj())
                                              for r in failing])
    res = run_suite(probe, df, {"result_format": "COMPLETE"})
    reasons = np.full(table.num_rows, None, dtype=object)
    counts: dict[str, int] = {}
    for r in res.results:
        if r.success:
            continue
        cfg = r.expectation_config
        reason = f"gx:{cfg.type}({cfg.kwargs.get('column', '')})"
        idx = np.asarray(r.result.get("unexpected_index_list") or [], dtype=np.int64)
        if idx.size == 0:
            raise InternalError(f"{reason} failed without row indices")
        for i in idx:
            reasons[i] = reason if reasons[i] is None else f"{reasons[i]}; {reason}"
        counts[reason] = int(idx.size)
    bad = np.array([r is not None for r in reasons])
    moved = table.filter(pa.array(bad))
    quarantined = moved.append_column("reason", pa.array(list(reasons[bad]), pa.string()))
    quarantined = quarantined.add_column(0, "source_file",
                                         pa.repeat(pa.scalar(source_file), moved.num_rows))
    qpath = quarantine_dir / QUARANTINE_FILE
    if qpath.exists():  # a rerun of the same partition replaces its own quarantine
        qpath.unlink()
    from opencity.io import write_parquet_atomic

    write_parquet_atomic(quarantined, qpath, restricted=True)
    del sensitive  # values stay in the restricted quarantine, never in logs
    return table.filter(pa.array(~bad)), counts


def validate_or_raise(dataset: str, table_or_path: Any, *, context: Mapping[str, Any] | None,
                      reports_dir: str | Path) -> dict[str, Any]:
    """Validate ``table_or_path`` with the suite of ``dataset``; raise if it fails.

    Args:
        dataset: a key of :data:`SUITES` or any product name (generic product suite, needs
            ``context["privacy"]``).
        table_or_path: Arrow table, pandas DataFrame, DuckDB relation, or a Parquet/CSV path.
        context: see the module docstring (interval, previous rows, references, privacy...).
        reports_dir: where ``<suite>.json``, ``<suite>.summary.json`` and
            ``data_docs/<suite>.html`` (+ ``index.html``) are written.

    Returns:
        Summary: dataset, suite, success, evaluated, failures (masked), rows,
        rows_quarantined, reasons, report and data_docs paths, seconds.

    Raises:
        DataQualityError: a dataset-level expectation failed (listed in the message).
        ConfigError: the context is invalid (e.g. a product without a privacy declaration).
    """
    t0 = time.perf_counter()
    reports_dir = Path(reports_dir)
    table = load_table(table_or_path)
    ctx = suite_context(dataset, table, context)
    suite = build_suite(dataset, ctx)
    sensitive = sensitive_columns(dataset, ctx.schema)
    df = _to_pandas(table)
    result = run_suite(suite, df)
    rows_quarantined, reasons = 0, {}
    qdir = (context or {}).get("quarantine_dir")
    failing_rows = _row_level_failures(result)
    if failing_rows and qdir is not None and isinstance(table_or_path, str | Path):
        path = Path(table_or_path)
        kept, reasons = _quarantine_rows(table, suite, failing_rows, df, sensitive,
                                         Path(qdir), path.name)
        rows_quarantined = table.num_rows - kept.num_rows
        from opencity.io import write_parquet_atomic

        write_parquet_atomic(kept, path, restricted=True)
        log.warning("%s: %d row(s) failed row-level expectations and were quarantined: %s",
                    dataset, rows_quarantined, reasons)
        table, df = kept, _to_pandas(kept)
        result = run_suite(build_suite(dataset, suite_context(dataset, table, context)), df)
    elif qdir is not None and (Path(qdir) / QUARANTINE_FILE).exists():
        (Path(qdir) / QUARANTINE_FILE).unlink()  # stale: from an earlier run of this partition
    mask_result(result, sensitive, domains_of(dataset, ctx.schema))
    failures = [_describe(r) for r in result.results if not r.success]
    summary = {
        "dataset": dataset,
        "suite": suite.name,
        "success": bool(result.success),
        "evaluated": len(result.results),
        "failures": failures,
        "rows": table.num_rows,
        "rows_quarantined": rows_quarantined,
        "reasons": reasons,
        "run_id": (context or {}).get("run_id"),
        "report": str(reports_dir / f"{suite.name}.json"),
        "data_docs": str(reports_dir / "data_docs" / f"{suite.name}.html"),
    }
    _atomic_write(reports_dir / f"{suite.name}.json",
                  json.dumps(result.to_json_dict(), indent=1, default=str))
    _atomic_write(reports_dir / f"{suite.name}.summary.json",
                  json.dumps(summary, indent=1, default=str))
    write_data_docs(result, reports_dir, suite.name)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    if not result.success:
        lines = [_failure_line(f) for f in failures[:MAX_FAILURES_IN_MESSAGE]]
        more = len(failures) - len(lines)
        message = (
            f"validation of {dataset} failed ({suite.name}): {len(failures)} of "
            f"{len(result.results)} expectations not met; nothing was published.\n"
            + "\n".join(lines) + (f"\n... and {more} more" if more > 0 else "")
            + f"\nResults: {summary['report']}; Data Docs: {summary['data_docs']}")
        log.error("%s", message)
        raise DataQualityError(message)
    log.info("validation of %s passed: %d expectations (%s) in %.2f s; Data Docs: %s",
             dataset, len(result.results), suite.name, summary["seconds"],
             summary["data_docs"])
    return summary


def validate_dp_release(out_dir: str | Path, *, ledger: Any, reports_dir: str | Path,
                        run_id: str | None = None, statement_file: str = STATEMENT_FILE
                        ) -> dict[str, Any]:
    """Validate every product of a DP release directory (privacy.mobility layout).

    Reads the release's :class:`opencity.io.PrivacyStatement` (``out_dir/privacy.json``:
    dataset, partition, release id, products with ``file`` and ``selection_threshold``) and
    validates each product file with the dp privacy expectations against the ledger
    (``ledger``: the portal Ledger, read through its API). A missing statement fails the gate.

    Returns:
        product name -> summary of :func:`validate_or_raise`.

    Raises:
        DataQualityError: the statement is missing or not a statement, or a product failed
            its suite.
    """
    out = Path(out_dir)
    statement = read_statement(out / statement_file)
    if statement is None:
        raise DataQualityError(
            f"DP release {out}: the privacy statement {statement_file} is missing; nothing "
            "may be published without it (rerun the release step)")
    if not statement.products:
        raise DataQualityError(f"DP release {out}: {statement_file} lists no products")
    results = {}
    for name, meta in statement.products.items():
        results[name] = validate_or_raise(
            f"{statement.dataset}.{name}", out / meta.get("file", f"{name}.parquet"),
            context={"min_rows": 0, "run_id": run_id, "privacy": {
                "kind": "dp", "count_columns": ["value"],
                "threshold": meta.get("selection_threshold"),
                "statement": statement, "ledger": ledger,
                "ledger_dataset": statement.dataset, "partition": statement.partition,
                "release_id": statement.release_id}},
            reports_dir=reports_dir)
    return results
