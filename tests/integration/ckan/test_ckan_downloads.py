"""Every published resource downloads through its public URL with its recorded hash, and a
publish notices (and names) a resource whose stored file went bad."""

from __future__ import annotations

import datetime as dt
import hashlib
import io

import pyarrow.parquet as pq
import pytest
import requests

from opencity.errors import PublishError
from publish.base import sha256_file
from publish.ckan import CkanPublisher

pytestmark = [pytest.mark.integration, pytest.mark.ckan]

WEEK1 = dt.date(2026, 10, 5)


def _pub(server, org, **kw):
    return CkanPublisher(server.url, server.token, organization=org, backoff_s=0.2, **kw)


def test_every_resource_downloads_and_matches_twice_in_a_row(
        samples, ckan_server, ckan_anon, org_name, tmp_path):
    releases = [samples.kpi_release(samples.unique_name("kpi"), tmp_path, WEEK1),
                samples.microdata_release(samples.unique_name("micro"), tmp_path, WEEK1)]
    pub = _pub(ckan_server, org_name)
    for r in releases:
        pub.publish(r)
    checked = 0
    for _ in range(2):
        for release in releases:
            pkg = samples.product(ckan_anon, release.name)
            for res in pkg["resources"]:
                if res.get("datastore_active") and not res.get("hash"):
                    continue  # the DataStore table (its dump is generated)
                body = requests.get(res["url"], timeout=30)
                assert body.status_code == 200, res["name"]
                assert hashlib.sha256(body.content).hexdigest() == res["hash"], res["name"]
                if res["format"].endswith("/PARQUET"):
                    assert pq.read_table(io.BytesIO(body.content)).num_rows > 0
                checked += 1
    assert checked == 2 * (3 + 3)  # parquet, csv, datapackage per dataset, twice
    for release in releases:
        for res in release.resources:
            assert sha256_file(res.path)


def _storage_file(server, resource_id: str):
    return (server.home / "storage" / "resources" / resource_id[:3] / resource_id[3:6]
            / resource_id[6:])


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_stored_file_that_went_bad_fails_the_publish_naming_it_and_the_rerun_repairs(
        samples, ckan_server, ckan_admin, org_name, tmp_path, damage):
    release = samples.microdata_release(samples.unique_name("micro"), tmp_path, WEEK1)
    _pub(ckan_server, org_name).publish(release)
    pkg = samples.product(ckan_admin, release.name)
    parquet = next(r for r in pkg["resources"] if r["opencity_resource"] == "requests")
    stored = _storage_file(ckan_server, parquet["id"])
    assert stored.is_file(), stored
    if damage == "truncated":
        stored.write_bytes(stored.read_bytes()[:-10])  # on the portal's disk
    else:
        stored.unlink()
    with pytest.raises(PublishError) as err:
        _pub(ckan_server, org_name).publish(release)
    assert "requests dt=2026-10-05" in str(err.value) and err.value.transient
    # CKAN 2.12 answers HTTP 500 for an upload whose stored file is gone
    assert ("SHA-256" if damage == "truncated" else "HTTP 500") in str(err.value)
    result = _pub(ckan_server, org_name).publish(release)  # the rerun uploads it again
    assert "requests dt=2026-10-05" in result.uploaded
    body = requests.get(parquet["url"], timeout=30)
    assert hashlib.sha256(body.content).hexdigest() == sha256_file(release.resources[0].path)
