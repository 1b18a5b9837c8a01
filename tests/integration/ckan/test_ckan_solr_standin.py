"""The Solr stand-in (scripts/ckan/solr_standin.py) over real HTTP, with CKAN-shaped requests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "ckan" / "solr_standin.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Solr:
    def __init__(self, data: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}/solr/ckan"
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--port", str(self.port), "--data", str(data)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("stand-in did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def post(self, path: str, body: bytes, ctype: str) -> dict:
        req = urllib.request.Request(f"{self.base}{path}", data=body,
                                     headers={"Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def add(self, docs: list[dict]) -> None:
        self.post("/update/?commit=true", json.dumps(docs).encode(), "application/json")

    def select(self, **params) -> dict:
        params.setdefault("wt", "json")
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.base}/select/?{query}", timeout=10) as r:
            return json.load(r)

    def ids(self, **params) -> list[str]:
        params.setdefault("fl", "id")
        return sorted(d["id"] for d in self.select(**params)["response"]["docs"])


def _doc(i: int, **kw) -> dict:
    doc = {"index_id": f"idx{i}", "id": f"id{i}", "name": f"dataset-{i}", "site_id": "default",
           "entity_type": "package", "dataset_type": "dataset", "state": "active",
           "capacity": "public", "permission_labels": ["public"], "title": f"Dataset {i}",
           "tags": ["311"], "metadata_modified": f"2026-10-0{i}T00:00:00Z",
           "data_dict": json.dumps({"id": f"id{i}"})}
    doc.update(kw)
    return doc


@pytest.fixture()
def solr(tmp_path):
    server = Solr(tmp_path)
    yield server
    server.stop()


def test_schema_version_is_one_ckan_accepts(solr):
    with urllib.request.urlopen(f"{solr.base}/admin/file/?file=schema.xml", timeout=10) as r:
        assert b'name="ckan-2.12"' in r.read()


def test_ckan_package_search_filters(solr):
    solr.add([_doc(1), _doc(2, capacity="private", permission_labels=["member-org1"]),
              _doc(3, state="deleted"), _doc(4, site_id="other"),
              _doc(5, tags=["waste"], title="Waste pickups")])
    fq = ['+site_id:"default"', "+state:active"]
    anon = fq + ['+permission_labels:("public")']
    member = fq + ['+permission_labels:("public" OR "member-org1")']
    assert solr.ids(q="*:*", fq=anon) == ["id1", "id5"]
    assert solr.ids(q="*:*", fq=member) == ["id1", "id2", "id5"]
    assert solr.ids(q="waste", fq=anon, defType="dismax") == ["id5"]
    assert solr.ids(q="tags:311", fq=anon) == ["id1"]
    assert solr.ids(q="*:*", fq=fq + ["-capacity:private"]) == ["id1", "id5"]
    assert solr.ids(q="name:dataset-*", fq=member) == ["id1", "id2", "id5"]
    assert solr.ids(q="metadata_modified:[2026-10-02T00:00:00Z TO NOW]", fq=fq) == ["id2", "id5"]


def test_sort_paging_and_facets(solr):
    solr.add([_doc(i, tags=["a"] if i % 2 else ["a", "b"]) for i in range(1, 6)])
    res = solr.select(q="*:*", sort="metadata_modified desc", rows=2, start=1, fl="id",
                      facet="true", **{"facet.field": ["tags"], "facet.mincount": 1})
    assert res["response"]["numFound"] == 5
    assert [d["id"] for d in res["response"]["docs"]] == ["id4", "id3"]
    assert res["facet_counts"]["facet_fields"]["tags"] == ["a", 5, "b", 2]


def test_delete_by_ckan_query_and_persistence(solr, tmp_path):
    solr.add([_doc(1), _doc(2)])
    query = '+entity_type:package AND +(id:"id1" OR name:"id1") AND +site_id:"default"'
    solr.post("/update/?commit=true", f"<delete><query>{query}</query></delete>".encode(),
              "text/xml")
    assert solr.ids(q="*:*") == ["id2"]
    solr.stop()
    again = Solr(tmp_path)  # a restart keeps the index
    try:
        assert again.ids(q="*:*") == ["id2"]
    finally:
        again.stop()


def test_bad_query_is_a_400(solr):
    with pytest.raises(urllib.error.HTTPError) as err:
        solr.select(q="name:(unclosed")
    assert err.value.code == 400
