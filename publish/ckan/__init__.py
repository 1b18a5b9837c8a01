"""Publish releases to a CKAN portal through its action API (ckanapi), idempotently.

Contract for one :class:`~publish.base.DatasetRelease`:

* Every partition is a CKAN dataset of its own (:mod:`~publish.ckan.partitions`):
  ``<name>--<partition>`` holds that partition's files, datapackage descriptor and privacy
  statement; the product dataset ``<name>`` holds the product's metadata, the DataStore
  table and the list of its partitions (``opencity_partitions``). Publishing a partition
  therefore costs the same whatever the number of partitions already published (CKAN
  re-saves a whole package on every resource write).
* Datasets are found by their deterministic names with ``package_show`` (never search).
  A new dataset is created **private**, in the configured organization (created if
  missing). A partition dataset is made public by one ``package_patch`` only after every
  one of its files is uploaded and verified (a public partition whose files change is
  made private first): a kill at any moment never shows part of a partition. A dataset a
  steward made private after publication stays private.
* Publishers of one dataset take turns: the lock of the state database
  (:mod:`~publish.ckan.lock`: a PostgreSQL advisory lock, or a lock file next to SQLite)
  is held for the whole publish, so two publishers never upload the same files twice.
* Metadata comes from the one mapping, :mod:`publish.metadata` (DCAT-AP fields that
  ckanext-dcat's ``euro_dcat_ap_3`` profile serialises; privacy parameters readable on the
  dataset page).
* Each resource is identified by a stable key (dataset, partition, resource name), stored on
  it as ``opencity_key``. It is looked up before it is created; after a lost or late response
  the package is re-read and reconciled: duplicates deleted (the oldest is kept), empty or
  wrong hashes re-uploaded. A rerun repairs whatever a crash or lost response left.
  Resources of other partitions are never touched (history is kept).
* ``hash`` (hex SHA-256) and ``hash_algorithm`` (SPDX IRI) are written only after the upload
  was downloaded back and matched. After publishing, every resource of the release is
  downloaded again through its public URL and compared; a mismatch or failed download fails
  the publish naming the resource.
* Releases with a ``primary_key`` (KPI tables) also go to the DataStore: one table per
  dataset, the data dictionary as field ``info``, rows upserted by primary key.
* Transient failures (connection refused/reset, timeouts, lost responses, HTTP 5xx) are
  retried with tenacity; timeouts from ``OPENCITY_CKAN_TIMEOUT``. Validation errors are
  reported field by field. The API token is checked on every publish (even with nothing to
  upload) and never logged or put in an error message.

Modules: :mod:`~publish.ckan.client` (session, retries), :mod:`~publish.ckan.resources`
(resource sync by key), :mod:`~publish.ckan.datastore` (DataStore tables),
:mod:`~publish.ckan.partitions` (partition dataset names), :mod:`~publish.ckan.lock` (the
publish lock), :mod:`~publish.ckan.publisher` (the publish sequence).
"""

from __future__ import annotations

from publish.ckan.client import (
    AIRFLOW_CONN_ID,
    DEFAULT_TIMEOUT_S,
    TIMEOUT_ENV,
    TOKEN_ENV,
    URL_ENV,
    CkanClient,
    RetryPolicy,
    format_validation_error,
    resolve_timeout,
    resolve_token,
    resolve_url,
)
from publish.ckan.datastore import datastore_fields, record_batches
from publish.ckan.publisher import (
    STATE_PUBLISHED,
    STATE_STAGING,
    CkanPublisher,
    ProgressHook,
    ckan_datapackage,
)
from publish.ckan.resources import DATAPACKAGE_NAME, TABLE_NAME
from publish.metadata import _inclusive_end, flatten_privacy

# names of the single-module version, kept for importers
DATAPACKAGE_KEY = DATAPACKAGE_NAME
TABLE_KEY = TABLE_NAME
_record_batches = record_batches

__all__ = [
    "AIRFLOW_CONN_ID", "DATAPACKAGE_KEY", "DEFAULT_TIMEOUT_S", "STATE_PUBLISHED",
    "STATE_STAGING", "TABLE_KEY", "TIMEOUT_ENV", "TOKEN_ENV", "URL_ENV", "CkanClient",
    "CkanPublisher", "ProgressHook", "RetryPolicy", "_inclusive_end", "_record_batches",
    "ckan_datapackage", "datastore_fields", "flatten_privacy", "format_validation_error",
    "resolve_timeout", "resolve_token", "resolve_url",
]
