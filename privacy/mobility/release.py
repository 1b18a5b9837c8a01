"""I/O around the mobility products: read inputs, spend budget, write one day's release.

:func:`run_daily_release` is what the CLI and the DAG call. Output directory::

    OUT/hourly_presence.parquet   region_id, hour (UTC), value, noise_std, error_bound_95, ...
    OUT/od_matrix.parquet         origin, destination, value, ...
    OUT/home_region.parquet       region_id, value, ...
    OUT/gyration.parquet          bin_lower_km, bin_upper_km, value, ...
    OUT/privacy.json              mechanism, epsilon, delta, bounds, thresholds per product,
                                  and the ledger entry (publishable metadata)
    OUT/_run/report.json          rows read / set aside per reason, unknown cell ids
                                  (for the operator, not for publication: exact counts)

Every product row also has ``date``. No subscriber identifier is written anywhere. Files are
written to a temporary name and renamed. The products and their metadata are stored with the
ledger entry, so rerunning the same (date, release id) rewrites the recorded release
byte for byte instead of drawing new noise or spending budget again.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from opencity.errors import DataQualityError
from privacy.dp import BudgetCap, BudgetLedger, DPBudget
from privacy.dp.ledger import LedgerEntry
from privacy.mobility.products import (
    MobilityConfig,
    compute_products,
    connect,
    prepare_events,
    product_metadata,
)

log = logging.getLogger(__name__)

DATASET = "cdr_mobility"
LEDGER_ENV = "OPENCITY_LEDGER"
PRIVACY_FILE = "privacy.json"
REPORT_FILE = "_run/report.json"


def default_ledger_path() -> Path:
    """$OPENCITY_LEDGER, else $XDG_DATA_HOME/opencity/privacy-ledger.sqlite (~/.local/share)."""
    env = os.environ.get(LEDGER_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "opencity" / "privacy-ledger.sqlite"


@dataclass(frozen=True)
class ReleaseResult:
    """What one run did. ``reused`` is True when the ledger already held this release."""

    out_dir: Path
    files: dict[str, Path]
    ledger_entry: LedgerEntry
    reused: bool
    report: dict[str, Any] = field(default_factory=dict)


def read_cdr(con: duckdb.DuckDBPyConnection, path: str | Path) -> duckdb.DuckDBPyRelation:
    """CDR Parquet: a file, a directory of part files (recursive) or a glob."""
    p = Path(path)
    if p.is_dir():
        pattern = str(p / "**" / "*.parquet")
    elif "*" in str(path) or "?" in str(path) or p.is_file():
        pattern = str(path)
    else:
        raise DataQualityError(f"CDR input {path}: no such file or directory")
    try:
        return con.read_parquet(pattern)
    except duckdb.Error as err:
        raise DataQualityError(f"CDR input {path}: cannot read as Parquet: {err}") from err


def read_towers(con: duckdb.DuckDBPyConnection, path: str | Path) -> duckdb.DuckDBPyRelation:
    """Tower table CSV with header cell_id, lat, lon, region_id (ids read as text)."""
    if not Path(path).is_file():
        raise DataQualityError(f"towers file {path}: no such file")
    try:
        rel = con.read_csv(str(path), header=True,
                           dtype={"cell_id": "VARCHAR", "region_id": "VARCHAR"})
        rel.columns  # noqa: B018 - force the sniffer now to report errors here
        return rel
    except duckdb.Error as err:
        raise DataQualityError(f"towers file {path}: cannot read as CSV: {err}") from err


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _privacy_document(release: dict[str, Any], entry: LedgerEntry) -> bytes:
    doc = dict(release)
    doc["ledger"] = entry.as_dict()
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def run_daily_release(
    cdr_path: str | Path,
    towers_path: str | Path,
    day: date,
    out_dir: str | Path,
    budget: DPBudget,
    *,
    ledger_path: str | Path | None = None,
    cap: BudgetCap | None = None,
    release_id: str = "daily",
    seed: int | None = None,
    config: dict[str, Any] | None = None,
    progress: Any = None,
) -> ReleaseResult:
    """Compute, account and write the mobility products of one UTC day.

    Args:
        cdr_path: CDR Parquet file, directory or glob (subscriber_pid or subscriber_id,
            event_time, cell_id).
        towers_path: towers CSV (cell_id, lat, lon, region_id).
        day: the UTC day to release; other rows are counted as ``outside_date``.
        out_dir: output directory (created).
        budget: (epsilon, delta) per subscriber for this day, all products together.
        ledger_path: SQLite ledger (default :func:`default_ledger_path`).
        cap: daily cap per subscriber (default: epsilon 1.0, delta 1e-5).
        release_id: same id and day = same release (returned from the ledger on rerun).
        seed: fixes bounding and noise for tests; None = random bounding key and
            cryptographic noise (production).
        config: extra MobilityConfig fields (shares, max_region_hours, ...).
        progress: optional callable(step_name).

    Raises:
        PrivacyBudgetError: the day's cap would be exceeded.
        DataQualityError / ConfigError: bad input or parameters (messages name the value).
    """
    out = Path(out_dir)
    bound_seed = seed if seed is not None else secrets.randbits(62)
    cfg = MobilityConfig(budget=budget, seed=bound_seed, **(config or {}))
    cap = cap or BudgetCap(epsilon=1.0, delta=1e-5, period="day", privacy_unit="subscriber")
    ledger = BudgetLedger(ledger_path or default_ledger_path(), caps={DATASET: cap})
    partition = f"dt={day.isoformat()}"

    recorded = ledger.recorded(DATASET, partition, release_id)
    if recorded is not None:
        log.info("release %s %s already recorded (ledger id %s): rewriting it, no new spend",
                 DATASET, partition, recorded.id)
        return _write(out, ledger.artifacts(recorded.id), recorded, reused=True, report={})

    ledger.check(DATASET, day, cfg.spent)
    con = connect()
    try:
        if progress:
            progress("read")
        prepared = prepare_events(con, read_cdr(con, cdr_path), read_towers(con, towers_path),
                                  day, source=f"CDR input {cdr_path}")
        report = {
            "date": day.isoformat(),
            "rows_read": prepared.rows_in,
            "rows_used": prepared.rows_used,
            "rows_set_aside": prepared.quarantined,
            "unknown_cell_ids_sample": list(prepared.unknown_cells),
            "regions": len(prepared.regions),
        }
        for reason, n in prepared.quarantined.items():
            log.warning("%s rows set aside: %s", f"{n:,}", reason)
        tables = compute_products(prepared, cfg, random_state=seed, progress=progress)
    finally:
        con.close()

    day_value = pa.scalar(day, pa.date32())
    artifacts: dict[str, bytes] = {}
    products_meta: dict[str, Any] = {}
    for name, table in tables.items():
        meta = product_metadata(name, table, cfg)
        meta["file"] = f"{name}.parquet"
        products_meta[name] = meta
        dated = table.add_column(0, "date", pa.repeat(day_value, table.num_rows))
        artifacts[meta["file"]] = _parquet_bytes(
            dated.replace_schema_metadata(table.schema.metadata))
    release = {
        "dataset": DATASET,
        "date": day.isoformat(),
        "privacy_method": "differential_privacy",
        "privacy_unit": "subscriber",
        "budget": {"epsilon": budget.epsilon, "delta": budget.delta,
                   "per": "subscriber per day (UTC), all products together"},
        "spent": {"epsilon": cfg.spent.epsilon, "delta": cfg.spent.delta},
        "cap": {"epsilon": cap.epsilon, "delta": cap.delta, "period": cap.period},
        "products": products_meta,
        "contribution_bounding": "keyed-hash sampling per subscriber (seeded per run)",
        "noise_library": "diffprivlib",
        "hours": "UTC",
        "night_hours_utc": list(cfg.night_hours),
        "release_id": release_id,
    }
    if progress:
        progress("ledger")
    entry = ledger.spend(DATASET, day, partition, release_id, cfg.spent, release,
                         artifacts=artifacts)
    if not entry.newly_spent:  # a concurrent run recorded it first: publish that one
        return _write(out, ledger.artifacts(entry.id), entry, reused=True, report=report)
    return _write(out, artifacts, entry, reused=False, report=report)


def _write(out: Path, artifacts: dict[str, bytes], entry: LedgerEntry, *, reused: bool,
           report: dict[str, Any]) -> ReleaseResult:
    files: dict[str, Path] = {}
    for name, data in artifacts.items():
        _atomic_write(out / name, data)
        files[name.removesuffix(".parquet")] = out / name
    _atomic_write(out / PRIVACY_FILE, _privacy_document(entry.release, entry))
    files["privacy"] = out / PRIVACY_FILE
    if report:
        _atomic_write(out / REPORT_FILE, (json.dumps(report, indent=2) + "\n").encode())
    return ReleaseResult(out, files, entry, reused, report)
