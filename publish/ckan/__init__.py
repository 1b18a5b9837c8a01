"""Publish releases to a CKAN portal through its action API (ckanapi), idempotently.

Contract for one :class:`~publish.base.DatasetRelease`:

* The dataset is found by its deterministic name with ``package_show`` (never search).
  A new dataset is created **private**, in the configured organization (created if missing),
  and made public only after every resource is uploaded and verified.
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
:mod:`~publish.ckan.publisher` (the publish sequence).
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
