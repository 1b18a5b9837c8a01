"""Retry behaviour against a real HTTP server that answers like an overloaded portal."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from opencity.errors import PublishError
from publish.ckan import CkanPublisher

pytestmark = pytest.mark.integration


class _Portal(BaseHTTPRequestHandler):
    """Answers 503 to the first `fail` requests, then a CKAN 404 for every action."""

    fail = 0
    seen: ClassVar[list[str]] = []

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        type(self).seen.append(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if len(type(self).seen) <= type(self).fail:
            body, status = b"<html>503 Service Unavailable</html>", 503
        else:
            body, status = json.dumps({"success": False, "error": {
                "__type": "Validation Error", "name": ["Missing value"]}}).encode(), 409
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


@pytest.fixture()
def portal():
    _Portal.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Portal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_5xx_is_retried_with_backoff_then_reported_as_transient(portal, samples, tmp_path):
    _Portal.fail = 100
    url = f"http://127.0.0.1:{portal.server_address[1]}"
    pub = CkanPublisher(url, "secret-token-xyz", organization="city", retries=3, backoff_s=0.1)
    t0 = time.monotonic()
    with pytest.raises(PublishError) as err:
        pub.publish(samples.microdata_release("micro-x", tmp_path, dt.date(2026, 10, 5)))
    assert err.value.transient
    assert len(_Portal.seen) == 4  # one try + three retries of organization_show
    assert time.monotonic() - t0 >= 0.1 + 0.2 + 0.4
    assert "secret-token-xyz" not in str(err.value)


def test_recovery_after_a_5xx_reaches_the_next_answer(portal, samples, tmp_path):
    _Portal.fail = 2  # two 503s, then CKAN's own (terminal) validation error
    url = f"http://127.0.0.1:{portal.server_address[1]}"
    pub = CkanPublisher(url, "secret-token-xyz", organization="city", retries=3, backoff_s=0.05)
    with pytest.raises(PublishError) as err:
        pub.publish(samples.microdata_release("micro-y", tmp_path, dt.date(2026, 10, 5)))
    assert not err.value.transient
    assert "name: Missing value" in str(err.value)
    assert len(_Portal.seen) == 3
