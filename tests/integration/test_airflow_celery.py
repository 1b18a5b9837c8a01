"""The DAGs under real production Airflow: PostgreSQL + Redis from Debian packages, `airflow db
migrate`, API server, scheduler, dag-processor and two Celery workers with their own
AIRFLOW_HOME, temp and log directories. The portal's state (budget ledger, release registry)
is a database on that PostgreSQL server, shared by every worker.

* the 311 DAG for one given week, triggered through the REST API with an explicit data
  interval and a run id naming the partition: every task succeeds, the catalog holds it;
* a 7-day `airflow backfill create` of cdr_mobility (runs in parallel): every partition ends
  in the local catalog (these two share a run volume, the local catalog's set-up);
* the 311 DAG for another week with its run directory on object storage (moto's S3 server)
  and CKAN as the publish target: the workers share no directory at all, the tasks
  exchange s3:// URIs and no scratch copy stays on a worker's disk.

Ports (127.0.0.1 only): PostgreSQL 55420, Redis 6400, API server 8090, worker log servers
8791/8792 (not started: --skip-serve-logs). Every process is stopped by its PID.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PG_PORT, REDIS_PORT, API_PORT = 55420, 6400, 8090
pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.slow]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


def _need_tools():
    missing = []
    if _pg_bin() is None:
        missing.append("postgresql (Debian package)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server (Debian package)")
    if shutil.which("runuser") is None or not _user_exists("postgres"):
        missing.append("runuser and the postgres user")
    try:
        import asyncpg  # noqa: F401
        import psycopg  # noqa: F401
        from airflow.providers.celery.executors import celery_executor  # noqa: F401
    except ImportError as err:
        missing.append(f"opencity[production] ({err.name})")
    return missing


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait(what: str, check, timeout: float, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{name} exited with {p.returncode} while waiting for {what}")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Cluster:
    """The processes of one production-like Airflow installation on this host."""

    def __init__(self, base: Path, run_dir: Path, raw_dir: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.base, self.run_dir, self.raw_dir = base, run_dir, raw_dir
        self.state_url = f"postgresql://postgres@127.0.0.1:{PG_PORT}/opencity_state"
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.logs: dict[str, Path] = {}
        self.airflow = str(Path(sys.executable).with_name("airflow"))
        db = f"postgresql+psycopg://postgres@127.0.0.1:{PG_PORT}/airflow"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg://postgres@127.0.0.1:"
                                               f"{PG_PORT}/airflow",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{API_PORT}/execution/",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{API_PORT}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
            "PYTHONWARNINGS": "ignore",
            "GX_ANALYTICS_ENABLED": "false",
            # Only triggered intervals and backfills here: no scheduled "latest" interval.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            # Run ids name their partition (manual__dt=2026-10-05): allow "=" in them.
            "AIRFLOW__SCHEDULER__ALLOWED_RUN_ID_PATTERN": r"^[A-Za-z0-9_.~:+=-]+$",
            "PYTHONUNBUFFERED": "1",
            "OPENCITY_TASK_RETRIES": "1",
            "OPENCITY_RETRY_DELAY_SECONDS": "2",
            "OPENCITY_RUN_DIR": str(run_dir),
            "OPENCITY_RAW_DIR": str(raw_dir),
            "OPENCITY_STATE_URL": self.state_url,
            **(extra_env or {}),
        }

    # -- processes ----------------------------------------------------------------------
    def start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = self.base / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.logs[name] = log
        p = subprocess.Popen(cmd, env=env or self.env, stdout=log.open("wb"),
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        self.procs.append((name, p))
        return p

    def run(self, cmd: list[str], timeout: float = 180, env: dict | None = None) -> str:
        out = subprocess.run(cmd, env=env or self.env, capture_output=True, text=True,
                             timeout=timeout, check=False)
        if out.returncode:
            raise AssertionError(f"{' '.join(cmd[:4])} failed ({out.returncode}):\n"
                                 f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return out.stdout

    def stop(self) -> None:
        # Airflow components stop cleanly on SIGINT (SIGTERM can orphan their children);
        # each was started in its own session, so the signal goes to its process group.
        for name, p in reversed(self.procs):
            if p.poll() is None:
                sig = signal.SIGTERM if name in ("postgres", "redis") else signal.SIGINT
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    continue
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)

    def tail(self, name: str, n: int = 60) -> str:
        try:
            return "\n".join(self.logs[name].read_text(errors="replace").splitlines()[-n:])
        except (KeyError, OSError):
            return ""

    # -- services -----------------------------------------------------------------------
    def start_postgres(self) -> None:
        pg = _pg_bin()
        data, sock = self.base / "pg" / "data", self.base / "pg" / "sock"
        sock.mkdir(parents=True)
        shutil.chown(self.base / "pg", "postgres")
        shutil.chown(sock, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
        self.run([*as_pg, str(pg / "initdb"), "-D", str(data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8"], timeout=120)
        p = self.start("postgres", [*as_pg, str(pg / "postgres"), "-D", str(data),
                                    "-p", str(PG_PORT), "-k", str(sock),
                                    "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                    "-c", "max_connections=200"])
        psql = [*as_pg, str(pg / "psql"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U",
                "postgres", "-tAc"]
        _wait("PostgreSQL", lambda: subprocess.run([*psql, "select 1"], capture_output=True, check=False)
              .returncode == 0, 60, [("postgres", p)])
        self.run([*psql, "CREATE DATABASE airflow"])
        self.run([*psql, "CREATE DATABASE opencity_state"])
        # The test portal's policy is approved (the gate's own tests answer it themselves).
        from opencity.review.testing import approve_policy

        approve_policy(self.state_url)

    def start_redis(self) -> None:
        p = self.start("redis", ["redis-server", "--port", str(REDIS_PORT), "--bind",
                                 "127.0.0.1", "--save", "", "--appendonly", "no"])
        _wait("Redis", lambda: not _port_free(REDIS_PORT), 30, [("redis", p)])

    def start_airflow(self) -> None:
        home = self.base / "control"
        env = {**self.env, "AIRFLOW_HOME": str(home)}
        t0 = time.monotonic()
        self.run([self.airflow, "db", "migrate"], timeout=300, env=env)
        self.migrate_s = time.monotonic() - t0
        comps = [
            ("api-server", [self.airflow, "api-server", "--host", "127.0.0.1", "--port",
                            str(API_PORT), "--workers", "1"]),
            ("scheduler", [self.airflow, "scheduler"]),
            ("dag-processor", [self.airflow, "dag-processor"]),
        ]
        for name, cmd in comps:
            self.start(name, cmd, env)
        for i in (1, 2):  # two workers: own AIRFLOW_HOME, temp dir and log folder
            whome = self.base / f"worker{i}"
            (whome / "tmp").mkdir(parents=True)
            wenv = {**self.env, "AIRFLOW_HOME": str(whome), "TMPDIR": str(whome / "tmp"),
                    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(whome / "logs"),
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(8790 + i)}
            self.start(f"worker{i}", [self.airflow, "celery", "worker", "--celery-hostname",
                                      f"w{i}@%h", "--concurrency", "2", "--skip-serve-logs"],
                       wenv)
        self.ready_t0 = time.monotonic()
        _wait("the API server", lambda: self.api("GET", "/api/v2/monitor/health") is not None,
              120, self.procs)
        _wait("both Celery workers", lambda: all(
            "ready" in self.logs[f"worker{i}"].read_text(errors="replace") for i in (1, 2)),
            120, self.procs)
        _wait("the DAGs to be parsed", lambda: {d["dag_id"] for d in self.api(
            "GET", "/api/v2/dags")["dags"]} >= {"opencity_311", "cdr_mobility"}, 120,
            self.procs)

    # -- REST ---------------------------------------------------------------------------
    def api(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(
            f"http://127.0.0.1:{API_PORT}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            if method == "GET" and err.code >= 500:
                raise
            raise AssertionError(f"{method} {path}: HTTP {err.code}: "
                                 f"{err.read()[:2000].decode(errors='replace')}") from None

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        from urllib.parse import quote

        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
        state: dict = {}

        def done():
            state.update(self.api("GET", path))
            return state["state"] in ("success", "failed")

        try:
            _wait(f"run {run_id}", done, timeout, self.procs)
        except AssertionError as err:
            raise AssertionError(f"{err}; last state {state.get('state')}\n"
                                 f"{self.diagnostics()}") from None
        return state

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        from urllib.parse import quote

        tis = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
                              "/taskInstances")["task_instances"]
        return {t["task_id"]: t["state"] for t in tis}

    def diagnostics(self) -> str:
        return "\n".join(f"--- {n}\n{self.tail(n, 25)}" for n, _ in self.procs
                         if n not in ("postgres", "redis"))


@pytest.fixture(scope="module")
def cluster(sample_raw, s3_server, ckan_server):
    missing = _need_tools()
    if missing:
        pytest.skip("needs " + ", ".join(missing) + " (scripts/test installs them)")
    busy = [p for p in (PG_PORT, REDIS_PORT, API_PORT) if not _port_free(p)]
    if busy:
        pytest.fail(f"ports {busy} are in use on 127.0.0.1; stop what holds them")
    base = Path(tempfile.mkdtemp(prefix="opencity-celery-"))
    os.chmod(base, 0o755)  # the postgres user must reach its data directory
    run_dir = base / "shared-run"  # the one shared volume (see README 'Production Airflow')
    # Object storage (the S3 run) and CKAN credentials reach the workers by environment,
    # as a deployment's secrets do; neither is a DAG param.
    c = Cluster(base, run_dir, sample_raw, extra_env={
        "AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "opencity-test",
        "AWS_SECRET_ACCESS_KEY": "opencity-test-secret", "AWS_DEFAULT_REGION": "us-east-1",
        "OPENCITY_CKAN_TOKEN": ckan_server.token,
        "OPENCITY_CKAN_ORGANIZATION": "opencity-celery-test"})
    t0 = time.monotonic()
    try:
        c.start_postgres()
        c.start_redis()
        c.start_airflow()
        c.startup_s = time.monotonic() - t0
        yield c
    finally:
        c.stop()
        assert all(p.poll() is not None for _, p in c.procs), "a process survived"
        shutil.rmtree(base, ignore_errors=True)


def _catalog_partitions(run_dir: Path, dataset: str) -> set[str]:
    pkg = json.loads((run_dir / "catalog" / dataset / "package.json").read_text())
    return {r["partition"] for r in pkg["resources"]}


def test_bad_params_are_refused_by_the_rest_api(cluster):
    """Typed params: a wrong type or a looser-than-policy value never creates a run."""
    for conf in ({"epsilon": "lots"}, {"epsilon": 5}):
        with pytest.raises(AssertionError, match=r"HTTP 400.*epsilon"):
            cluster.api("POST", "/api/v2/dags/cdr_mobility/dagRuns", {
                "logical_date": "2026-10-05T00:00:00Z", "conf": conf})
    runs = cluster.api("GET", "/api/v2/dags/cdr_mobility/dagRuns")["dag_runs"]
    assert runs == []


def test_311_week_via_rest_with_explicit_interval(cluster):
    t0 = time.monotonic()
    run_id = "manual__dt=2026-10-05"
    created = cluster.api("POST", "/api/v2/dags/opencity_311/dagRuns", {
        "dag_run_id": run_id,
        "logical_date": "2026-10-05T00:00:00Z",
        "data_interval_start": "2026-10-05T00:00:00Z",
        "data_interval_end": "2026-10-12T00:00:00Z",
        "note": "Partition dt=2026-10-05 (week 2026-10-05..12)",
        "conf": {},
    })
    assert created["data_interval_start"].startswith("2026-10-05")
    run = cluster.wait_run("opencity_311", run_id, timeout=300)
    states = cluster.task_states("opencity_311", run_id)
    assert run["state"] == "success", (states, cluster.diagnostics())
    # the policy is approved for this portal: the officer's wait branch is skipped
    waiting = {"approval.wait", "approval.approved"}
    assert {t: st for t, st in states.items() if t in waiting} == dict.fromkeys(waiting,
                                                                               "skipped")
    assert {st for t, st in states.items() if t not in waiting} == {"success"}
    assert len(states) == 13  # ingest, 3 tasks per product, manifest, the gate's 5
    assert _catalog_partitions(cluster.run_dir, "opencity-311-requests-weekly") == {
        "dt=2026-10-05"}
    manifest = json.loads((cluster.run_dir / "manifests" / "opencity_311" /
                           "dt=2026-10-05.json").read_text())
    assert manifest["run_id"] == run_id
    # Both workers took tasks: they share no local directory, only the run volume.
    logs = [list((cluster.base / f"worker{i}" / "logs").rglob("*.log")) for i in (1, 2)]
    print(f"311 run: {time.monotonic() - t0:.1f} s; startup {cluster.startup_s:.1f} s "
          f"(db migrate {cluster.migrate_s:.1f} s); task logs per worker "
          f"{[len(x) for x in logs]}")


def test_cdr_backfill_of_7_days_keeps_every_partition(cluster):
    t0 = time.monotonic()
    out = cluster.run([cluster.airflow, "backfill", "create", "--dag-id", "cdr_mobility",
                       "--from-date", "2026-10-05", "--to-date", "2026-10-11",
                       "--max-active-runs", "7"],
                      env={**cluster.env, "AIRFLOW_HOME": str(cluster.base / "control")})
    assert "backfill" in out.lower()
    days = [f"2026-10-{d:02d}" for d in range(5, 12)]

    def all_done():
        runs = cluster.api("GET", "/api/v2/dags/cdr_mobility/dagRuns?limit=50")["dag_runs"]
        mine = [r for r in runs if r["run_type"] == "backfill"]
        return len(mine) == 7 and all(r["state"] in ("success", "failed") for r in mine)

    try:
        _wait("the 7-day backfill", all_done, 420, cluster.procs)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{cluster.diagnostics()}") from None
    runs = cluster.api("GET", "/api/v2/dags/cdr_mobility/dagRuns?limit=50")["dag_runs"]
    backfill = {r["data_interval_start"][:10]: r for r in runs if r["run_type"] == "backfill"}
    assert sorted(backfill) == days
    assert {r["state"] for r in backfill.values()} == {"success"}, cluster.diagnostics()
    for day, r in backfill.items():
        # Airflow 3.3.2 names a backfill run after the END of its interval (when it may run),
        # whatever the timetable (a non-partitioned backfill calls DagRun.generate_run_id, not
        # the timetable's): the run for dt=2026-10-05 is backfill__2026-10-06T00:00:00+00:00;
        # the partition is data_interval_start (README "Production Airflow").
        assert r["dag_run_id"] == "backfill__" + r["data_interval_end"].replace("Z", "+00:00")
        assert r["logical_date"][:10] == day
    assert _catalog_partitions(cluster.run_dir, "opencity-cdr-mobility-daily") == {
        f"dt={d}" for d in days}
    print(f"7-day backfill: {time.monotonic() - t0:.1f} s")


def test_311_week_on_object_storage_workers_share_no_disk(cluster, ckan_server, ckan_admin,
                                                          ckan_partition_table, monkeypatch):
    """Item 1 of the production issue: run directory s3://..., state in PostgreSQL, CKAN as
    the publish target. Nothing but PostgreSQL, Redis, the object store and CKAN is shared."""
    import io
    import uuid

    import ckanapi
    import fsspec
    import pyarrow.parquet as pq

    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, cluster.env[key])
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    bucket = f"opencity-celery-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    run = f"s3://{bucket}/city"
    fs.put(str(cluster.raw_dir) + "/", f"{run}/raw/", recursive=True)
    datasets = ("opencity-311-requests-weekly", "opencity-311-requests-microdata")
    from publish.ckan.partitions import partition_dataset_name

    for name in [n for d in datasets for n in (d, partition_dataset_name(d, "dt=2026-10-12"))]:
        try:
            ckan_admin.action.dataset_purge(id=name)
        except ckanapi.NotFound:
            pass

    t0 = time.monotonic()
    run_id = "manual__dt=2026-10-12"
    cluster.api("POST", "/api/v2/dags/opencity_311/dagRuns", {
        "dag_run_id": run_id,
        "logical_date": "2026-10-12T00:00:00Z",
        "data_interval_start": "2026-10-12T00:00:00Z",
        "data_interval_end": "2026-10-19T00:00:00Z",
        "conf": {"run_dir": run, "publish_target": "ckan", "ckan_url": ckan_server.url},
    })
    result = cluster.wait_run("opencity_311", run_id, timeout=420)
    states = cluster.task_states("opencity_311", run_id)
    assert result["state"] == "success", (states, cluster.diagnostics())
    took = time.monotonic() - t0

    # The store holds the run; CKAN serves the very bytes the store holds.
    held = {p.removeprefix(f"{bucket}/city/") for p in fs.find(run)}
    assert "manifests/opencity_311/dt=2026-10-12.json" in held
    assert any(p.startswith("clean/service_requests/dt=2026-10-12/") for p in held)
    for name in datasets:
        stored = fs.cat_file(f"{run}/outputs/{name}/dt=2026-10-12/part-0.parquet")
        assert ckan_partition_table(name, "dt=2026-10-12").equals(
            pq.read_table(io.BytesIO(stored))), name

    # XCom carries URIs of the store, never a worker's path.
    from urllib.parse import quote

    xcom = cluster.api("GET", f"/api/v2/dags/opencity_311/dagRuns/{quote(run_id, safe='')}"
                              "/taskInstances/ingest/xcomEntries/return_value")
    text = json.dumps(xcom)
    assert run in text and "opencity-task-" not in text, text[:500]
    # No scratch copy (restricted clean rows) is left in either worker's temp directory, and
    # both workers ran tasks of this run.
    for i in (1, 2):
        left = list((cluster.base / f"worker{i}" / "tmp").glob("opencity-task-*"))
        assert not left, f"worker{i} kept {left}"
    ran = [sum(1 for p in (cluster.base / f"worker{i}" / "logs").rglob("*.log")
               if quote(run_id, safe="") in str(p) or run_id in str(p)) for i in (1, 2)]
    tis = cluster.api("GET", f"/api/v2/dags/opencity_311/dagRuns/{quote(run_id, safe='')}"
                             "/taskInstances")["task_instances"]
    on_workers = [t for t in tis if t["state"] == "success" and t["operator"] != "EmptyOperator"]
    assert sum(ran) >= len(on_workers), (ran, [t["task_id"] for t in on_workers])
    print(f"311 run on object storage: {took:.1f} s; task logs per worker {ran}")
