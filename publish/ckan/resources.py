"""Resource sync: every file of a release is exactly one CKAN resource, found by its key.

A resource's identity is its stable key (:func:`publish.metadata.resource_key`:
``<dataset>/<partition>/<name>``), stored on the resource as ``opencity_key`` (resources
written before the key existed are recognised by ``opencity_resource`` + ``partition``).

* Before creating a resource it is looked up by key; a ``resource_create`` whose response was
  lost is recovered by re-reading the package and finding the key (never created twice).
* Duplicates (two resources with one key: a lost response on an older version, two
  publishers at once) are deleted, keeping the oldest (``created``, then ``id``): every
  publisher picks the same one, so two concurrent reconciliations never delete each other's
  keeper. The keeper is then repaired like any other resource.
* ``hash`` (hex SHA-256, with ``hash_algorithm``) is written only after the stored file was
  downloaded back and matched, so an empty or wrong hash means "upload again".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opencity.errors import PublishError
from publish.ckan.client import CkanClient
from publish.metadata import SHA256_ALGORITHM, resource_key_of

log = logging.getLogger("publish.ckan")

DATAPACKAGE_NAME = "datapackage"
TABLE_NAME = "datastore-table"
_MAX_ROUNDS = 4


def key_of(dataset: str, res: dict[str, Any]) -> str:
    """The stable key of a portal resource, or '' for a resource OpenCity did not write."""
    if res.get("opencity_key"):
        return str(res["opencity_key"])
    if res.get("opencity_resource"):
        return resource_key_of(dataset, res["opencity_resource"], res.get("partition"))
    return ""


def hex_hash(res: dict[str, Any] | None) -> str:
    """The resource's SHA-256 as hex ('' when unset); old ``sha256:<hex>`` values accepted."""
    return str((res or {}).get("hash") or "").removeprefix("sha256:")


def _age(res: dict[str, Any]) -> tuple[str, str]:
    return str(res.get("created") or ""), str(res.get("id") or "")


class ResourceSync:
    """The resources of one dataset on the portal, kept in step with a release."""

    def __init__(self, client: CkanClient, dataset: str, package: dict[str, Any],
                 verify_uploads: bool = True,
                 emit: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.client = client
        self.dataset = dataset
        self.package = package
        self.verify_uploads = verify_uploads
        self.emit = emit or (lambda event, detail: None)
        self.deleted: list[str] = []

    # ------------------------------------------------------------------ reading
    def refresh(self) -> dict[str, Any]:
        """Re-read the package (after a lost response, before the final check)."""
        self.package = self.client.call("package_show", f"dataset {self.dataset!r}",
                                        id=self.package["id"])
        return self.package

    def groups(self) -> dict[str, list[dict[str, Any]]]:
        """Our resources by key, oldest first."""
        out: dict[str, list[dict[str, Any]]] = {}
        for res in self.package.get("resources", []):
            key = key_of(self.dataset, res)
            if key:
                out.setdefault(key, []).append(res)
        for group in out.values():
            group.sort(key=_age)
        return out

    def find(self, key: str) -> dict[str, Any] | None:
        """The resource of ``key`` (the oldest, when duplicated) in the last package read."""
        group = self.groups().get(key)
        return group[0] if group else None

    def refind(self, key: str) -> dict[str, Any] | None:
        """Re-read the package, remove duplicates of ``key``, return its resource."""
        self.refresh()
        self.dedupe({key})
        return self.find(key)

    # ------------------------------------------------------------------ repairing
    def dedupe(self, keys: set[str] | None = None) -> int:
        """Delete every resource but the oldest of each key (all keys when None)."""
        import ckanapi

        removed = 0
        for key, group in self.groups().items():
            if (keys is not None and key not in keys) or len(group) < 2:
                continue
            for extra in group[1:]:
                what = f"duplicate resource {extra.get('name')!r} of dataset {self.dataset!r}"
                try:
                    self.client.call("resource_delete", what, id=extra["id"])
                except ckanapi.NotFound:
                    pass  # another publisher removed it first
                log.warning("removed %s (key %s, id %s)", what, key, extra["id"])
                self.deleted.append(str(extra.get("name")))
                removed += 1
        if removed:
            self.refresh()
        return removed

    # ------------------------------------------------------------------ writing
    def sync_file(self, key: str, path: Path, digest: str, fields: dict[str, Any],
                  label: str, *, force: bool = False) -> tuple[dict[str, Any], bool]:
        """Make ``key``'s resource hold ``path`` (hex SHA-256 ``digest``) and ``fields``.

        Returns:
            (the resource, True when a file was uploaded, False when it was unchanged).

        Raises:
            PublishError: the upload could not be verified (transient), or CKAN refused it.
        """
        import ckanapi

        what = f"resource {label!r} of dataset {self.dataset!r}"
        fields = {k: v for k, v in fields.items() if k not in ("hash", "url")}
        fields.update(opencity_key=key, hash_algorithm=SHA256_ALGORITHM)
        for _ in range(_MAX_ROUNDS):
            existing = self.find(key)
            try:
                if existing is not None and hex_hash(existing) == digest and not force:
                    if _differs(existing, dict(fields, hash=digest)):
                        existing = self.client.call("resource_patch", what, id=existing["id"],
                                                    **dict(fields, hash=digest))
                        self._replace(existing)
                    return existing, False
                res = self._upload(existing, path, fields, what, key)
                if self.verify_uploads:
                    got = self.client.download_sha256(res.get("url", ""), what,
                                                      authenticated=True)
                    if got != digest:
                        # a half-written or stale file: upload again over the same resource
                        log.warning("%s: stored file differs from %s; uploading again",
                                    what, path.name)
                        res = self._upload(res, path, fields, what, key)
                        got = self.client.download_sha256(res.get("url", ""), what,
                                                          authenticated=True)
                        if got != digest:
                            raise PublishError(f"{what}: the file CKAN stored differs from "
                                               f"{path.name} (SHA-256 mismatch); rerun to "
                                               "upload it again", transient=True)
                res = self.client.call("resource_patch", what, id=res["id"], hash=digest,
                                       hash_algorithm=SHA256_ALGORITHM)
                self._replace(res)
                log.info("uploaded %s (%d bytes)", what, path.stat().st_size)
                return res, True
            except ckanapi.NotFound:
                # deleted under us (another publisher's reconciliation): look again
                log.warning("%s vanished during the upload; re-reading the dataset", what)
                self.refind(key)
            force = False
        raise PublishError(f"{what}: the resource kept disappearing during the upload "
                           f"({_MAX_ROUNDS} tries); another publisher may be working on "
                           "this dataset; rerun later", transient=True)

    def _upload(self, existing: dict[str, Any] | None, path: Path, fields: dict[str, Any],
                what: str, key: str) -> dict[str, Any]:
        files = {"upload": path}
        if existing is not None:
            return self.client.call("resource_patch", what, files=files, id=existing["id"],
                                    hash="", **fields)
        res = self.client.call("resource_create", what, files=files,
                               recover=lambda: self.refind(key),
                               package_id=self.package["id"], hash="", **fields)
        self.package.setdefault("resources", []).append(res)
        return res

    def _replace(self, res: dict[str, Any]) -> None:
        resources = self.package.setdefault("resources", [])
        for i, old in enumerate(resources):
            if old.get("id") == res.get("id"):
                resources[i] = res
                return
        resources.append(res)


def _differs(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """True when a resource field we own differs from what we would write."""
    for key, value in wanted.items():
        have = existing.get(key)
        if key == "size":
            continue  # CKAN sets the size of an upload itself
        if ("" if have is None else str(have)) != ("" if value is None else str(value)):
            return True
    return False
