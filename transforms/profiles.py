"""Input profiles: how one publisher's files map onto OpenCity's canonical schemas.

A profile maps each canonical column to a DuckDB SQL expression over the raw columns (all read
as text from CSV/JSON, typed from Parquet), says how naive timestamps are written and in which
time zone they were recorded, and which raw values mean what. The ``opencity`` profile is the
identity over the canonical columns; the 311 profiles read the real extracts of Baltimore, NYC
and Boston (tests/data/311_*).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from opencity.errors import ConfigError
from transforms import domains_311 as d311
from transforms.schemas import SCHEMAS, Schema


@dataclass(frozen=True)
class BBox:
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float


@dataclass(frozen=True)
class Profile:
    """How to read one publisher's files for one canonical source.

    Attributes:
        columns: canonical column -> SQL expression over raw columns (quoted identifiers).
            Canonical columns absent here are NULL (allowed only for optional columns).
        required_raw: raw columns that must exist in the file (checked before reading rows).
        timestamp_format: strptime format of naive timestamp strings; None = ISO 8601.
        timezone: the zone naive timestamps were recorded in; converted to UTC.
        bbox: coordinates outside this box are quarantined (placeholder coordinates).
        value_maps: canonical column -> {raw value (lower-cased) -> canonical value}.
        domains: canonical column -> the publisher's code list, replacing the schema's
            domain of that column (e.g. a city's own request types). A value outside the
            domain is quarantined, never published.
        patterns: canonical column -> full-match regex replacing the schema's code shape.
    """

    name: str
    source: str
    columns: dict[str, str]
    required_raw: tuple[str, ...]
    timestamp_format: str | None = None
    timezone: str = "UTC"
    bbox: BBox | None = None
    value_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    description: str = ""
    domains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    patterns: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = set(self.schema.names)
        for attr in ("columns", "value_maps", "domains", "patterns"):
            unknown = sorted(set(getattr(self, attr)) - names)
            if unknown:
                raise ConfigError(f"profile {self.name!r}: {attr} names unknown column(s) "
                                  f"{', '.join(unknown)} of {self.source!r}")

    def domain(self, column: str) -> tuple[str, ...] | None:
        """The allowed values of ``column`` (the profile's code list, else the schema's)."""
        if column in self.domains:
            return self.domains[column]
        return self.schema.column(column).allowed

    def pattern(self, column: str) -> str | None:
        """The full-match shape of ``column`` (the profile's, else the schema's)."""
        if column in self.patterns:
            return self.patterns[column]
        return self.schema.column(column).pattern

    def raw_columns(self, column: str) -> tuple[str, ...]:
        """The raw columns the expression of canonical ``column`` reads."""
        expr = self.columns.get(column)
        if expr is None:
            return ()
        return tuple(m.replace('""', '"') for m in re.findall(r'"((?:[^"]|"")+)"', expr))

    @property
    def schema(self) -> Schema:
        return SCHEMAS[self.source]


def canonical_profile(source: str) -> Profile:
    """Identity profile: the file has the canonical columns (OpenCity's own sample data)."""
    try:
        schema = SCHEMAS[source]
    except KeyError:
        raise ConfigError(
            f"unknown source {source!r}; known sources: {', '.join(sorted(SCHEMAS))}"
        ) from None
    return Profile(
        name="opencity",
        source=source,
        columns={c.name: f'"{c.name}"' for c in schema.columns},
        required_raw=tuple(c.name for c in schema.columns if c.required),
        description=f"OpenCity canonical {source} columns",
    )


_STATUS_311 = {
    "closed": "closed",
    "close": "closed",
    "closed (duplicate)": "closed",
    "open": "open",
    "new": "open",
    "assigned": "in_progress",
    "in progress": "in_progress",
    "pending": "in_progress",
    "started": "in_progress",
    "cancelled": "cancelled",
    "canceled": "cancelled",
}

BALTIMORE_311 = Profile(
    name="baltimore-311",
    source="service_requests",
    columns={
        "request_id": '"ServiceRequestNum"',
        "created_at": '"CreatedDate"',
        "closed_at": '"CloseDate"',
        "request_type": '"SRType"',
        "agency": '"Agency"',
        "status": '"SRStatus"',
        "district_id": "'council-' || \"CouncilDistrict\"",
        "lat": '"Latitude"',
        "lon": '"Longitude"',
        "requester_address": '"Address"',
    },
    required_raw=("ServiceRequestNum", "CreatedDate", "SRType", "SRStatus"),
    timestamp_format="%m/%d/%Y %I:%M:%S %p",
    timezone="America/New_York",
    bbox=BBox(39.19, 39.38, -76.72, -76.52),
    value_maps={"status": _STATUS_311},
    description="Open Baltimore 311 Customer Service Requests",
    domains={"request_type": d311.BALTIMORE_REQUEST_TYPE, "agency": d311.BALTIMORE_AGENCY,
             "district_id": d311.BALTIMORE_DISTRICT_ID},
)

NYC_311 = Profile(
    name="nyc-311",
    source="service_requests",
    columns={
        "request_id": '"unique_key"',
        "created_at": '"created_date"',
        "closed_at": '"closed_date"',
        "request_type": '"complaint_type"',
        "agency": '"agency"',
        "status": '"status"',
        "district_id": "lower(\"borough\")",
        "lat": '"latitude"',
        "lon": '"longitude"',
        "description": '"descriptor"',
        "requester_address": '"incident_address"',
    },
    required_raw=("unique_key", "created_date", "complaint_type", "status"),
    timestamp_format="%Y-%m-%dT%H:%M:%S.%g",
    timezone="America/New_York",
    bbox=BBox(40.49, 40.92, -74.26, -73.69),
    value_maps={"status": _STATUS_311},
    description="NYC Open Data 311 Service Requests",
    domains={"request_type": d311.NYC_REQUEST_TYPE, "agency": d311.NYC_AGENCY,
             "district_id": d311.NYC_DISTRICT_ID},
)

BOSTON_311 = Profile(
    name="boston-311",
    source="service_requests",
    columns={
        "request_id": '"case_enquiry_id"',
        "created_at": '"open_dt"',
        "closed_at": '"closed_dt"',
        "request_type": '"type"',
        "agency": '"department"',
        "status": '"case_status"',
        "district_id": '"neighborhood"',
        "lat": '"latitude"',
        "lon": '"longitude"',
        "description": '"case_title"',
        "requester_address": '"location"',
    },
    required_raw=("case_enquiry_id", "open_dt", "type", "case_status"),
    timestamp_format="%Y-%m-%d %H:%M:%S",
    timezone="America/New_York",
    bbox=BBox(42.22, 42.41, -71.20, -70.98),
    value_maps={"status": _STATUS_311},
    description="Analyze Boston 311 Service Requests",
    domains={"request_type": d311.BOSTON_REQUEST_TYPE, "agency": d311.BOSTON_AGENCY,
             "district_id": d311.BOSTON_DISTRICT_ID},
)

PROFILES: dict[str, Profile] = {p.name: p for p in (BALTIMORE_311, NYC_311, BOSTON_311)}


def get_profile(source: str, name: str = "opencity") -> Profile:
    """The profile ``name`` for ``source`` ('opencity' = canonical columns)."""
    if name == "opencity":
        return canonical_profile(source)
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"unknown input profile {name!r}; known: opencity, {', '.join(sorted(PROFILES))}"
        ) from None
    if profile.source != source:
        raise ConfigError(f"profile {name!r} reads {profile.source!r} files, not {source!r}")
    return profile
