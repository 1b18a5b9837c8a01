"""DCAT-AP out of the real CKAN (ckanext-dcat 2.4.4, profile euro_dcat_ap_3), read as a
harvester would: each dataset's ``/dataset/<id>.ttl`` and ``.jsonld`` and ``/catalog.ttl``,
parsed with rdflib, checked property by property against what was published."""

from __future__ import annotations

import datetime as dt

import pytest
import requests

from publish.base import sha256_file
from publish.ckan import CkanPublisher

rdflib = pytest.importorskip("rdflib")
from rdflib import Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, XSD

pytestmark = [pytest.mark.integration, pytest.mark.ckan]

SPDX = Namespace("http://spdx.org/rdf/terms#")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
EU = "http://publications.europa.eu/resource/authority/"
WEEK1 = dt.date(2026, 10, 5)


@pytest.fixture(scope="module")
def published(samples, ckan_server, tmp_path_factory):
    import uuid

    org = f"oc-dcat-{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp("dcat")
    releases = [samples.kpi_release(samples.unique_name("kpi"), root, WEEK1),
                samples.microdata_release(samples.unique_name("micro"), root, WEEK1)]
    pub = CkanPublisher(ckan_server.url, ckan_server.token, organization=org, backoff_s=0.2)
    for r in releases:
        pub.publish(r)
    return releases


def _graph(url: str, fmt: str):
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, f"{url}: HTTP {r.status_code}"
    return rdflib.Graph().parse(data=r.text, format=fmt)


@pytest.mark.parametrize("ext,fmt", [("ttl", "turtle"), ("jsonld", "json-ld")])
def test_dataset_dcat_ap_carries_iris_and_typed_literals(published, ckan_server, ext, fmt):
    for release in published:
        g = _graph(f"{ckan_server.url}/dataset/{release.name}.{ext}", fmt)
        (ds,) = list(g.subjects(RDF.type, DCAT.Dataset))
        freq = g.value(ds, DCTERMS.accrualPeriodicity)
        assert isinstance(freq, URIRef) and str(freq).startswith(EU + "frequency/")
        assert str(freq).endswith({"R/P1W": "WEEKLY", "R/P1D": "DAILY"}[
            release.accrual_periodicity])
        themes = set(g.objects(ds, DCAT.theme))
        assert themes and all(str(t).startswith(EU + "data-theme/") for t in themes)
        assert str(g.value(ds, DCTERMS.accessRights)) == EU + "access-right/PUBLIC"
        assert g.value(ds, DCTERMS.temporal) is not None
        assert g.value(ds, DCTERMS.spatial) is not None
        publisher = g.value(ds, DCTERMS.publisher)
        assert isinstance(publisher, URIRef)
        assert (publisher, RDF.type, FOAF.Agent) in g and g.value(publisher, FOAF.name)
        contact = g.value(ds, DCAT.contactPoint)
        assert contact is not None
        email = g.value(contact, VCARD.hasEmail)
        assert isinstance(email, URIRef) and str(email).startswith("mailto:")
        assert g.value(contact, VCARD.fn) is not None

        files = {f"{r.name} {r.partition}": r
                 for r in release.resources}
        dists = list(g.objects(ds, DCAT.distribution))
        seen = set()
        for d in dists:
            title = str(g.value(d, DCTERMS.title))
            lic = g.value(d, DCTERMS.license)
            assert lic == URIRef(EU + "licence/CC_BY_4_0"), title
            fmt_iri = g.value(d, DCTERMS["format"])
            assert isinstance(fmt_iri, URIRef) and str(fmt_iri).startswith(EU + "file-type/")
            assert isinstance(g.value(d, DCAT.mediaType), URIRef), title
            assert isinstance(g.value(d, DCAT.accessURL), URIRef), title
            if title not in files:
                continue  # datapackage.json, the DataStore table
            res = files[title]
            seen.add(title)
            assert str(fmt_iri).endswith("/" + res.format.upper())
            download = g.value(d, DCAT.downloadURL)
            assert isinstance(download, URIRef)
            body = requests.get(str(download), timeout=30)
            assert body.status_code == 200
            checksum = g.value(d, SPDX.checksum)
            assert g.value(checksum, SPDX.algorithm) == SPDX.checksumAlgorithm_sha256
            value = g.value(checksum, SPDX.checksumValue)
            assert value == Literal(sha256_file(res.path), datatype=XSD.hexBinary)
            import hashlib

            assert hashlib.sha256(body.content).hexdigest() == str(value)
        assert seen == set(files)


def test_catalog_endpoint_lists_the_datasets(published, ckan_server):
    g = _graph(f"{ckan_server.url}/catalog.ttl?q=name:{published[0].name}", "turtle")
    assert list(g.subjects(RDF.type, DCAT.Catalog))
    titles = {str(g.value(d, DCTERMS.title)) for d in g.subjects(RDF.type, DCAT.Dataset)}
    assert published[0].title in titles
    full = _graph(f"{ckan_server.url}/catalog.ttl", "turtle")
    (cat,) = list(full.subjects(RDF.type, DCAT.Catalog))
    assert full.value(cat, DCTERMS.title) is not None
    assert len(list(full.objects(cat, DCAT.dataset))) >= 1
