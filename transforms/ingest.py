"""Ingestion: read a raw file, type and check every row, pseudonymize, quarantine the rest.

``ingest_file`` is the one entry point. It reads CSV, Parquet (file, directory or glob) or JSON
lines into DuckDB, maps the publisher's columns onto the canonical schema (transforms.profiles),
parses types and timestamps (to UTC), maps coordinates to districts and cells to regions,
replaces direct identifiers by keyed HMAC pseudonyms, and writes two Parquet files:

* ``out_dir/part-0.parquet``: the clean rows (identifier columns dropped, pseudonyms added);
* ``quarantine_dir/quarantine.parquet``: every row that failed, with a ``reason`` naming the
  column and the check, ``source_file`` and ``record`` (the 1-based data record, or the file
  line for unparseable lines). Identifier values in the quarantine are pseudonymized too and free
  text is redacted, so the quarantine holds no raw identifier; the raw file itself stays in the
  restricted landing area, referenced by its SHA-256 in the manifest.

Rows whose time column lies in another data interval are neither clean nor bad: they are
counted as ``rows_other_intervals`` (another run's partition picks them up), unless
``strict_interval`` is set, in which case they are quarantined. Every run reconciles:
``rows_in == rows_out + rows_quarantined + rows_other_intervals`` or it raises.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from opencity.errors import DataQualityError, InternalError
from opencity.secrets import Secret
from transforms.profiles import Profile, get_profile
from transforms.pseudonymize import Pseudonymizer
from transforms.schemas import Column, Schema

log = logging.getLogger(__name__)

_SQL_TYPES = {
    pa.string(): "VARCHAR",
    pa.float64(): "DOUBLE",
    pa.int64(): "BIGINT",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
}


@dataclass(frozen=True)
class Reference:
    """Public reference tables used for mapping and referential checks (any may be None)."""

    districts: pa.Table | None = None  # districts.csv: district_id + rectangle bounds
    towers: pa.Table | None = None  # towers.csv: cell_id, lat, lon, region_id


@dataclass(frozen=True)
class IngestResult:
    source: str
    input_path: str
    clean_path: str
    quarantine_path: str | None
    rows_in: int
    rows_out: int
    rows_quarantined: int
    rows_other_intervals: int
    reasons: dict[str, int]  # reason -> rows (top reasons, for the manifest)

    def as_dict(self) -> dict:
        return asdict(self)


EMAIL_RE = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
PHONE_RE = r"\+?[0-9][0-9 ()./-]{6,}[0-9]"


def mask_free_text_sql(expr: str) -> str:
    """SQL masking e-mail addresses and phone-number-like digit runs in free text."""
    return (f"regexp_replace(regexp_replace({expr}, {_lit(EMAIL_RE)}, '[email]', 'g'), "
            f"{_lit(PHONE_RE)}, '[phone]', 'g')")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir() or name.endswith(".parquet") or "*" in name:
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".csv", ".txt", ".csv.gz")):
        return "csv"
    raise DataQualityError(
        f"{path}: cannot tell the file format from its name; use .csv, .parquet or .jsonl "
        "(or pass fmt=)"
    )


def _register_raw(con: duckdb.DuckDBPyConnection, path: Path, fmt: str) -> tuple[list[str], int]:
    """Create view raw(__record, <raw columns>) and table raw_rejects(line, reason).

    Returns the raw column names and the number of unparseable lines.
    """
    p = str(path)
    if fmt == "parquet" and path.is_dir():
        p = str(path / "**" / "*.parquet")
    if fmt != "parquet" and not path.exists():
        raise DataQualityError(f"{path}: file not found")
    try:
        if fmt == "csv":
            con.execute(
                f"CREATE TEMP TABLE raw_in AS SELECT row_number() OVER () AS __record, * "
                f"FROM read_csv({_lit(p)}, all_varchar=true, header=true, store_rejects=true,"
                f" rejects_table='raw_rejects_t', rejects_scan='raw_scans_t')"
            )
            con.execute(
                "CREATE TEMP VIEW raw_rejects AS SELECT line, "
                "'malformed CSV line: ' || min(error_message) AS reason FROM raw_rejects_t "
                "GROUP BY line"
            )
        elif fmt == "jsonl":
            con.execute(
                f"CREATE TEMP TABLE raw_lines AS SELECT row_number() OVER () AS __record, "
                f"json AS __json FROM read_json_objects({_lit(p)}, "
                f"format='newline_delimited', ignore_errors=true)"
            )
            keys = con.execute(
                "SELECT DISTINCT unnest(json_keys(__json)) FROM raw_lines WHERE __json IS NOT NULL"
            ).fetchall()
            cols = sorted(k[0] for k in keys)
            select = ", ".join(f"json_extract_string(__json, {_lit('$.' + c)}) AS {_q(c)}"
                               for c in cols)
            con.execute(
                "CREATE TEMP TABLE raw_in AS SELECT __record"
                + (", " + select if select else "")
                + " FROM raw_lines WHERE __json IS NOT NULL"
            )
            con.execute(
                "CREATE TEMP VIEW raw_rejects AS SELECT __record AS line, "
                "'malformed JSON line' AS reason FROM raw_lines WHERE __json IS NULL"
            )
        elif fmt == "parquet":
            con.execute(
                f"CREATE TEMP VIEW raw_in AS SELECT row_number() OVER () AS __record, * "
                f"FROM read_parquet({_lit(p)}, union_by_name=true)"
            )
            con.execute(
                "CREATE TEMP VIEW raw_rejects AS SELECT NULL::BIGINT AS line, "
                "NULL::VARCHAR AS reason WHERE false"
            )
        else:
            raise DataQualityError(f"{path}: unsupported format {fmt!r} (csv, parquet, jsonl)")
    except duckdb.IOException as err:
        raise DataQualityError(f"{path}: cannot read the file ({err})") from err
    except duckdb.Error as err:
        raise DataQualityError(f"{path}: not a readable {fmt} file ({err})") from err
    cols = [r[0] for r in con.execute("DESCRIBE raw_in").fetchall() if r[0] != "__record"]
    rejects = con.execute("SELECT count(*) FROM raw_rejects").fetchall()[0][0]
    return cols, rejects


class _Builder:
    """Builds the typed, checked SELECT for one profile."""

    def __init__(self, profile: Profile, raw_cols: list[str], pseudo: Pseudonymizer,
                 ref: Reference, interval: tuple[datetime, datetime] | None) -> None:
        self.p = profile
        self.schema: Schema = profile.schema
        self.raw_cols = raw_cols
        self.pseudo = pseudo
        self.ref = ref
        self.interval = interval

    def raw_expr(self, col: Column) -> str:
        expr = self.p.columns.get(col.name)
        if expr is None:
            return "NULL::VARCHAR"
        return f"nullif(trim(CAST({expr} AS VARCHAR)), '')"

    def typed_expr(self, col: Column) -> str:
        raw = self.raw_expr(col)
        t = col.type
        if pa.types.is_timestamp(t):
            source = self.p.columns.get(col.name)
            typed_in = f"TRY_CAST({source} AS TIMESTAMPTZ)" if source else "NULL"
            if self.p.timestamp_format:
                parsed = (f"timezone({_lit(self.p.timezone)}, "
                          f"try_strptime({raw}, {_lit(self.p.timestamp_format)}))")
                return f"coalesce({parsed}, {typed_in})"
            return typed_in if source else "NULL::TIMESTAMPTZ"
        if pa.types.is_string(t):
            vmap = self.p.value_maps.get(col.name)
            if vmap:
                cases = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in vmap.items())
                # "Closed (Transferred)" -> "closed": qualifiers in parentheses are dropped.
                key = f"lower(regexp_replace({raw}, '\\s*\\(.*\\)\\s*$', ''))"
                return f"CASE {key} {cases} ELSE {key} END"
            return raw
        if pa.types.is_boolean(t):
            return f"TRY_CAST(lower({raw}) AS BOOLEAN)"
        return f"TRY_CAST({raw} AS {_SQL_TYPES[t]})"

    def _show(self, col: Column, expr: str) -> str:
        """SQL rendering a value for a message; identifiers and personal data are never shown."""
        if col.identifier or col.personal:
            return "'(value withheld)'"
        return f"'''' || left({expr}, 40) || ''''"

    def reasons(self) -> list[str]:
        out: list[str] = []
        for col in self.schema.columns:
            name = col.name
            raw, typed = f"r_{name}", f"t_{name}"
            if col.required:
                out.append(f"CASE WHEN {raw} IS NULL THEN 'missing {name}' END")
            type_name = "timestamp" if pa.types.is_timestamp(col.type) else str(col.type)
            out.append(
                f"CASE WHEN {raw} IS NOT NULL AND {typed} IS NULL THEN "
                f"'{name}: cannot parse ' || {self._show(col, raw)} || ' as {type_name}' END"
            )
            if col.allowed:
                allowed = ", ".join(_lit(a) for a in col.allowed)
                out.append(
                    f"CASE WHEN {typed} IS NOT NULL AND {typed} NOT IN ({allowed}) THEN "
                    f"'{name}: unknown value ' || {self._show(col, typed)} || "
                    f"' (allowed: {', '.join(col.allowed)})' END"
                )
            if col.min_value is not None:
                out.append(
                    f"CASE WHEN {typed} < {col.min_value} THEN '{name}: value ' || "
                    f"{self._show(col, f'CAST({typed} AS VARCHAR)')} || "
                    f"' below minimum {col.min_value}' END"
                )
            if col.max_value is not None:
                out.append(
                    f"CASE WHEN {typed} > {col.max_value} THEN '{name}: value ' || "
                    f"{self._show(col, f'CAST({typed} AS VARCHAR)')} || "
                    f"' above maximum {col.max_value}' END"
                )
        names = set(self.schema.names)
        if self.p.bbox and {"lat", "lon"} <= names:
            b = self.p.bbox
            out.append(
                f"CASE WHEN t_lat IS NOT NULL AND t_lon IS NOT NULL AND NOT (t_lat BETWEEN "
                f"{b.lat_min} AND {b.lat_max} AND t_lon BETWEEN {b.lon_min} AND {b.lon_max}) "
                "THEN 'lat/lon: coordinates outside the city (placeholder or wrong)' END"
            )
        if {"created_at", "closed_at"} <= names:
            out.append("CASE WHEN t_closed_at < t_created_at THEN "
                       "'closed_at: before created_at' END")
        if self.ref.towers is not None and "cell_id" in names:
            out.append("CASE WHEN t_cell_id IS NOT NULL AND twr.cell_id IS NULL THEN "
                       "'cell_id: unknown cell id ' || '''' || t_cell_id || '''' END")
        if self.ref.districts is not None and "district_id" in names:
            out.append(
                "CASE WHEN t_district_id IS NOT NULL AND dref.district_id IS NULL THEN "
                "'district_id: unknown district ' || '''' || t_district_id || '''' END"
            )
        for key in self.schema.key:
            out.append(f"CASE WHEN __dup_{key} > 1 THEN 'duplicate {key}' END")
        return out

    def staged_sql(self) -> str:
        """SELECT with r_* (raw text), t_* (typed), pseudonyms, joins and the reason column."""
        missing_src = [
            c for c in self.p.required_raw if c not in self.raw_cols
        ]
        if missing_src:
            raise DataQualityError(
                f"missing column(s) {', '.join(missing_src)}; the file has: "
                f"{', '.join(self.raw_cols[:30])}"
            )
        parts = ["__record"]
        for col in self.schema.columns:
            parts.append(f"{self.raw_expr(col)} AS r_{col.name}")
            parts.append(f"{self.typed_expr(col)} AS t_{col.name}")
        for out_col, srcs in self.schema.pseudonyms:
            present = tuple(s for s in srcs if s in self.p.columns)
            if present:
                exprs = {s: self.p.columns[s] for s in present}
                parts.append(f"{self.pseudo.token_for_columns_sql(exprs)} AS {out_col}")
            else:
                parts.append(f"NULL::VARCHAR AS {out_col}")
        typed = f"SELECT {', '.join(parts)} FROM raw_in"
        dups = ", ".join(
            f"row_number() OVER (PARTITION BY t_{k} ORDER BY __record) AS __dup_{k}"
            for k in self.schema.key
        )
        joins, extra = "", []
        names = set(self.schema.names)
        if self.ref.towers is not None and "cell_id" in names:
            joins += " LEFT JOIN ref_towers twr ON twr.cell_id = s.t_cell_id"
            extra.append("twr.region_id AS __region_id")
        if self.ref.districts is not None and "district_id" in names:
            joins += " LEFT JOIN ref_districts dref ON dref.district_id = s.t_district_id"
            if {"lat", "lon"} <= names:
                joins += (" LEFT JOIN ref_districts dgeo ON s.t_lat >= dgeo.lat_min AND "
                          "s.t_lat < dgeo.lat_max AND s.t_lon >= dgeo.lon_min AND "
                          "s.t_lon < dgeo.lon_max")
                extra.append("dgeo.district_id AS __geo_district")
        reason = f"nullif(concat_ws('; ', {', '.join(self.reasons())}), '')"
        in_interval = "true"
        tcol = self.schema.time_column
        if self.interval and tcol:
            in_interval = f"(t_{tcol} >= $start AND t_{tcol} < $end)"
        sel = ["s.*", f"{reason} AS reason", f"{in_interval} AS __in_interval", *extra]
        return (
            f"SELECT {', '.join(sel)} FROM (SELECT *{', ' + dups if dups else ''} "
            f"FROM ({typed})) s{joins}"
        )

    def clean_select(self) -> str:
        cols = []
        for col in self.schema.columns:
            if col.identifier:
                continue
            expr = f"t_{col.name}"
            if col.name == "district_id" and self.ref.districts is not None and {
                "lat", "lon"
            } <= set(self.schema.names):
                expr = "coalesce(t_district_id, __geo_district)"
            if col.personal and pa.types.is_string(col.type) and col.name == "description":
                expr = mask_free_text_sql(expr)
            sql_type = "TIMESTAMPTZ" if pa.types.is_timestamp(col.type) else _SQL_TYPES[col.type]
            cols.append(f"CAST({expr} AS {sql_type}) AS {col.name}")
        cols += [name for name, _ in self.schema.pseudonyms]
        if self.ref.towers is not None and "cell_id" in self.schema.names:
            cols.append("__region_id AS region_id")
        return ", ".join(cols)

    def quarantine_select(self, source_file: str, reason: str = "reason") -> str:
        cols = [f"{_lit(source_file)} AS source_file", "__record AS record",
                f"{reason} AS reason"]
        pseudo_of = {s: out for out, srcs in self.schema.pseudonyms for s in srcs}
        for col in self.schema.columns:
            if col.identifier:
                out = pseudo_of.get(col.name)
                if out and f"{out} AS {out}" not in cols:
                    cols.append(f"{out} AS {out}")
                continue
            if col.personal and pa.types.is_string(col.type):
                cols.append(f"CASE WHEN r_{col.name} IS NULL THEN NULL ELSE '[redacted]' END "
                            f"AS {col.name}")
                continue
            cols.append(f"r_{col.name} AS {col.name}")
        return ", ".join(cols)


def _used(sql: str, params: dict) -> dict:
    """Only the named parameters a statement references (DuckDB rejects unused ones)."""
    return {k: v for k, v in params.items() if f"${k}" in sql}


def _copy(con: duckdb.DuckDBPyConnection, select: str, target: Path,
          params: dict) -> int:
    """COPY a query to Parquet via a temporary name, then rename (a retry overwrites)."""
    params = _used(select, params)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        res = con.execute(
            f"COPY ({select}) TO {_lit(str(tmp))} (FORMAT parquet, COMPRESSION zstd)", params
        ).fetchall()
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return int(res[0][0]) if res else 0


def ingest_file(
    source: str,
    path: str | Path,
    out_dir: str | Path,
    *,
    quarantine_dir: str | Path,
    key: Secret,
    interval: tuple[datetime, datetime] | None = None,
    reference: Reference | None = None,
    profile: str | Profile = "opencity",
    fmt: str | None = None,
    strict_interval: bool = False,
    memory_limit: str = "2GB",
) -> IngestResult:
    """Ingest one raw file (or Parquet directory) of ``source`` into clean + quarantine Parquet.

    Args:
        source: canonical source name (a key of transforms.schemas.SCHEMAS).
        path: CSV, JSON lines, Parquet file, directory of Parquet files, or a glob.
        out_dir: directory receiving ``part-0.parquet`` (the clean rows).
        quarantine_dir: directory receiving ``quarantine.parquet`` when any row fails.
        key: HMAC key (transforms.pseudonymize.resolve_hmac_key()).
        interval: [start, end) in UTC; rows with time outside go to other intervals.
        reference: districts / towers tables for mapping and referential checks.
        profile: input profile name (transforms.profiles) or a Profile.
        strict_interval: quarantine rows outside the interval instead of deferring them.

    Raises:
        DataQualityError: unreadable file, missing columns (dataset-level failures).
    """
    path = Path(path)
    prof = profile if isinstance(profile, Profile) else get_profile(source, profile)
    ref = reference or Reference()
    fmt = fmt or detect_format(path)
    pseudo = Pseudonymizer(key)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = {_lit(memory_limit)}")
        if ref.towers is not None:
            con.register("ref_towers_arrow", ref.towers)
            con.execute("CREATE TEMP TABLE ref_towers AS SELECT CAST(cell_id AS VARCHAR) cell_id,"
                        " CAST(region_id AS VARCHAR) region_id FROM ref_towers_arrow")
        if ref.districts is not None:
            con.register("ref_districts_arrow", ref.districts)
            con.execute("CREATE TEMP TABLE ref_districts AS SELECT CAST(district_id AS VARCHAR) "
                        "district_id, lat_min, lat_max, lon_min, lon_max FROM ref_districts_arrow")
        raw_cols, n_rejects = _register_raw(con, path, fmt)
        builder = _Builder(prof, raw_cols, pseudo, ref, interval)
        try:
            staged = f"({builder.staged_sql()}) staged"
        except DataQualityError as err:
            raise DataQualityError(f"{path}: {err}") from err
        params = dict(pseudo.params)
        if interval:
            params.update(start=interval[0], end=interval[1])
        bad = "reason IS NOT NULL" + ("" if not strict_interval or not interval
                                      else " OR NOT __in_interval")
        good = f"NOT ({bad}) AND __in_interval"
        try:
            counts = con.execute(
                f"SELECT count(*), count(*) FILTER ({good}), count(*) FILTER ({bad}) "
                f"FROM {staged}", _used(staged, params)).fetchall()[0]
        except duckdb.Error as err:
            raise DataQualityError(f"{path}: cannot read rows: {err}") from err
        rows_parsed, n_good, n_bad = counts
        out_dir = Path(out_dir)
        clean_path = out_dir / "part-0.parquet"
        rows_out = _copy(con, f"SELECT {builder.clean_select()} FROM {staged} WHERE {good}",
                         clean_path, params)
        quarantine_path = None
        reasons: dict[str, int] = {}
        n_q = n_bad + n_rejects
        if n_q:
            interval_reason = (
                "CASE WHEN NOT __in_interval THEN 'outside the data interval' END"
                if strict_interval and interval else "NULL"
            )
            qsel = builder.quarantine_select(
                path.name, f"nullif(concat_ws('; ', reason, {interval_reason}), '')")
            q_cols = ", ".join(
                f"NULL::VARCHAR AS {c.name}" for c in prof.schema.columns if not c.identifier
            )
            union = (
                f"SELECT {qsel} FROM {staged} WHERE {bad} "
                f"UNION ALL BY NAME SELECT {_lit(path.name)} AS source_file, line, "
                f"reason, {q_cols} FROM raw_rejects"
            )
            qpath = Path(quarantine_dir) / "quarantine.parquet"
            written = _copy(con, union, qpath, params)
            if written != n_q:
                raise InternalError(f"quarantine wrote {written} rows, expected {n_q}")
            quarantine_path = str(qpath)
            reasons = dict(con.execute(
                f"SELECT reason, count(*) FROM read_parquet({_lit(str(qpath))}) "
                "GROUP BY 1 ORDER BY 2 DESC LIMIT 20").fetchall())
        rows_in = rows_parsed + n_rejects
        other = rows_parsed - n_good - n_bad
        if rows_out != n_good or rows_in != rows_out + n_q + other:
            raise InternalError(
                f"ingest of {path.name} does not reconcile: in={rows_in} out={rows_out} "
                f"quarantined={n_q} other intervals={other}"
            )
        result = IngestResult(
            source=source, input_path=str(path), clean_path=str(clean_path),
            quarantine_path=quarantine_path, rows_in=rows_in, rows_out=rows_out,
            rows_quarantined=n_q, rows_other_intervals=other, reasons=reasons,
        )
        log.info("ingested %s: %d rows in, %d clean, %d quarantined, %d in other intervals",
                 path.name, rows_in, rows_out, n_q, other)
        return result
    finally:
        con.close()
