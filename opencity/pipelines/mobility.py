"""Task bodies of the ``cdr_mobility`` DAG (dags/cdr_mobility.py): ingest -> release -> publish
-> manifest.

Each function takes the run's Settings and the data interval and returns a small JSON-able
dict of paths and counts (tasks exchange paths, never data frames).
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from opencity.release import Committed, ProductSpec, Staged, Step, as_staged
from opencity.settings import Settings

DATASET_NAME = "opencity-cdr-mobility-daily"
SOURCE = "cdr"


def _day(start: datetime) -> date:
    return start.date()


def ingest(settings: Settings, start: datetime, end: datetime, *,
           raw_path: str | None = None, profile: str = "opencity") -> dict[str, Any]:
    """Ingest the raw CDR rows of [start, end) with pseudonymized subscribers (no raw MSISDN).

    ``raw_path`` / ``profile``: the source registry's CDR entry (default: <raw>/cdr, the
    canonical columns)."""
    from opencity.io import read_reference_csv
    from opencity.secrets import resolve_hmac_key
    from transforms.ingest import Reference, ingest_file
    from transforms.schemas import TOWERS

    layout = settings.layout
    towers_csv = Path(settings.raw_dir) / "city" / "towers.csv"
    result = ingest_file(
        SOURCE, Path(raw_path) if raw_path else Path(settings.raw_dir) / "cdr",
        layout.clean(SOURCE, start),
        quarantine_dir=layout.quarantine(SOURCE, start), key=resolve_hmac_key(),
        interval=(start, end), reference=Reference(towers=read_reference_csv(towers_csv, TOWERS)),
        profile=profile,
    )
    out = result.as_dict()
    out["towers"] = str(towers_csv)
    from opencity.manifest import input_hashes

    out["input_hashes"] = input_hashes([Path(settings.raw_dir) / "cdr", towers_csv])
    return out


def release(settings: Settings, ingested: dict[str, Any], start: datetime,
            epsilon: float | None = None, delta: float | None = None,
            engine: str = "duckdb", spark_master: str | None = None) -> dict[str, Any]:
    """Stage the DP products of the interval's day (restricted temp folder beside outputs/).

    ``epsilon``/``delta`` (DAG params) may only tighten the release policy's per-release
    budget; the caps come from the policy, the ledger from ``settings.state_url``.
    ``engine`` ``spark`` runs the row-level steps on ``spark_master`` (client mode from the
    task; see :func:`spark_master_from_airflow`); everything else is unchanged.
    """
    import shutil

    from privacy.dp import DPBudget, Ledger
    from privacy.mobility.release import DATASET, run_daily_release

    final = settings.layout.output(DATASET_NAME, start)
    tmp = final.with_name(f".{final.name}.staging")
    shutil.rmtree(tmp, ignore_errors=True)  # an earlier try's: the ledger replays it anyway
    ledger = Ledger(settings.state_url)
    allowed = ledger.policy.dataset(DATASET).budget
    budget = DPBudget(allowed.epsilon if epsilon is None else epsilon,
                      allowed.delta if delta is None else delta)
    result = run_daily_release(
        ingested["clean_path"], ingested["towers"], _day(start), tmp, budget, ledger=ledger,
        release_id="daily", engine=engine, spark_master=spark_master,
    )
    return {
        "staging_dir": str(tmp),
        "products": sorted(k for k in result.files if k != "privacy"),
        "reused": result.reused,
        "ledger_id": result.ledger_entry.id,
        "epsilon": result.ledger_entry.epsilon,
        "delta": result.ledger_entry.delta,
    }


def _stage(settings: Settings, ingested: dict[str, Any], _prev: Staged | None,
           start: datetime, end: datetime) -> Staged:
    """The release task's body under the DAG's params (engine, epsilon, delta)."""
    from airflow.sdk import get_current_context

    params = get_current_context()["params"]
    engine = params.get("engine") or "duckdb"
    return as_staged(DATASET_NAME, start, release(
        settings, ingested, start, float(params["epsilon"]), float(params["delta"]),
        engine=engine, spark_master=spark_master_from_airflow() if engine == "spark" else None))


def _gate(settings: Settings, staged: Staged, folder: Path, start: datetime) -> dict:
    """Release gate: every product against its privacy statement and the ledger."""
    from expectations.gate import validate_dp_release
    from privacy.dp import Ledger

    validation = validate_dp_release(folder, ledger=Ledger(settings.state_url),
                                     reports_dir=settings.layout.reports(DATASET_NAME, start))
    return {name: v.get("success") for name, v in validation.items()}


def spark_master_from_airflow(conn_id: str = "spark_default") -> str | None:
    """The Spark master URL: ``$OPENCITY_SPARK_MASTER``, else the Airflow connection
    ``conn_id`` (host ``spark://h`` or ``h``, port; default 7077), else None (``local[*]``).

    Read in the task body only (never while the DAG file is parsed)."""
    import os

    if os.environ.get("OPENCITY_SPARK_MASTER"):
        return os.environ["OPENCITY_SPARK_MASTER"]
    try:
        from airflow.sdk import Connection

        conn = Connection.get(conn_id)
    except Exception:  # noqa: BLE001 - no such connection: fall back to local mode
        return None
    host = (conn.host or "").strip()
    if not host:
        return None
    if host.startswith("local"):
        return host
    host = host.removeprefix("spark://")
    return f"spark://{host}:{conn.port or 7077}"


def release_for(settings: Settings, committed: Committed, start: datetime, end: datetime,
                provenance: dict) -> Any:
    """The day's catalog entry: one resource per product and privacy.json."""
    from opencity.io import STATEMENT_FILE, read_statement
    from publish.base import DatasetRelease, Field, Resource

    day = _day(start)
    out = Path(committed.output_dir)
    statement = read_statement(out / STATEMENT_FILE)
    part = f"dt={day.isoformat()}"
    resources = tuple(
        Resource(path=out / f"{name}.parquet", name=name, format="parquet", partition=part,
                 description=f"{name.replace('_', ' ')}, differentially private "
                             f"(epsilon {meta['epsilon']:g}, {meta['mechanism']} noise)")
        for name, meta in statement.products.items()
    ) + (Resource(path=out / STATEMENT_FILE, name="privacy", format="json", partition=part,
                  description="privacy parameters, error bounds and ledger entry"),)
    return DatasetRelease(
        name=DATASET_NAME,
        title="Daily mobility statistics from mobile phone data (differentially private)",
        description=("Subscribers per region per hour, origin-destination moves between "
                     "regions, home-region counts and radius-of-gyration histogram, with "
                     "differential privacy per subscriber per day. Every value carries its "
                     "noise standard deviation and 95 % error bound."),
        resources=resources,
        fields=(Field("value", "integer", "noisy count of distinct subscribers"),
                Field("noise_std", "number", "standard deviation of the added noise"),
                Field("error_bound_95", "number", "|noise| is below this with 95 % probability"),
                Field("mechanism", "string", "noise mechanism (OpenDP for integer counts, diffprivlib for real values)")),
        privacy={"privacy_method": "differential_privacy", "epsilon": statement.epsilon,
                 "delta": statement.delta, "privacy_unit": "subscriber per day"},
        tags=("mobility", "cdr", "differential-privacy"),
        temporal_coverage=(start.date().isoformat(), end.date().isoformat()),
        accrual_periodicity="R/P1D",
        provenance=provenance,
    )


MOBILITY = ProductSpec(
    dataset=DATASET_NAME,
    files=("privacy.json",),
    stages=(Step("release", _stage),),
    gate=_gate,
    release=release_for,
    params=lambda _settings, committed: {"epsilon": committed["epsilon"],
                                         "delta": committed["delta"]},
    # A rerun returns the recorded release without re-reading rows: the commit keeps the
    # first run's ingest report (clearing the task alone gives the same files).
    keep=("_run",),
    commit_task="commit_partition",
    publish_task="publish",
    outlet="cdr_mobility",
    # The catalog's provenance of a day names its run and ledger entry only.
    provenance=lambda committed: {"ledger_id": committed["ledger_id"]},
)


def ingest_interval(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """The DAG's ingest: the registry's CDR source (raw path and profile) for the day."""
    from opencity.pipelines.partitions import require_input
    from opencity.source_registry import require_source

    src = require_source(SOURCE)
    ingested = ingest(settings, start, end, raw_path=str(Path(settings.raw_dir) / src.path),
                      profile=src.profile)
    return require_input(ingested, SOURCE, start, end, settings.layout.clean(SOURCE, start))


def manifest_outcomes(settings: Settings, dag_id: str, run_id: str, start: datetime,
                      end: datetime, ingested: dict, outcomes) -> str:
    """The DAG's manifest from the runner's outcomes (:func:`manifest`)."""
    o = outcomes[DATASET_NAME]
    return manifest(settings, dag_id, run_id, start, end, ingested,
                    {**o.committed.to_xcom(), "out_dir": o.committed.output_dir},
                    o.published.to_xcom())


def manifest(settings: Settings, dag_id: str, run_id: str, start: datetime, end: datetime,
             ingested: dict[str, Any], released: dict[str, Any],
             published: dict[str, Any]) -> str:
    """The run's manifest (opencity.manifest.write_run_manifest, the keys of every release
    DAG's): inputs' hashes, row counts, the spent budget and ledger entry, outputs, the
    release gate's results. Counts, parameters and paths only (no row, no identifier)."""
    from opencity.manifest import write_run_manifest

    path = settings.layout.manifest(dag_id, start)
    write_run_manifest(
        path, dag_id=dag_id, run_id=run_id, start=start, end=end,
        inputs=ingested.get("input_hashes", {}),
        row_counts={"rows_in": ingested["rows_in"], "rows_clean": ingested["rows_out"],
                    "rows_quarantined": ingested["rows_quarantined"],
                    "rows_other_intervals": ingested["rows_other_intervals"]},
        parameters={"method": "differential_privacy",
                    "dp": {"epsilon": released["epsilon"], "delta": released["delta"]},
                    "ledger": released["ledger_id"], "reused_release": released["reused"],
                    "publish_target": settings.publish_target},
        quarantine={"path": ingested.get("quarantine_path"),
                    "reasons": ingested.get("reasons", {})},
        outputs={"out_dir": released["out_dir"],
                 "files": {Path(f).stem if f.endswith(".parquet") else "privacy":
                           str(Path(released["out_dir"]) / f)
                           for f in released.get("files", ())
                           if f.endswith(".parquet") or f == "privacy.json"}},
        published=published,
        validation={"product": released.get("validation")},
    )
    return str(path)
