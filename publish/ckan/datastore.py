"""The DataStore part: one queryable table per dataset with a primary key (KPI tables).

* One table resource per dataset, identified by its key
  (``<dataset>/_/datastore-table``); duplicates (a lost ``datastore_create`` response, two
  publishers) are deleted, keeping the oldest, together with their tables.
* A ``datastore_create`` whose response was lost is recovered by finding the key; the table
  is (re)declared with ``resource_id`` after that, which is idempotent.
* Rows are upserted by primary key (idempotent: a retried batch changes nothing).
* Which partitions are loaded is recorded per partition on the table resource
  (``datastore_loaded dt=...`` = hex SHA-256 of the Parquet file loaded), each written by
  its own ``resource_patch``, so two publishers of different partitions do not overwrite each
  other's record (a read-modify-write of one JSON field would).
* The data dictionary goes into the table's fields: type, ``info.label`` and ``info.notes``
  (description and unit), shown by CKAN's data dictionary page and ``datastore_search``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError
from publish.base import DatasetRelease, Field, sha256_file
from publish.ckan.resources import TABLE_NAME, ResourceSync
from publish.metadata import format_iris, resource_key_of

log = logging.getLogger("publish.ckan")

UPSERT_BATCH_ROWS = 5000
LOADED_PREFIX = "datastore_loaded "
_DATASTORE_TYPES = {"string": "text", "integer": "int8", "number": "numeric",
                    "boolean": "bool", "date": "date", "datetime": "timestamp"}


def table_key(dataset: str) -> str:
    return resource_key_of(dataset, TABLE_NAME)


def loaded_partitions(table: dict[str, Any] | None) -> dict[str, str]:
    """Partition -> hex SHA-256 of the Parquet file loaded into the table."""
    if not table:
        return {}
    out = {}
    try:  # the record of versions before per-partition fields
        for part, digest in json.loads(table.get("datastore_partitions") or "{}").items():
            out[part] = str(digest).removeprefix("sha256:")
    except (ValueError, AttributeError):
        pass
    for key, value in table.items():
        if key.startswith(LOADED_PREFIX):
            out[key[len(LOADED_PREFIX):]] = str(value)
    return out


def sync_datastore(release: DatasetRelease, rsync: ResourceSync) -> list[str]:
    """Create/repair the table of ``release`` and upsert its partitions; returns what was
    loaded (``datastore-table <partition>`` labels, or ``datastore-table`` if unchanged).

    Raises:
        ConfigError: no Parquet resource, or primary-key columns missing from the tables.
    """
    import pyarrow.parquet as pq

    what = f"DataStore table of dataset {release.name!r}"
    key = table_key(release.name)
    client = rsync.client
    parquets = [r for r in release.resources if r.format.lower() == "parquet"]
    if not parquets:
        raise ConfigError(f"dataset {release.name!r} has a primary key but no Parquet "
                          "resource to load into the DataStore")
    table = rsync.refind(key)
    loaded = loaded_partitions(table)
    todo = [(r, sha256_file(Path(r.path))) for r in parquets]
    todo = [(r, d) for r, d in todo if loaded.get(r.partition or "") != d]
    if not todo and table and table.get("datastore_active"):
        return []
    schema = pq.read_schema(todo[0][0].path if todo else parquets[0].path)
    ds_fields = datastore_fields(release.fields, schema)
    missing = [k for k in release.primary_key if k not in {f["id"] for f in ds_fields}]
    if missing:
        raise ConfigError(f"dataset {release.name!r}: primary key column(s) {missing} are "
                          "not in its tables")
    common = {"fields": ds_fields, "primary_key": list(release.primary_key), "force": True}
    if table is None:
        fmt_iri, media_iri = format_iris("datastore")

        def recover() -> dict[str, Any] | None:
            found = rsync.refind(key)
            return {"resource_id": found["id"], "recovered": True} if found else None

        created = client.call(
            "datastore_create", what, recover=recover,
            resource={"package_id": rsync.package["id"], "name": f"{release.name} (table)",
                      "description": "All partitions as one queryable table (CKAN "
                                     "DataStore), keyed by "
                                     + ", ".join(release.primary_key) + ".",
                      "format": fmt_iri, "mimetype": media_iri,
                      "opencity_key": key, "opencity_resource": TABLE_NAME,
                      "partition": ""},
            **common)
        table_id = created["resource_id"]
        if created.get("recovered"):  # the lost call may have made the resource only
            client.call("datastore_create", what, resource_id=table_id, **common)
    else:
        table_id = table["id"]
        client.call("datastore_create", what, resource_id=table_id, **common)
    names = [f["id"] for f in ds_fields]
    done = []
    for res, digest in todo:
        for batch in record_batches(pq.read_table(res.path, columns=names)):
            client.call("datastore_upsert", what, resource_id=table_id, records=batch,
                        method="upsert", force=True)
        client.call("resource_patch", what, id=table_id,
                    **{f"{LOADED_PREFIX}{res.partition or ''}": digest})
        done.append(f"{TABLE_NAME} {res.partition or ''}".strip())
    rsync.refind(key)
    return done


def _label(f: Field) -> str:
    text = f.name.replace("_", " ").strip()
    text = text[:1].upper() + text[1:]
    return f"{text} ({f.unit})" if f.unit else text


def datastore_fields(fields: tuple[Field, ...], schema: Any) -> list[dict[str, Any]]:
    """DataStore field definitions with the data dictionary as ``info``.

    Uses the release's fields when given (only those present in the table), else the Parquet
    schema's columns. ``info``: ``label`` (a readable name, with the unit), ``notes`` (the
    description and unit), ``type_override`` (the DataStore type, for CKAN's dictionary form).
    """
    import pyarrow as pa

    present = set(schema.names)
    out = []
    if fields:
        for f in fields:
            if f.name not in present:
                continue
            kind = _DATASTORE_TYPES.get(f.type, "text")
            notes = f.description + (f" (unit: {f.unit})" if f.unit else "")
            out.append({"id": f.name, "type": kind,
                        "info": {"label": _label(f), "notes": notes, "type_override": kind}})
        return out
    for col in schema:
        t = col.type
        kind = ("int8" if pa.types.is_integer(t) else "numeric" if pa.types.is_floating(t)
                else "bool" if pa.types.is_boolean(t) else "date" if pa.types.is_date(t)
                else "timestamp" if pa.types.is_timestamp(t) else "text")
        out.append({"id": col.name, "type": kind,
                    "info": {"label": _label(Field(col.name, "string")), "notes": "",
                             "type_override": kind}})
    return out


def record_batches(table: Any, rows: int = UPSERT_BATCH_ROWS) -> Iterable[list[dict]]:
    """JSON-ready record batches: dates/timestamps as ISO text, NaN as null (vectorized)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = []
    for col in table.columns:
        t = col.type
        if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t) \
                or pa.types.is_decimal(t):
            col = pc.cast(col, pa.string())
        elif pa.types.is_floating(t):
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, t), col)
        elif pa.types.is_dictionary(t):
            col = pc.cast(col, t.value_type)
        cols.append(col)
    table = pa.table(cols, names=table.column_names)
    for offset in range(0, table.num_rows, rows):
        yield table.slice(offset, rows).to_pylist()
