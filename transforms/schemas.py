"""Typed schemas of every source, after ingestion.

A :class:`Schema` lists the canonical columns of a source with their Arrow type, whether
they are required, and whether they are a *direct identifier* (pseudonymized with a keyed
HMAC on ingestion; the raw value never leaves ingestion) or *personal data* (kept out of
every published product; only privacy/ may read it, e.g. a requester's age for k-anonymity).

Raw sample-data layout written by ``opencity sample-data --out DIR`` (the contract every
other module reads):

    DIR/city/districts.csv            district_id, name, population, households, lat_min,
                                      lat_max, lon_min, lon_max  (rectangles tiling the city)
    DIR/city/towers.csv               cell_id, lat, lon, region_id (= district_id)
    DIR/cdr/part-NNNNN.parquet        subscriber_id, imsi, event_time, cell_id, event_type
    DIR/service_requests/requests.csv request_id, created_at, closed_at, request_type, agency,
                                      status, district_id, lat, lon, description,
                                      requester_name, requester_phone, requester_email,
                                      requester_address, requester_age, requester_gender
    DIR/meters/registry.csv           meter_id, utility (water|electricity), household_id,
                                      household_address, district_id, smart, tariff,
                                      household_size, installed_on
    DIR/meters/readings/part-NNNNN.parquet  meter_id, reading_time, value, unit
    DIR/transit/stops.csv             stop_id, stop_name, lat, lon, district_id
    DIR/transit/taps.parquet          card_id, stop_id, route_id, tap_time
    DIR/waste/pickups.parquet         pickup_id, household_id, district_id, scheduled_date,
                                      collected_at, status, weight_kg
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")

# A code: letters, digits and - _ . : / (no spaces, no '@', no '+', no letters outside ASCII).
# Ids of records, meters, cells, stops, routes and districts have this shape; names, e-mail
# addresses, phone numbers and street addresses do not.
CODE = r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}"
GENDERS = ("female", "male", "other")
AGENCIES = ("Transport", "Sanitation", "Public Works", "Police", "Water", "Parks", "Health")
TARIFFS = ("basic", "green", "time_of_use", "standard", "social")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    required: bool = True
    identifier: bool = False  # direct identifier: replaced by an HMAC pseudonym on ingestion
    personal: bool = False  # personal data: never published as is
    allowed: tuple[str, ...] | None = None  # the domain of a categorical column
    min_value: float | None = None
    max_value: float | None = None
    description: str = ""
    # Shape of a code column (identifier of a record, meter, cell...): a full-match regex.
    pattern: str | None = None
    # Free text (e.g. a description): never published; masked in clean, redacted elsewhere.
    free_text: bool = False

    @property
    def has_domain(self) -> bool:
        """Whether every value of the column can be checked (domain, shape, type or range)."""
        return (self.allowed is not None or self.pattern is not None or self.identifier
                or self.free_text or not pa.types.is_string(self.type))


@dataclass(frozen=True)
class Schema:
    name: str
    columns: tuple[Column, ...]
    time_column: str | None = None  # the column that places a row in a data interval
    key: tuple[str, ...] = ()  # columns that must be unique
    # Pseudonym columns added on ingestion: output column -> identifier columns whose first
    # non-null value is HMAC'd. Every identifier column is dropped after this step.
    pseudonyms: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Linkage keys of a pseudonym (transforms.linkage): output column -> keys, each key the
    # identifier columns that identify a person together (e-mail; phone; name WITH
    # address). Within the ingested period, rows sharing any key get one pseudonym.
    links: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = ()

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def identifiers(self) -> list[str]:
        return [c.name for c in self.columns if c.identifier]

    @property
    def personal(self) -> list[str]:
        return [c.name for c in self.columns if c.personal]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=not c.required) for c in self.columns])


DISTRICTS = Schema(
    "districts",
    (
        Column("district_id", pa.string(), pattern=CODE),
        Column("name", pa.string(), free_text=True, description="public district name"),
        Column("population", pa.int64(), min_value=0),
        Column("households", pa.int64(), min_value=0),
        Column("lat_min", pa.float64(), min_value=-90, max_value=90),
        Column("lat_max", pa.float64(), min_value=-90, max_value=90),
        Column("lon_min", pa.float64(), min_value=-180, max_value=180),
        Column("lon_max", pa.float64(), min_value=-180, max_value=180),
    ),
    key=("district_id",),
)

TOWERS = Schema(
    "towers",
    (
        Column("cell_id", pa.string(), pattern=CODE),
        Column("lat", pa.float64(), min_value=-90, max_value=90),
        Column("lon", pa.float64(), min_value=-180, max_value=180),
        Column("region_id", pa.string(), pattern=CODE),
    ),
    key=("cell_id",),
)

CDR = Schema(
    "cdr",
    (
        Column("subscriber_id", pa.string(), identifier=True, description="MSISDN"),
        Column("imsi", pa.string(), identifier=True),
        Column("event_time", UTC_TS),
        Column("cell_id", pa.string(), pattern=CODE),
        Column("event_type", pa.string(), allowed=("call", "sms", "data")),
    ),
    time_column="event_time",
    pseudonyms=(("subscriber_pid", ("subscriber_id",)),),
)

SERVICE_REQUEST_TYPES = (
    "pothole",
    "streetlight_out",
    "missed_collection",
    "illegal_dumping",
    "graffiti",
    "noise",
    "water_leak",
    "tree_maintenance",
    "abandoned_vehicle",
    "rodent",
)

SERVICE_REQUESTS = Schema(
    "service_requests",
    (
        Column("request_id", pa.string(), pattern=CODE),
        Column("created_at", UTC_TS),
        Column("closed_at", UTC_TS, required=False),
        Column("request_type", pa.string(), allowed=SERVICE_REQUEST_TYPES),
        Column("agency", pa.string(), required=False, allowed=AGENCIES),
        Column("status", pa.string(), allowed=("open", "closed", "in_progress", "cancelled")),
        Column("district_id", pa.string(), required=False, pattern=CODE),
        Column("lat", pa.float64(), required=False, personal=True, min_value=-90, max_value=90),
        Column("lon", pa.float64(), required=False, personal=True, min_value=-180, max_value=180),
        Column("description", pa.string(), required=False, personal=True, free_text=True),
        Column("requester_name", pa.string(), required=False, identifier=True),
        Column("requester_phone", pa.string(), required=False, identifier=True),
        Column("requester_email", pa.string(), required=False, identifier=True),
        Column("requester_address", pa.string(), required=False, identifier=True),
        Column("requester_age", pa.int64(), required=False, personal=True, min_value=0,
               max_value=120),
        Column("requester_gender", pa.string(), required=False, personal=True,
               allowed=GENDERS),
    ),
    time_column="created_at",
    key=("request_id",),
    pseudonyms=(("requester_pid", ("requester_email", "requester_phone", "requester_name")),),
    links=(("requester_pid", (("requester_email",), ("requester_phone",),
                              ("requester_name", "requester_address"))),),
)

METER_REGISTRY = Schema(
    "meter_registry",
    (
        Column("meter_id", pa.string(), pattern=CODE),
        Column("utility", pa.string(), allowed=("water", "electricity")),
        Column("household_id", pa.string(), identifier=True),
        Column("household_address", pa.string(), identifier=True),
        Column("district_id", pa.string(), pattern=CODE),
        Column("smart", pa.bool_()),
        Column("tariff", pa.string(), allowed=TARIFFS),
        Column("household_size", pa.int64(), min_value=1, max_value=20, personal=True),
        Column("installed_on", pa.date32(), required=False),
    ),
    key=("meter_id",),
    pseudonyms=(("household_pid", ("household_id",)),),
)

METER_READINGS = Schema(
    "meter_readings",
    (
        Column("meter_id", pa.string(), pattern=CODE),
        Column("reading_time", UTC_TS),
        Column("value", pa.float64(), min_value=0, max_value=1e6,
               description="kWh or L since the previous reading"),
        Column("unit", pa.string(), allowed=("kWh", "L")),
    ),
    time_column="reading_time",
)

TRANSIT_STOPS = Schema(
    "transit_stops",
    (
        Column("stop_id", pa.string(), pattern=CODE),
        Column("stop_name", pa.string(), free_text=True, description="public stop name"),
        Column("lat", pa.float64(), min_value=-90, max_value=90),
        Column("lon", pa.float64(), min_value=-180, max_value=180),
        Column("district_id", pa.string(), pattern=CODE),
    ),
    key=("stop_id",),
)

TRANSIT_TAPS = Schema(
    "transit_taps",
    (
        Column("card_id", pa.string(), identifier=True),
        Column("stop_id", pa.string(), pattern=CODE),
        Column("route_id", pa.string(), pattern=CODE),
        Column("tap_time", UTC_TS),
    ),
    time_column="tap_time",
    pseudonyms=(("card_pid", ("card_id",)),),
)

WASTE_PICKUPS = Schema(
    "waste_pickups",
    (
        Column("pickup_id", pa.string(), pattern=CODE),
        Column("household_id", pa.string(), identifier=True),
        Column("district_id", pa.string(), pattern=CODE),
        Column("scheduled_date", pa.date32()),
        Column("collected_at", UTC_TS, required=False),
        Column("status", pa.string(), allowed=("collected", "missed", "cancelled")),
        Column("weight_kg", pa.float64(), required=False, min_value=0, max_value=5000),
    ),
    time_column="scheduled_date",
    key=("pickup_id",),
    pseudonyms=(("household_pid", ("household_id",)),),
)

SCHEMAS: dict[str, Schema] = {
    s.name: s
    for s in (
        DISTRICTS,
        TOWERS,
        CDR,
        SERVICE_REQUESTS,
        METER_REGISTRY,
        METER_READINGS,
        TRANSIT_STOPS,
        TRANSIT_TAPS,
        WASTE_PICKUPS,
    )
}
