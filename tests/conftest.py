"""Shared test set-up. Airflow reads its configuration at import, so the environment is set
here, at collection time, before any test module imports airflow."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# DuckDB-backed properties: the first query of a process (extension load, catalog) takes longer
# than Hypothesis' 200 ms default deadline, which made them flaky when run alone.
# derandomize: the default run is deterministic (issue 19); OPENCITY_HYPOTHESIS_EXPLORE=1 lets
# Hypothesis draw new examples (a separate, exploratory run).
hypothesis_settings.register_profile(
    "opencity", deadline=None,
    derandomize=os.environ.get("OPENCITY_HYPOTHESIS_EXPLORE", "0") != "1")
hypothesis_settings.load_profile("opencity")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="opencity-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                      f"sqlite:///{Path(os.environ['AIRFLOW_HOME']) / 'airflow.db'}")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# Retries stay on (opencity.dagkit) but short, so a test of a failing task does not wait.
os.environ.setdefault("OPENCITY_TASK_RETRIES", "1")
os.environ.setdefault("OPENCITY_RETRY_DELAY_SECONDS", "1")
# A per-session random pseudonymization key: tests never use a fixed secret.
os.environ.setdefault("OPENCITY_HMAC_KEY", secrets.token_hex(32))


@pytest.fixture(scope="session")
def airflow_db():
    """A fresh Airflow metadata DB (SQLite) for the session."""
    from airflow.utils import db

    db.resetdb()
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture(scope="session")
def sample_raw(tmp_path_factory) -> Path:
    """Sample data at a small scale, generated once per session (raw layout)."""
    from sample_data import generate

    out = tmp_path_factory.mktemp("sample") / "raw"
    generate(out, seed=7, scale=0.3, days=14, progress=False)
    return out


# -- Statistical tests: seeded by default, unseeded in their own stage (tests/stat_budget.py) --
def pytest_addoption(parser):
    parser.addoption(
        "--unseeded", action="store_true", default=False,
        help="draw DP noise from the production samplers (OpenDP's CSPRNG) in tests marked "
             "'statistical'; run as 'pytest -m statistical --unseeded' (scripts/test does)")


@pytest.fixture
def noise_random_state(request):
    """The ``random_state`` a statistical test passes to the DP code: a fixed seed per test in
    the default run, ``None`` (the production CSPRNG) under ``--unseeded``."""
    from stat_budget import stable_seed

    if request.config.getoption("--unseeded"):
        return None
    return stable_seed(request.node.nodeid)


@pytest.hookimpl(trylast=True)  # after -m has deselected
def pytest_collection_modifyitems(config, items):
    if not config.getoption("--unseeded"):
        return
    from stat_budget import ASSERTION_BUDGET, SUITE_ALPHA

    total = 0
    for item in items:
        marker = item.get_closest_marker("statistical")
        if marker is None:
            raise pytest.UsageError(
                f"--unseeded runs statistical tests only; {item.nodeid} is not marked "
                "'statistical' (select with -m statistical)")
        total += int(marker.kwargs.get("assertions", 1))
    if total > ASSERTION_BUDGET:
        raise pytest.UsageError(
            f"the unseeded stage makes {total} statistical assertions, over the budget of "
            f"{ASSERTION_BUDGET} that keeps its false-alarm probability at {SUITE_ALPHA:g}; "
            "raise ASSERTION_BUDGET in tests/stat_budget.py (each assertion's alpha falls) "
            "and re-check the tests' power")


# -- No silent green: every skip is listed, and under OPENCITY_STRICT_SKIPS=1 (scripts/test, CI)
# a skip whose reason is not documented below fails the run. -------------------------------
DOCUMENTED_SKIPS: dict[str, str] = {
    # "reason substring": "why this skip is acceptable in CI",
}
_SKIPPED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(
            longrepr)
        _SKIPPED.append((report.nodeid, reason))


def _undocumented() -> list[tuple[str, str]]:
    return [(node, reason) for node, reason in _SKIPPED
            if not any(key in reason for key in DOCUMENTED_SKIPS)]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _SKIPPED:
        terminalreporter.write_line("skips: 0")
        return
    terminalreporter.section("skipped tests")
    for node, reason in _SKIPPED:
        documented = any(key in reason for key in DOCUMENTED_SKIPS)
        terminalreporter.write_line(
            f"{'documented' if documented else 'UNDOCUMENTED'} skip: {node}: {reason}")
    if os.environ.get("OPENCITY_STRICT_SKIPS") == "1" and _undocumented():
        terminalreporter.write_line(
            f"{len(_undocumented())} undocumented skip(s) with OPENCITY_STRICT_SKIPS=1: the run "
            "fails (install the missing tool, or document the skip in tests/conftest.py)")


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("OPENCITY_STRICT_SKIPS") == "1" and _undocumented() and exitstatus == 0:
        session.exitstatus = 1

# -- the portal's state DB (budget ledger + release registry) --------------------------------
# Never the user's ~/.local/share/opencity/state.sqlite: one throwaway state per session, and
# a fresh one per test module (modules run the same sample days in their own run dirs, and
# one account per person would otherwise make a later module replay an earlier one's
# releases). A test that needs its own state sets OPENCITY_STATE_URL itself.
os.environ["OPENCITY_STATE_URL"] = str(Path(tempfile.mkdtemp(prefix="opencity-state-"))
                                       / "state.sqlite")


@pytest.fixture(autouse=True, scope="module")
def _module_state(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENCITY_STATE_URL",
                  str(tmp_path_factory.mktemp("state") / "state.sqlite"))
        # DAG runs pass the approval gate: the test portal's policy is approved (as the demo
        # does). Tests of the gate itself use a state of their own.
        from opencity.review.testing import approve_policy

        approve_policy(os.environ["OPENCITY_STATE_URL"])
        yield


PG_PORT = 55410  # i10-core's assigned port (127.0.0.1 only)


def _free_port(preferred: int | None = PG_PORT) -> int:
    """``preferred`` when it can be bound now, else an ephemeral port (other checkouts run
    this fixture too). Binding, not connecting, is the test: a client socket of another
    process may hold 127.0.0.1:55410 as its own ephemeral port without listening there."""
    import socket

    if preferred is not None:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (Debian binaries) on 127.0.0.1 (port 55410, or an ephemeral
    port when another checkout's server holds it) for the session.

    Fails (never skips) when it cannot start: the PostgreSQL ledger is the production one.
    Yields the base URL (trust auth on 127.0.0.1 only, a throwaway cluster). Stopped by PID.
    """
    import glob
    import shutil
    import signal
    import subprocess
    import time

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not bins:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; "
                    "install the Debian package 'postgresql'")
    bindir = Path(bins[-1])
    port = _free_port()
    root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="opencity-pg-"))
    data = base / "data"
    if root:
        shutil.chown(base, "postgres", "postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if root else []
    init = subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                           "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
                          check=False, capture_output=True, text=True)
    if init.returncode != 0:
        pytest.fail(f"initdb failed: {init.stderr[-2000:]}")
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    import psycopg

    cmd = [*prefix, str(bindir / "postgres"), "-D", str(data), "-c", "listen_addresses=127.0.0.1",
           "-c", f"port={port}", "-c", "unix_socket_directories=", "-c", "fsync=off",
           "-c", "max_connections=50"]
    for attempt in range(5):  # the port may have been taken meanwhile: retry on another
        log = open(base / "server.log", "w")  # noqa: SIM115 - closed at teardown
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline, ready = time.monotonic() + 60, False
        while not ready:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                ready = True
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
        if ready:
            break
        if proc.poll() is None:  # running but never accepted a connection
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        text = (base / "server.log").read_text()
        if "Address already in use" not in text or attempt == 4:
            proc.kill()
            pytest.fail("PostgreSQL did not start: " + text[-2000:])
        time.sleep(1)
        port = _free_port(preferred=None)
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        cmd = [c if not c.startswith("port=") else f"port={port}" for c in cmd]
    try:
        yield url
    finally:
        pid_file = data / "postmaster.pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else proc.pid
        os.kill(pid, signal.SIGINT)  # fast shutdown of the postmaster we started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_state_url(postgres_server):
    """A fresh, empty database on the session's PostgreSQL server."""
    import uuid

    import psycopg

    name = f"state_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.rsplit("/", 1)[0] + f"/{name}"


# -- an S3-compatible object store (moto's server, from PyPI) ---------------------------------
@pytest.fixture(scope="session")
def s3_server():
    """moto's S3-compatible server as its own process on 127.0.0.1 (an ephemeral port) for
    the session, stopped by PID. Yields its endpoint URL. Fails (never skips) when it cannot
    start: object storage is the production run directory of several workers."""
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.fail("moto_server not installed; run scripts/setup (the dev extra has moto)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = Path(tempfile.mkdtemp(prefix="opencity-s3-"))
    log = open(base / "server.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto_server did not start: "
                            + (base / "server.log").read_text()[-2000:])
            time.sleep(0.3)
    try:
        yield url
    finally:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The AWS variables of the test store, and a fresh bucket: yields its s3:// URL."""
    import uuid

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "opencity-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "opencity-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()
    bucket = f"opencity-{uuid.uuid4().hex[:10]}"
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}"


# -- the project's own local CKAN (scripts/ckan-dev) ------------------------------------------
# The session fixture starts CKAN with ``scripts/ckan-dev up`` when it does not answer yet
# (from nothing this installs PostgreSQL/Redis with apt and CKAN into its own venv: ~1.5 min)
# and stops it at the end of the session only when it started it.
CKAN_DEV = Path(__file__).resolve().parents[1] / "scripts" / "ckan-dev"


@dataclass(frozen=True)
class CkanServer:
    url: str
    token: str = field(repr=False)
    home: Path = Path()

    def gunicorn_pid(self) -> int:
        return int((self.home / "run" / "gunicorn.pid").read_text().split()[0])

    def stop_gunicorn(self) -> int:
        """SIGTERM gunicorn's master (CKAN's web app) and wait until the process is gone."""
        pid = self.gunicorn_pid()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return pid
            time.sleep(0.1)
        raise AssertionError(f"gunicorn {pid} did not stop within 60 s")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/3/action/status_show", timeout=5) as r:
                return json.load(r).get("success") is True
        except OSError:
            return False

    def up(self) -> None:
        proc = subprocess.run([str(CKAN_DEV), "up"], capture_output=True, text=True,
                              timeout=900, check=False)
        if proc.returncode != 0:
            pytest.fail(f"scripts/ckan-dev up failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def _env_from_script() -> dict[str, str]:
    out = subprocess.run([str(CKAN_DEV), "env"], capture_output=True, text=True, check=True)
    env = {}
    for line in out.stdout.splitlines():
        if line.startswith("export ") and "$(" not in line:
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


@pytest.fixture(scope="session")
def ckan_server() -> CkanServer:
    """The local CKAN (URL, sysadmin token, home); started here if it is not running."""
    env = _env_from_script()
    home = Path(env["OPENCITY_CKAN_HOME"])
    token_file = Path(env["OPENCITY_CKAN_TOKEN_FILE"])
    probe = CkanServer(env["OPENCITY_CKAN_URL"], "", home)
    # A CKAN answering on the port but without our token file belongs to another checkout:
    # `up` then stops with a clear "port in use" message.
    started = not (probe.answers() and token_file.is_file())
    if started:
        t0 = time.monotonic()
        probe.up()
        print(f"\nscripts/ckan-dev up: {time.monotonic() - t0:.1f} s")
    server = CkanServer(env["OPENCITY_CKAN_URL"], token_file.read_text().strip(), home)
    yield server
    if started:
        subprocess.run([str(CKAN_DEV), "down"], capture_output=True, check=False, timeout=120)


@pytest.fixture()
def ckan_admin(ckan_server):
    import ckanapi

    return ckanapi.RemoteCKAN(ckan_server.url, apikey=ckan_server.token)


@pytest.fixture()
def ckan_anon(ckan_server):
    import ckanapi

    return ckanapi.RemoteCKAN(ckan_server.url)


@pytest.fixture()
def ckan_partition_table(ckan_server):
    """``get(dataset, partition)``: the Parquet resource of one partition as anyone downloads
    it from CKAN (anonymous package_show and GET), read as a table; fails unless there is
    exactly one."""
    import io

    import ckanapi
    import pyarrow.parquet as pq
    import requests

    anon = ckanapi.RemoteCKAN(ckan_server.url)

    def get(dataset: str, partition: str):
        from publish.ckan.partitions import partition_dataset_name

        try:  # each partition is a CKAN dataset of its own (publish.ckan.partitions)
            pkg = anon.action.package_show(id=partition_dataset_name(dataset, partition))
        except ckanapi.NotFound:
            pkg = anon.action.package_show(id=dataset)
        parquet = [r for r in pkg["resources"] if r.get("format", "").endswith("/PARQUET")
                   and r.get("partition") == partition]
        assert len(parquet) == 1, (dataset, partition, [r.get("partition") for r in parquet])
        body = requests.get(parquet[0]["url"], timeout=60)
        body.raise_for_status()
        return pq.read_table(io.BytesIO(body.content))

    return get
