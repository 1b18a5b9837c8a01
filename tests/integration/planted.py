"""Planted identifiers: put names, phones, e-mails, addresses, MSISDN, IMSI, card and
household ids and exact coordinates into every column of every source's raw input, then
find every planted value wherever it turns up.

Used by test_planted_identifiers.py. Two kinds of planted rows per source:

* single-column rows: one column holds a planted value (one of every kind, for every
  column), the others stay valid, the time column is moved inside every DAG's interval, so
  a value that passes the checks travels as far as it can (e.g. a name in request_type);
* fully planted rows: every column holds a planted value.

Parquet sources are rewritten with every column as text (a typed column cannot hold a name);
ingestion casts text to the schema's types, as it does for CSV.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

PLANTED: dict[str, tuple[str, ...]] = {
    "name": ("Zoë Łukasiewicz-Müller", "Hanife Tintzmann", "Jürgen Ørsted"),
    "phone": ("+49 30 9018 2277", "0800-FLOWERZ", "+49 (0)151 2345-6789", "030 9018 2277"),
    "email": ("zoe.lukasiewicz@example.org", "TINTZMANN.H@Example.COM"),
    "address": ("Hertha-Henck-Weg 22", "1600 Pennsylvania Avenue NW"),
    "msisdn": ("4915198765432", "+4915198765433"),
    "imsi": ("262019876543210",),
    "card": ("04A1B2C3D4E5F6",),
    "household": ("HH-PLANT-000777",),
    "coordinates": ("52.5163527", "13.3777041", "52.5163527, 13.3777041"),
}
VALUES: tuple[str, ...] = tuple(v for vs in PLANTED.values() for v in vs)
KIND = {v: k for k, vs in PLANTED.items() for v in vs}

# source -> (raw path under the raw layout, time column, time format)
SOURCES: dict[str, tuple[str, str | None]] = {
    "service_requests": ("service_requests/requests.csv", "created_at"),
    "meter_registry": ("meters/registry.csv", None),
    "cdr": ("cdr", "event_time"),
    "meter_readings": ("meters/readings", "reading_time"),
    "transit_taps": ("transit/taps.parquet", "tap_time"),
    "waste_pickups": ("waste/pickups.parquet", "scheduled_date"),
}
# Inside the 311 week (2026-10-05..12), the CDR day (2026-10-06) and the KPI month.
PLANT_TIME = "2026-10-06T12:00:00+00:00"
PLANT_DATE = "2026-10-06"


def _as_text(table: pa.Table) -> pa.Table:
    cols = []
    for col in table.columns:
        if pa.types.is_timestamp(col.type):
            secs = pc.cast(col, pa.timestamp("s", tz="UTC"), safe=False)
            col = pc.strftime(secs, format="%Y-%m-%dT%H:%M:%S+00:00")
        elif not pa.types.is_string(col.type):
            col = pc.cast(col, pa.string())
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def _plant(table: pa.Table, time_col: str | None) -> tuple[pa.Table, int]:
    """Overwrite the first rows with planted values; return the table and rows planted."""
    table = _as_text(table)
    names = table.column_names
    kinds = list(PLANTED)
    rows: list[dict] = []
    for j, col in enumerate(names):  # single-column rows: every kind in every column
        for i, kind in enumerate(kinds):
            values = PLANTED[kind]
            rows.append({col: values[(i + j) % len(values)]})
    for r in range(len(VALUES)):  # fully planted rows
        rows.append({col: VALUES[(r + j) % len(VALUES)] for j, col in enumerate(names)})
    n = min(len(rows), table.num_rows)
    data = {c: table[c].to_pylist() for c in names}
    for i, planted in enumerate(rows[:n]):
        if time_col and time_col not in planted:
            data[time_col][i] = PLANT_DATE if time_col == "scheduled_date" else PLANT_TIME
        for col, value in planted.items():
            data[col][i] = value
    return pa.table({c: pa.array(data[c], pa.string()) for c in names}), n


def plant_copy(sample_raw: Path, out: Path) -> dict[str, int]:
    """Copy the raw layout to ``out`` with planted values in every source; rows per source."""
    shutil.copytree(sample_raw, out)
    planted = {}
    for source, (rel, time_col) in SOURCES.items():
        path = out / rel
        if path.suffix == ".csv":
            names = pacsv.read_csv(path, read_options=pacsv.ReadOptions(
                skip_rows_after_names=1 << 30)).column_names
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True))
            table, planted[source] = _plant(table, time_col)
            pacsv.write_csv(table, path)
            continue
        parts = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        for k, part in enumerate(parts):
            table = pq.read_table(part)
            if k == 0:
                table, planted[source] = _plant(table, time_col)
            else:
                table = _as_text(table)
            pq.write_table(table, part)
    return planted


def find(text: str) -> set[str]:
    """The planted values found in ``text`` (also JSON-escaped, e.g. \\u00eb)."""
    found = set()
    for v in VALUES:
        escaped = json.dumps(v)[1:-1]
        if v in text or escaped in text or v.lower() in text.lower():
            found.add(v)
    return found


def file_text(path: Path) -> str:
    """A file as text: Parquet decoded to JSON, SQLite as its tables, anything else decoded."""
    if path.suffix == ".parquet":
        return json.dumps(pq.read_table(path).to_pylist(), default=str, ensure_ascii=False)
    data = path.read_bytes()
    if data.startswith(b"SQLite format 3"):
        return sqlite_text(path) + data.decode("utf-8", "replace")
    return data.decode("utf-8", "replace")


def sqlite_text(path: Path) -> str:
    """Every value of every table of a SQLite database (XCom values, task logs...)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    out = []
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        for t in tables:
            for row in con.execute(f'SELECT * FROM "{t}"'):
                for v in row:
                    if isinstance(v, bytes):
                        v = v.decode("utf-8", "replace")
                    out.append(str(v))
    finally:
        con.close()
    return "\n".join(out)


def quarantine_reasons(root: Path) -> str:
    return "\n".join(
        "\n".join(str(r) for r in pq.read_table(p).column("reason").to_pylist())
        for p in root.rglob("quarantine*.parquet"))


def scan_tree(root: Path, skip: tuple[str, ...] = ()) -> set[str]:
    """Planted values in any file under ``root`` (folders named in ``skip`` excluded)."""
    found: set[str] = set()
    if not root.exists():
        return found
    for path in root.rglob("*"):
        if not path.is_file() or any(part in skip for part in path.relative_to(root).parts):
            continue
        found |= find(file_text(path))
    return found


def summary(findings: dict[str, set[str]]) -> dict[str, dict[str, int]]:
    """artefact kind -> identifier kind -> number of distinct planted values found."""
    out: dict[str, dict[str, int]] = {}
    for artefact, values in findings.items():
        counts: dict[str, int] = {}
        for v in values:
            counts[KIND[v]] = counts.get(KIND[v], 0) + 1
        out[artefact] = dict(sorted(counts.items()))
    return out
