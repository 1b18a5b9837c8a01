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
import secrets
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from opencity.errors import ConfigError, DataQualityError
from opencity.io import STATEMENT_FILE, PrivacyStatement, staged_dir, write_bytes_atomic
from privacy.dp import DPBudget
from privacy.dp.ledger import Ledger, LedgerRelease, default_state_url
from privacy.mobility.products import (
    MobilityConfig,
    compute_products,
    connect,
    prepare_events,
    product_metadata,
)

log = logging.getLogger(__name__)

DATASET = "opencity-cdr-mobility-daily"  # the release policy's dataset (= catalog name)
PRIVACY_FILE = STATEMENT_FILE
REPORT_FILE = "_run/report.json"
ENGINES = ("duckdb", "spark")


def spark_master_url(master: str | None = None) -> str:
    """The Spark master: the argument, else ``$OPENCITY_SPARK_MASTER``, else ``local[*]``."""
    import os

    return master or os.environ.get("OPENCITY_SPARK_MASTER") or "local[*]"


@dataclass(frozen=True)
class ReleaseResult:
    """What one run did. ``reused`` is True when the ledger already held this release."""

    out_dir: Path
    files: dict[str, Path]
    ledger_entry: LedgerRelease
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


def _recorded_statement(release: dict[str, Any], entry: LedgerRelease) -> PrivacyStatement:
    """The statement of a recorded release. Releases recorded before the statement had one
    type (no ``statement_version``) are this producer's own earlier layout, read as such."""
    where = f"{DATASET} {entry.partition} recorded release {entry.id}"
    if "statement_version" in release:
        return PrivacyStatement.from_dict(release, where=where)
    own = ("dataset", "date", "privacy_method", "privacy_unit", "spent", "policy_hash",
           "products", "release_id", "ledger")
    missing = [k for k in own[:-1] if k not in release]
    if missing:
        raise DataQualityError(f"{where}: not a mobility release record (missing "
                               f"{missing}); this is a bug or a damaged state database")
    products = {name: {**meta, "selection_threshold": meta.get(
                    "selection_threshold_subscribers")}
                for name, meta in release["products"].items()}
    return PrivacyStatement(
        dataset=release["dataset"], partition=f"dt={release['date']}",
        method=release["privacy_method"], spent={release["privacy_unit"]: release["spent"]},
        products=products, details={k: v for k, v in release.items() if k not in own}
        | {"date": release["date"]},
        policy_hash=release["policy_hash"], release_id=release["release_id"])


def _privacy_document(release: dict[str, Any], entry: LedgerRelease) -> bytes:
    statement = _recorded_statement(release, entry)
    return replace(statement, details={**statement.details,
                                       "ledger": entry.as_dict()}).to_bytes()


def run_daily_release(
    cdr_path: str | Path,
    towers_path: str | Path,
    day: date,
    out_dir: str | Path,
    budget: DPBudget | None = None,
    *,
    ledger: Ledger | str | Path | None = None,
    release_id: str = "daily",
    seed: int | None = None,
    config: dict[str, Any] | None = None,
    progress: Any = None,
    engine: str = "duckdb",
    spark_master: str | None = None,
) -> ReleaseResult:
    """Compute, account and write the mobility products of one UTC day.

    The per-release budget and the caps come from the stored release policy (dataset
    ``opencity-cdr-mobility-daily``, unit ``subscriber``); ``budget`` may only tighten it.

    Args:
        cdr_path: CDR Parquet file, directory or glob (subscriber_pid or subscriber_id,
            event_time, cell_id).
        towers_path: towers CSV (cell_id, lat, lon, region_id).
        day: the UTC day to release; other rows are counted as ``outside_date``.
        out_dir: output directory (created).
        budget: (epsilon, delta) per subscriber for this day, all products together; None =
            the policy's per-release budget. Larger than the policy's: ConfigError.
        ledger: the portal ledger, or its state URL (default :func:`default_state_url`).
        release_id: same id and day = same release (returned from the ledger on rerun).
        seed: fixes bounding and noise for tests; None = random bounding key and
            cryptographic noise (production).
        config: extra MobilityConfig fields (shares, max_region_hours, ...).
        progress: optional callable(step_name).
        engine: ``duckdb`` (embedded, default) or ``spark``: where the row-level steps run
            (event preparation, bounding, aggregation). Noise, ledger, statement and files
            are the same either way; only aggregates come back from Spark.
        spark_master: the Spark master with ``engine="spark"`` (``spark://host:port`` or
            ``local[N]``; default ``$OPENCITY_SPARK_MASTER``, else ``local[*]``).

    Raises:
        PrivacyBudgetError: the subscriber's monthly account or the day's per-release budget
            would be exceeded (nothing computed, written or spent).
        DataQualityError / ConfigError: bad input or parameters (messages name the value).
    """
    out = Path(out_dir)
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not isinstance(ledger, Ledger):
        ledger = Ledger(ledger or default_state_url())
    policy = ledger.policy.dataset(DATASET)
    if budget is not None:
        policy = policy.tightened(epsilon=budget.epsilon, delta=budget.delta)
    budget = policy.budget
    bound_seed = seed if seed is not None else secrets.randbits(62)
    cfg = MobilityConfig(budget=budget, seed=bound_seed, **(config or {}))
    unit = ledger.policy.unit(policy.unit)
    partition = f"dt={day.isoformat()}"
    report: dict[str, Any] = {}

    def compute() -> tuple[dict[str, Any], dict[str, bytes]]:
        con = connect()
        session = prepared = None
        try:
            if progress:
                progress("read")
            if engine == "spark":
                from privacy.dp.backends.spark import spark_session
                from privacy.mobility import spark_products

                towers = read_towers(con, towers_path)  # public reference, validated here
                session = spark_session(spark_master_url(spark_master),
                                        app_name=f"opencity-mobility-{day.isoformat()}")
                prepared = spark_products.prepare_events(
                    session, spark_products.read_cdr(session, str(cdr_path)), towers, day,
                    con=con, source=f"CDR input {cdr_path}")
            else:
                prepared = prepare_events(con, read_cdr(con, cdr_path),
                                          read_towers(con, towers_path), day,
                                          source=f"CDR input {cdr_path}")
            report.update({
                "date": day.isoformat(),
                "rows_read": prepared.rows_in,
                "rows_used": prepared.rows_used,
                "rows_set_aside": prepared.quarantined,
                "unknown_cell_ids_sample": list(prepared.unknown_cells),
                "regions": len(prepared.regions),
                "engine": engine,
            } | ({"spark_master": session.sparkContext.master} if session is not None else {}))
            for reason, n in prepared.quarantined.items():
                log.warning("%s rows set aside: %s", f"{n:,}", reason)
            tables = compute_products(prepared, cfg, random_state=seed, progress=progress)
        finally:
            con.close()
            if prepared is not None and prepared.cache is not None:
                prepared.cache.unpersist()
            if session is not None:
                session.stop()
        day_value = pa.scalar(day, pa.date32())
        artifacts: dict[str, bytes] = {}
        products_meta: dict[str, Any] = {}
        for name, table in tables.items():
            meta = product_metadata(name, table, cfg)
            meta["file"] = f"{name}.parquet"
            meta["selection_threshold"] = meta.get("selection_threshold_subscribers")
            products_meta[name] = meta
            dated = table.add_column(0, "date", pa.repeat(day_value, table.num_rows))
            artifacts[meta["file"]] = _parquet_bytes(
                dated.replace_schema_metadata(table.schema.metadata))
        statement = PrivacyStatement(
            dataset=DATASET, partition=partition, method="differential_privacy",
            spent={unit.name: {"epsilon": cfg.spent.epsilon, "delta": cfg.spent.delta}},
            products=products_meta, policy_hash=ledger.policy.hash, release_id=release_id,
            details={
                "date": day.isoformat(),
                "budget": {"epsilon": budget.epsilon, "delta": budget.delta,
                           "per": "subscriber per day (UTC), all products together"},
                "cap": {"epsilon": unit.epsilon, "delta": unit.delta, "period": unit.period,
                        "per": f"{unit.name} per calendar {unit.period}, every dataset of "
                               "the portal together (release policy)"},
                "contribution_bounding": "keyed-hash sampling per subscriber (seeded per run)",
                "noise_library": "opendp (integer counts), diffprivlib (real values)",
                "hours": "UTC",
                "night_hours_utc": list(cfg.night_hours),
            })
        release = statement.to_dict()
        if progress:
            progress("ledger")
        return release, artifacts

    outcome = ledger.release(DATASET, partition, day, {unit.name: cfg.spent}, compute,
                             release_id=release_id)
    if outcome.reused:
        log.info("release %s %s already recorded (ledger id %s): rewriting it, no new spend",
                 DATASET, partition, outcome.record.id)
    return _write(out, outcome.artifacts, outcome.record, reused=outcome.reused,
                  report=report)


def _write(out: Path, artifacts: dict[str, bytes], entry: LedgerRelease, *, reused: bool,
           report: dict[str, Any]) -> ReleaseResult:
    # The products and their privacy.json appear together or not at all: written to a
    # staging folder next to OUT and switched into place in one rename (a kill right after
    # the spend leaves OUT as it was; the rerun returns the recorded release, no new spend).
    out = Path(out)
    with staged_dir(out) as staging:
        for name, data in artifacts.items():
            write_bytes_atomic(data, staging / name)
        write_bytes_atomic(_privacy_document(entry.release, entry), staging / PRIVACY_FILE)
        if report:
            write_bytes_atomic((json.dumps(report, indent=2) + "\n").encode(),
                               staging / REPORT_FILE)
    files = {name.removesuffix(".parquet"): out / name for name in artifacts}
    files["privacy"] = out / PRIVACY_FILE
    return ReleaseResult(out, files, entry, reused, report)
