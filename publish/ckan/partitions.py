"""Partition datasets: every partition of a product is its own CKAN dataset.

CKAN stores a dataset's resources in its package: every ``resource_create`` or
``resource_patch`` re-validates, re-saves and re-indexes the whole package, and
``package_show`` returns all of it. With every partition's files in one package, publishing
partition N cost O(N) per call (measured: +1.5 s per existing partition, 22 KB of package
per partition). So a product ``<name>`` is published as

* the **product dataset** ``<name>``: the product's metadata (DCAT-AP, privacy parameters,
  widened temporal coverage), the DataStore table of KPI products, and the extra
  ``opencity_partitions`` (a JSON list of partition names: the only per-partition record);
* one **partition dataset** per partition, ``<name>--<partition slug>`` (see
  :func:`partition_dataset_name`): that partition's files, its datapackage descriptor and
  its privacy statement; extras ``opencity_product`` and ``partition`` point back.

A partition dataset is created private and made public by one ``package_patch`` once all
its files are uploaded and verified, so a citizen sees all of a partition or nothing.
Pure helpers only (no I/O).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

PARTITIONS_KEY = "opencity_partitions"
PRODUCT_KEY = "opencity_product"
PARTITION_KEY = "partition"
_SEP = "--"
_MAX_NAME = 100


def partition_slug(partition: str) -> str:
    """``dt=2026-10-05`` -> ``dt-2026-10-05`` (CKAN names: lowercase ``[a-z0-9_-]``)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", partition.strip().lower()).strip("-")
    return slug or "p"


def partition_dataset_name(dataset: str, partition: str) -> str:
    """The CKAN name of ``dataset``'s partition dataset, at most 100 characters.

    Deterministic, so a rerun finds what an earlier run (or a killed one) made. Names that
    would be too long keep a SHA-256 prefix of the full name, so they stay distinct.
    """
    name = f"{dataset}{_SEP}{partition_slug(partition)}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:_MAX_NAME - len(digest) - 1]}-{digest}"


def listed_partitions(package: dict[str, Any] | None) -> list[str]:
    """The partitions a product dataset lists (extra ``opencity_partitions``), sorted."""
    for extra in (package or {}).get("extras", []):
        if extra.get("key") == PARTITIONS_KEY:
            try:
                value = json.loads(extra.get("value") or "[]")
            except ValueError:
                return []
            return sorted({str(p) for p in value}) if isinstance(value, list) else []
    return []


def partitions_extra(partitions: list[str] | set[str]) -> str:
    """The value of ``opencity_partitions``: a compact sorted JSON list."""
    return json.dumps(sorted(set(partitions)), separators=(",", ":"))


__all__ = ["PARTITIONS_KEY", "PARTITION_KEY", "PRODUCT_KEY", "listed_partitions",
           "partition_dataset_name", "partition_slug", "partitions_extra"]
