"""The publish interface shared by every target (local catalog, CKAN).

A pipeline never talks to a portal directly: it builds a :class:`DatasetRelease` (a dataset
with its resources and full metadata) and hands it to a :class:`Publisher`. Dataset names
are deterministic, so a rerun updates the same dataset instead of creating a duplicate.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from opencity.errors import ConfigError

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{1,99}$")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Field:
    """One column of a published table: the data dictionary entry."""

    name: str
    type: str  # Frictionless type: string, integer, number, boolean, date, datetime
    description: str = ""
    unit: str | None = None


@dataclass(frozen=True)
class Resource:
    """One file of a dataset. ``partition`` (e.g. 'dt=2026-10-05') identifies it across reruns."""

    path: Path
    name: str
    format: str  # "parquet", "csv", "json", "html"
    description: str = ""
    partition: str | None = None

    @property
    def sha256(self) -> str:
        return sha256_file(self.path)


@dataclass(frozen=True)
class DatasetRelease:
    """A dataset ready for publication, with everything a portal shows about it.

    Attributes:
        name: deterministic slug, lowercase ``[a-z0-9_-]``, 2-100 characters (CKAN's rule).
        privacy: the privacy method and its parameters under stable keys, e.g.
            ``{"privacy_method": "suppression", "suppression_threshold": 15}`` or
            ``{"privacy_method": "differential_privacy", "epsilon": 1.0, "delta": 1e-7}``.
        temporal_coverage: ISO dates (start, end) of the data, end exclusive.
        accrual_periodicity: ISO 8601 repeating duration, e.g. ``R/P1D``, ``R/P1W``.
        provenance: pipeline version, run id, input file hashes.
        fields: the per-column data dictionary of the tabular resources.
        primary_key: for tables that should also go to a DataStore (KPI tables).
    """

    name: str
    title: str
    description: str
    resources: tuple[Resource, ...]
    fields: tuple[Field, ...] = ()
    privacy: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    temporal_coverage: tuple[str, str] | None = None
    spatial_coverage: str = ""
    accrual_periodicity: str = "R/P1W"
    license_id: str = "CC-BY-4.0"
    provenance: dict[str, Any] = field(default_factory=dict)
    primary_key: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(
                f"dataset name {self.name!r} is not a valid portal name: use 2-100 lowercase "
                "letters, digits, '-' or '_'"
            )
        if not self.resources:
            raise ConfigError(f"dataset {self.name!r} has no resources to publish")
        for res in self.resources:
            if not Path(res.path).is_file():
                raise ConfigError(f"dataset {self.name!r}: resource file {res.path} does not exist")


@dataclass(frozen=True)
class PublishResult:
    """What a publisher did for one dataset."""

    name: str
    target: str
    url: str
    created: bool
    uploaded: tuple[str, ...] = ()  # resource names uploaded this time
    unchanged: tuple[str, ...] = ()  # resource names skipped because their hash matched


class Publisher(Protocol):
    """A publish target. Implementations must be idempotent per (dataset name, partition)."""

    target: str

    def publish(self, release: DatasetRelease) -> PublishResult: ...


def datapackage_descriptor(release: DatasetRelease, entries: list[dict[str, Any]]
                           ) -> dict[str, Any]:
    """Frictionless Data Package of ``release``.

    ``entries`` are the resource descriptors as the target lays them out (name, path or URL,
    format, hash, ...); tabular ones (Parquet, CSV) get the release's table schema.
    """
    schema: dict[str, Any] = {"fields": [
        {k: v for k, v in {"name": f.name, "type": f.type, "description": f.description,
                           "unit": f.unit}.items() if v}
        for f in release.fields]}
    if release.primary_key:
        schema["primaryKey"] = list(release.primary_key)
    resources = []
    for entry in entries:
        entry = dict(entry)
        if entry.get("format") in ("parquet", "csv") and release.fields:
            entry["profile"] = "tabular-data-resource"
            entry["schema"] = schema
        resources.append(entry)
    return {
        "profile": "data-package",
        "name": release.name,
        "title": release.title,
        "description": release.description,
        "licenses": [{"name": release.license_id}],
        "keywords": list(release.tags),
        "privacy": release.privacy,
        "resources": resources,
    }

