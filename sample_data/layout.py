"""The raw sample-data layout as data: file (or part-file directory) -> its schema.

Mirrors the docstring of :mod:`transforms.schemas`. A directory entry holds ``part-NNNNN.parquet``
files; ``.csv`` files carry ISO-8601 timestamps with offset and true/false booleans.
"""

from __future__ import annotations

import pyarrow as pa

from transforms import schemas

# The category reference table (request type codes with their public names); a reference
# file the city publishes, not a source the pipelines ingest, so it is not in schemas.SCHEMAS.
REQUEST_TYPES = schemas.Schema(
    "request_types",
    (schemas.Column("request_type", pa.string(), allowed=schemas.SERVICE_REQUEST_TYPES),
     schemas.Column("name", pa.string(), free_text=True,
                    description="public name of the request type")),
    key=("request_type",),
)

RAW_LAYOUT: dict[str, schemas.Schema] = {
    "city/districts.csv": schemas.DISTRICTS,
    "city/towers.csv": schemas.TOWERS,
    "city/request_types.csv": REQUEST_TYPES,
    "cdr": schemas.CDR,
    "service_requests/requests.csv": schemas.SERVICE_REQUESTS,
    "meters/registry.csv": schemas.METER_REGISTRY,
    "meters/readings": schemas.METER_READINGS,
    "transit/stops.csv": schemas.TRANSIT_STOPS,
    "transit/taps.parquet": schemas.TRANSIT_TAPS,
    "waste/pickups.parquet": schemas.WASTE_PICKUPS,
}
