"""DCAT-AP out of the real CKAN (ckanext-dcat 2.4.4, profile euro_dcat_ap_3), read as a
harvester would: each dataset's ``/dataset/<id>.ttl`` and ``.jsonld`` and ``/catalog.ttl``,
parsed with rdflib, checked property by property against what was published."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from publish.base import sha256_file
from publish.ckan import CkanPublisher
from publish.ckan.partitions import partition_dataset_name

rdflib = pytest.importorskip("rdflib")
from rdflib import Literal, Namespace, URIRef
from rdflib import namespace as _ns

pytestmark = [pytest.mark.integration, pytest.mark.ckan]

# namespaces in one container: pytest inspects module globals, and rdflib namespaces warn
V = SimpleNamespace(DCAT=_ns.DCAT, DCTERMS=_ns.DCTERMS, FOAF=_ns.FOAF, RDF=_ns.RDF,
                    XSD=_ns.XSD, SPDX=Namespace("http://spdx.org/rdf/terms#"),
                    VCARD=Namespace("http://www.w3.org/2006/vcard/ns#"))
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
    # the product dataset and its partition dataset (the files) are both DCAT datasets
    for release, name in [(r, n) for r in published
                          for n in (r.name, partition_dataset_name(r.name, "dt=2026-10-05"))]:
        g = _graph(f"{ckan_server.url}/dataset/{name}.{ext}", fmt)
        (ds,) = list(g.subjects(V.RDF.type, V.DCAT.Dataset))
        freq = g.value(ds, V.DCTERMS.accrualPeriodicity)
        assert isinstance(freq, URIRef) and str(freq).startswith(EU + "frequency/")
        assert str(freq).endswith({"R/P1W": "WEEKLY", "R/P1D": "DAILY"}[
            release.accrual_periodicity])
        themes = set(g.objects(ds, V.DCAT.theme))
        assert themes and all(str(t).startswith(EU + "data-theme/") for t in themes)
        assert str(g.value(ds, V.DCTERMS.accessRights)) == EU + "access-right/PUBLIC"
        assert g.value(ds, V.DCTERMS.temporal) is not None
        assert g.value(ds, V.DCTERMS.spatial) is not None
        publisher = g.value(ds, V.DCTERMS.publisher)
        assert isinstance(publisher, URIRef)
        assert (publisher, V.RDF.type, V.FOAF.Agent) in g and g.value(publisher, V.FOAF.name)
        contact = g.value(ds, V.DCAT.contactPoint)
        assert contact is not None
        email = g.value(contact, V.VCARD.hasEmail)
        assert isinstance(email, URIRef) and str(email).startswith("mailto:")
        assert g.value(contact, V.VCARD.fn) is not None

        files = {f"{r.name} {r.partition}": r
                 for r in release.resources} if name != release.name else {}
        dists = list(g.objects(ds, V.DCAT.distribution))
        seen = set()
        for d in dists:
            title = str(g.value(d, V.DCTERMS.title))
            lic = g.value(d, V.DCTERMS.license)
            assert lic == URIRef(EU + "licence/CC_BY_4_0"), title
            fmt_iri = g.value(d, V.DCTERMS["format"])
            assert isinstance(fmt_iri, URIRef) and str(fmt_iri).startswith(EU + "file-type/")
            assert isinstance(g.value(d, V.DCAT.mediaType), URIRef), title
            assert isinstance(g.value(d, V.DCAT.accessURL), URIRef), title
            if title not in files:
                continue  # datapackage.json, the DataStore table
            res = files[title]
            seen.add(title)
            assert str(fmt_iri).endswith("/" + res.format.upper())
            download = g.value(d, V.DCAT.downloadURL)
            assert isinstance(download, URIRef)
            body = requests.get(str(download), timeout=30)
            assert body.status_code == 200
            checksum = g.value(d, V.SPDX.checksum)
            assert g.value(checksum, V.SPDX.algorithm) == V.SPDX.checksumAlgorithm_sha256
            value = g.value(checksum, V.SPDX.checksumValue)
            assert value == Literal(sha256_file(res.path), datatype=V.XSD.hexBinary)
            import hashlib

            assert hashlib.sha256(body.content).hexdigest() == str(value)
        assert seen == set(files)


def test_catalog_endpoint_lists_the_datasets(published, ckan_server):
    g = _graph(f"{ckan_server.url}/catalog.ttl?q=name:{published[0].name}", "turtle")
    assert list(g.subjects(V.RDF.type, V.DCAT.Catalog))
    titles = {str(g.value(d, V.DCTERMS.title)) for d in g.subjects(V.RDF.type, V.DCAT.Dataset)}
    assert published[0].title in titles
    full = _graph(f"{ckan_server.url}/catalog.ttl", "turtle")
    (cat,) = list(full.subjects(V.RDF.type, V.DCAT.Catalog))
    assert full.value(cat, V.DCTERMS.title) is not None
    assert len(list(full.objects(cat, V.DCAT.dataset))) >= 1


#: SEMIC's DCAT-AP 3.0.1 SHACL shapes, vendored (CC-BY 4.0, see tests/data/dcat-ap-3.0.1/SOURCE.txt).
SHAPES_DIR = Path(__file__).resolve().parents[2] / "data" / "dcat-ap-3.0.1"
#: The mandatory/cardinality constraints and the class ranges of the release.
SHAPES_FILES = ("dcat-ap-SHACL.ttl",)


def _shapes_graph():
    g = rdflib.Graph()
    for name in SHAPES_FILES:
        g.parse(SHAPES_DIR / name, format="turtle")
    return g


def _with_vocabulary_facts(g):
    """What loading the EU vocabularies and the vCard ontology would add to the data graph
    (the SEMIC shapes expect them loaded): authority-table IRIs are skos:Concepts with a
    label, and vcard:Organization is a vcard:Kind."""
    from rdflib.namespace import RDFS, SKOS

    g = g + rdflib.Graph()
    for o in set(g.objects()):
        if isinstance(o, URIRef) and (str(o).startswith(EU)
                                      or str(o).startswith("http://purl.org/adms/")):
            g.add((o, V.RDF.type, SKOS.Concept))
            g.add((o, SKOS.prefLabel, Literal(str(o).rsplit("/", 1)[-1], lang="en")))
    g.add((V.VCARD.Organization, RDFS.subClassOf, V.VCARD.Kind))
    return g


def test_dcat_ap_3_shacl_validation(published, ckan_server):
    import pyshacl  # a dev dependency: a missing one fails, never skips

    shapes = _shapes_graph()
    assert len(shapes) > 1000, f"the vendored shapes in {SHAPES_DIR} are incomplete"
    for release in published:
        g = _graph(f"{ckan_server.url}/dataset/{release.name}.ttl", "turtle")
        conforms, _, text = pyshacl.validate(_with_vocabulary_facts(g), shacl_graph=shapes,
                                             inference="rdfs", allow_warnings=True)
        assert conforms, text[:4000]
    # The shapes can fail: the same graph without the dataset's description (mandatory) does not
    # conform.
    g = _with_vocabulary_facts(g)
    (ds,) = list(g.subjects(V.RDF.type, V.DCAT.Dataset))
    g.remove((ds, V.DCTERMS.description, None))
    conforms, _, text = pyshacl.validate(g, shacl_graph=shapes, inference="rdfs",
                                         allow_warnings=True)
    assert not conforms and "description" in text
