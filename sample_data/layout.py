"""The raw sample-data layout as data: file (or part-file directory) -> its schema.

Mirrors the docstring of :mod:`transforms.schemas`. A directory entry holds ``part-NNNNN.parquet``
files; ``.csv`` files carry ISO-8601 timestamps with offset and true/false booleans.
"""

from __future__ import annotations

from transforms import schemas

RAW_LAYOUT: dict[str, schemas.Schema] = {
    "city/districts.csv": schemas.DISTRICTS,
    "city/towers.csv": schemas.TOWERS,
    "cdr": schemas.CDR,
    "service_requests/requests.csv": schemas.SERVICE_REQUESTS,
    "meters/registry.csv": schemas.METER_REGISTRY,
    "meters/readings": schemas.METER_READINGS,
    "transit/stops.csv": schemas.TRANSIT_STOPS,
    "transit/taps.parquet": schemas.TRANSIT_TAPS,
    "waste/pickups.parquet": schemas.WASTE_PICKUPS,
}
