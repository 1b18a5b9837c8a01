"""Fixtures for tests against the project's own local CKAN (scripts/ckan-dev).

The CKAN server fixtures themselves (``ckan_server``, ``ckan_admin``, ``ckan_anon``) live in
tests/conftest.py, so Airflow tests elsewhere can publish to CKAN too. ``samples`` gives the
test modules small sample products (a weekly KPI table, k-anonymous microdata) as
DatasetReleases.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[3]
CKAN_DEV = REPO / "scripts" / "ckan-dev"


@pytest.fixture()
def org_name() -> str:
    """A fresh organization per test, so reruns against a long-lived CKAN never collide."""
    return f"oc-test-{uuid.uuid4().hex[:10]}"


# ------------------------------------------------------------------------ sample products
DISTRICTS = ("D01", "D02", "D03", "D04")
REQUEST_TYPES = ("pothole", "graffiti", "streetlight")


def kpi_table(week: dt.date, shift: int = 0) -> pa.Table:
    """A weekly KPI table (district x request type), primary key (district_id, type, week)."""
    n = len(DISTRICTS) * len(REQUEST_TYPES)
    districts = [d for d in DISTRICTS for _ in REQUEST_TYPES]
    types = list(REQUEST_TYPES) * len(DISTRICTS)
    counts = [(7 * i + 3 + shift) % 40 + 15 for i in range(n)]
    counts[5] = None  # a suppressed cell
    return pa.table({
        "district_id": pa.array(districts, pa.string()),
        "request_type": pa.array(types, pa.string()),
        "week_start": pa.array([week] * n, pa.date32()),
        "requests": pa.array(counts, pa.int64()),
        "median_hours_to_close": pa.array([round(1.5 + 0.25 * i, 2) for i in range(n)],
                                          pa.float64()),
        "suppressed": pa.array([c is None for c in counts], pa.bool_()),
    })


def microdata_table(day: dt.date) -> pa.Table:
    """k-anonymous microdata sample (generalized quasi-identifiers)."""
    n = 30
    return pa.table({
        "record_id": pa.array([f"r{i:04d}" for i in range(n)]),
        "age_band": pa.array(["20-39", "40-59", "60+"] * 10),
        "district_id": pa.array([DISTRICTS[i % 2] for i in range(n)]),
        "request_type": pa.array([REQUEST_TYPES[i % 3] for i in range(n)]),
        "created_at": pa.array([dt.datetime(day.year, day.month, day.day, i % 24,
                                            tzinfo=dt.UTC) for i in range(n)],
                               pa.timestamp("us", tz="UTC")),
    })


def write_partition(folder: Path, stem: str, table: pa.Table) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    parquet, csv = folder / f"{stem}.parquet", folder / f"{stem}.csv"
    pq.write_table(table, parquet)
    pacsv.write_csv(table, csv)
    return parquet, csv


def kpi_release(name: str, root: Path, week: dt.date, shift: int = 0):
    """A DatasetRelease of one weekly KPI partition (goes to the DataStore too)."""
    from publish.base import DatasetRelease, Field, Resource

    part = f"dt={week:%Y-%m-%d}"
    parquet, csv = write_partition(root / name / part, "part-0", kpi_table(week, shift))
    end = week + dt.timedelta(days=7)
    return DatasetRelease(
        name=name,
        title="311 requests per district and type, weekly (test)",
        description="Weekly 311 request counts; cells under 15 requesters suppressed.",
        resources=(
            Resource(parquet, "requests-weekly", "parquet", f"Week {week} (Parquet)", part),
            Resource(csv, "requests-weekly-csv", "csv", f"Week {week} (CSV copy)", part),
        ),
        fields=(
            Field("district_id", "string", "District code (public reference table)"),
            Field("request_type", "string", "Request type"),
            Field("week_start", "date", "Monday of the week"),
            Field("requests", "integer", "Number of requests; empty when suppressed"),
            Field("median_hours_to_close", "number", "Median resolution time", "hours"),
            Field("suppressed", "boolean", "True when the count was withheld"),
        ),
        privacy={"privacy_method": "small_count_suppression", "suppression_threshold": 15,
                 "privacy_unit": "requester"},
        tags=("311", "kpi", "test"),
        temporal_coverage=(week.isoformat(), end.isoformat()),
        spatial_coverage="OpenCity sample city",
        accrual_periodicity="R/P1W",
        provenance={"pipeline_version": "0.1.0", "run_id": f"test__{week}",
                    "input_hashes": {"requests.csv": "0" * 64}},
        primary_key=("district_id", "request_type", "week_start"),
    )


def microdata_release(name: str, root: Path, day: dt.date):
    """A DatasetRelease of k-anonymous microdata (no DataStore)."""
    from publish.base import DatasetRelease, Field, Resource

    part = f"dt={day:%Y-%m-%d}"
    parquet, csv = write_partition(root / name / part, "part-0", microdata_table(day))
    return DatasetRelease(
        name=name,
        title="311 requests, k-anonymous microdata (test)",
        description="One row per request; quasi-identifiers generalized to k=5.",
        resources=(
            Resource(parquet, "requests", "parquet", f"Day {day} (Parquet)", part),
            Resource(csv, "requests-csv", "csv", f"Day {day} (CSV copy)", part),
        ),
        fields=(
            Field("record_id", "string", "Random record number"),
            Field("age_band", "string", "Requester age band"),
            Field("district_id", "string", "District code"),
            Field("request_type", "string", "Request type"),
            Field("created_at", "datetime", "Creation time (UTC)"),
        ),
        privacy={"privacy_method": "k_anonymity", "k_anonymity_k": 5,
                 "suppression_limit": 0.02,
                 "quasi_identifiers": ["age_band", "district_id"]},
        tags=("311", "microdata", "test"),
        temporal_coverage=(day.isoformat(), (day + dt.timedelta(days=1)).isoformat()),
        spatial_coverage="OpenCity sample city",
        accrual_periodicity="R/P1D",
        provenance={"pipeline_version": "0.1.0", "run_id": f"test__{day}"},
    )


def partition_packages(api, name: str) -> list[dict]:
    """The partition datasets of product ``name`` that ``api`` may see (publish.ckan.partitions:
    one CKAN dataset per partition, listed by the product's ``opencity_partitions``)."""
    import ckanapi

    from publish.ckan.partitions import listed_partitions, partition_dataset_name

    out = []
    for part in listed_partitions(api.action.package_show(id=name)):
        try:
            out.append(api.action.package_show(id=partition_dataset_name(name, part)))
        except (ckanapi.NotFound, ckanapi.NotAuthorized):
            continue
    return out


def product(api, name: str) -> dict:
    """The product dataset as a reader sees it: its package, with the resources of every
    partition dataset ``api`` may see appended (each carries its ``partition``)."""
    pkg = api.action.package_show(id=name)
    resources = list(pkg["resources"])
    for child in partition_packages(api, name):
        resources += child["resources"]
    return {**pkg, "resources": resources}


def portal_state(admin, names: list[str]) -> dict:
    """What a citizen and a steward would compare between runs: per dataset (the product
    and each of its partition datasets), its visibility, metadata timestamp, extras and
    resources (id, name, hash, url)."""
    state = {}
    pkgs = []
    for name in names:
        pkgs.append(admin.action.package_show(id=name))
        pkgs += partition_packages(admin, name)
    for pkg in pkgs:
        name = pkg["name"]
        state[name] = {
            "private": pkg["private"],
            "metadata_modified": pkg["metadata_modified"],
            "extras": {e["key"]: e["value"] for e in pkg.get("extras", [])},
            "resources": sorted((r["id"], r["name"], r.get("hash"), r["url"],
                                 r.get("datastore_partitions")) for r in pkg["resources"]),
        }
    return state


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def samples() -> SimpleNamespace:
    """The sample-product helpers of this module, for test modules (which cannot import a
    conftest under --import-mode=importlib)."""
    return SimpleNamespace(kpi_release=kpi_release, microdata_release=microdata_release,
                           kpi_table=kpi_table, portal_state=portal_state,
                           unique_name=unique_name, product=product,
                           partition_packages=partition_packages)


# ------------------------------------------------------------------------ fault proxy
FAULT_PORTS = range(5070, 5090)  # i15-ckan's assigned fault-proxy ports


@dataclass
class Fault:
    """One planned fault: on the ``nth`` (1-based) call of ``action``, do ``mode``.

    Modes: ``drop`` (forward, let CKAN commit, then close the client connection without an
    answer), ``delay`` (forward, then hold the answer ``delay_s`` seconds: beyond the
    client's timeout), ``reset`` (send a TCP RST before forwarding: nothing reaches CKAN).
    """

    action: str
    mode: str
    nth: int = 1
    delay_s: float = 6.0
    fired: int = 0


class FaultProxy:
    """A small threaded HTTP proxy between the publisher and the real CKAN (127.0.0.1).

    Every request is forwarded to ``upstream`` unchanged (one upstream connection per
    request); ``calls`` counts API actions by name; planned :class:`Fault` s fire once.
    """

    def __init__(self, upstream: str, port: int) -> None:
        import http.server
        import socketserver
        import threading
        import urllib.parse

        self.upstream = urllib.parse.urlsplit(upstream)
        self.faults: list[Fault] = []
        self.calls: dict[str, int] = {}
        self.log: list[tuple[str, str]] = []  # (action, what happened)
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                proxy._forward(self)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @staticmethod
    def fault(action: str, mode: str, nth: int = 1, delay_s: float = 6.0) -> Fault:
        """A :class:`Fault` (test modules cannot import this conftest)."""
        if mode not in ("drop", "delay", "reset"):
            raise ValueError(f"unknown fault mode {mode!r}")
        return Fault(action, mode, nth, delay_s)

    def plan(self, *faults: Fault) -> None:
        with self._lock:
            self.faults = list(faults)
            self.calls = {}
            self.log = []

    def _fault_for(self, action: str) -> Fault | None:
        with self._lock:
            self.calls[action] = self.calls.get(action, 0) + 1
            for f in self.faults:
                if f.action == action and (f.nth == 0 or (f.nth == self.calls[action]
                                                          and not f.fired)):
                    f.fired += 1
                    return f
        return None

    def _forward(self, h) -> None:
        import http.client
        import socket
        import struct

        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        action = h.path.split("?")[0].rsplit("/", 1)[-1] if "/api/" in h.path else "GET"
        fault = self._fault_for(action)
        if fault and fault.mode == "reset":
            self.log.append((action, "reset"))
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            h.close_connection = True
            h.connection.close()
            return
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port,
                                          timeout=300)
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() not in ("host", "connection", "keep-alive")}
        headers["Host"] = f"{self.upstream.hostname}:{self.upstream.port}"
        conn.request(h.command, h.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        if fault and fault.mode == "drop":
            self.log.append((action, f"dropped after CKAN answered {resp.status}"))
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault and fault.mode == "delay":
            self.log.append((action, f"delayed {fault.delay_s} s after {resp.status}"))
            time.sleep(fault.delay_s)
        try:
            h.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError:
            h.close_connection = True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fault_proxy(ckan_server):
    """A FaultProxy in front of the local CKAN, on the first free port of 5070-5089."""
    proxy = None
    for port in FAULT_PORTS:
        try:
            proxy = FaultProxy(ckan_server.url, port)
            break
        except OSError:
            continue
    if proxy is None:
        pytest.fail("no free fault-proxy port in 5070-5089")
    yield proxy
    proxy.close()
