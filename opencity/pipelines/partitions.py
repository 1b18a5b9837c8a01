"""Partition guards shared by the task bodies: no empty partitions, reruns of one task.

* :func:`require_input` makes an interval without input rows fail at ingest, with a message
  naming the source and interval, and removes the empty clean partition it would leave.
* :func:`committed` tells a commit/publish step that is rerun alone (its staging directory
  was already moved into place by an earlier try) to work from the committed partition, so
  clearing any single task gives the same result instead of "nothing staged".
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from opencity.errors import DataQualityError


def require_input(ingested: dict[str, Any], source: str, start: datetime, end: datetime,
                  clean_dir: Path) -> dict[str, Any]:
    """Raise (terminal) when the interval has no clean input rows; return ``ingested``."""
    if ingested.get("rows_out", 0) > 0:
        return ingested
    shutil.rmtree(clean_dir, ignore_errors=True)
    quarantined = ingested.get("rows_quarantined", 0)
    hint = (f"{quarantined} row(s) were quarantined (see the quarantine partition)"
            if quarantined else "land the raw file(s) for this interval and rerun")
    raise DataQualityError(
        f"no input rows for {source} in the data interval [{start:%Y-%m-%d %H:%M}, "
        f"{end:%Y-%m-%d %H:%M}) UTC ({ingested.get('rows_in', 0)} rows read, "
        f"{ingested.get('rows_other_intervals', 0)} in other intervals); {hint}. "
        "Nothing was published for this interval.")


def committed(staging: Path, final: Path, *names: str) -> bool:
    """True when ``staging`` lacks ``names`` but ``final`` holds them all (already committed)."""
    staged = all((staging / n).exists() for n in names)
    return not staged and all((final / n).exists() for n in names)


# Sources whose rows carry an event time (registries such as meter_registry do not: they
# have rows in every interval, so they cannot tell whether the interval has input).
EVENT_SOURCES = ("service_requests", "cdr", "meter_readings", "transit_taps", "waste_pickups")


def require_any_input(ingested: dict[str, Any], start: datetime, end: datetime,
                      event_sources=EVENT_SOURCES) -> dict:
    """KPI ingest: raise (terminal) when no event source has a clean row in the interval,
    removing the per-source partitions it wrote; return ``ingested`` otherwise."""
    sources = ingested.get("sources", {})
    if any(s.get("rows_out", 0) > 0 for n, s in sources.items() if n in event_sources):
        return ingested
    for s in sources.values():
        if s.get("clean_path"):
            shutil.rmtree(Path(s["clean_path"]).parent, ignore_errors=True)
    raise DataQualityError(
        f"no input rows for any KPI event source {list(event_sources)} in the data interval [{start:%Y-%m-%d}, "
        f"{end:%Y-%m-%d}) UTC (sources read: {sorted(sources) or 'none'}; missing: "
        f"{sorted(ingested.get('missing', []))}); land the raw files for this interval and "
        "rerun. Nothing was published for this interval.")
