"""Task bodies of the per-source ingestion DAGs (dags/ingest_sources.py).

    ingest    raw file(s) of the interval -> clean/<source>/dt=.../ + quarantine (restricted)
    manifest  row counts, reasons, input hashes of the interval
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from opencity.manifest import input_hashes, write_run_manifest
from opencity.settings import Settings


def ingest(settings: Settings, name: str, rel_path: str, profile: str, start: datetime,
           end: datetime) -> dict[str, Any]:
    """Ingest the interval's rows of one registered source; fail when there are none."""
    from opencity.io import read_reference_csv
    from opencity.pipelines.partitions import require_input
    from opencity.secrets import resolve_hmac_key
    from transforms.ingest import Reference, ingest_file
    from transforms.schemas import DISTRICTS, TOWERS

    raw = Path(settings.raw_dir)
    districts, towers = raw / "city" / "districts.csv", raw / "city" / "towers.csv"
    reference = Reference(
        districts=read_reference_csv(districts, DISTRICTS) if districts.is_file() else None,
        towers=read_reference_csv(towers, TOWERS) if towers.is_file() else None)
    layout = settings.layout
    result = ingest_file(name, raw / rel_path, layout.clean(name, start),
                         quarantine_dir=layout.quarantine(name, start), key=resolve_hmac_key(),
                         interval=(start, end), reference=reference, profile=profile)
    out = require_input(result.as_dict(), name, start, end, layout.clean(name, start))
    files = [raw / rel_path] if (raw / rel_path).is_file() else []
    out["input_hashes"] = input_hashes(files) if files else {}
    return out


def manifest(settings: Settings, dag_id: str, run_id: str, name: str, start: datetime,
             end: datetime, ingested: dict[str, Any]) -> str:
    path = settings.layout.manifest(dag_id, start)
    write_run_manifest(
        path, dag_id=dag_id, run_id=run_id, start=start, end=end, release=False, source=name,
        inputs=ingested.get("input_hashes", {}),
        row_counts={k: ingested[k] for k in ("rows_in", "rows_out", "rows_quarantined",
                                             "rows_other_intervals")},
        quarantine={"reasons": ingested.get("reasons", {})},
    )
    return str(path)
