"""CkanPublisher: a DatasetRelease -> one CKAN dataset, idempotent under lost responses.

Order of one publish (see the package docstring for the contract):

1. check the token (``organization_list_for_user``): a wrong token fails even when nothing
   needs uploading; take the dataset's publish lock (when a state database is given);
2. find the product dataset by name (``package_show``), else create it private (a lost
   ``package_create`` response is recovered by reading it back);
3. per partition: find or create its partition dataset (private); sync every file by key,
   then its datapackage descriptor; re-read, delete duplicates, repair what is missing or
   has a wrong/empty hash (rounds); download every file and compare SHA-256; then make it
   public with its metadata in one ``package_patch``;
4. the DataStore table of the product (KPI tables), rows upserted by primary key;
5. derive the product's metadata (partition list, widened coverage) and make it public
   (only a dataset this publisher created and staged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError, PublishError
from publish.base import (
    DatasetRelease,
    PublishResult,
    Resource,
    sha256_file,
)
from publish.ckan.client import (
    AIRFLOW_CONN_ID,
    TOKEN_ENV,
    CkanClient,
    RetryPolicy,
    Secret,
    resolve_timeout,
    resolve_token,
    resolve_url,
)
from publish.ckan.datastore import LOADED_PREFIX, sync_datastore, table_key
from publish.ckan.lock import DEFAULT_LOCK_TIMEOUT_S, PublishLock
from publish.ckan.partitions import (
    PARTITION_KEY,
    PARTITIONS_KEY,
    PRODUCT_KEY,
    listed_partitions,
    partition_dataset_name,
    partitions_extra,
)
from publish.ckan.resources import DATAPACKAGE_NAME, TABLE_NAME, ResourceSync, hex_hash
from publish.frictionless import datapackage as frictionless_datapackage
from publish.metadata import (
    SHA256_ALGORITHM,
    CatalogInfo,
    format_iris,
    license_ids,
    package_dict,
    portal_resource_name,
    resource_dict,
    resource_key,
    resource_key_of,
)

log = logging.getLogger("publish.ckan")

STATE_KEY = "opencity_release_state"
STATE_STAGING = "staging"
STATE_PUBLISHED = "published"
_REPAIR_ROUNDS = 3

#: Progress callback: (event, detail) with event in "uploaded", "unchanged", "upserted",
#: "published", "repaired"; used by the CLI for progress output.
ProgressHook = Callable[[str, dict[str, Any]], None]


@dataclass
class _State:
    created: bool = False
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


class CkanPublisher:
    """Publishes DatasetReleases to one CKAN organization. See the package docstring."""

    target = "ckan"

    def __init__(
        self,
        url: str | None,
        token: str | Secret | None = None,
        *,
        organization: str = "opencity",
        organization_title: str | None = None,
        retries: int = 4,
        backoff_s: float = 1.0,
        timeout_s: float | None = None,
        verify_uploads: bool = True,
        verify_public_downloads: bool = True,
        catalog: CatalogInfo | None = None,
        progress: ProgressHook | None = None,
        state_url: str | None = None,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> None:
        """Args:
            url: portal base URL, e.g. ``http://127.0.0.1:5055``; None: $OPENCITY_CKAN_URL
                or the Airflow connection ``opencity_ckan``.
            token: API token (a sysadmin's or an editor of ``organization``), a string or a
                Secret; the caller resolves it (``opencity.secrets.resolve_ckan_token``:
                $OPENCITY_CKAN_TOKEN or the Airflow connection ``opencity_ckan``).
            organization: name of the owning organization; created when missing.
            retries: extra tries of a call after a transient failure (backoff 1, 2, 4... s).
            timeout_s: seconds to wait for one HTTP response; None: $OPENCITY_CKAN_TIMEOUT,
                else 30.
            verify_uploads: download every uploaded file back and compare its SHA-256
                before recording its hash.
            verify_public_downloads: at the end, download every resource of the release
                through its public URL and compare its SHA-256.
            catalog: publisher and contact point of the metadata (default CatalogInfo()).
            progress: optional callback ``(event, detail)`` for progress reporting.
            state_url: the state database (``Settings.state_url``) whose lock serialises
                publishers of one dataset (:mod:`publish.ckan.lock`); None: no lock.
            lock_timeout_s: seconds to wait for another publisher of the same dataset.
        """
        if not re.match(r"^[a-z0-9][a-z0-9_-]{1,99}$", organization or ""):
            raise ConfigError(f"CKAN organization name {organization!r} is invalid: use 2-100 "
                              "lowercase letters, digits, '-' or '_'")
        self.url = resolve_url(url)
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"CKAN URL {self.url!r} must start with http:// or https://")
        self.organization = organization
        self.organization_title = organization_title or organization
        self.policy = RetryPolicy(retries=retries, backoff_s=backoff_s)
        self.timeout_s = resolve_timeout(timeout_s)
        self.verify_uploads = verify_uploads
        self.verify_public_downloads = verify_public_downloads
        self.catalog = catalog or CatalogInfo()
        self.progress = progress
        self._client = CkanClient(self.url, resolve_token(token), self.policy, self.timeout_s,
                                  organization)
        self._org_id: str | None = None
        self.lock = PublishLock(state_url, lock_timeout_s) if state_url else None

    def __repr__(self) -> str:  # never shows the token
        return f"CkanPublisher(url={self.url!r}, organization={self.organization!r})"

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> CkanPublisher:
        """Build from an :class:`opencity.settings.Settings` (ckan_url, ckan_organization,
        ckan_timeout, publisher and contact fields)."""
        kwargs.setdefault("timeout_s", getattr(settings, "ckan_timeout", None))
        kwargs.setdefault("catalog", CatalogInfo.from_settings(settings))
        kwargs.setdefault("state_url", getattr(settings, "state_url", None) or None)
        return cls(settings.ckan_url or None, organization=settings.ckan_organization, **kwargs)

    # ------------------------------------------------------------------ organization
    def _organization_id(self) -> str:
        """The organization's id, after checking that the token may write to it."""
        if self._org_id is not None:
            return self._org_id
        c = self._client
        what = f"organization {self.organization!r}"
        mine = c.call("organization_list_for_user", what, permission="create_dataset",
                      include_dataset_count=False)
        for org in mine:
            if org.get("name") == self.organization:
                self._org_id = org["id"]
                return self._org_id
        org = c.show("organization_show", what, id=self.organization, include_datasets=False)
        if org is not None:
            raise PublishError(
                f"CKAN at {self.url}: the API token cannot create datasets in {what} (not a "
                f"valid token, or not a sysadmin or editor there); check {TOKEN_ENV} or the "
                f"Airflow connection {AIRFLOW_CONN_ID!r}")
        log.info("creating CKAN %s", what)
        try:
            org = c.call("organization_create", what, name=self.organization,
                         title=self.organization_title,
                         recover=lambda: c.show("organization_show", what,
                                                id=self.organization, include_datasets=False))
        except PublishError as err:
            # another publisher created it between our read and our create
            if "already exists" not in str(err):
                raise
            org = c.show("organization_show", what, id=self.organization,
                          include_datasets=False)
            if org is None:
                raise
        self._org_id = org["id"]
        return self._org_id

    # ------------------------------------------------------------------ publish
    def publish(self, release: DatasetRelease) -> PublishResult:
        """Create or update the product dataset of ``release`` and one partition dataset per
        partition (see :mod:`publish.ckan.partitions`), under the publish lock."""
        org_id = self._organization_id()
        if self.lock is None:
            return self._publish(release, org_id)
        with self.lock.hold(self.url, release.name):
            return self._publish(release, org_id)

    def _publish(self, release: DatasetRelease, org_id: str) -> PublishResult:
        c = self._client
        state = _State()
        product = replace(release, privacy=_without_history(release.privacy))
        pkg = self._ensure(release.name, org_id, lambda old: self._product_metadata(
            product, old, None), state)
        parts: dict[str, list[Resource]] = {}
        loose: list[Resource] = []
        for res in release.resources:
            (parts.setdefault(res.partition, []) if res.partition else loose).append(res)
        # a product a steward hid after its publication: its new partitions stay hidden too
        hidden = bool(pkg.get("private")) and _state_of(pkg) == STATE_PUBLISHED
        for partition, resources in parts.items():
            self._publish_partition(release, partition, tuple(resources), org_id, state,
                                    hidden=hidden)

        rsync = ResourceSync(c, release.name, pkg, self.verify_uploads, self._emit)
        rsync.dedupe()
        files = self._file_fields(replace(product, resources=tuple(loose))) if loose else {}
        for key, (path, digest, fields, label) in files.items():
            self._sync_one(rsync, key, path, digest, fields, label, state)
        if release.primary_key:
            loaded = sync_datastore(release, rsync)
            for label in loaded:
                state.uploaded.append(label)
                self._emit("upserted", {"dataset": release.name, "partition": label})
            if not loaded:
                state.unchanged.append(TABLE_NAME)
        if files or release.primary_key:
            self._reconcile(product, rsync, files, state, datapackage=False)
        self._settle_metadata(product, rsync, set(parts))
        if self.verify_public_downloads and files:
            self._check_downloads(product, rsync.refresh(), files)
        return PublishResult(
            name=release.name, target=self.target, url=f"{self.url}/dataset/{release.name}",
            created=state.created, uploaded=tuple(state.uploaded),
            unchanged=tuple(state.unchanged))

    def _ensure(self, name: str, org_id: str, metadata: Callable[[dict | None], dict],
                state: _State | None = None) -> dict[str, Any]:
        """The dataset ``name``: found, or created private (a lost ``package_create``
        response is recovered by reading it back); a deleted one is restored private."""
        c = self._client
        what = f"dataset {name!r}"
        pkg = c.show("package_show", what, id=name)
        if pkg is None:
            log.info("creating private %s on %s", what, self.url)
            try:
                pkg = c.call("package_create", what, name=name, owner_org=org_id,
                             private=True,
                             recover=lambda: c.show("package_show", what, id=name),
                             **metadata(None))
                if state is not None:
                    state.created = True
            except PublishError as err:
                # another publisher (without the lock) created it between read and create
                pkg = c.show("package_show", what, id=name)
                if pkg is None or "already in use" not in str(err):
                    raise
        if pkg.get("owner_org") not in (None, org_id):
            raise PublishError(f"{what} already exists on {self.url} in another organization; "
                               f"refusing to change it (expected organization "
                               f"{self.organization!r})")
        if pkg.get("state") == "deleted":  # withdrawn earlier: restore it, hidden
            pkg = c.call("package_patch", what, id=pkg["id"], state="active", private=True)
        return pkg

    def _publish_partition(self, release: DatasetRelease, partition: str,
                           resources: tuple[Resource, ...], org_id: str,
                           state: _State, hidden: bool = False) -> None:
        """One partition dataset: staged private, every file uploaded and verified, then
        made public by one ``package_patch`` (all of the partition or nothing). One a
        steward made private after publication (or whose product is ``hidden``) stays
        private."""
        c = self._client
        name = partition_dataset_name(release.name, partition)
        what = f"dataset {name!r}"
        child = _partition_release(release, name, partition, resources)
        pkg = self._ensure(name, org_id, lambda old: self._partition_metadata(
            child, release.name, partition, old))
        rsync = ResourceSync(c, name, pkg, self.verify_uploads, self._emit)
        rsync.dedupe()
        files = self._file_fields(child)
        if not pkg.get("private") and any(
                hex_hash(rsync.find(key)) != digest
                for key, (_, digest, _, _) in files.items()):
            # a public partition whose files change: hide it while they do
            log.info("%s changes: private until all of its files are replaced", what)
            wanted = self._partition_metadata(child, release.name, partition, pkg)
            extras = {e["key"]: e["value"] for e in wanted["extras"]}
            extras[STATE_KEY] = STATE_STAGING
            wanted["extras"] = [{"key": k, "value": v} for k, v in sorted(extras.items())]
            pkg = c.call("package_patch", what, id=pkg["id"], private=True, **wanted)
            rsync.package = pkg
        fresh = set()  # files uploaded and downloaded back by this publish
        for key, (path, digest, fields, label) in files.items():
            if self._sync_one(rsync, key, path, digest, fields, label, state) \
                    and self.verify_uploads:
                fresh.add(key)
        self._sync_datapackage(child, rsync, state)
        self._reconcile(child, rsync, files, state, datastore=False)  # ends with a re-read
        checked = False
        pkg = rsync.package
        for _ in range(_REPAIR_ROUNDS):
            wanted = self._partition_metadata(child, release.name, partition, pkg)
            if pkg.get("private") and _state_of(pkg) == STATE_STAGING and not hidden:
                if self.verify_public_downloads:  # every file, before anyone can see one
                    self._check_downloads(child, pkg, {k: v for k, v in files.items()
                                                       if k not in fresh})
                    checked = True
                extras = {e["key"]: e["value"] for e in wanted["extras"]}
                extras[STATE_KEY] = STATE_PUBLISHED
                wanted["extras"] = [{"key": k, "value": v} for k, v in sorted(extras.items())]
                pkg = c.call("package_patch", what, id=pkg["id"], private=False, **wanted)
                log.info("%s is now public at %s/dataset/%s", what, self.url, name)
                self._emit("published", {"dataset": name})
            elif _metadata_differs(pkg, wanted):
                pkg = c.call("package_patch", what, id=pkg["id"], **wanted)
            else:
                break
            rsync.package = pkg
        if self.verify_public_downloads and not checked:
            self._check_downloads(child, pkg, files)

    def withdraw_partition(self, dataset: str, partition: str, note: dict[str, Any]
                           ) -> list[str]:
        """Delete the partition dataset of ``dataset``/``partition`` (and any resource of
        that partition left in the product dataset by the single-package layout), and list
        the partition under the product's ``withdrawn_partitions`` extra; returns the
        resource names removed. Idempotent: a lost response is recovered by re-reading."""
        self._organization_id()  # checks the token may write
        if self.lock is None:
            return self._withdraw(dataset, partition, note)
        with self.lock.hold(self.url, dataset):
            return self._withdraw(dataset, partition, note)

    def _withdraw(self, dataset: str, partition: str, note: dict[str, Any]) -> list[str]:
        import ckanapi

        c = self._client
        what = f"dataset {dataset!r}"
        pkg = c.show("package_show", what, id=dataset)
        if pkg is None:
            raise ConfigError(f"{what} is not on the portal {self.url}")
        gone = [r for r in pkg.get("resources", []) if r.get("partition") == partition]
        child_name = partition_dataset_name(dataset, partition)
        child = c.show("package_show", f"dataset {child_name!r}", id=child_name)
        if child is not None and child.get("state") != "deleted":
            gone += child.get("resources", [])
        else:
            child = None
        if not gone:
            raise ConfigError(f"{dataset} has no resources of partition {partition!r} on CKAN")
        # The DataStore table holds every partition's rows: it goes too, and the next publish
        # of the dataset (from the local catalog) rebuilds it from the remaining partitions.
        table = [r for r in pkg.get("resources", [])
                 if r.get("opencity_resource") == TABLE_NAME
                 and any(k == f"{LOADED_PREFIX}{partition}" for k in r)]
        if child is not None:
            try:
                c.call("package_delete", f"dataset {child_name!r}", id=child["id"])
            except ckanapi.NotFound:
                pass  # already gone
        for r in [*(r for r in gone if r.get("package_id") == pkg["id"]), *table]:
            rid = r["id"]

            def _deleted(rid: str = rid) -> Any:
                try:
                    c.call("resource_show", "resource", id=rid)
                except ckanapi.NotFound:
                    return True
                return None

            try:
                c.call("resource_delete", f"resource of {what}", id=rid, recover=_deleted)
            except ckanapi.NotFound:
                pass  # already gone
        extras = {e["key"]: e["value"] for e in pkg.get("extras", [])}
        previous = json.loads(extras.get("withdrawn_partitions", "[]"))
        extras["withdrawn_partitions"] = json.dumps(sorted({*previous, partition}))
        extras[f"withdrawn {partition}"] = str(note.get("reason", ""))
        if PARTITIONS_KEY in extras:
            extras[PARTITIONS_KEY] = partitions_extra(
                set(listed_partitions(pkg)) - {partition})
        c.call("package_patch", what, id=pkg["id"],
               extras=[{"key": k, "value": v} for k, v in sorted(extras.items())])
        return sorted(str(r.get("opencity_resource") or r.get("name")) for r in gone)

    def published_records(self, name: str) -> dict[str, dict | None]:
        """Partition -> None for every partition the product lists or withdrew on the portal
        (the witness a state database must hold before publishing into this portal)."""
        import json

        pkg = self._client.show("package_show", f"dataset {name!r}", id=name)
        if pkg is None or pkg.get("state") == "deleted":
            return {}
        extras = {e.get("key"): e.get("value") for e in pkg.get("extras", [])}
        try:
            withdrawn = json.loads(extras.get("withdrawn_partitions") or "[]")
        except ValueError:
            withdrawn = []
        return dict.fromkeys([*listed_partitions(pkg), *map(str, withdrawn)])

    def publish_all(self, releases: Iterable[DatasetRelease]) -> list[PublishResult]:
        """Publish several releases in order; stops at the first error."""
        return [self.publish(r) for r in releases]

    # ------------------------------------------------------------------ metadata
    def _metadata(self, release: DatasetRelease, pkg: dict | None) -> dict[str, Any]:
        wanted = package_dict(release, self.catalog, previous=pkg)
        wanted.pop("name")
        extras = {e["key"]: e["value"] for e in wanted["extras"]}
        extras.setdefault(STATE_KEY, STATE_STAGING)
        wanted["extras"] = [{"key": k, "value": v} for k, v in sorted(extras.items())]
        return wanted

    def _product_metadata(self, product: DatasetRelease, pkg: dict | None,
                          partitions: set[str] | None) -> dict[str, Any]:
        """The product dataset's metadata: no per-partition privacy sentences (they live on
        the partition datasets), the partition list extended by ``partitions``."""
        wanted = self._metadata(product, pkg)
        extras = {e["key"]: e["value"] for e in wanted["extras"]
                  if not e["key"].startswith("privacy ")}
        if partitions or PARTITIONS_KEY in extras:
            extras[PARTITIONS_KEY] = partitions_extra(
                set(listed_partitions(pkg)) | set(partitions or ()))
        wanted["extras"] = [{"key": k, "value": v} for k, v in sorted(extras.items())]
        return wanted

    def _partition_metadata(self, child: DatasetRelease, product: str, partition: str,
                            pkg: dict | None) -> dict[str, Any]:
        """A partition dataset's metadata: the product's, for this partition only, with
        ``opencity_product`` and ``partition`` pointing back."""
        wanted = self._metadata(child, pkg)
        extras = {e["key"]: e["value"] for e in wanted["extras"]}
        extras[PRODUCT_KEY] = product
        extras[PARTITION_KEY] = partition
        wanted["extras"] = [{"key": k, "value": v} for k, v in sorted(extras.items())]
        return wanted

    # ------------------------------------------------------------------ resources
    def _file_fields(self, release: DatasetRelease) -> dict[str, tuple]:
        out = {}
        for res in release.resources:
            path = Path(res.path)
            digest = sha256_file(path)
            fields = resource_dict(release, res, digest, size=path.stat().st_size)
            out[resource_key(release.name, res)] = (path, digest, fields,
                                                    portal_resource_name(res))
        return out

    def _sync_one(self, rsync: ResourceSync, key: str, path: Path, digest: str,
                  fields: dict, label: str, state: _State, force: bool = False) -> bool:
        """Sync one file; True when it was uploaded (and, with verify_uploads, verified)."""
        _, uploaded = rsync.sync_file(key, path, digest, fields, label, force=force)
        if uploaded:
            state.uploaded.append(label)
            self._emit("uploaded", {"dataset": rsync.dataset, "resource": label,
                                    "bytes": path.stat().st_size})
        elif label not in state.unchanged and label not in state.uploaded:
            state.unchanged.append(label)
            self._emit("unchanged", {"dataset": rsync.dataset, "resource": label})
        return uploaded

    def _sync_datapackage(self, release: DatasetRelease, rsync: ResourceSync,
                          state: _State) -> None:
        """Upload datapackage.json: the data dictionary of every tabular resource."""
        ours = [group[0] for key, group in sorted(rsync.groups().items())
                if group[0].get("opencity_resource") not in (DATAPACKAGE_NAME, TABLE_NAME)]
        descriptor = ckan_datapackage(release, ours)
        text = json.dumps(descriptor, indent=2, sort_keys=True, default=str) + "\n"
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        fmt_iri, media_iri = format_iris("json")
        fields = {"name": "datapackage.json", "format": fmt_iri, "mimetype": media_iri,
                  "description": "Frictionless Data Package descriptor: the data dictionary "
                                 "(column names, types, units, descriptions) of every table in "
                                 "this dataset.",
                  "license": license_ids(release.license_id)[1],
                  "opencity_resource": DATAPACKAGE_NAME,
                  "partition": _common_partition(release)}
        with tempfile.TemporaryDirectory(prefix="opencity-ckan-") as tmp:
            path = Path(tmp) / "datapackage.json"
            path.write_text(text, encoding="utf-8")
            self._sync_one(rsync, resource_key_of(release.name, DATAPACKAGE_NAME), path,
                           digest, fields, "datapackage.json", state)

    def _reconcile(self, release: DatasetRelease, rsync: ResourceSync, files: dict,
                   state: _State, *, datapackage: bool = True, datastore: bool = True) -> None:
        """Re-read the dataset; delete duplicates; repair missing files and wrong hashes.

        A lost or late response, or another publisher, can leave a duplicate or remove a
        resource after we wrote it: repeat until one read shows everything in place.
        """
        problems: list[str] = []
        for _ in range(_REPAIR_ROUNDS):
            rsync.refresh()
            rsync.dedupe()
            problems = []
            for key, (path, digest, fields, label) in files.items():
                got = rsync.find(key)
                if got is None or hex_hash(got) != digest:
                    problems.append(f"{label}: {'missing' if got is None else 'hash differs'}")
                    self._sync_one(rsync, key, path, digest, fields, label, state)
                    self._emit("repaired", {"dataset": release.name, "resource": label})
            if datapackage and (problems or rsync.find(
                    resource_key_of(release.name, DATAPACKAGE_NAME)) is None):
                self._sync_datapackage(release, rsync, state)
            if release.primary_key and datastore:
                table = rsync.find(table_key(release.name))
                if table is None or not table.get("datastore_active"):
                    problems.append("DataStore table: missing")
                    sync_datastore(release, rsync)
            if not problems:
                return
            log.warning("dataset %r: repaired %s", release.name, "; ".join(problems))
        raise PublishError(f"dataset {release.name!r} is incomplete on {self.url} after "
                           f"publishing ({'; '.join(problems)}); it stays as it was "
                           "(private if new); rerun to repair", transient=True)

    def _settle_metadata(self, release: DatasetRelease, rsync: ResourceSync,
                         partitions: set[str] | None = None) -> None:
        """Derive the product dataset's metadata from what the portal holds now and patch
        until a re-read agrees: another publisher's patch from an older view is repaired,
        not kept. A dataset this publisher staged is made public in the same step (its
        partitions are public already). ``partitions``: those this publish added."""
        what = f"dataset {release.name!r}"
        pkg = rsync.package  # read at the start, or re-read by the resource sync since
        for _ in range(_REPAIR_ROUNDS):
            wanted = self._product_metadata(release, pkg, partitions)
            extras = {e["key"]: e["value"] for e in wanted["extras"]}
            change: dict[str, Any] = {}
            if pkg.get("private") and extras.get(STATE_KEY) == STATE_STAGING:
                extras[STATE_KEY] = STATE_PUBLISHED
                wanted["extras"] = [{"key": k, "value": v} for k, v in sorted(extras.items())]
                change["private"] = False
            if not change and not _metadata_differs(pkg, wanted):
                return
            pkg = rsync.package = self._client.call("package_patch", what, id=pkg["id"],
                                                    **wanted, **change)
            if change:
                log.info("%s is now public at %s/dataset/%s", what, self.url, release.name)
                self._emit("published", {"dataset": release.name})
        log.warning("%s: metadata still changing after %d rounds (another publisher?); the "
                    "next run derives it again", what, _REPAIR_ROUNDS)

    def _check_downloads(self, release: DatasetRelease, pkg: dict, files: dict) -> None:
        """Every resource of the release downloads through its public URL with its hash."""
        rsync = ResourceSync(self._client, release.name, pkg)
        anonymous = not pkg.get("private")
        for key, (_, digest, _, label) in files.items():
            res = rsync.find(key)
            if res is None:
                raise PublishError(f"dataset {release.name!r}: resource {label!r} vanished "
                                   "after publishing; rerun to repair", transient=True)
            what = f"resource {label!r} of dataset {release.name!r}"
            reason = "differs from the published file (SHA-256 mismatch)"
            try:
                got = self._client.download_sha256(res.get("url", ""), what,
                                                   authenticated=not anonymous)
            except PublishError as err:
                # a missing stored file is HTTP 500 in CKAN 2.12 (retried as transient first)
                got, reason = None, "cannot be downloaded: " + str(err).split(": ", 1)[-1]
            if got != digest:
                # record the failure so the next run uploads the file again
                self._client.call("resource_patch", what, id=res["id"], hash="")
                raise PublishError(f"{what}: the file at {res.get('url')} {reason}; its hash "
                                   "was cleared, rerun to upload it again", transient=True)

    def _emit(self, event: str, detail: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress(event, detail)


# ---------------------------------------------------------------------- helpers (pure)
def _state_of(pkg: dict) -> str:
    """The publisher's state extra of a package (staging / published), '' when unset."""
    return next((e["value"] for e in pkg.get("extras", []) if e["key"] == STATE_KEY), "")


def _common_partition(release: DatasetRelease) -> str:
    """The partition of every resource of ``release`` (a partition dataset's), else ''."""
    parts = {r.partition or "" for r in release.resources}
    return parts.pop() if len(parts) == 1 else ""


def _without_history(privacy: dict[str, Any]) -> dict[str, Any]:
    """The product's privacy block without the per-partition statements (``partitions``):
    they go on each partition dataset, so the product's metadata does not grow."""
    return {k: v for k, v in privacy.items() if k != "partitions"}


def _partition_release(release: DatasetRelease, name: str, partition: str,
                       resources: tuple[Resource, ...]) -> DatasetRelease:
    """The release of one partition dataset: its files, its own privacy statement, and the
    temporal coverage of the release when it is this partition's (one partition)."""
    privacy = _without_history(release.privacy)
    statement = (release.privacy.get("partitions") or {}).get(partition)
    if statement is not None:
        privacy["partitions"] = {partition: statement}
    single = {r.partition for r in release.resources} == {partition}
    return replace(release, name=name, title=f"{release.title}, {partition}",
                   resources=resources, privacy=privacy,
                   temporal_coverage=release.temporal_coverage if single else None)


def _metadata_differs(pkg: dict, wanted: dict[str, Any]) -> bool:
    if any(pkg.get(k) != wanted[k] for k in ("title", "notes", "license_id")):
        return True
    if sorted(t["name"] for t in pkg.get("tags", [])) != \
            sorted(t["name"] for t in wanted["tags"]):
        return True
    have = {e["key"]: e["value"] for e in pkg.get("extras", [])}
    return have != {e["key"]: e["value"] for e in wanted["extras"]}


def ckan_datapackage(release: DatasetRelease, resources: list[dict]) -> dict[str, Any]:
    """Frictionless Data Package for the dataset as published on CKAN: the one builder
    (:func:`publish.frictionless.datapackage`) with the resources' public URLs as paths and
    the release's local files to read each table's own schema."""
    local = {(r.name, r.partition or ""): r.path for r in release.resources}
    entries = []
    for r in resources:
        fmt = str(r.get("format") or "")
        name = str(r.get("opencity_resource") or r["name"])
        partition = r.get("partition") or ""
        entry: dict[str, Any] = {
            "name": name,
            "partition": partition or None,
            "path": r.get("url", ""),
            "format": (r.get("opencity_format") or fmt.rsplit("/", 1)[-1]).lower(),
            "hash": hex_hash(r) or "",
            "description": r.get("description", ""),
        }
        if (name, partition) in local:  # the file itself, not what the portal says of it
            entry["local_path"] = local[(name, partition)]
            entry["size"] = Path(entry["local_path"]).stat().st_size
        entries.append(entry)
    descriptor = frictionless_datapackage(release, entries)
    # The run's provenance (run id, ...) lives in the package's extras: kept out of the file so
    # a byte-identical rerun uploads nothing.
    descriptor.pop("provenance", None)
    return descriptor


__all__ = ["SHA256_ALGORITHM", "CkanPublisher", "ProgressHook", "ckan_datapackage"]
