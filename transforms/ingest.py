"""Ingestion: read a raw file, type and check every row, pseudonymize, quarantine the rest.

``ingest_file`` is the one entry point. CSV and JSON lines are split into records by
:mod:`transforms.rawread` (explicit encoding, fixed RFC 4180 dialect, one bad record never
takes its neighbours with it); Parquet (file, directory or glob) is read directly. The
publisher's columns are mapped onto the canonical schema (transforms.profiles; an absent
optional column is NULL), types and timestamps (to UTC) are parsed, coordinates are mapped to
districts and cells to regions, direct identifiers are replaced by keyed HMAC pseudonyms,
and two Parquet files are written:

* ``out_dir/part-0.parquet``: the clean rows (identifier columns dropped, pseudonyms added);
* ``quarantine_dir/quarantine.parquet``: every row that failed, with a ``reason`` naming the
  column and the check (never the value), ``source_file`` and ``record`` (the line where the
  record starts; the row number for Parquet). Identifier values are pseudonymized, personal
  data and free text redacted, and a value that failed its column's check is withheld, so
  the quarantine holds no raw identifier; the raw file itself stays in the restricted
  landing area, referenced by its SHA-256 in the manifest. A run without bad rows removes
  the quarantine file of an earlier run of the partition.

Every value of every column is checked against its domain: the allowed values of a
categorical column (the profile's code list or the schema's), the shape of a code column,
the type, finiteness (no NaN, infinity, overflow, sign on a zero that has none) and the
physical range of a number, a plausible time. Free text is masked in the clean data and
never published.

Rows whose time column lies in another data interval are neither clean nor bad: they are
counted as ``rows_other_intervals`` (another run's partition picks them up, and quarantines
them there if they fail a check: a backfill quarantines each bad row once, in its own
interval), unless ``strict_interval`` is set, in which case they are quarantined. A row
without a usable time is quarantined by every run. Every run reconciles the
records the raw reader counted (Parquet: the files' metadata) with the rows actually written:
``rows_in == rows_out + rows_quarantined + rows_other_intervals`` (each counted on its own),
or it raises.
"""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from opencity.errors import DataQualityError, InternalError
from transforms.linkage import link_sql
from transforms.profiles import Profile, get_profile
from transforms.pseudonymize import Pseudonymizer, Secret, identifier_kind, normalize_sql
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
    # column -> share of the input rows whose raw value no value map of the profile maps
    # (quarantined with the column named; declarative profiles only)
    unmapped: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


# Plausible time range of any record, and the longest a 311 request may stay open.
MIN_TIME = "1990-01-01 00:00:00+00"
MAX_TIME = "2100-01-01 00:00:00+00"
MAX_DURATION_DAYS = 3660

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


def _redact_engine_message(err: BaseException) -> str:
    """The first line of an engine error with every quoted value removed (no row content)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    first = re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", first)
    return first[:200]


def _parquet_rows(path: Path) -> int:
    """Rows of a Parquet file, directory or glob from the files' metadata (independent count)."""
    import glob

    import pyarrow.parquet as pq

    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
    elif "*" in str(path):
        files = sorted(Path(f) for f in glob.glob(str(path), recursive=True))
    else:
        files = [path]
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _register_raw(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, work: Path,
                  encoding: str) -> tuple[list[str], int, int]:
    """Create table raw_in(__record, <raw columns>) and view raw_rejects(line, reason).

    CSV and JSON lines are split into records by transforms.rawread first (fixed dialect, bad
    records isolated, no row content in any message); Parquet is read directly.

    Returns the raw column names, the number of unparseable records and the number of input
    records counted independently of DuckDB (the raw reader's count, or Parquet metadata).
    """
    from transforms import rawread

    p = str(path)
    if fmt == "parquet" and path.is_dir():
        p = str(path / "**" / "*.parquet")
    if fmt != "parquet" and not path.exists():
        raise DataQualityError(f"{path}: file not found")
    if fmt not in ("csv", "jsonl", "parquet"):
        raise DataQualityError(f"{path}: unsupported format {fmt!r} (csv, parquet, jsonl)")
    rejects: list[tuple[int, str]] = []
    try:
        if fmt == "csv":
            scan = rawread.scan_csv(path, work / "records.csv", encoding=encoding)
            columns = "{" + ", ".join(
                f"{_lit(c)}: 'VARCHAR'" for c in scan.columns) + "}"
            con.execute(
                f"CREATE TEMP TABLE raw_in AS SELECT * RENAME ({_q(rawread.LINE_COLUMN)} AS "
                f"__record) FROM read_csv({_lit(str(scan.normalized))}, "
                f"columns={{{_lit(rawread.LINE_COLUMN)}: 'BIGINT', {columns[1:]}, header=true, "
                "auto_detect=false, delim=',', quote='\"', escape='\"', strict_mode=true, "
                f"max_line_size={rawread.MAX_RECORD_BYTES * 2 + 1024})")
            rejects, counted = scan.bad, scan.records
        elif fmt == "jsonl":
            scan = rawread.scan_jsonl(path, work / "records.jsonl", encoding=encoding)
            con.execute(
                f"CREATE TEMP TABLE raw_lines AS SELECT json AS __json FROM "
                f"read_json_objects({_lit(str(scan.normalized))}, format='newline_delimited')"
            )
            select = ", ".join(f"json_extract_string(__json, {_lit(_json_path(c))}) AS {_q(c)}"
                               for c in scan.columns)
            con.execute(
                "CREATE TEMP TABLE raw_in AS SELECT CAST(json_extract(__json, "
                f"{_lit(_json_path(rawread.LINE_COLUMN))}) AS BIGINT) AS __record"
                + (", " + select if select else "") + " FROM raw_lines"
            )
            rejects, counted = scan.bad, scan.records
        else:
            con.execute(
                f"CREATE TEMP VIEW raw_in AS SELECT row_number() OVER () AS __record, * "
                f"FROM read_parquet({_lit(p)}, union_by_name=true)"
            )
            counted = _parquet_rows(path)
    except DataQualityError:
        raise
    except duckdb.IOException as err:
        raise DataQualityError(
            f"{path}: cannot read the file ({_redact_engine_message(err)})") from None
    except duckdb.Error as err:
        raise DataQualityError(
            f"{path}: not a readable {fmt} file ({_redact_engine_message(err)})") from None
    except (OSError, pa.ArrowException) as err:  # corrupt Parquet metadata, OS errors
        raise DataQualityError(
            f"{path}: not a readable {fmt} file ({type(err).__name__})") from None
    con.register("raw_rejects_arrow", pa.table(
        {"line": pa.array([r[0] for r in rejects], pa.int64()),
         "reason": pa.array([r[1] for r in rejects], pa.string())}))
    con.execute("CREATE TEMP TABLE raw_rejects AS SELECT * FROM raw_rejects_arrow")
    cols = [r[0] for r in con.execute("DESCRIBE raw_in").fetchall() if r[0] != "__record"]
    return cols, len(rejects), counted


def _json_path(key: str) -> str:
    return "$." + '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


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
        present = set(raw_cols)
        # Canonical columns whose raw columns are all in the file (an absent optional column,
        # e.g. no requester_email in an export, is NULL; a required one fails the file).
        self.mapped = {c.name for c in self.schema.columns if c.name in self.p.columns
                       and set(self.p.raw_columns(c.name)) <= present}
        self.raw_table = "raw_in"  # raw_geo when district polygons add __polygon_district

    def raw_expr(self, col: Column) -> str:
        if col.name not in self.mapped:
            return "NULL::VARCHAR"
        return f"nullif(trim(CAST({self.p.columns[col.name]} AS VARCHAR)), '')"

    def typed_expr(self, col: Column) -> str:
        raw = self.raw_expr(col)
        t = col.type
        if pa.types.is_timestamp(t):
            if col.name not in self.mapped:
                return "NULL::TIMESTAMPTZ"
            typed_in = f"TRY_CAST({self.p.columns[col.name]} AS TIMESTAMPTZ)"
            formats = self.p.timestamp_formats
            if formats:
                parsed = [f"timezone({_lit(self.p.timezone)}, try_strptime({raw}, {_lit(f)}))"
                          for f in formats]
                if self.p.file:  # a declarative profile: its formats, no ISO fallback
                    return parsed[0] if len(parsed) == 1 else f"coalesce({', '.join(parsed)})"
                return f"coalesce({', '.join(parsed)}, {typed_in})"
            return typed_in
        if pa.types.is_string(t):
            vmap = self.p.value_maps.get(col.name)
            if vmap:
                cases = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in vmap.items())
                # "Closed (Transferred)" -> "closed": qualifiers in parentheses are dropped.
                key = f"lower(regexp_replace({raw}, '\\s*\\(.*\\)\\s*$', ''))"
                if self.p.strict_value_maps:  # the raw value as is first, then unqualified
                    return (f"CASE lower({raw}) {cases} ELSE CASE {key} {cases} END END")
                return f"CASE {key} {cases} ELSE {key} END"
            return raw
        if pa.types.is_boolean(t):
            return f"TRY_CAST(lower({raw}) AS BOOLEAN)"
        return f"TRY_CAST({raw} AS {_SQL_TYPES[t]})"

    def column_checks(self, col: Column) -> list[tuple[str, str]]:
        """(condition, reason) pairs that make a value of ``col`` bad.

        Reasons name the column and the check, never the value: a value that fails its
        check is exactly the kind that may be personal data in the wrong column.
        """
        name = col.name
        raw, typed = f"r_{name}", f"t_{name}"
        out: list[tuple[str, str]] = []
        if col.required:
            out.append((f"{raw} IS NULL", f"missing {name}"))
        type_name = "timestamp" if pa.types.is_timestamp(col.type) else str(col.type)
        if self.p.strict_value_maps and name in self.p.value_maps:
            why = f"{name}: raw value not in value_maps.{name} of profile {self.p.name}"
        elif self.p.file and self.p.timestamp_formats and pa.types.is_timestamp(col.type):
            why = f"{name}: does not match timestamp.format of profile {self.p.name}"
        else:
            why = f"{name}: cannot parse as {type_name}"
        out.append((f"{raw} IS NOT NULL AND {typed} IS NULL", why))
        if pa.types.is_floating(col.type):
            out.append((f"{typed} IS NOT NULL AND NOT isfinite({typed})",
                        f"{name}: not a finite number (NaN, infinity or overflow)"))
            if col.min_value is not None and col.min_value >= 0:
                out.append((f"{typed} = 0 AND signbit({typed})",
                            f"{name}: negative zero (a sign where none is meaningful)"))
        domain = self.p.domain(name) if pa.types.is_string(col.type) else None
        if domain:
            allowed = ", ".join(_lit(a) for a in domain)
            label = self.p.domain_labels.get(name)
            out.append((f"{typed} IS NOT NULL AND {typed} NOT IN ({allowed})",
                        f"{name}: value outside its domain"
                        + (f" (not in the {label} of profile {self.p.name})" if label else "")))
        pattern = self.p.pattern(name) if pa.types.is_string(col.type) else None
        if pattern and not domain and not col.identifier:
            cond = f"{typed} IS NOT NULL AND NOT regexp_full_match({typed}, {_lit(pattern)})"
            out.append((cond, f"{name}: value not shaped like a {name}"))
        # Ranges apply to finite numbers (NaN compares above everything in SQL).
        finite = f" AND isfinite({typed})" if pa.types.is_floating(col.type) else ""
        if col.min_value is not None:
            out.append((f"{typed} < {col.min_value}{finite}",
                        f"{name}: below minimum {col.min_value}"))
        if col.max_value is not None:
            out.append((f"{typed} > {col.max_value}{finite}",
                        f"{name}: above maximum {col.max_value}"))
        return out

    def reasons(self) -> list[str]:
        out: list[str] = []
        for col in self.schema.columns:
            for cond, reason in self.column_checks(col):
                out.append(f"CASE WHEN {cond} THEN {_lit(reason)} END")
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
            out.append(f"CASE WHEN t_closed_at > t_created_at + INTERVAL {MAX_DURATION_DAYS} DAY"
                       f" THEN 'closed_at: more than {MAX_DURATION_DAYS} days after created_at'"
                       " END")
        for col in self.schema.columns:
            if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
                t = f"t_{col.name}"
                out.append(f"CASE WHEN {t} < TIMESTAMPTZ '{MIN_TIME}' OR {t} >= TIMESTAMPTZ "
                           f"'{MAX_TIME}' THEN '{col.name}: outside {MIN_TIME[:4]}-"
                           f"{MAX_TIME[:4]}' END")
        if self.ref.towers is not None and "cell_id" in names:
            out.append("CASE WHEN t_cell_id IS NOT NULL AND twr.cell_id IS NULL THEN "
                       "'cell_id: unknown cell id' END")
        if self.ref.districts is not None and "district_id" in names:
            out.append(
                "CASE WHEN t_district_id IS NOT NULL AND dref.district_id IS NULL THEN "
                "'district_id: unknown district' END"
            )
        if self.p.district_polygons is not None:
            out.append("CASE WHEN t_lat IS NOT NULL AND t_lon IS NOT NULL AND t_district_id IS "
                       "NULL THEN 'district_id: the point lies in no district polygon' END")
        for key in self.schema.key:
            out.append(f"CASE WHEN __dup_{key} > 1 THEN 'duplicate {key}' END")
        return out

    def staged_sql(self) -> str:
        """SELECT with r_* (raw text), t_* (typed), pseudonyms, joins and the reason column."""
        missing_src = [c for c in self.p.required_raw if c not in self.raw_cols]
        if self.p.file:  # a declarative profile: every column it maps must be in the file
            absent = {c: [r for r in self.p.raw_columns(c) if r not in self.raw_cols]
                      for c in self.p.columns}
            absent = {c: r for c, r in absent.items() if r}
            if absent:
                keys = ", ".join(f"columns.{c} ({', '.join(r)})" for c, r in absent.items())
                raise DataQualityError(
                    f"the file has no column(s) named by profile {self.p.file}: {keys}; fix "
                    "the profile's columns (or remove the mapping of an optional column)")
        if missing_src:
            known = set(self.p.required_raw)
            for c in self.schema.columns:
                known.update(self.p.raw_columns(c.name))
            shown = [c for c in self.raw_cols if c in known]
            others = len(self.raw_cols) - len(shown)
            has = ", ".join(shown[:30]) if shown else "none of the expected columns"
            raise DataQualityError(
                f"missing column(s) {', '.join(missing_src)}; the file has: {has}"
                + (f" and {others} other column(s) (names not shown: a file without its "
                   "header line would show a data row here)" if others else "")
            )
        parts = ["__record"]
        for col in self.schema.columns:
            parts.append(f"{self.raw_expr(col)} AS r_{col.name}")
            parts.append(f"{self.typed_expr(col)} AS t_{col.name}")
        for out_col, srcs in self.schema.pseudonyms:
            present = tuple(s for s in srcs if s in self.mapped)
            if present:
                exprs = {s: self.p.columns[s] for s in present}
                parts.append(f"{self.pseudo.token_for_columns_sql(exprs)} AS {out_col}")
            else:
                parts.append(f"NULL::VARCHAR AS {out_col}")
        for col, expr in self.link_tokens():
            parts.append(f"{expr} AS {col}")
        typed = f"SELECT {', '.join(parts)} FROM {self.raw_table}"
        dups = ", ".join(
            f"CASE WHEN t_{k} IS NULL THEN 1 ELSE row_number() OVER (PARTITION BY t_{k} "
            f"ORDER BY __record) END AS __dup_{k}"
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
        in_interval, elsewhere = "true", "false"
        tcol = self.schema.time_column
        if self.interval and tcol:
            in_interval = f"coalesce(t_{tcol} >= $start AND t_{tcol} < $end, false)"
            # a row whose (plausible) time lies in another interval belongs to that run, bad
            # or not: its own run quarantines it, once (a row without a time: every run)
            elsewhere = (f"coalesce((t_{tcol} < $start OR t_{tcol} >= $end) AND t_{tcol} >= "
                         f"TIMESTAMPTZ '{MIN_TIME}' AND t_{tcol} < TIMESTAMPTZ '{MAX_TIME}', "
                         "false)")
        sel = ["s.*", f"{reason} AS reason", f"{in_interval} AS __in_interval",
               f"{elsewhere} AS __elsewhere", *extra]
        return (
            f"SELECT {', '.join(sel)} FROM (SELECT *{', ' + dups if dups else ''} "
            f"FROM ({typed})) s{joins}"
        )

    def link_tokens(self) -> list[tuple[str, str]]:
        """(column, SQL) of the linkage tokens (transforms.linkage) of every linked pseudonym:
        one HMAC token per key whose identifier columns are all mapped (NULL unless all
        present)."""
        out = []
        for out_col, keys in self.schema.links:
            for i, key in enumerate(keys):
                if not all(c in self.mapped for c in key):
                    continue
                parts = [normalize_sql(self.p.columns[c], identifier_kind(c)) for c in key]
                expr = parts[0] if len(parts) == 1 else " || chr(31) || ".join(parts)
                out.append((f"__link_{out_col}_{i}", self.pseudo.token_sql(expr)))
        return out

    def link_columns(self) -> dict[str, list[str]]:
        """Pseudonym column -> its linkage token columns in ``staged_sql``."""
        out: dict[str, list[str]] = {}
        for col, _ in self.link_tokens():
            pseudonym = next(o for o, _ in self.schema.links if col.startswith(f"__link_{o}_"))
            out.setdefault(pseudonym, []).append(col)
        return out

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
            if col.free_text:
                expr = mask_free_text_sql(expr)
            sql_type = "TIMESTAMPTZ" if pa.types.is_timestamp(col.type) else _SQL_TYPES[col.type]
            cols.append(f"CAST({expr} AS {sql_type}) AS {col.name}")
        cols += [name for name, _ in self.schema.pseudonyms]
        if self.ref.towers is not None and "cell_id" in self.schema.names:
            cols.append("__region_id AS region_id")
        return ", ".join(cols)

    def quarantine_select(self, source_file: str, reason: str = "reason") -> str:
        """Quarantine columns: pseudonyms for identifiers, '[redacted]' for personal data and
        free text, and the raw text of other columns only where it passed that column's
        checks (a value that failed them is withheld: it may be personal data misplaced)."""
        cols = [f"{_lit(source_file)} AS source_file", "__record AS record",
                f"{reason} AS reason"]
        pseudo_of = {s: out for out, srcs in self.schema.pseudonyms for s in srcs}
        for col in self.schema.columns:
            if col.identifier:
                out = pseudo_of.get(col.name)
                if out and f"{out} AS {out}" not in cols:
                    cols.append(f"{out} AS {out}")
                continue
            if col.personal or col.free_text:
                cols.append(f"CASE WHEN r_{col.name} IS NULL THEN NULL ELSE '[redacted]' END "
                            f"AS {col.name}")
                continue
            bad = " OR ".join(f"coalesce({c}, false)" for c, _ in self.column_checks(col))
            cols.append(f"CASE WHEN r_{col.name} IS NULL THEN NULL WHEN {bad or 'false'} "
                        f"THEN '[withheld]' ELSE r_{col.name} END AS {col.name}")
        return ", ".join(cols)


POLYGON_COLUMN = "__polygon_district"


def _with_polygon_districts(con: duckdb.DuckDBPyConnection, prof: Profile,
                            raw_cols: list[str], pseudo: Pseudonymizer,
                            ref: Reference) -> Profile:
    """Table raw_geo = raw_in + the district polygon holding each row's point (shapely);
    returns the profile reading district_id from it. Polygons do not overlap (checked when
    the profile was loaded), so a point has at most one district."""
    import dataclasses

    import numpy as np
    import shapely

    polys = prof.district_polygons
    assert polys is not None
    b = _Builder(prof, raw_cols, pseudo, ref, None)
    lat = b.typed_expr(prof.schema.column("lat"))
    lon = b.typed_expr(prof.schema.column("lon"))
    try:
        got = con.execute(f"SELECT __record, CAST({lat} AS DOUBLE) AS lat, "
                          f"CAST({lon} AS DOUBLE) AS lon FROM raw_in").fetchnumpy()
    except duckdb.Error as err:
        raise DataQualityError(
            f"cannot read coordinates ({_redact_engine_message(err)})") from None
    x = np.asarray(got["lon"], dtype="float64")
    y = np.asarray(got["lat"], dtype="float64")
    found = np.full(len(x), None, dtype=object)
    ok = np.isfinite(x) & np.isfinite(y)
    for pid, wkb in zip(polys.ids, polys.wkb, strict=True):
        hit = ok & shapely.contains_xy(shapely.from_wkb(wkb), x, y)
        found[hit & (found == None)] = pid
    con.register("geo_arrow", pa.table({"__record": pa.array(got["__record"], pa.int64()),
                                        POLYGON_COLUMN: pa.array(found, pa.string())}))
    con.execute(f"CREATE TEMP TABLE raw_geo AS SELECT r.*, g.{_q(POLYGON_COLUMN)} FROM raw_in r "
                "LEFT JOIN geo_arrow g USING (__record)")
    return dataclasses.replace(prof, columns={**prof.columns,
                                              "district_id": _q(POLYGON_COLUMN)})


def _used(sql: str, params: dict) -> dict:
    """Only the named parameters a statement references (DuckDB rejects unused ones)."""
    return {k: v for k, v in params.items() if f"${k}" in sql}


def _copy(con: duckdb.DuckDBPyConnection, select: str, target: Path,
          params: dict) -> int:
    """COPY a query to Parquet atomically, owner-only (clean and quarantine partitions are
    restricted zones; a retry overwrites)."""
    from opencity.io import write_atomic

    params = _used(select, params)
    res: list = []
    write_atomic(target, lambda tmp: res.extend(con.execute(
        f"COPY ({select}) TO {_lit(str(tmp))} (FORMAT parquet, COMPRESSION zstd)", params
    ).fetchall()), restricted=True)
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
    encoding: str = "utf-8",
) -> IngestResult:
    """Ingest one raw file (or Parquet directory) of ``source`` into clean + quarantine Parquet.

    Args:
        source: canonical source name (a key of transforms.schemas.SCHEMAS).
        path: CSV, JSON lines, Parquet file, directory of Parquet files, or a glob.
        out_dir: directory receiving ``part-0.parquet`` (the clean rows).
        quarantine_dir: directory receiving ``quarantine.parquet`` when any row fails; a
            rerun without failing rows removes the quarantine file of an earlier run.
        key: HMAC key (the caller resolves it: opencity.secrets.resolve_hmac_key()).
        interval: [start, end) in UTC; rows with time outside go to other intervals.
        reference: districts / towers tables for mapping and referential checks.
        profile: input profile name (transforms.profiles) or a Profile.
        strict_interval: quarantine rows outside the interval instead of deferring them.
        encoding: text encoding of CSV / JSON-lines input (utf-8, utf-16, latin-1, ...).

    Raises:
        DataQualityError: unreadable, empty or wrongly encoded file, missing columns
            (dataset-level failures). Messages name the file, line and column, never a value.
        InternalError: the counts do not reconcile with the raw reader's own count.
    """
    from opencity.io import restricted_dir, restricted_file, warn_if_open

    path = Path(path)
    warn_if_open(path)  # raw input: personal data, should not be readable by other accounts
    prof = profile if isinstance(profile, Profile) else get_profile(source, profile)
    ref = reference or Reference()
    fmt = fmt or detect_format(path)
    pseudo = Pseudonymizer(key)
    out_dir = Path(out_dir)
    quarantine_dir = Path(quarantine_dir)
    qpath = quarantine_dir / "quarantine.parquet"
    restricted_dir(out_dir)
    # Normalized copies of the raw records live in the clean partition (restricted); those
    # of an earlier, killed run of this partition are removed.
    for stale in out_dir.glob(".ingest-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(restricted_dir(out_dir / f".ingest-{uuid.uuid4().hex}"))
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = {_lit(memory_limit)}")
        con.execute(f"SET temp_directory = {_lit(str(work / 'duckdb.tmp'))}")
        if ref.towers is not None:
            con.register("ref_towers_arrow", ref.towers)
            con.execute("CREATE TEMP TABLE ref_towers AS SELECT CAST(cell_id AS VARCHAR) cell_id,"
                        " CAST(region_id AS VARCHAR) region_id FROM ref_towers_arrow")
        if ref.districts is not None:
            con.register("ref_districts_arrow", ref.districts)
            con.execute("CREATE TEMP TABLE ref_districts AS SELECT CAST(district_id AS VARCHAR) "
                        "district_id, lat_min, lat_max, lon_min, lon_max FROM ref_districts_arrow")
        raw_cols, n_rejects, rows_counted = _register_raw(con, path, fmt, work, encoding)
        if prof.district_polygons is not None:
            prof = _with_polygon_districts(con, prof, raw_cols, pseudo, ref)
            raw_cols = [*raw_cols, POLYGON_COLUMN]
        builder = _Builder(prof, raw_cols, pseudo, ref, interval)
        if prof.district_polygons is not None:
            builder.raw_table = "raw_geo"
        try:
            staged = f"({builder.staged_sql()}) staged"
        except DataQualityError as err:
            raise DataQualityError(f"{path}: {err}") from None
        params = dict(pseudo.params)
        if interval:
            params.update(start=interval[0], end=interval[1])
        if strict_interval and interval:
            bad = "reason IS NOT NULL OR NOT __in_interval"
            other_pred = "false"
        else:
            bad = "reason IS NOT NULL AND NOT __elsewhere"
            other_pred = "__elsewhere OR (reason IS NULL AND NOT __in_interval)"
        good = "reason IS NULL AND __in_interval"
        try:
            con.execute(f"CREATE TEMP TABLE staged_t AS SELECT * FROM {staged}",
                        _used(staged, params))
            n_good, n_bad, other = con.execute(
                f"SELECT count(*) FILTER ({good}), count(*) FILTER ({bad}), "
                f"count(*) FILTER ({other_pred}) FROM staged_t").fetchall()[0]
        except duckdb.Error as err:
            raise DataQualityError(
                f"{path}: cannot read rows ({_redact_engine_message(err)})") from None
        staged = "staged_t"
        unmapped: dict[str, float] = {}
        if prof.strict_value_maps and prof.value_maps:
            cols = [c for c in prof.value_maps if c in builder.mapped]
            if cols:
                counts = con.execute("SELECT " + ", ".join(
                    f"count(*) FILTER (r_{c} IS NOT NULL AND t_{c} IS NULL)" for c in cols)
                    + " FROM staged_t").fetchall()[0]
                for c, n in zip(cols, counts, strict=True):
                    if n:
                        unmapped[c] = round(n / max(rows_counted, 1), 6)
                        log.warning("%s: %d row(s) (%.2f %% of %d) have a %s value that "
                                    "value_maps.%s of profile %s does not map: quarantined",
                                    path.name, n, 100 * n / max(rows_counted, 1),
                                    rows_counted, c, c, prof.name)
        for out_col, link_cols in builder.link_columns().items():
            # one person, one unit: rows of this period sharing any identifier are linked
            figures = link_sql(con, staged, "__record", link_cols, out_col, where=good)
            log.info("linked %s of %s: %d rows with an identifier, %d units, %d merged",
                     out_col, path.name, figures["rows_linked"], figures["units"],
                     figures["merged_units"])
        clean_path = out_dir / "part-0.parquet"
        _copy(con, f"SELECT {builder.clean_select()} FROM {staged} WHERE {good}",
              clean_path, params)
        restricted_file(clean_path)
        rows_out = _parquet_rows(clean_path)
        if rows_out != n_good:
            raise InternalError(f"ingest of {path.name} wrote {rows_out} clean rows, expected "
                                f"{n_good}")
        quarantine_path = None
        reasons: dict[str, int] = {}
        n_q = 0
        if n_bad + n_rejects:
            restricted_dir(quarantine_dir)
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
                f"UNION ALL BY NAME SELECT {_lit(path.name)} AS source_file, line AS record, "
                f"reason, {q_cols} FROM raw_rejects"
            )
            _copy(con, union, qpath, params)
            restricted_file(qpath)
            n_q = _parquet_rows(qpath)
            quarantine_path = str(qpath)
            reasons = dict(con.execute(
                f"SELECT reason, count(*) FROM read_parquet({_lit(str(qpath))}) "
                "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20").fetchall())
        elif qpath.exists():
            qpath.unlink()  # a rerun replaces the partition's quarantine: none now
        # Reconcile against the raw reader's own count (Parquet: the files' metadata), not
        # against DuckDB's: a row lost between any two steps makes the run fail.
        rows_in = rows_counted
        if rows_in != rows_out + n_q + other:
            raise InternalError(
                f"ingest of {path.name} does not reconcile: {rows_in} input records, "
                f"{rows_out} clean + {n_q} quarantined + {other} in other intervals"
            )
        result = IngestResult(
            source=source, input_path=str(path), clean_path=str(clean_path),
            quarantine_path=quarantine_path, rows_in=rows_in, rows_out=rows_out,
            rows_quarantined=n_q, rows_other_intervals=other, reasons=reasons,
            unmapped=unmapped,
        )
        log.info("ingested %s: %d rows in, %d clean, %d quarantined, %d in other intervals",
                 path.name, rows_in, rows_out, n_q, other)
        return result
    finally:
        con.close()
        shutil.rmtree(work, ignore_errors=True)
