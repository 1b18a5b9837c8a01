"""Publish releases to a CKAN portal through its action API (ckanapi), idempotently.

Contract for one :class:`~publish.base.DatasetRelease`:

* The dataset is found by its deterministic name with ``package_show`` (never search).
  A new dataset is created **private**, in the configured organization (created if missing),
  and made public only after every resource is uploaded and verified.
* Each resource is identified on the portal by ``(opencity_resource, partition)`` (two resource
  fields). Rerunning a partition patches the same resource; a file whose SHA-256 equals the
  resource's ``hash`` field is not uploaded again. Resources of other partitions are never
  touched or deleted (history is kept).
* ``hash`` is written only after the upload was downloaded back and its SHA-256 checked, so a
  crash between CKAN's database write and its file write is repaired by the next run.
* Metadata: title, notes, licence, tags, DCAT-mapped extras (``temporal_start``/``_end``,
  ``frequency``, ``spatial_text``, ``provenance``) and OpenCity extras: the privacy parameters
  flattened under their own keys (``privacy_method``, ``k_anonymity_k``, ``epsilon``, ...),
  ``provenance_*`` and ``opencity_release_state``. A Frictionless ``datapackage.json`` (the
  per-column data dictionary) is a resource of every dataset.
* Releases with a ``primary_key`` (KPI tables) also go to the DataStore: one table resource per
  dataset, created with the primary key and the data dictionary as field info, and every
  Parquet partition upserted into it (skipped when that partition's hash was loaded before).
* Connection refused, timeouts and HTTP 5xx are retried with exponential backoff; after the
  last try a transient :class:`PublishError` is raised. CKAN validation errors are reported
  field by field. The API token is never logged or put in an error message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError, PublishError
from opencity.secrets import Secret, resolve_secret
from publish.base import (
    DatasetRelease,
    Field,
    PublishResult,
    Resource,
    datapackage_descriptor,
    sha256_file,
)

log = logging.getLogger(__name__)

TOKEN_ENV = "OPENCITY_CKAN_TOKEN"
URL_ENV = "OPENCITY_CKAN_URL"
AIRFLOW_CONN_ID = "opencity_ckan"
DATAPACKAGE_KEY = "datapackage"
TABLE_KEY = "datastore-table"
STATE_STAGING = "staging"
STATE_PUBLISHED = "published"
_DATASTORE_TYPES = {"string": "text", "integer": "int8", "number": "numeric",
                    "boolean": "bool", "date": "date", "datetime": "timestamp"}
_STATUS_RE = re.compile(r"^\[\s*'[^']*',\s*(\d{3}),")
UPSERT_BATCH_ROWS = 5000

#: Progress callback: (event, detail) with event in "uploaded", "unchanged", "upserted",
#: "published"; used by the CLI for progress output.
ProgressHook = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one API call: ``retries`` extra tries, sleeping ``backoff_s * 2**i`` seconds
    (capped at ``max_backoff_s``) before try i+1."""

    retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) \
                or not 0 <= self.retries <= 20:
            raise ConfigError(f"retries must be an integer from 0 to 20, got {self.retries!r}")
        for name in ("backoff_s", "max_backoff_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) \
                    or not 0 <= value <= 600:
                raise ConfigError(f"{name} must be a number of seconds from 0 to 600, "
                                  f"got {value!r}")

    def delay(self, attempt: int) -> float:
        return min(self.backoff_s * 2**attempt, self.max_backoff_s)


def resolve_token(token: str | Secret | None = None) -> Secret:
    """The CKAN API token: explicit value, then $OPENCITY_CKAN_TOKEN, then the password of the
    Airflow connection ``opencity_ckan``."""
    if isinstance(token, Secret):
        return token
    return resolve_secret("CKAN API token", explicit=token, env_var=TOKEN_ENV,
                          airflow_conn_id=AIRFLOW_CONN_ID)


def resolve_url(url: str | None = None) -> str:
    """The CKAN base URL: explicit value, then $OPENCITY_CKAN_URL, then the host of the Airflow
    connection ``opencity_ckan`` (``http[s]://host[:port]``)."""
    if url:
        return url.rstrip("/")
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV].rstrip("/")
    looked = ["--ckan-url", f"environment variable {URL_ENV}"]
    conn_env = f"AIRFLOW_CONN_{AIRFLOW_CONN_ID.upper()}"
    if os.environ.get("AIRFLOW_HOME") or os.environ.get(conn_env):
        try:
            from airflow.sdk import Connection

            conn = Connection.get(AIRFLOW_CONN_ID)
            if conn.host:
                host = conn.host if "://" in conn.host else \
                    f"{conn.schema or 'https'}://{conn.host}"
                return (f"{host}:{conn.port}" if conn.port else host).rstrip("/")
        except Exception as err:  # noqa: BLE001 - any failure means "not configured here"
            log.debug("no Airflow connection %s: %s", AIRFLOW_CONN_ID, type(err).__name__)
    looked.append(f"Airflow connection {AIRFLOW_CONN_ID!r} (host)")
    raise ConfigError("no CKAN URL found; looked in: " + ", ".join(looked))


def format_validation_error(error_dict: dict[str, Any]) -> str:
    """CKAN's ValidationError.error_dict as 'field: message; ...' lines (nested fields dotted)."""
    lines: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k != "__type":
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                if v:
                    walk(f"{prefix}[{i}]", v)
        elif isinstance(value, list):
            lines.append(f"{prefix}: {' '.join(str(v) for v in value)}")
        else:
            lines.append(f"{prefix}: {value}")

    walk("", error_dict)
    return "; ".join(lines) or "no details given"


def flatten_privacy(privacy: dict[str, Any]) -> dict[str, str]:
    """Privacy parameters as string extras; nested dicts become ``outer_inner`` keys."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}_{k}" if prefix else str(k), v)
        else:
            out[prefix] = _extra_value(value)

    walk("", privacy)
    return out


def _extra_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, sort_keys=True, default=str)


def _resource_key(res: dict[str, Any]) -> tuple[str, str]:
    return res.get("opencity_resource") or res.get("name", ""), res.get("partition") or ""


def _portal_resource_name(res: Resource) -> str:
    return f"{res.name} {res.partition}" if res.partition else res.name


@dataclass
class _State:
    """What one publish() call did so far (for the result and the final check)."""

    created: bool = False
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


class CkanPublisher:
    """Publishes DatasetReleases to one CKAN organization. See the module docstring."""

    target = "ckan"

    def __init__(
        self,
        url: str,
        token: str | Secret | None = None,
        *,
        organization: str = "opencity",
        organization_title: str | None = None,
        retries: int = 4,
        backoff_s: float = 1.0,
        timeout_s: float = 120.0,
        verify_uploads: bool = True,
        progress: ProgressHook | None = None,
    ) -> None:
        """Args:
            url: portal base URL, e.g. ``http://127.0.0.1:5055``.
            token: API token (a sysadmin's or an editor of ``organization``); None resolves it
                from $OPENCITY_CKAN_TOKEN or the Airflow connection ``opencity_ckan``.
            organization: name of the owning organization; created when missing.
            retries: extra tries of a call after a transient failure (backoff 1, 2, 4... s).
            timeout_s: seconds to wait for one HTTP response.
            verify_uploads: download every uploaded file back and compare its SHA-256.
            progress: optional callback ``(event, detail)`` for progress reporting.
        """
        import ckanapi

        if not re.match(r"^[a-z0-9][a-z0-9_-]{1,99}$", organization or ""):
            raise ConfigError(f"CKAN organization name {organization!r} is invalid: use 2-100 "
                              "lowercase letters, digits, '-' or '_'")
        self.url = resolve_url(url)
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"CKAN URL {self.url!r} must start with http:// or https://")
        self._token = resolve_token(token)
        self.organization = organization
        self.organization_title = organization_title or organization
        self.policy = RetryPolicy(retries=retries, backoff_s=backoff_s)
        self.timeout_s = float(timeout_s)
        self.verify_uploads = verify_uploads
        self.progress = progress
        self._ckan = ckanapi.RemoteCKAN(self.url, apikey=self._token.reveal(),
                                        user_agent="opencity-publisher")
        self._org_id: str | None = None

    def __repr__(self) -> str:  # never shows the token
        return f"CkanPublisher(url={self.url!r}, organization={self.organization!r})"

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> CkanPublisher:
        """Build from an :class:`opencity.settings.Settings` (ckan_url, ckan_organization)."""
        return cls(settings.ckan_url or None, organization=settings.ckan_organization, **kwargs)

    # ------------------------------------------------------------------ API calls with retries
    def _call(self, action: str, what: str, /, files: dict[str, Path] | None = None,
              **data: Any) -> Any:
        """Call one action; retry transient failures; translate errors to PublishError."""
        import ckanapi
        import requests

        attempts = self.policy.retries + 1
        for attempt in range(attempts):
            handles = {k: open(p, "rb") for k, p in (files or {}).items()}  # noqa: SIM115
            try:
                return self._ckan.call_action(
                    action, data, files=handles or None,
                    requests_kwargs={"timeout": (10, self.timeout_s)})
            except ckanapi.ValidationError as err:
                detail = err.error_dict if isinstance(err.error_dict, dict) else {}
                raise PublishError(f"CKAN rejected {what} ({action}): "
                                   f"{format_validation_error(detail)}") from None
            except ckanapi.NotAuthorized as err:
                raise PublishError(
                    f"CKAN at {self.url} refused {action} for {what}: not authorized. The API "
                    f"token must belong to a sysadmin or an editor of organization "
                    f"{self.organization!r}; check {TOKEN_ENV} or the Airflow connection "
                    f"{AIRFLOW_CONN_ID!r}") from err
            except ckanapi.NotFound:
                raise
            except (requests.ConnectionError, requests.Timeout, ckanapi.SearchIndexError,
                    ckanapi.CKANAPIError) as err:
                transient = self._is_transient(err)
                if not transient:
                    raise PublishError(f"CKAN call {action} for {what} failed: "
                                       f"{_short(err)}") from err
                if attempt + 1 >= attempts:
                    raise PublishError(
                        f"CKAN at {self.url} is unavailable ({_short(err)}) during {action} "
                        f"for {what}, after {attempts} tries; rerun later: the publish is "
                        "idempotent and nothing half-done was made public",
                        transient=True) from err
                delay = self.policy.delay(attempt)
                log.warning("CKAN %s for %s failed (%s); retry %d/%d in %.1f s", action, what,
                            _short(err), attempt + 1, self.policy.retries, delay)
                time.sleep(delay)
            finally:
                for h in handles.values():
                    h.close()
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _is_transient(err: Exception) -> bool:
        import ckanapi
        import requests

        if isinstance(err, requests.ConnectionError | requests.Timeout |
                      ckanapi.SearchIndexError):
            return True
        if type(err) is ckanapi.CKANAPIError:
            m = _STATUS_RE.match(str(err.args[0]) if err.args else "")
            return bool(m and int(m.group(1)) >= 500)
        return False

    def _show(self, action: str, what: str, **data: Any) -> dict | None:
        import ckanapi

        try:
            return self._call(action, what, **data)
        except ckanapi.NotFound:
            return None

    # ------------------------------------------------------------------ organization
    def _organization_id(self) -> str:
        if self._org_id is None:
            org = self._show("organization_show", f"organization {self.organization!r}",
                             id=self.organization, include_datasets=False)
            if org is None:
                log.info("creating CKAN organization %s", self.organization)
                org = self._call("organization_create", f"organization {self.organization!r}",
                                 name=self.organization, title=self.organization_title)
            self._org_id = org["id"]
        return self._org_id

    # ------------------------------------------------------------------ publish
    def publish(self, release: DatasetRelease) -> PublishResult:
        """Create or update the dataset of ``release``; see the module docstring."""
        what = f"dataset {release.name!r}"
        state = _State()
        org_id = self._organization_id()
        pkg = self._show("package_show", what, id=release.name)
        if pkg is not None and pkg.get("owner_org") not in (None, org_id):
            raise PublishError(f"{what} already exists on {self.url} in another organization; "
                               f"refusing to change it (expected organization "
                               f"{self.organization!r})")
        if pkg is None:
            log.info("creating private %s on %s", what, self.url)
            pkg = self._call("package_create", what, name=release.name, owner_org=org_id,
                             private=True, **self._metadata(release, None))
            state.created = True
        else:
            wanted = self._metadata(release, pkg)
            if _metadata_differs(pkg, wanted):
                pkg = self._call("package_patch", what, id=pkg["id"], **wanted)

        by_key = {_resource_key(r): r for r in pkg.get("resources", [])}
        for res in release.resources:
            self._sync_resource(pkg, res, by_key, state)
        self._sync_datapackage(release, pkg, by_key, state)
        if release.primary_key:
            self._sync_datastore(release, pkg, state)

        pkg = self._call("package_show", what, id=release.name)
        self._check_complete(release, pkg)
        extras = _extras_dict(pkg)
        if pkg.get("private") and extras.get("opencity_release_state") == STATE_STAGING:
            extras["opencity_release_state"] = STATE_PUBLISHED
            self._call("package_patch", what, id=pkg["id"], private=False,
                       extras=_extras_list(extras))
            log.info("%s is now public at %s/dataset/%s", what, self.url, release.name)
            self._emit("published", {"dataset": release.name})
        return PublishResult(
            name=release.name, target=self.target, url=f"{self.url}/dataset/{release.name}",
            created=state.created, uploaded=tuple(state.uploaded),
            unchanged=tuple(state.unchanged))

    def publish_all(self, releases: Iterable[DatasetRelease]) -> list[PublishResult]:
        """Publish several releases in order; stops at the first error."""
        return [self.publish(r) for r in releases]

    # ------------------------------------------------------------------ metadata
    def _metadata(self, release: DatasetRelease, pkg: dict | None) -> dict[str, Any]:
        extras = _extras_dict(pkg) if pkg else {}
        ours: dict[str, str] = {}
        for key, value in flatten_privacy(release.privacy).items():
            ours[key] = value
        if release.temporal_coverage:
            start, end = release.temporal_coverage
            end_incl = _inclusive_end(end)
            # The dataset covers every partition published so far, not only this one.
            if extras.get("temporal_start"):
                start = min(start, extras["temporal_start"])
            if extras.get("temporal_end"):
                end_incl = max(end_incl, extras["temporal_end"])
            ours["temporal_start"], ours["temporal_end"] = start, end_incl
        if release.spatial_coverage:
            ours["spatial_text"] = release.spatial_coverage
        ours["frequency"] = release.accrual_periodicity
        for key, value in release.provenance.items():
            ours[f"provenance_{key}"] = _extra_value(value)
        ours["provenance"] = _provenance_text(release.provenance)
        ours["opencity_release_state"] = extras.get("opencity_release_state", STATE_STAGING)
        extras.update(ours)
        return {
            "title": release.title,
            "notes": release.description,
            "license_id": release.license_id,
            "tags": [{"name": t} for t in release.tags],
            "extras": _extras_list(extras),
        }

    # ------------------------------------------------------------------ resources
    def _sync_resource(self, pkg: dict, res: Resource, by_key: dict, state: _State) -> None:
        key = (res.name, res.partition or "")
        path = Path(res.path)
        digest = f"sha256:{sha256_file(path)}"
        fields = {
            "name": _portal_resource_name(res),
            "description": res.description,
            "format": res.format.upper(),
            "opencity_resource": res.name,
            "partition": res.partition or "",
        }
        self._upload(pkg, key, path, digest, fields, by_key, state, label=fields["name"])

    def _upload(self, pkg: dict, key: tuple[str, str], path: Path, digest: str,
                fields: dict[str, Any], by_key: dict, state: _State, label: str) -> dict:
        what = f"resource {label!r} of dataset {pkg['name']!r}"
        existing = by_key.get(key)
        if existing and existing.get("hash") == digest:
            meta_changed = any(_norm(k, existing.get(k)) != _norm(k, v) for k, v in fields.items())
            if meta_changed:
                existing = self._call("resource_patch", what, id=existing["id"], **fields)
                by_key[key] = existing
            state.unchanged.append(label)
            self._emit("unchanged", {"dataset": pkg["name"], "resource": label})
            return existing
        # hash stays empty until the stored file was read back and checked.
        files = {"upload": path}
        if existing:
            res = self._call("resource_patch", what, files=files, id=existing["id"],
                             hash="", **fields)
        else:
            res = self._call("resource_create", what, files=files, package_id=pkg["id"],
                             hash="", **fields)
        self._verify(res, path, digest, what)
        res = self._call("resource_patch", what, id=res["id"], hash=digest)
        by_key[key] = res
        state.uploaded.append(label)
        log.info("uploaded %s (%d bytes)", what, path.stat().st_size)
        self._emit("uploaded", {"dataset": pkg["name"], "resource": label,
                                "bytes": path.stat().st_size})
        return res

    def _verify(self, res: dict, path: Path, digest: str, what: str) -> None:
        """Download ``res`` back (with the token: the dataset may be private) and compare."""
        if not self.verify_uploads:
            return
        import requests

        url = res.get("url", "")
        for attempt in range(self.policy.retries + 1):
            try:
                with requests.get(url, headers={"Authorization": self._token.reveal()},
                                  stream=True, timeout=(10, self.timeout_s)) as r:
                    if r.status_code >= 500:
                        raise requests.ConnectionError(f"HTTP {r.status_code}")
                    if r.status_code != 200:
                        raise PublishError(f"{what}: the uploaded file cannot be downloaded "
                                           f"back (HTTP {r.status_code} from {url})")
                    h = hashlib.sha256()
                    for chunk in r.iter_content(1 << 20):
                        h.update(chunk)
                break
            except (requests.ConnectionError, requests.Timeout) as err:
                if attempt >= self.policy.retries:
                    raise PublishError(f"{what}: could not download the upload back to check "
                                       f"it ({_short(err)}); rerun later",
                                       transient=True) from err
                time.sleep(self.policy.delay(attempt))
        if f"sha256:{h.hexdigest()}" != digest:
            raise PublishError(f"{what}: the file CKAN stored differs from {path.name} "
                               "(SHA-256 mismatch); rerun to upload it again", transient=True)

    def _sync_datapackage(self, release: DatasetRelease, pkg: dict, by_key: dict,
                          state: _State) -> None:
        """Upload datapackage.json: the data dictionary of every tabular resource."""
        ours = [r for k, r in sorted(by_key.items()) if k[0] not in (DATAPACKAGE_KEY, TABLE_KEY)
                and r.get("opencity_resource")]
        descriptor = ckan_datapackage(release, ours)
        text = json.dumps(descriptor, indent=2, sort_keys=True, default=str) + "\n"
        digest = f"sha256:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"
        fields = {"name": "datapackage.json", "format": "JSON",
                  "description": "Frictionless Data Package descriptor: the data dictionary "
                                 "(column names, types, units, descriptions) of every table in "
                                 "this dataset.",
                  "opencity_resource": DATAPACKAGE_KEY, "partition": ""}
        with tempfile.TemporaryDirectory(prefix="opencity-ckan-") as tmp:
            path = Path(tmp) / "datapackage.json"
            path.write_text(text, encoding="utf-8")
            self._upload(pkg, (DATAPACKAGE_KEY, ""), path, digest, fields, by_key, state,
                         label="datapackage.json")

    # ------------------------------------------------------------------ DataStore
    def _sync_datastore(self, release: DatasetRelease, pkg: dict, state: _State) -> None:
        import pyarrow.parquet as pq

        what = f"DataStore table of dataset {release.name!r}"
        fresh = self._call("package_show", what, id=pkg["id"])
        table_res = next((r for r in fresh.get("resources", [])
                          if r.get("opencity_resource") == TABLE_KEY), None)
        parquets = [r for r in release.resources if r.format.lower() == "parquet"]
        if not parquets:
            raise ConfigError(f"dataset {release.name!r} has a primary key but no Parquet "
                              "resource to load into the DataStore")
        loaded: dict[str, str] = json.loads(table_res.get("datastore_partitions") or "{}") \
            if table_res else {}
        todo = [(r, f"sha256:{sha256_file(Path(r.path))}") for r in parquets]
        todo = [(r, d) for r, d in todo if loaded.get(r.partition or "") != d]
        if not todo and table_res and table_res.get("datastore_active"):
            state.unchanged.append("datastore-table")
            return
        schema = pq.read_schema(todo[0][0].path if todo else parquets[0].path)
        ds_fields = datastore_fields(release.fields, schema)
        missing = [k for k in release.primary_key if k not in {f["id"] for f in ds_fields}]
        if missing:
            raise ConfigError(f"dataset {release.name!r}: primary key column(s) {missing} are "
                              "not in its tables")
        common = {"fields": ds_fields, "primary_key": list(release.primary_key), "force": True}
        if table_res is None:
            created = self._call(
                "datastore_create", what,
                resource={"package_id": pkg["id"], "name": f"{release.name} (table)",
                          "description": "All partitions as one queryable table (CKAN "
                                         "DataStore), keyed by "
                                         + ", ".join(release.primary_key) + ".",
                          "format": "DataStore", "opencity_resource": TABLE_KEY,
                          "partition": ""},
                **common)
            table_id = created["resource_id"]
        else:
            table_id = table_res["id"]
            self._call("datastore_create", what, resource_id=table_id, **common)
        names = [f["id"] for f in ds_fields]
        for res, digest in todo:
            for batch in _record_batches(pq.read_table(res.path, columns=names)):
                self._call("datastore_upsert", what, resource_id=table_id, records=batch,
                           method="upsert", force=True)
            loaded[res.partition or ""] = digest
            self._call("resource_patch", what, id=table_id,
                       datastore_partitions=json.dumps(loaded, sort_keys=True))
            state.uploaded.append(f"datastore-table {res.partition or ''}".strip())
            self._emit("upserted", {"dataset": release.name, "partition": res.partition})

    # ------------------------------------------------------------------ final check
    def _check_complete(self, release: DatasetRelease, pkg: dict) -> None:
        """Every resource of the release is on the portal with the local file's hash."""
        by_key = {_resource_key(r): r for r in pkg.get("resources", [])}
        problems = []
        for res in release.resources:
            got = by_key.get((res.name, res.partition or ""))
            want = f"sha256:{sha256_file(Path(res.path))}"
            if got is None:
                problems.append(f"{_portal_resource_name(res)}: missing")
            elif got.get("hash") != want:
                problems.append(f"{_portal_resource_name(res)}: hash differs")
        if (DATAPACKAGE_KEY, "") not in by_key:
            problems.append("datapackage.json: missing")
        if release.primary_key:
            table = by_key.get((TABLE_KEY, ""))
            if not table or not table.get("datastore_active"):
                problems.append("DataStore table: missing")
        if problems:
            raise PublishError(f"dataset {release.name!r} is incomplete on {self.url} after "
                               f"publishing ({'; '.join(problems)}); it stays as it was "
                               "(private if new); rerun to repair", transient=True)

    def _emit(self, event: str, detail: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress(event, detail)


# ---------------------------------------------------------------------- helpers (pure)
def _norm(key: str, value: Any) -> str:
    """Resource field value as compared for idempotency (CKAN normalises format names)."""
    text = "" if value is None else str(value)
    return text.lower() if key == "format" else text


def _short(err: Exception) -> str:
    text = str(err).replace("\n", " ")
    return text if len(text) <= 200 else text[:197] + "..."


def _extras_dict(pkg: dict | None) -> dict[str, str]:
    return {e["key"]: e["value"] for e in (pkg or {}).get("extras", [])}


def _extras_list(extras: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in sorted(extras.items())]


def _metadata_differs(pkg: dict, wanted: dict[str, Any]) -> bool:
    if any(pkg.get(k) != wanted[k] for k in ("title", "notes", "license_id")):
        return True
    if sorted(t["name"] for t in pkg.get("tags", [])) != \
            sorted(t["name"] for t in wanted["tags"]):
        return True
    return _extras_dict(pkg) != {e["key"]: e["value"] for e in wanted["extras"]}


def _inclusive_end(end: str) -> str:
    """DatasetRelease ends are exclusive; DCAT's endDate is the last covered day."""
    try:
        return (dt.date.fromisoformat(end) - dt.timedelta(days=1)).isoformat()
    except ValueError:
        return end


def _provenance_text(provenance: dict[str, Any]) -> str:
    parts = [f"Produced by the OpenCity pipeline {provenance.get('pipeline_version', '?')}"]
    if provenance.get("run_id"):
        parts.append(f"run {provenance['run_id']}")
    inputs = provenance.get("input_hashes") or {}
    if inputs:
        parts.append(f"from {len(inputs)} input file(s) identified by SHA-256 "
                     "(see provenance_input_hashes)")
    return ", ".join(parts) + "."


def datastore_fields(fields: tuple[Field, ...], schema: Any) -> list[dict[str, Any]]:
    """DataStore field definitions with the data dictionary as ``info``.

    Uses the release's fields when given (only those present in the table), else the Parquet
    schema's columns.
    """
    import pyarrow as pa

    present = set(schema.names)
    out = []
    if fields:
        for f in fields:
            if f.name not in present:
                continue
            notes = f.description + (f" (unit: {f.unit})" if f.unit else "")
            out.append({"id": f.name, "type": _DATASTORE_TYPES.get(f.type, "text"),
                        "info": {"label": f.name, "notes": notes}})
        return out
    for col in schema:
        t = col.type
        kind = ("int8" if pa.types.is_integer(t) else "numeric" if pa.types.is_floating(t)
                else "bool" if pa.types.is_boolean(t) else "date" if pa.types.is_date(t)
                else "timestamp" if pa.types.is_timestamp(t) else "text")
        out.append({"id": col.name, "type": kind, "info": {"label": col.name, "notes": ""}})
    return out


def _record_batches(table: Any, rows: int = UPSERT_BATCH_ROWS) -> Iterable[list[dict]]:
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


def ckan_datapackage(release: DatasetRelease, resources: list[dict]) -> dict[str, Any]:
    """Frictionless Data Package for the dataset as published on CKAN (paths are its URLs)."""
    entries = []
    for r in resources:
        entry: dict[str, Any] = {
            "name": re.sub(r"[^a-z0-9._-]+", "-", r["name"].lower()).strip("-"),
            "path": r.get("url", ""),
            "format": (r.get("format") or "").lower(),
            "hash": (r.get("hash") or "").removeprefix("sha256:"),
        }
        if r.get("partition"):
            entry["partition"] = r["partition"]
        entries.append(entry)
    return datapackage_descriptor(release, entries)
