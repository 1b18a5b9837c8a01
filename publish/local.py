"""The local catalog: the embedded default publish target, crash-consistent.

Layout (one folder per dataset; the folders researchers load are ``data/`` and ``csv/``):

    CATALOG/<dataset>/data/<table>/dt=YYYY-MM-DD/part-0.parquet
                                         Parquet only, Hive-partitioned by the partition key:
                                         ``pandas.read_parquet(CATALOG/<dataset>/data/<table>)``
                                         loads the whole table (a dataset without partitions:
                                         ``data/<table>/part-0.parquet``)
    CATALOG/<dataset>/csv/<table>/dt=YYYY-MM-DD/part-0.csv
                                         the CSV copy of each Parquet table (with name columns
                                         joined from the reference datasets, see
                                         publish/csvcopy.py)
    CATALOG/<dataset>/files/dt=YYYY-MM-DD/<file>
                                         everything else of a partition (privacy.json,
                                         dashboard.html, ...), beside the data, never inside
    CATALOG/<dataset>/package.json       -> current/package.json  (CKAN-style package dict)
    CATALOG/<dataset>/datapackage.json   -> current/datapackage.json  (Frictionless, v2)
    CATALOG/<dataset>/data, csv, files   -> current/data, current/csv, current/files
    CATALOG/<dataset>/current            -> .snapshots/<id>  (the ONE pointer that changes)
    CATALOG/<dataset>/.snapshots/<id>/   an immutable snapshot of the whole dataset: data/,
                                         csv/, files/, ``releases/<partition>.json`` (the
                                         partition's release record: metadata, privacy,
                                         provenance, path, sha256 and size of every file), and
                                         the package.json / datapackage.json derived from them
    CATALOG/<dataset>/.lock              publishers of one dataset serialise on it (fcntl)

A catalog of the earlier layout (``resources/<partition>/<file>`` with ``.release.json``) is
read and carried over into this layout by the next publish of the dataset.

How a publish stays consistent whatever instant it is killed at:

* the new state of the dataset is assembled as a new snapshot under a unique name (files of
  unchanged partitions hard-linked from the current snapshot, new files copied, every file
  and folder fsynced), and made visible in ONE atomic step: a new ``current`` symlink
  replaces the old one (``opencity.io.replace_symlink``). A reader sees the old or the new
  dataset, files and metadata together, never a mix;
* ``package.json`` and ``datapackage.json`` are computed from the partition records and files
  of the snapshot they sit in; they are never read, modified and written back;
* every publish verifies the files on disk of each partition it publishes against the release
  (sha256 + size) and replaces the partition when they differ; the other partitions are
  checked against their own records (size; ``verify`` checks sha256 too) and one that no
  longer matches is left out of the next snapshot (logged), never listed;
* leftovers of killed runs (snapshots ``current`` does not point to, ``*.tmp``) are removed
  under the lock by the next publish and are never reachable through ``current`` meanwhile.

A rerun with byte-identical files and the same metadata writes nothing, so ``package.json``
and ``datapackage.json`` stay byte-identical: provenance (run id, input hashes) and privacy
parameters are recorded per partition, by the run that produced the partition's files.
``iter_releases`` reads a catalog back as DatasetRelease objects (used by the CKAN publisher).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError, PublishError
from opencity.io import fsync_dir as _fsync_dir
from opencity.io import move_aside, public_dir, public_tree, rename_dir, replace_symlink
from publish.base import DatasetRelease, Field, PublishResult, Resource, sha256_file

log = logging.getLogger(__name__)

PACKAGE_FILE = "package.json"
DATAPACKAGE_FILE = "datapackage.json"
DATA_DIR = "data"  # Parquet only: data/<table>/<partition>/part-0.parquet
CSV_DIR = "csv"  # CSV copies: csv/<table>/<partition>/part-0.csv
FILES_DIR = "files"  # every other file: files/<partition>/<file>
RECORDS_DIR = "releases"  # per snapshot: releases/<partition>.json
RESOURCES_DIR = "resources"  # the earlier layout (read, carried over, never written)
RECORD_FILE = ".release.json"  # the earlier layout's record, resources/<partition>/.release.json
WITHDRAWN_FILE = ".withdrawn.json"  # per snapshot: notes of withdrawn partitions
CURRENT = "current"
SNAPSHOTS_DIR = ".snapshots"
LOCK_FILE = ".lock"
NO_PARTITION = "_"
RECORD_FORMAT = 2
STATIC_LINKS = (PACKAGE_FILE, DATAPACKAGE_FILE, DATA_DIR, CSV_DIR, FILES_DIR)
LAYOUT_DIRS = (DATA_DIR, CSV_DIR, FILES_DIR, RECORDS_DIR)
_TABLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


def table_of(name: str, fmt: str) -> str:
    """The table a tabular resource belongs to: a CSV copy ``<table>-csv`` shares its
    Parquet table's folder name."""
    return name.removesuffix("-csv") if fmt.lower() == "csv" else name


def layout_path(name: str, fmt: str, file: str, partition: str) -> str:
    """Where a resource lives in a snapshot (relative path, see the module docstring)."""
    fmt = fmt.lower()
    sub = [] if partition == NO_PARTITION else [partition]
    if fmt == "parquet":
        return "/".join([DATA_DIR, name, *sub, "part-0.parquet"])
    if fmt == "csv":
        return "/".join([CSV_DIR, table_of(name, fmt), *sub, "part-0.csv"])
    return "/".join([FILES_DIR, *sub, file])


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def _write_durable(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _copy_durable(src: Path, dst: Path, expected_sha256: str) -> None:
    """Copy ``src`` to ``dst`` and fsync it; the copied bytes must hash to ``expected``."""
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(1 << 20):
            h.update(block)
            fout.write(block)
        fout.flush()
        os.fsync(fout.fileno())
    if h.hexdigest() != expected_sha256:
        raise PublishError(f"{src} changed while it was being published; rerun the publish "
                           "once the task that writes it has finished")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
        with open(dst, "rb") as fh:
            os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Exclusive fcntl lock on ``lock_path`` (released by the kernel if the process dies)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _release_meta(release: DatasetRelease) -> dict[str, Any]:
    """The dataset-level metadata a partition's record carries (everything but provenance)."""
    return {
        "name": release.name,
        "title": release.title,
        "description": release.description,
        "fields": [asdict(f) for f in release.fields],
        "privacy": release.privacy,
        "tags": list(release.tags),
        "temporal_coverage": list(release.temporal_coverage)
        if release.temporal_coverage else None,
        "spatial_coverage": release.spatial_coverage,
        "accrual_periodicity": release.accrual_periodicity,
        "license_id": release.license_id,
        "primary_key": list(release.primary_key),
    }


def _intended_record(release: DatasetRelease, partition: str, resources: list[Resource],
                     digests: dict[Path, tuple[str, int]]) -> dict[str, Any]:
    files = []
    for res in resources:
        sha, size = digests[Path(res.path)]
        files.append({"name": res.name,
                      "path": layout_path(res.name, res.format, Path(res.path).name, partition),
                      "format": res.format.lower(), "description": res.description,
                      "sha256": sha, "size": size})
    record = {"format": RECORD_FORMAT, "partition": partition,
              "release": _release_meta(release),
              "resources": sorted(files, key=lambda r: r["name"]),
              "provenance": release.provenance}
    return json.loads(_json(record))  # as it reads back from disk (tuples -> lists, ...)


def _same_content(a: dict, b: dict) -> bool:
    """Records that differ only in provenance describe the same published partition."""
    return ({k: v for k, v in a.items() if k != "provenance"}
            == {k: v for k, v in b.items() if k != "provenance"})


def _source(base: Path, entry: dict) -> Path:
    """The file of a record entry: ``base/path`` (a snapshot), or where a record of an
    earlier layout found it (``source``; carried over into ``path`` by the next commit)."""
    return base / entry.get("source", entry["path"])


def _verify(base: Path, record: dict, hashes: bool = True) -> list[str]:
    """Mismatches between a partition's files under ``base`` (a snapshot) and its record
    (empty when it is intact): missing or changed files, and unlisted files beside them."""
    problems = []
    listed = {_source(base, r) for r in record["resources"]}
    for r in record["resources"]:
        path = _source(base, r)
        label = r.get("path", r.get("file"))
        if not path.is_file():
            problems.append(f"{label} is missing")
        elif path.stat().st_size != r["size"] or (hashes and sha256_file(path) != r["sha256"]):
            problems.append(f"{label} does not match its recorded sha256/size")
    extra = {p for folder in {p.parent for p in listed} if folder.is_dir()
             for p in folder.iterdir()
             if (p.is_file() or p.is_symlink()) and p not in listed and p.name != RECORD_FILE}
    problems += [f"{p.name} is not part of the release" for p in sorted(extra)]
    return problems


def _read_partitions(snapshot: Path | None) -> dict[str, dict]:
    """Partition -> record of a snapshot (a partition without a readable record is skipped).

    A snapshot of the earlier layout (``resources/<partition>/.release.json``) reads as
    records whose entries say where the file is (``source``) and where it goes (``path``).
    """
    found: dict[str, dict] = {}
    if snapshot is None:
        return found
    rdir = snapshot / RECORDS_DIR
    if rdir.is_dir():
        for path in sorted(rdir.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                found[path.stem] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                log.error("local catalog %s: partition %s has an unreadable record; left out",
                          snapshot, path.stem)
        return found
    old = snapshot / RESOURCES_DIR
    if not old.is_dir():
        return found
    for folder in sorted(old.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            log.error("local catalog %s: partition %s has no readable %s; left out",
                      snapshot, folder.name, RECORD_FILE)
            continue
        for r in record["resources"]:
            r["source"] = f"{RESOURCES_DIR}/{folder.name}/{r['file']}"
            r["path"] = layout_path(r["name"], r["format"], r.pop("file"), folder.name)
        found[folder.name] = record
    return found


def _stored_record(record: dict) -> dict:
    """A record as a snapshot stores it (current format, no ``source``)."""
    return {**record, "format": RECORD_FORMAT,
            "resources": [{k: v for k, v in r.items() if k != "source"}
                          for r in record["resources"]]}


class LocalCatalog:
    """Publishes releases into a directory; see the module docstring for the layout."""

    target = "local"

    def __init__(self, root: str | Path, catalog_info: Any = None, *, csv_copies: bool = False,
                 reference_dir: str | Path | None = None, city_name: str = "") -> None:
        """``catalog_info``: publisher and contact point (publish.metadata.CatalogInfo; its
        defaults when None). ``csv_copies``: publish a CSV copy of every Parquet table, with
        names joined from the catalog's reference datasets (publish/csvcopy.py).
        ``reference_dir``: the city's reference files (districts.csv, towers.csv,
        request_types.csv); when given, the reference datasets (publish/reference.py) are
        published, or checked unchanged, before any other dataset."""
        self.root = Path(root)
        self.catalog_info = catalog_info
        self.csv_copies = csv_copies
        self.reference_dir = Path(reference_dir) if reference_dir is not None else None
        self.city_name = city_name
        self._reference_done = False

    def dataset_dir(self, name: str) -> Path:
        return self.root / name

    def load_package(self, name: str) -> dict | None:
        path = self.dataset_dir(name) / PACKAGE_FILE
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise PublishError(f"local catalog file {path} is corrupt: {err}; publish the "
                               "dataset again to rebuild it from its partitions") from err

    def published_records(self, name: str) -> dict[str, dict | None]:
        """Partition -> the hash-chain entry its public record carries (None when it has
        none), for every partition the catalog lists (withdrawn ones included)."""
        pkg = self.load_package(name) or {}
        meta = pkg.get("opencity", {})
        out: dict[str, dict | None] = {}
        for p in meta.get("partitions", []):
            if p.get("partition"):
                out[p["partition"]] = (p.get("privacy") or {}).get("chain")
        for n in meta.get("withdrawn", []):
            if n.get("partition"):
                out.setdefault(n["partition"], None)
        return out

    def verify(self, name: str) -> list[str]:
        """Every mismatch between the dataset's files and its records (sha256 + size)."""
        snap = self._current(self.dataset_dir(name))
        return [f"{part}: {p}" for part, rec in _read_partitions(snap).items()
                for p in _verify(snap, rec)]

    def withdraw(self, name: str, partition: str, note: dict[str, Any]) -> list[str]:
        """Remove ``partition`` from dataset ``name`` in one atomic step; returns the names of
        the resources removed.

        The new snapshot keeps every other partition and records ``note`` (reason, who, when)
        under ``withdrawn`` in package.json and datapackage.json, so the catalog says what was
        taken back. Raises ConfigError when the partition is not in the catalog.
        """
        ddir = self.dataset_dir(name)
        with _locked(ddir / LOCK_FILE):
            current = self._current(ddir)
            parts = _read_partitions(current)
            if partition not in parts:
                published = ", ".join(p for p in sorted(parts) if p != NO_PARTITION)
                raise ConfigError(f"{name} has no published resources in partition "
                                  f"{partition!r} (published partitions: {published or 'none'})")
            self._clean_leftovers(ddir, current)
            gone = parts[partition]
            keep = {p: (rec, current) for p, rec in parts.items() if p != partition}
            notes = [n for n in _read_withdrawn(current) if n.get("partition") != partition]
            notes.append({**note, "partition": partition, "release": gone["release"],
                          "resources": sorted(r["name"] for r in gone["resources"])})
            self._commit(ddir, current, keep, {}, {}, {},
                         withdrawn=sorted(notes, key=lambda n: n["partition"]))
        return sorted(r["name"] for r in gone["resources"])

    # -- publish ------------------------------------------------------------------------

    def publish(self, release: DatasetRelease) -> PublishResult:
        """Add or replace the partitions of ``release``; returns what changed.

        With ``csv_copies`` the release's CSV copies are made here from its Parquet tables
        (names joined); with ``reference_dir`` the reference datasets are published first.
        The rest is :meth:`publish_files`.
        """
        if not self.csv_copies:
            return self.publish_prepared(self.prepare(release, "."))
        import tempfile

        with tempfile.TemporaryDirectory(prefix="opencity-csv-") as tmp:
            return self.publish_prepared(self.prepare(release, tmp))

    def prepare(self, release: DatasetRelease, workdir: str | Path) -> DatasetRelease:
        """``release`` with exactly the files this catalog publishes for it (the CSV copies
        with names made under ``workdir``), so a registry can record their hashes first."""
        self._ensure_reference(release)
        if not self.csv_copies:
            return release
        from publish.csvcopy import with_csv_copies
        from publish.reference import name_lookups

        return with_csv_copies(release, name_lookups(self.root), workdir)

    def publish_prepared(self, release: DatasetRelease) -> PublishResult:
        """Publish a release :meth:`prepare` returned (reference datasets first)."""
        self._ensure_reference(release)
        return self.publish_files(release)

    def _ensure_reference(self, release: DatasetRelease) -> None:
        from publish.reference import REFERENCE_DATASETS

        if (self.reference_dir is not None and not self._reference_done
                and release.name not in REFERENCE_DATASETS):
            self.publish_reference()

    def publish_reference(self) -> list[PublishResult]:
        """Publish the reference datasets built from ``reference_dir`` (idempotent)."""
        import tempfile

        from publish.reference import reference_releases

        if self.reference_dir is None:
            raise ConfigError("no reference_dir given: the city's reference files "
                              "(districts.csv, towers.csv, request_types.csv) are needed")
        results = []
        with tempfile.TemporaryDirectory(prefix="opencity-reference-") as tmp:
            for rel in reference_releases(self.reference_dir, tmp, city_name=self.city_name):
                results.append(self.publish(rel))
        self._reference_done = True
        return results

    def publish_files(self, release: DatasetRelease) -> PublishResult:
        """Add or replace the partitions of ``release`` as they are; returns what changed.

        Idempotent per (dataset, partition): a partition whose files on disk already match the
        release (sha256 + size) and whose metadata is unchanged is left alone (provenance
        included: it stays the one of the run that produced the files); otherwise the
        release's files replace the partition. Every other partition is kept. Safe against
        concurrent publishers (file lock) and crashes (see the module docstring).
        """
        by_part: dict[str, list[Resource]] = {}
        for res in release.resources:
            by_part.setdefault(res.partition or NO_PARTITION, []).append(res)
        for part, resources in by_part.items():
            if part.startswith(".") or "/" in part:
                raise ConfigError(f"dataset {release.name!r}: partition {part!r} must not start "
                                  "with '.' or contain '/'")
            names = [Path(r.path).name for r in resources]
            dupes = sorted({n for n in names if names.count(n) > 1 or n.startswith(".")})
            if dupes:
                raise ConfigError(f"dataset {release.name!r} partition {part}: file name(s) "
                                  f"{', '.join(dupes)} used twice or hidden; give every "
                                  "resource of a partition its own file name")
            tables = [table_of(r.name, r.format) for r in resources
                      if r.format.lower() in ("parquet", "csv")]
            bad = sorted({t for t in tables if not _TABLE_RE.match(t)})
            paths = [layout_path(r.name, r.format, Path(r.path).name, part) for r in resources]
            twice = sorted({q for q in paths if paths.count(q) > 1})
            if bad or twice:
                raise ConfigError(f"dataset {release.name!r} partition {part}: table name(s) "
                                  f"{', '.join(bad + twice)} cannot be laid out (a table is a "
                                  "folder data/<table>/: give every Parquet resource of a "
                                  "partition its own name of letters, digits, '-' or '_', and "
                                  "its CSV copy the name '<table>-csv')")
        digests = {Path(r.path): (sha256_file(Path(r.path)), Path(r.path).stat().st_size)
                   for r in release.resources}
        intended = {part: _intended_record(release, part, resources, digests)
                    for part, resources in by_part.items()}
        ddir = public_dir(self.dataset_dir(release.name))
        uploaded: list[str] = []
        unchanged: list[str] = []
        with _locked(ddir / LOCK_FILE):
            current = self._current(ddir)
            created = current is None
            self._clean_leftovers(ddir, current)
            old = ({p: (rec, current) for p, rec in _read_partitions(current).items()}
                   if current is not None else _legacy_partitions(ddir))
            keep: dict[str, tuple[dict, Path]] = {}
            dirty = False
            for part, (record, folder) in old.items():
                if part in intended:
                    names = [r.name for r in by_part[part]]
                    if _same_content(record, intended[part]) and not _verify(folder, record):
                        keep[part] = (record, folder)
                        unchanged += names
                    else:
                        if _same_content(record, intended[part]):
                            log.warning("local catalog %s %s: files on disk did not match the "
                                        "release; replacing them", release.name, part)
                        uploaded += names
                        dirty = True
                    continue
                problems = _verify(folder, record, hashes=False)
                if problems:
                    log.error("local catalog %s %s: withdrawn (%s); publish the partition "
                              "again", release.name, part, "; ".join(problems))
                    dirty = True
                else:
                    keep[part] = (record, folder)
            for part in sorted(set(intended) - set(old)):
                uploaded += [r.name for r in by_part[part]]
                dirty = True
            if not dirty and current is not None and self._metadata_current(current):
                return PublishResult(name=release.name, target=self.target,
                                     url=ddir.resolve().as_uri(), created=False,
                                     uploaded=(), unchanged=tuple(unchanged))
            new = {p: intended[p] for p in intended if p not in keep}
            self._commit(ddir, current, keep, new, by_part, digests)
        return PublishResult(
            name=release.name, target=self.target, url=ddir.resolve().as_uri(), created=created,
            uploaded=tuple(uploaded), unchanged=tuple(unchanged),
        )

    @staticmethod
    def _current(ddir: Path) -> Path | None:
        link = ddir / CURRENT
        if not link.is_symlink() or not link.resolve().is_dir():
            return None
        return link.resolve()

    def _metadata_current(self, snapshot: Path) -> bool:
        """Do the snapshot's package.json and datapackage.json equal what it derives?"""
        try:
            package, descriptor = _derive(snapshot, self.catalog_info)
            return ((snapshot / PACKAGE_FILE).read_text(encoding="utf-8") == _json(package)
                    and (snapshot / DATAPACKAGE_FILE).read_text(encoding="utf-8")
                    == _json(descriptor))
        except (OSError, ValueError, ConfigError):
            return False

    def _commit(self, ddir: Path, current: Path | None, keep: dict[str, tuple[dict, Path]],
                new: dict[str, dict], by_part: dict[str, list[Resource]],
                digests: dict, withdrawn: list[dict] | None = None) -> None:
        """Assemble a new snapshot (kept + new partitions) and make it current atomically.

        ``withdrawn``: the withdrawal notes of the new snapshot (default: the current one's).
        """
        sroot = public_dir(ddir / SNAPSHOTS_DIR)
        sid = f"s-{uuid.uuid4().hex[:16]}"
        staging = sroot / f"{sid}.staging"
        for folder in LAYOUT_DIRS:
            (staging / folder).mkdir(parents=True)
        records = staging / RECORDS_DIR
        for part in sorted(keep):
            record, base = keep[part]
            for r in record["resources"]:
                dst = staging / r["path"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(_source(base, r), dst)
            stored = _stored_record(record)
            src_record = base / RECORDS_DIR / f"{part}.json"
            if stored == record and src_record.is_file():
                _link_or_copy(src_record, records / f"{part}.json")
            else:  # a partition of an earlier layout, now in this one
                _write_durable(records / f"{part}.json", _json(stored).encode("utf-8"))
        for part in sorted(new):
            for res in by_part[part]:
                dst = staging / layout_path(res.name, res.format, Path(res.path).name, part)
                dst.parent.mkdir(parents=True, exist_ok=True)
                _copy_durable(Path(res.path), dst, digests[Path(res.path)][0])
            _write_durable(records / f"{part}.json", _json(new[part]).encode("utf-8"))
        notes = _read_withdrawn(current) if withdrawn is None else withdrawn
        if notes:
            _write_durable(staging / WITHDRAWN_FILE, _json(notes).encode("utf-8"))
        for folder, _dirs, _files in os.walk(staging, topdown=False):
            _fsync_dir(Path(folder))
        package, descriptor = _derive(staging, self.catalog_info)
        _write_durable(staging / PACKAGE_FILE, _json(package).encode("utf-8"))
        _write_durable(staging / DATAPACKAGE_FILE, _json(descriptor).encode("utf-8"))
        public_tree(staging)  # the catalog is world-readable whatever the umask
        _fsync_dir(staging)
        rename_dir(staging, sroot / sid)
        # the one step that makes the new state visible
        replace_symlink(ddir / CURRENT, Path(SNAPSHOTS_DIR) / sid)
        for name in STATIC_LINKS:  # fixed links through ``current``, made once
            link = ddir / name
            if link.is_symlink():
                continue
            if link.exists():  # the pre-snapshot layout (now carried over into the snapshot)
                move_aside(link)
            os.symlink(Path(CURRENT) / name, link)
        old_link = ddir / RESOURCES_DIR  # the earlier layouts' folder, carried over above
        if old_link.is_symlink():
            old_link.unlink()
        elif old_link.exists():
            move_aside(old_link)
        _fsync_dir(ddir)
        if current is not None:
            shutil.rmtree(current, ignore_errors=True)

    @staticmethod
    def _clean_leftovers(ddir: Path, current: Path | None) -> None:
        """Remove what killed publishes left (called under the lock)."""
        for path in ddir.iterdir():
            if path.name.startswith(".") and path.name.endswith((".tmp", ".old")):
                _remove(path)
        sroot = ddir / SNAPSHOTS_DIR
        if sroot.is_dir():
            for snap in sroot.iterdir():
                if snap != current:
                    _remove(snap)


def _read_withdrawn(snapshot: Path | None) -> list[dict]:
    """The withdrawal notes recorded in a snapshot (oldest partition first)."""
    path = snapshot / WITHDRAWN_FILE if snapshot else None
    if path is None or not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError):
        log.error("local catalog %s: %s is unreadable; withdrawal notes left out", snapshot,
                  WITHDRAWN_FILE)
        return []


def _legacy_partitions(ddir: Path) -> dict[str, tuple[dict, Path]]:
    """Partitions of a catalog written before snapshots (a plain package.json and resources/
    folder), as records, so the first publish carries them over. Only files that still match
    the hash recorded for them are taken; the privacy parameters of such a catalog were
    recorded per dataset, which the partition's provenance says."""
    path = ddir / PACKAGE_FILE
    if path.is_symlink() or not path.is_file():
        return {}
    try:
        pkg = json.loads(path.read_text(encoding="utf-8"))
        meta = pkg.get("opencity", {})
        release_meta = {
            "name": pkg["name"], "title": pkg["title"], "description": pkg.get("notes", ""),
            "fields": meta.get("fields", []), "privacy": meta.get("privacy", {}),
            "tags": meta.get("tags", []), "temporal_coverage": meta.get("temporal_coverage"),
            "spatial_coverage": meta.get("spatial_coverage", ""),
            "accrual_periodicity": meta.get("accrual_periodicity", "R/P1W"),
            "license_id": pkg.get("license_id", "CC-BY-4.0"),
            "primary_key": meta.get("primary_key", []),
        }
        entries = pkg.get("resources", [])
    except (OSError, KeyError, json.JSONDecodeError, AttributeError):
        log.error("local catalog %s: the old package.json cannot be read; its partitions are "
                  "not carried over", ddir.name)
        return {}
    found: dict[str, dict] = {}
    for entry in entries:
        file = ddir / entry.get("path", "")
        part = entry.get("partition") or NO_PARTITION
        sha = str(entry.get("hash", "")).removeprefix("sha256:")
        if not file.is_file() or sha256_file(file) != sha:
            log.error("local catalog %s %s: %s does not match its recorded hash; not carried "
                      "over", ddir.name, part, entry.get("name"))
            found.pop(part, None)
            continue
        record = found.setdefault(part, {
            "format": RECORD_FORMAT, "partition": part, "release": release_meta,
            "resources": [], "provenance": {
                **meta.get("provenance", {}),
                "migrated": "from a catalog that recorded privacy and provenance per dataset"}})
        record["resources"].append({
            "name": entry["name"],
            "path": layout_path(entry["name"], entry["format"], file.name, part),
            "source": str(file.resolve()), "format": entry["format"].lower(),
            "description": entry.get("description", ""), "sha256": sha,
            "size": file.stat().st_size})
    return {p: (json.loads(_json(rec)), ddir) for p, rec in found.items()}


def _derive(snapshot: Path, catalog_info: Any = None) -> tuple[dict, dict]:
    """package.json and datapackage.json of a snapshot, from its partition records.

    The CKAN-style part (name, title, notes, licence, tags, extras) is publish.metadata's
    ``package_dict`` of the newest partition's release over the whole temporal span, with one
    privacy sentence per partition (each partition's own parameters); the Frictionless part
    is publish.frictionless's ``datapackage``.
    """
    from publish.frictionless import datapackage
    from publish.metadata import package_dict, privacy_sentence

    parts = sorted(_read_partitions(snapshot).items())
    withdrawn = _read_withdrawn(snapshot)
    if not parts and not withdrawn:
        raise PublishError(f"local catalog snapshot {snapshot} has no partition; this is a bug")
    notes = [{k: v for k, v in n.items() if k != "release"} for n in withdrawn]
    if not parts:  # every partition withdrawn: the dataset stays listed, with no files
        meta = withdrawn[-1]["release"]
        base = {"name": meta["name"], "title": meta["title"], "notes": meta.get("description", ""),
                "license_id": meta.get("license_id", "CC-BY-4.0"), "resources": [],
                "extras": [{"key": "withdrawn_partitions",
                            "value": json.dumps([n["partition"] for n in notes])}],
                "opencity": {"partitions": [], "withdrawn": notes}}
        return base, {"name": meta["name"], "title": meta["title"], "resources": [],
                      "partitions": [], "withdrawn": notes}
    newest_part, newest = parts[-1]
    spans = [rec["release"]["temporal_coverage"] for _p, rec in parts
             if rec["release"]["temporal_coverage"]]
    coverage = [min(c[0] for c in spans), max(c[1] for c in spans)] if spans else None
    resources, entries = [], []
    for part, record in parts:
        for r in record["resources"]:
            rel = r["path"]
            entry = {"name": r["name"], "path": rel, "format": r["format"].upper(),
                     "description": r["description"],
                     "partition": None if part == NO_PARTITION else part,
                     "hash": f"sha256:{r['sha256']}", "size": r["size"]}
            resources.append(entry)
            entries.append({**entry, "format": r["format"], "local_path": snapshot / rel})
    resources.sort(key=lambda r: (r["name"], r.get("partition") or ""))
    entries.sort(key=lambda r: (r["name"], r.get("partition") or ""))
    partitions = [{"partition": None if part == NO_PARTITION else part,
                   "privacy": rec["release"]["privacy"], "provenance": rec["provenance"],
                   "temporal_coverage": rec["release"]["temporal_coverage"],
                   "resources": sorted(r["name"] for r in rec["resources"])}
                  for part, rec in parts]
    release = _release_from_meta(
        {**newest["release"], "temporal_coverage": coverage}, provenance=newest["provenance"],
        resources=tuple(Resource(e["local_path"], e["name"], e["format"], e["description"],
                                 e["partition"]) for e in entries))
    core = package_dict(release, catalog_info)
    extras = {e["key"]: e["value"] for e in core["extras"]}
    for part, rec in parts:
        if part != NO_PARTITION:
            extras[f"privacy {part}"] = privacy_sentence(rec["release"]["privacy"])
    if notes:
        extras["withdrawn_partitions"] = json.dumps([n["partition"] for n in notes])
    package = {
        **core,
        "extras": [{"key": k, "value": v} for k, v in sorted(extras.items())],
        "resources": resources,
        "opencity": {
            "privacy": release.privacy,
            "fields": [asdict(f) for f in release.fields],
            "temporal_coverage": coverage,
            "spatial_coverage": release.spatial_coverage,
            "accrual_periodicity": release.accrual_periodicity,
            "provenance": release.provenance,
            "primary_key": list(release.primary_key),
            "tags": list(release.tags),
            "license_id": release.license_id,
            "newest_partition": None if newest_part == NO_PARTITION else newest_part,
            "partitions": partitions,
            **({"withdrawn": notes} if notes else {}),
        },
    }
    descriptor = datapackage(release, entries)
    descriptor["partitions"] = partitions
    if notes:
        descriptor["withdrawn"] = notes
    return package, descriptor


def _release_from_meta(meta: dict, provenance: dict, resources: tuple[Resource, ...]
                       ) -> DatasetRelease:
    cov = meta.get("temporal_coverage")
    return DatasetRelease(
        name=meta["name"], title=meta["title"], description=meta.get("description", ""),
        resources=resources, fields=tuple(Field(**f) for f in meta.get("fields", [])),
        privacy=meta.get("privacy", {}), tags=tuple(meta.get("tags", [])),
        temporal_coverage=tuple(cov) if cov else None,
        spatial_coverage=meta.get("spatial_coverage", ""),
        accrual_periodicity=meta.get("accrual_periodicity", "R/P1W"),
        license_id=meta.get("license_id", "CC-BY-4.0"), provenance=provenance,
        primary_key=tuple(meta.get("primary_key", [])),
    )


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
        if not pkg.get("resources"):  # every partition withdrawn
            continue
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
            license_id=meta.get("license_id", pkg.get("license_id", "CC-BY-4.0")),
            provenance=meta.get("provenance", {}),
            primary_key=tuple(meta.get("primary_key", [])),
        )
