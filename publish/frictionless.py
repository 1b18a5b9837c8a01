"""The ONE Frictionless Data Package builder (Data Package v2), for every publish target.

``datapackage(release, resources)`` describes the files as they are: the Table Schema of each
tabular resource is generated from the file's own schema (Parquet: its Arrow schema; CSV: the
schema of the Parquet table of the same partition it copies, or, without one, pyarrow's CSV
type inference), with descriptions and units from the data dictionary kept in the repository
(``publish/dictionary.yaml``), the release's own field descriptions as a fallback, and the
primary key declared there. Hashes are written ``sha256:<hex>`` as the spec requires (a bare
hex would read as MD5). Parquet and CSV resources are ``"type": "table"`` (v2), never the
CSV-only ``tabular-data-resource`` profile.

The local catalog calls it with paths relative to the dataset folder; the CKAN publisher calls
it with the resources' public URLs (``path``) and their local files (``local_path``) so the
schema can still be read.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from opencity.errors import ConfigError
from publish.base import DatasetRelease

DICTIONARY_FILE = Path(__file__).with_name("dictionary.yaml")
PACKAGE_PROFILE = "https://datapackage.org/profiles/2.0/datapackage.json"
RESOURCE_PROFILE = "https://datapackage.org/profiles/2.0/dataresource.json"
TABLE_SCHEMA_PROFILE = "https://datapackage.org/profiles/2.0/tableschema.json"
# Parquet is read through pandas by frictionless-py, which turns a NULL integer into "nan".
MISSING_VALUES = ["", "nan", "NaN", "None"]
TABULAR = ("parquet", "csv")
MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv",
               "json": "application/json", "html": "text/html"}
LICENSES = {
    "CC-BY-4.0": ("Creative Commons Attribution 4.0",
                  "https://creativecommons.org/licenses/by/4.0/"),
    "cc-by": ("Creative Commons Attribution 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    "CC0-1.0": ("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "cc-zero": ("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "ODbL-1.0": ("Open Data Commons Open Database License 1.0",
                 "https://opendatacommons.org/licenses/odbl/1-0/"),
    "odc-odbl": ("Open Data Commons Open Database License 1.0",
                 "https://opendatacommons.org/licenses/odbl/1-0/"),
}


@functools.cache
def load_dictionary(path: Path = DICTIONARY_FILE) -> dict[str, Any]:
    """The data dictionary: ``columns`` (shared) and ``datasets.<name>.columns/resources``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"data dictionary {path} cannot be read: {err}") from err
    if not isinstance(data.get("columns", {}), dict) or not isinstance(
            data.get("datasets", {}), dict):
        raise ConfigError(f"data dictionary {path}: 'columns' and 'datasets' must be mappings")
    return data


def describe_column(dataset: str, column: str, dictionary: Mapping | None = None,
                    method: str | None = None) -> dict[str, Any]:
    """Dictionary entry of ``column`` in ``dataset``: the entry of the dataset's privacy
    ``method`` (``methods.<method>.columns``) first, then the dataset's, then the shared one."""
    d = dictionary if dictionary is not None else load_dictionary()
    entry = d.get("datasets", {}).get(dataset) or {}
    by_method = (((entry.get("methods") or {}).get(method) or {}).get("columns") or {}
                 if method else {})
    specific = entry.get("columns") or {}
    return dict(by_method.get(column) or specific.get(column)
                or d.get("columns", {}).get(column) or {})


STATEMENT_KEYS = ("mechanism", "privacy_unit", "post_processing", "effect_on_sums")


def privacy_statement(dataset: str, method: str | None, dictionary: Mapping | None = None,
                      unit: str | None = None) -> dict[str, str]:
    """What the dictionary says the dataset does under its privacy ``method``: mechanism,
    privacy unit, post-processing and its effect on sums (empty when it says nothing). The
    release's privacy ``unit`` selects ``methods.<method>.units.<unit>`` overrides (e.g. an
    event-level ``request`` release says so instead of "requester")."""
    d = dictionary if dictionary is not None else load_dictionary()
    entry = d.get("datasets", {}).get(dataset) or {}
    by_method = ((entry.get("methods") or {}).get(method) or {}) if method else {}
    statement = dict(by_method.get("statement") or {})
    if unit:
        statement.update(((by_method.get("units") or {}).get(unit) or {}).get("statement")
                         or {})
    return {k: " ".join(str(statement[k]).split()) for k in STATEMENT_KEYS if statement.get(k)}


def dictionary_fields(dataset: str, fields: Sequence[Any], method: str | None,
                      dictionary: Mapping | None = None) -> tuple[Any, ...]:
    """``fields`` (:class:`publish.base.Field`) with description and unit from the dictionary
    where it has an entry for the column (the pipeline's own text is the fallback), so every
    target (package.json, DataStore, datapackage) describes a column the same way."""
    from dataclasses import replace

    out = []
    for f in fields:
        entry = describe_column(dataset, f.name, dictionary, method)
        out.append(replace(f, description=" ".join(str(entry.get("description")
                                                       or f.description).split()),
                           unit=entry.get("unit") or f.unit))
    return tuple(out)


def primary_key_of(dataset: str, resource: str, dictionary: Mapping | None = None
                   ) -> list[str]:
    """Primary key of a resource from the dictionary (a ``-csv`` copy shares its table's)."""
    d = dictionary if dictionary is not None else load_dictionary()
    res = (d.get("datasets", {}).get(dataset) or {}).get("resources") or {}
    entry = res.get(resource) or res.get(resource.removesuffix("-csv")) or {}
    return list(entry.get("primary_key") or [])


def frictionless_type(arrow_type: pa.DataType) -> str:
    """Table Schema type of an Arrow type."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "datetime"
    if pa.types.is_time(t):
        return "time"
    return "any"


def arrow_schema(path: Path, fmt: str) -> pa.Schema:
    """The file's own schema (Parquet footer, or pyarrow's CSV inference)."""
    try:
        if fmt == "parquet":
            return pq.read_schema(path)
        return pacsv.read_csv(path).schema
    except (OSError, pa.ArrowInvalid) as err:
        raise ConfigError(f"cannot read the schema of {path} ({fmt}): {err}") from err


def table_schema(release: DatasetRelease, resource_name: str, schema: pa.Schema,
                 dictionary: Mapping | None = None) -> dict[str, Any]:
    """Table Schema of one tabular resource from its Arrow schema and the dictionary."""
    fallback = {f.name: f for f in release.fields}
    method = (release.privacy or {}).get("privacy_method")
    fields = []
    for col in schema:
        entry = describe_column(release.name, col.name, dictionary, method)
        field: dict[str, Any] = {"name": col.name, "type": frictionless_type(col.type)}
        description = entry.get("description") or (
            fallback[col.name].description if col.name in fallback else "")
        unit = entry.get("unit") or (fallback[col.name].unit if col.name in fallback else None)
        if entry.get("title"):
            field["title"] = entry["title"]
        if description:
            field["description"] = " ".join(str(description).split())
        if unit:
            field["unit"] = unit
        fields.append(field)
    out: dict[str, Any] = {"$schema": TABLE_SCHEMA_PROFILE, "fields": fields,
                           "missingValues": MISSING_VALUES}
    names = set(schema.names)
    key = primary_key_of(release.name, resource_name, dictionary)
    if not key and release.primary_key and set(release.primary_key) <= names:
        key = list(release.primary_key)
    if key:
        missing = [k for k in key if k not in names]
        if missing:
            raise ConfigError(f"data dictionary: primary key of {release.name}/{resource_name} "
                              f"names column(s) {', '.join(missing)} the file does not have")
        out["primaryKey"] = key
    return out


def _descriptor_name(name: str, partition: str | None) -> str:
    raw = f"{name}-{partition}" if partition else name
    return raw.lower().replace("=", "-").replace("_", "-")


def _hash(value: str) -> str:
    return value if value.startswith("sha256:") else f"sha256:{value}"


def datapackage(release: DatasetRelease, resources: Sequence[Mapping[str, Any]],
                dictionary: Mapping | None = None) -> dict[str, Any]:
    """The Frictionless Data Package (v2) of ``release`` as laid out by a target.

    Args:
        release: the dataset (name, title, licence, privacy, fields as fallback descriptions).
        resources: one mapping per file, with ``name`` (the release's resource name),
            ``path`` (relative path or URL, as the descriptor should show it), ``format``
            (``parquet``, ``csv``, ``json``, ``html``; any case), ``hash`` (``sha256:<hex>`` or
            bare hex digest), ``size`` (bytes), optional ``partition`` and ``description``,
            and ``local_path`` (the file on this machine; needed to read a tabular
            resource's schema; without it the release's ``fields`` are used).
        dictionary: the data dictionary (default: ``publish/dictionary.yaml``).

    Returns:
        The descriptor as a JSON-serialisable dict, resources in the given order.
    """
    parquet_schemas: dict[str | None, list[pa.Schema]] = {}
    local_schemas: list[pa.Schema | None] = []
    for r in resources:
        fmt = str(r["format"]).lower()
        local = r.get("local_path")
        schema = arrow_schema(Path(local), fmt) if fmt == "parquet" and local else None
        if schema is not None:
            parquet_schemas.setdefault(r.get("partition"), []).append(schema)
        local_schemas.append(schema)
    entries = []
    for r, schema in zip(resources, local_schemas):
        fmt = str(r["format"]).lower()
        entry: dict[str, Any] = {
            "name": _descriptor_name(str(r["name"]), r.get("partition")),
            "path": str(r["path"]),
            "format": fmt,
            "mediatype": MEDIA_TYPES.get(fmt, "application/octet-stream"),
            "hash": _hash(str(r["hash"])),
        }
        if r.get("description"):
            entry["description"] = r["description"]
        if fmt != "parquet" and r.get("size") is not None:
            # frictionless-py reads Parquet through pandas and cannot count its bytes, so a
            # declared size would fail validation; the sha256 pins the file all the same.
            entry["bytes"] = int(r["size"])
        if fmt in TABULAR:
            local = r.get("local_path")
            if fmt == "csv" and local:
                header = pacsv.open_csv(Path(local)).schema.names
                schema = next((s for s in parquet_schemas.get(r.get("partition"), [])
                               if s.names == header), None) or arrow_schema(Path(local), "csv")
            if schema is not None:
                entry["type"] = "table"
                entry["schema"] = table_schema(release, str(r["name"]), schema, dictionary)
            elif release.fields:
                entry["type"] = "table"
                entry["schema"] = {"$schema": TABLE_SCHEMA_PROFILE, "fields": [
                    {k: v for k, v in {"name": f.name, "type": f.type,
                                       "description": f.description, "unit": f.unit}.items()
                     if v} for f in release.fields], "missingValues": MISSING_VALUES}
                if release.primary_key:
                    entry["schema"]["primaryKey"] = list(release.primary_key)
        entries.append(entry)
    title, url = LICENSES.get(release.license_id, (release.license_id, None))
    license_entry = {"name": release.license_id, "title": title}
    if url:
        license_entry["path"] = url
    package: dict[str, Any] = {
        "$schema": PACKAGE_PROFILE,
        "name": release.name,
        "title": release.title,
        "description": release.description,
        "licenses": [license_entry],
        "keywords": list(release.tags),
        "privacy": release.privacy,
        "resources": entries,
    }
    statement = privacy_statement(release.name, (release.privacy or {}).get("privacy_method"),
                                  dictionary, unit=(release.privacy or {}).get("privacy_unit"))
    if statement:
        package["privacy_statement"] = statement
    if release.temporal_coverage:
        package["temporal"] = {"start": release.temporal_coverage[0],
                               "end": release.temporal_coverage[1]}
    if release.provenance:
        package["provenance"] = release.provenance
    return package
