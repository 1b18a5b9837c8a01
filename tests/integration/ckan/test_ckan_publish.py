"""CkanPublisher against the real local CKAN (scripts/ckan-dev): no mocks."""

from __future__ import annotations

import datetime as dt
import io
import time

import pyarrow.parquet as pq
import pytest
import requests

from opencity.errors import PublishError
from publish.base import sha256_file
from publish.ckan import CkanPublisher
from publish.ckan.partitions import partition_dataset_name

pytestmark = [pytest.mark.integration, pytest.mark.ckan]

WEEK1 = dt.date(2026, 10, 5)
WEEK2 = dt.date(2026, 10, 12)


def publisher(server, org, **kw) -> CkanPublisher:
    kw.setdefault("backoff_s", 0.2)
    return CkanPublisher(server.url, server.token, organization=org, **kw)


def by_key(pkg: dict) -> dict:
    return {(r.get("opencity_resource"), r.get("partition") or ""): r for r in pkg["resources"]}


def test_publish_sample_products_and_download_them_anonymously(
        samples, ckan_server, ckan_admin, ckan_anon, org_name, tmp_path):
    kpi = samples.kpi_release(samples.unique_name("kpi"), tmp_path, WEEK1)
    micro = samples.microdata_release(samples.unique_name("micro"), tmp_path, WEEK1)
    pub = publisher(ckan_server, org_name)
    for release in (kpi, micro):
        result = pub.publish(release)
        assert result.created and not result.unchanged
        pkg = samples.product(ckan_anon, release.name)  # public now
        assert pkg["private"] is False
        assert pkg["organization"]["name"] == org_name
        assert pkg["license_id"] == "cc-by"  # CKAN's licence list id for CC-BY-4.0
        for res in release.resources:
            portal = by_key(pkg)[(res.name, res.partition)]
            assert portal["hash"] == sha256_file(res.path)  # hex, algorithm apart
            assert portal["hash_algorithm"].endswith("checksumAlgorithm_sha256")
            body = requests.get(portal["url"], timeout=30)  # anonymous, public URL
            assert body.status_code == 200
            if res.format == "parquet":
                assert pq.read_table(io.BytesIO(body.content)).equals(pq.read_table(res.path))
            else:
                assert body.content == res.path.read_bytes()
        dp = requests.get(by_key(pkg)[("datapackage", res.partition)]["url"], timeout=30).json()
        # The one Frictionless builder (Data Package v2): tables are "type": "table", each
        # schema read from the file itself, hashes "sha256:<hex>".
        tabular = [r for r in dp["resources"] if r.get("type") == "table"]
        assert all(r["hash"].startswith("sha256:") for r in dp["resources"])
        assert len(tabular) == 2
        assert [f["name"] for f in tabular[0]["schema"]["fields"]] == \
            [f.name for f in release.fields]

    extras = {e["key"]: e["value"]
              for e in samples.product(ckan_anon, micro.name)["extras"]}
    assert extras["privacy_method"] == "k_anonymity"
    assert extras["k_anonymity_k"] == "5"
    assert extras["suppression_limit"] == "0.02"
    assert extras["temporal_start"] == "2026-10-05"
    assert extras["temporal_end"] == "2026-10-05"  # inclusive last day of [05, 06)
    assert extras["frequency"] == \
        "http://publications.europa.eu/resource/authority/frequency/DAILY"
    assert extras["provenance_run_id"] == "test__2026-10-05"
    kpi_extras = {e["key"]: e["value"]
                  for e in samples.product(ckan_anon, kpi.name)["extras"]}
    assert kpi_extras["privacy_method"] == "small_count_suppression"
    assert kpi_extras["suppression_threshold"] == "15"


def test_rerun_leaves_portal_state_identical(samples, ckan_server, ckan_admin, org_name, tmp_path):
    releases = [samples.kpi_release(samples.unique_name("kpi"), tmp_path, WEEK1),
                samples.microdata_release(samples.unique_name("micro"), tmp_path, WEEK1)]
    pub = publisher(ckan_server, org_name)
    for r in releases:
        pub.publish(r)
    names = [r.name for r in releases]
    before = samples.portal_state(ckan_admin, names)
    count_before = ckan_admin.action.package_search(
        fq=f"organization:{org_name}", include_private=True)["count"]

    results = [publisher(ckan_server, org_name).publish(r) for r in releases]

    assert all(not r.created and not r.uploaded for r in results)
    assert samples.portal_state(ckan_admin, names) == before
    # two products, each with one partition dataset
    assert ckan_admin.action.package_search(
        fq=f"organization:{org_name}", include_private=True)["count"] == count_before == 4


def test_new_partition_adds_resources_and_same_partition_patches_in_place(
        samples, ckan_server, ckan_admin, org_name, tmp_path):
    name = samples.unique_name("kpi")
    pub = publisher(ckan_server, org_name)
    pub.publish(samples.kpi_release(name, tmp_path / "a", WEEK1))
    first = by_key(samples.product(ckan_admin, name))

    pub.publish(samples.kpi_release(name, tmp_path / "b", WEEK2))  # a new partition
    second = by_key(samples.product(ckan_admin, name))
    assert set(first) < set(second)
    for key, res in first.items():  # history kept: same ids, same files for week 1
        if key[0] not in ("datapackage", "datastore-table"):
            assert second[key]["id"] == res["id"] and second[key]["hash"] == res["hash"]
    assert ("requests-weekly", "dt=2026-10-12") in second
    extras = {e["key"]: e["value"] for e in samples.product(ckan_admin, name)["extras"]}
    assert (extras["temporal_start"], extras["temporal_end"]) == ("2026-10-05", "2026-10-18")

    corrected = samples.kpi_release(name, tmp_path / "c", WEEK2, shift=1)  # same week, new numbers
    result = pub.publish(corrected)
    third = by_key(samples.product(ckan_admin, name))
    assert set(third) == set(second)  # no new resource
    key = ("requests-weekly", "dt=2026-10-12")
    assert third[key]["id"] == second[key]["id"]
    assert third[key]["hash"] == sha256_file(corrected.resources[0].path) \
        != second[key]["hash"]
    assert "requests-weekly dt=2026-10-12" in result.uploaded
    assert "requests-weekly dt=2026-10-05" not in result.uploaded


def test_datastore_search_returns_the_kpi_rows(samples, ckan_server, ckan_anon, org_name, tmp_path):
    name = samples.unique_name("kpi")
    pub = publisher(ckan_server, org_name)
    releases = [samples.kpi_release(name, tmp_path / "a", WEEK1),
                samples.kpi_release(name, tmp_path / "b", WEEK2)]
    for r in releases:
        pub.publish(r)
    pub.publish(samples.kpi_release(name, tmp_path / "c", WEEK2, shift=1))  # upsert week 2 again
    table = by_key(samples.product(ckan_anon, name))[("datastore-table", "")]
    got = ckan_anon.action.datastore_search(resource_id=table["id"], limit=1000,
                                            sort="week_start, district_id, request_type")
    expected = sorted(
        pq.read_table(releases[0].resources[0].path).to_pylist()
        + pq.read_table(tmp_path / "c" / name / "dt=2026-10-12" / "part-0.parquet").to_pylist(),
        key=lambda r: (r["week_start"], r["district_id"], r["request_type"]))
    assert got["total"] == len(expected) == 24
    for row, want in zip(got["records"], expected, strict=True):
        assert row["district_id"] == want["district_id"]
        assert row["week_start"].startswith(want["week_start"].isoformat())
        assert (row["requests"] is None and want["requests"] is None) or \
            int(row["requests"]) == want["requests"]
        assert row["suppressed"] == want["suppressed"]
    info = {f["id"]: f.get("info", {}) for f in got["fields"]}
    assert "hours" in info["median_hours_to_close"]["notes"]
    # the data dictionary: every column has a type, a label and a description
    types = {f["id"]: f["type"] for f in got["fields"]}
    release = releases[0]
    for f in release.fields:
        assert info[f.name]["label"] and info[f.name]["notes"].startswith(f.description)
        assert types[f.name] == {"string": "text", "integer": "int8", "number": "numeric",
                                 "boolean": "bool", "date": "date"}[f.type]
    assert info["median_hours_to_close"]["label"] == "Median hours to close (hours)"
    dictionary = ckan_anon.action.datastore_info(id=table["id"])
    assert {f["id"]: f.get("info", {}).get("label") for f in dictionary["fields"]}[
        "requests"] == "Requests"


def test_kill_ckan_mid_publish_then_rerun_is_consistent(
        samples, ckan_server, ckan_admin, ckan_anon, org_name, tmp_path):
    release = samples.kpi_release(samples.unique_name("kpi"), tmp_path, WEEK1)
    killed = []

    def kill_after_first_upload(event, detail):
        if event == "uploaded" and not killed:
            killed.append(ckan_server.stop_gunicorn())

    pub = publisher(ckan_server, org_name, retries=2, backoff_s=0.1,
                    progress=kill_after_first_upload)
    try:
        with pytest.raises(PublishError) as err:
            pub.publish(release)
        assert err.value.transient
        assert killed
    finally:
        ckan_server.up()  # fast restart
    import ckanapi

    with pytest.raises(ckanapi.NotAuthorized):  # half-done and still private
        samples.product(ckan_anon, release.name)
    half = ckan_admin.action.package_show(
        id=partition_dataset_name(release.name, "dt=2026-10-05"))
    assert half["private"] is True  # the partition dataset: staged, one file in
    assert len(half["resources"]) == 1

    result = publisher(ckan_server, org_name).publish(release)
    pkg = samples.product(ckan_anon, release.name)
    assert pkg["private"] is False and not result.created
    keys = [(r.get("opencity_resource"), r.get("partition")) for r in pkg["resources"]]
    assert len(keys) == len(set(keys)) == 4  # parquet, csv, datapackage, table: no duplicate
    for res in release.resources:
        assert by_key(pkg)[(res.name, res.partition)]["hash"] == \
            sha256_file(res.path)
    assert "requests-weekly dt=2026-10-05" in result.unchanged  # verified first upload kept


def test_anonymous_users_cannot_see_private_datasets(
        samples, ckan_server, ckan_admin, ckan_anon, org_name, tmp_path):
    import ckanapi

    release = samples.microdata_release(samples.unique_name("micro"), tmp_path, WEEK1)
    publisher(ckan_server, org_name).publish(release)
    part = partition_dataset_name(release.name, "dt=2026-10-05")
    for name in (release.name, part):  # a steward hides the product and its partition
        ckan_admin.action.package_patch(id=name, private=True)
    for name in (release.name, part):
        with pytest.raises(ckanapi.NotAuthorized):
            ckan_anon.action.package_show(id=name)
    found = ckan_anon.action.package_search(q=release.name, include_private=True)
    assert release.name not in [p["name"] for p in found["results"]]
    url = by_key(ckan_admin.action.package_show(id=part))[("requests", "dt=2026-10-05")]
    assert requests.get(url["url"], timeout=30).status_code in (403, 404)
    # A rerun respects the steward's decision: published once, hidden stays hidden; so does
    # a new partition of the hidden product.
    publisher(ckan_server, org_name).publish(release)
    publisher(ckan_server, org_name).publish(
        samples.microdata_release(release.name, tmp_path / "w2", WEEK2))
    assert ckan_admin.action.package_show(id=release.name)["private"] is True
    for name in (part, partition_dataset_name(release.name, f"dt={WEEK2}")):
        assert ckan_admin.action.package_show(id=name)["private"] is True


def test_dcat_endpoints_parse_as_rdf(samples, ckan_server, org_name, tmp_path):
    rdflib = pytest.importorskip("rdflib")
    from rdflib.namespace import DCAT, DCTERMS, RDF

    release = samples.kpi_release(samples.unique_name("kpi"), tmp_path, WEEK1)
    publisher(ckan_server, org_name).publish(release)
    ttl = requests.get(f"{ckan_server.url}/dataset/{release.name}.ttl", timeout=30)
    assert ttl.status_code == 200
    g = rdflib.Graph().parse(data=ttl.text, format="turtle")
    datasets = list(g.subjects(RDF.type, DCAT.Dataset))
    assert len(datasets) == 1
    ds = datasets[0]
    assert str(g.value(ds, DCTERMS.title)) == release.title
    assert str(g.value(ds, DCTERMS.accrualPeriodicity)) == \
        "http://publications.europa.eu/resource/authority/frequency/WEEKLY"
    assert g.value(ds, DCTERMS.temporal) is not None
    assert len(list(g.objects(ds, DCAT.distribution))) >= 1  # the DataStore table
    # the files are distributions of the partition dataset, a DCAT dataset of its own
    part = partition_dataset_name(release.name, "dt=2026-10-05")
    ttl = requests.get(f"{ckan_server.url}/dataset/{part}.ttl", timeout=30)
    g = rdflib.Graph().parse(data=ttl.text, format="turtle")
    (ds,) = list(g.subjects(RDF.type, DCAT.Dataset))
    assert g.value(ds, DCTERMS.temporal) is not None
    assert len(list(g.objects(ds, DCAT.distribution))) >= 3
    cat = requests.get(f"{ckan_server.url}/catalog.ttl", timeout=30)
    assert cat.status_code == 200
    cg = rdflib.Graph().parse(data=cat.text, format="turtle")
    assert list(cg.subjects(RDF.type, DCAT.Catalog))
    assert len(list(cg.subjects(RDF.type, DCAT.Dataset))) >= 1


def test_validation_errors_are_shown_field_by_field(samples, ckan_server, org_name, tmp_path):
    from dataclasses import replace

    release = replace(samples.microdata_release(samples.unique_name("micro"), tmp_path, WEEK1),
                      tags=("ok", "no/slashes!"))
    with pytest.raises(PublishError) as err:
        publisher(ckan_server, org_name).publish(release)
    msg = str(err.value)
    assert "CKAN rejected" in msg and "tags" in msg and "no/slashes!" in msg
    assert not err.value.transient


def test_connection_refused_is_retried_then_transient(samples, tmp_path, ckan_server):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pub = CkanPublisher(f"http://127.0.0.1:{port}", ckan_server.token,
                        organization="nobody", retries=2, backoff_s=0.2)
    release = samples.microdata_release(samples.unique_name("micro"), tmp_path, WEEK1)
    t0 = time.monotonic()
    with pytest.raises(PublishError) as err:
        pub.publish(release)
    assert err.value.transient
    assert time.monotonic() - t0 >= 0.2 + 0.4  # two backoffs happened
    assert ckan_server.token not in str(err.value)


def test_bad_token_is_a_clear_terminal_error(samples, ckan_server, org_name, tmp_path):
    pub = CkanPublisher(ckan_server.url, "not-a-valid-token", organization=org_name)
    with pytest.raises(PublishError) as err:
        pub.publish(samples.microdata_release(samples.unique_name("micro"), tmp_path, WEEK1))
    assert not err.value.transient
    assert "OPENCITY_CKAN_TOKEN" in str(err.value)
    assert "not-a-valid-token" not in str(err.value)


def test_wrong_token_fails_even_when_nothing_needs_uploading(
        samples, ckan_server, org_name, tmp_path):
    release = samples.microdata_release(samples.unique_name("micro"), tmp_path, WEEK1)
    publisher(ckan_server, org_name).publish(release)  # public now: reads need no token
    pub = CkanPublisher(ckan_server.url, "wrong-token-123", organization=org_name)
    with pytest.raises(PublishError) as err:
        pub.publish(release)
    assert not err.value.transient
    assert "OPENCITY_CKAN_TOKEN" in str(err.value) and "wrong-token-123" not in str(err.value)
