"""The local catalog: the embedded default publish target.

Layout (one folder per dataset):

    CATALOG/<dataset-name>/package.json      CKAN-style package dict (name, title, notes,
                                              license_id, tags, extras, resources) plus an
                                              "opencity" block holding the full release
    CATALOG/<dataset-name>/datapackage.json  Frictionless Data Package (schema per resource)
    CATALOG/<dataset-name>/resources/<partition>/<file>

Publishing is idempotent per (dataset, resource name, partition): a rerun replaces the file of
the same partition (only when its SHA-256 changed) and keeps every other partition. Every write
goes to a temporary name first and is renamed, so a crash never leaves a half-written file.
``iter_releases`` reads a catalog back as DatasetRelease objects (used by the CKAN publisher).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from opencity.errors import PublishError
from publish.base import (
    DatasetRelease,
    Field,
    PublishResult,
    Resource,
    datapackage_descriptor,
    sha256_file,
)

PACKAGE_FILE = "package.json"
DATAPACKAGE_FILE = "datapackage.json"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _extras(release: DatasetRelease) -> list[dict[str, str]]:
    extras: dict[str, Any] = {f"{k}": v for k, v in release.privacy.items()}
    if release.temporal_coverage:
        extras["temporal_start"], extras["temporal_end"] = release.temporal_coverage
    extras["spatial_coverage"] = release.spatial_coverage
    extras["accrual_periodicity"] = release.accrual_periodicity
    for k, v in release.provenance.items():
        extras[f"provenance_{k}"] = v
    return [
        {"key": k, "value": v if isinstance(v, str) else json.dumps(v, sort_keys=True)}
        for k, v in sorted(extras.items())
    ]


def _resource_key(res: dict | Resource) -> tuple[str, str]:
    if isinstance(res, Resource):
        return res.name, res.partition or ""
    return res["name"], res.get("partition") or ""


def _widen_coverage(release: DatasetRelease, previous: list | None) -> DatasetRelease:
    """The dataset's temporal coverage spans every partition published so far."""
    if not previous or not release.temporal_coverage:
        return release
    start = min(previous[0], release.temporal_coverage[0])
    end = max(previous[1], release.temporal_coverage[1])
    return replace(release, temporal_coverage=(start, end))


class LocalCatalog:
    """Publishes releases into a directory; see the module docstring for the layout."""

    target = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def dataset_dir(self, name: str) -> Path:
        return self.root / name

    def load_package(self, name: str) -> dict | None:
        path = self.dataset_dir(name) / PACKAGE_FILE
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise PublishError(f"local catalog file {path} is corrupt: {err}") from err

    def publish(self, release: DatasetRelease) -> PublishResult:
        """Add or update ``release``; returns what changed."""
        ddir = self.dataset_dir(release.name)
        old = self.load_package(release.name)
        created = old is None
        resources: dict[tuple[str, str], dict] = {}
        for res in (old or {}).get("resources", []):
            resources[_resource_key(res)] = res
        uploaded, unchanged = [], []
        for res in release.resources:
            digest = sha256_file(res.path)
            rel = Path("resources") / (res.partition or "_") / Path(res.path).name
            entry = {
                "name": res.name,
                "path": rel.as_posix(),
                "format": res.format.upper(),
                "description": res.description,
                "partition": res.partition,
                "hash": f"sha256:{digest}",
                "size": Path(res.path).stat().st_size,
            }
            prev = resources.get(_resource_key(res))
            if prev and prev.get("hash") == entry["hash"] and (ddir / rel).exists():
                unchanged.append(res.name)
            else:
                _atomic_copy(Path(res.path), ddir / rel)
                uploaded.append(res.name)
            resources[_resource_key(res)] = entry
        ordered = sorted(resources.values(), key=lambda r: (r["name"], r.get("partition") or ""))
        release = _widen_coverage(release, (old or {}).get("opencity", {}).get("temporal_coverage"))
        package = {
            "name": release.name,
            "title": release.title,
            "notes": release.description,
            "license_id": release.license_id,
            "tags": [{"name": t} for t in release.tags],
            "extras": _extras(release),
            "resources": ordered,
            "opencity": {
                "privacy": release.privacy,
                "fields": [asdict(f) for f in release.fields],
                "temporal_coverage": list(release.temporal_coverage)
                if release.temporal_coverage else None,
                "spatial_coverage": release.spatial_coverage,
                "accrual_periodicity": release.accrual_periodicity,
                "provenance": release.provenance,
                "primary_key": list(release.primary_key),
                "tags": list(release.tags),
            },
        }
        ddir.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(ddir / DATAPACKAGE_FILE, json.dumps(
            datapackage(release, ordered), indent=2, sort_keys=True, default=str))
        _atomic_write_text(ddir / PACKAGE_FILE, json.dumps(
            package, indent=2, sort_keys=True, default=str))
        return PublishResult(
            name=release.name, target=self.target, url=ddir.resolve().as_uri(), created=created,
            uploaded=tuple(uploaded), unchanged=tuple(unchanged),
        )


_FRICTIONLESS_FORMATS = {"PARQUET": "parquet", "CSV": "csv", "JSON": "json", "HTML": "html"}


def datapackage(release: DatasetRelease, resources: list[dict]) -> dict:
    """The Frictionless Data Package of a catalog entry (paths relative to its folder)."""
    entries = []
    for r in resources:
        fmt = _FRICTIONLESS_FORMATS.get(r["format"], r["format"].lower())
        entries.append({
            "name": f"{r['name']}-{r['partition']}".lower().replace("=", "-")
            if r.get("partition") else r["name"],
            "path": r["path"],
            "format": fmt,
            "hash": r["hash"],
            "bytes": r["size"],
        })
    return {
        **datapackage_descriptor(release, entries),
        "temporal": release.temporal_coverage and {
            "start": release.temporal_coverage[0], "end": release.temporal_coverage[1]},
        "provenance": release.provenance,
    }


def iter_releases(catalog_dir: str | Path) -> Iterator[DatasetRelease]:
    """Read every dataset of a local catalog back as a DatasetRelease (sorted by name)."""
    root = Path(catalog_dir)
    if not root.is_dir():
        raise PublishError(f"{root} is not a local catalog directory (expected "
                           f"<run dir>/catalog with one folder per dataset)")
    for pkg_path in sorted(root.glob(f"*/{PACKAGE_FILE}")):
        pkg = json.loads(pkg_path.read_text(encoding="utf-8"))
        meta = pkg.get("opencity", {})
        ddir = pkg_path.parent
        resources = tuple(
            Resource(path=ddir / r["path"], name=r["name"], format=r["format"].lower(),
                     description=r.get("description", ""), partition=r.get("partition"))
            for r in pkg["resources"]
        )
        cov = meta.get("temporal_coverage")
        yield DatasetRelease(
            name=pkg["name"],
            title=pkg["title"],
            description=pkg.get("notes", ""),
            resources=resources,
            fields=tuple(Field(**f) for f in meta.get("fields", [])),
            privacy=meta.get("privacy", {}),
            tags=tuple(meta.get("tags", [t["name"] for t in pkg.get("tags", [])])),
            temporal_coverage=tuple(cov) if cov else None,
            spatial_coverage=meta.get("spatial_coverage", ""),
            accrual_periodicity=meta.get("accrual_periodicity", "R/P1W"),
            license_id=pkg.get("license_id", "CC-BY-4.0"),
            provenance=meta.get("provenance", {}),
            primary_key=tuple(meta.get("primary_key", [])),
        )
