"""Issue 23 under a real scheduler: Airflow 3.3 (LocalExecutor) on PostgreSQL, with the API
server and dag-processor as separate processes, OpenCity's plugin installed as in production.

* **No lost intervals**: a DAG built by ``opencity.dagkit.dag_kwargs`` whose start date lies
  5 daily intervals in the past gets all 5 runs created by the scheduler (catch-up); a run of
  an unfinished interval and one before the start date fail at once, saying why.
* **The officer's view**: the 311 DAG's first release opens an approval request whose report
  link answers HTTP 200 through the API server (and 401 without a login); the alerts
  connection receives an ``approval_requested`` event; a rejection fails the run (red in
  the grid) and ``opencity budget`` marks the week's spend as rejected.
* **Reruns**: the README recipe ``airflow tasks clear DAG -t TASK_ID -s DAY -e DAY -y`` reruns
  exactly that task; a staged copy left by rerunning ``aggregate`` alone is removed by the
  publish rerun that supersedes it.

The 311 DAG file is used as it is except for its schedule (None: the test triggers its weeks;
catch-up of a weekly DAG from 2026-10-05 would otherwise start 8 runs on this 2-core host).
Every process is started here and stopped by its PID; everything binds 127.0.0.1.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.slow]
DAG_311 = "opencity_311"
PROBE = "opencity_catchup_probe"
WEEKLY = "opencity-311-requests-weekly"
OFFICER, PASSWORD = "officer", secrets.token_hex(8)

PROBE_DAG = '''
"""Catch-up probe: OpenCity's DAG settings (opencity.dagkit.dag_kwargs), one trivial task."""
import pendulum
from airflow.sdk import dag

from opencity.airflow_context import data_interval
from opencity.dagkit import dag_kwargs, pipeline_task
from opencity.timetables import PartitionTimetable

START = pendulum.parse("{start}")


@dag(**dag_kwargs("{dag_id}", schedule=PartitionTimetable("0 0 * * *", timezone="UTC"),
                  start_date=START, doc_md="probe", period="day",
                  example="{day}", example_end="{day}"))
def probe():
    @pipeline_task
    def note_interval() -> str:
        return f"{{data_interval()[0]:%Y-%m-%d}}"

    note_interval()


probe()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


class _Hook:
    """A local webhook (the alerts connection) recording JSON POSTs."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                outer.posts.append(json.loads(self.rfile.read(n) or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Stack:
    """PostgreSQL + api-server + scheduler (LocalExecutor) + dag-processor."""

    def __init__(self, base: Path, env: dict[str, str], api_port: int, pg_port: int) -> None:
        self.base, self.env, self.api_port, self.pg_port = base, env, api_port, pg_port
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.airflow = str(Path(sys.executable).with_name("airflow"))
        self.token = ""

    def start(self, name: str, cmd: list[str]) -> None:
        log = (self.base / f"{name}.log").open("wb")
        self.procs.append((name, subprocess.Popen(cmd, env=self.env, stdout=log,
                                                  stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL,
                                                  start_new_session=True)))

    def tail(self, name: str, n: int = 4000) -> str:
        p = self.base / f"{name}.log"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    def stop(self) -> None:
        for name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM if name == "postgres" else signal.SIGINT)
                except ProcessLookupError:
                    pass
        for _name, p in reversed(self.procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)

    def wait(self, what: str, check, timeout: float = 300, every: float = 1.0):
        deadline = time.monotonic() + timeout
        while True:
            for name, p in self.procs:
                if p.poll() is not None:
                    raise AssertionError(f"{name} exited ({p.returncode}) waiting for {what}:"
                                         f"\n{self.tail(name)}")
            try:
                value = check()
                if value:
                    return value
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n--- scheduler\n"
                                     f"{self.tail('scheduler')}")
            time.sleep(every)

    def http(self, method: str, path: str, body: dict | None = None, auth: bool = True):
        """(status, body bytes) of one call to the API server."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {self.token}"} if auth else {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def api(self, method: str, path: str, body: dict | None = None):
        status, data = self.http(method, path, body)
        if status >= 400:
            raise AssertionError(f"{method} {path}: HTTP {status} {data[:800]!r}")
        return json.loads(data or b"null")

    def airflow_cli(self, *args: str) -> str:
        out = subprocess.run([self.airflow, *args], env=self.env, capture_output=True,
                             text=True, timeout=300, check=False)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        return out.stdout

    def task_logs(self, dag_id: str, run_ids: list[str], n: int = 1500) -> str:
        """The end of every task log of these runs (for a failure's message)."""
        out = []
        for log in sorted((self.base / "home" / "logs").rglob("*.log")):
            if f"dag_id={dag_id}" in str(log) and any(r in str(log) for r in run_ids):
                out.append(f"--- {log.name}\n{log.read_text(errors='replace')[-n:]}")
        return "\n".join(out) or self.tail("scheduler")

    # -- runs ---------------------------------------------------------------------------
    def trigger(self, dag_id: str, start: datetime, end: datetime, run_id: str) -> dict:
        return self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {
            "dag_run_id": run_id, "logical_date": start.isoformat(),
            "data_interval_start": start.isoformat(), "data_interval_end": end.isoformat(),
            "conf": {}})

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")

    def finished(self, dag_id: str, run_id: str, timeout: float = 420) -> dict:
        return self.wait(f"run {run_id}", lambda: (r := self.run(dag_id, run_id))["state"]
                         in ("success", "failed") and r, timeout)

    def tis(self, dag_id: str, run_id: str) -> dict[str, dict]:
        got = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
                              "/taskInstances?limit=100")["task_instances"]
        return {t["task_id"]: t for t in got}


@pytest.fixture(scope="module")
def stack(sample_raw):
    pg = _pg_bin()
    if pg is None or shutil.which("runuser") is None:
        pytest.skip("needs postgresql and runuser (Debian packages; scripts/test installs them)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("needs opencity[production] (psycopg)")
    base = Path(tempfile.mkdtemp(prefix="opencity-ops-"))
    os.chmod(base, 0o755)  # the postgres user reaches its data directory
    api_port, pg_port = _free_port(), _free_port()
    home, run_dir, dags = base / "home", base / "run", base / "dags"
    for p in (home, run_dir, dags):
        p.mkdir()
    text = (REPO / "dags" / "opencity_311.py").read_text()
    timetable = 'PartitionTimetable("0 0 * * 1", timezone="UTC")'
    assert timetable in text
    (dags / "opencity_311.py").write_text(text.replace(timetable, "None"))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=5)
    (dags / f"{PROBE}.py").write_text(PROBE_DAG.format(
        start=start.isoformat(), dag_id=PROBE, day=f"{start:%Y-%m-%d}"))
    policy = base / "policy.yaml"
    shutil.copy(REPO / "privacy" / "policy.yaml", policy)
    (home / "passwords.json").write_text(json.dumps({OFFICER: PASSWORD}))
    from opencity.review.testing import throwaway_officer

    # The portal's privacy officer (issue 20): key registered once, with their Airflow user,
    # the only one whose answer to the approval task counts.
    throwaway_officer(str(base / "state.sqlite"), officer="privacy officer",
                      airflow_user=OFFICER)
    hook = _Hook()
    db = f"postgresql+psycopg://postgres@127.0.0.1:{pg_port}/airflow"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{OFFICER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # Unpaused by the test once the API server answers: a task started before it can
        # reach the execution API would fail for a reason that is not the DAG's.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__SCHEDULER__ALLOWED_RUN_ID_PATTERN": r"^[A-Za-z0-9_.~:+=-]+$",
        "AIRFLOW_CONN_OPENCITY_ALERTS": f"http://127.0.0.1:{hook.port}/hook",
        "OPENCITY_RUN_DIR": str(run_dir),
        "OPENCITY_RAW_DIR": str(sample_raw),
        "OPENCITY_STATE_URL": str(base / "state.sqlite"),
        "OPENCITY_POLICY": str(policy),
        "OPENCITY_APPROVAL_MODE": "airflow",
        "OPENCITY_TASK_RETRIES": "0",
        "GX_ANALYTICS_ENABLED": "false",
        "PYTHONWARNINGS": "ignore",
        "PYTHONUNBUFFERED": "1",
    })
    s = Stack(base, env, api_port, pg_port)
    s.hook, s.run_dir, s.probe_start, s.today = hook, run_dir, start, today
    t0 = time.monotonic()
    try:
        data, sock = base / "pg" / "data", base / "pg" / "sock"
        sock.mkdir(parents=True)
        shutil.chown(base / "pg", "postgres")
        shutil.chown(sock, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*as_pg, str(pg / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True,
                       timeout=120)
        s.start("postgres", [*as_pg, str(pg / "postgres"), "-D", str(data), "-p", str(pg_port),
                             "-k", str(sock), "-c", "listen_addresses=127.0.0.1",
                             "-c", "fsync=off", "-c", "max_connections=100"])
        psql = [*as_pg, str(pg / "psql"), "-h", "127.0.0.1", "-p", str(pg_port), "-U",
                "postgres", "-tAc"]
        s.wait("PostgreSQL", lambda: subprocess.run([*psql, "select 1"], capture_output=True,
                                                    check=False).returncode == 0, 60)
        subprocess.run([*psql, "CREATE DATABASE airflow"], check=True, capture_output=True)
        s.airflow_cli("db", "migrate")
        s.start("api-server", [s.airflow, "api-server", "--host", "127.0.0.1", "--port",
                               str(api_port), "--workers", "1"])
        s.start("scheduler", [s.airflow, "scheduler", "--skip-serve-logs"])
        s.start("dag-processor", [s.airflow, "dag-processor"])
        s.wait("the API server", lambda: s.http("GET", "/api/v2/monitor/health",
                                                auth=False)[0] == 200, 240)
        status, body = s.http("POST", "/auth/token", {"username": OFFICER,
                                                      "password": PASSWORD}, auth=False)
        assert status in (200, 201), body
        s.token = json.loads(body)["access_token"]
        s.wait("both DAGs parsed", lambda: {d["dag_id"] for d in s.api(
            "GET", "/api/v2/dags")["dags"]} >= {DAG_311, PROBE}, 240, every=2)
        for dag_id in (DAG_311, PROBE):
            s.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        s.startup_s = time.monotonic() - t0
        yield s
    finally:
        s.stop()
        hook.close()
        assert all(p.poll() is not None for _, p in s.procs), "a process survived"
        shutil.rmtree(base, ignore_errors=True)


# -- item 2: no lost intervals ------------------------------------------------------------
def test_the_scheduler_creates_every_missed_interval(stack):
    t0 = time.monotonic()
    days = [f"{stack.probe_start + timedelta(days=i):%Y-%m-%d}" for i in range(5)]

    def runs():
        got = stack.api("GET", f"/api/v2/dags/{PROBE}/dagRuns?limit=50")["dag_runs"]
        return [r for r in got if r["run_type"] == "scheduled"]

    stack.wait("5 scheduled runs to finish", lambda: len(runs()) >= 5 and all(
        r["state"] in ("success", "failed") for r in runs()), 300, every=2)
    got = runs()
    assert sorted(r["data_interval_start"][:10] for r in got) == days
    why = {r["dag_run_id"]: (r["state"], r.get("note"),
                             {t: ti["state"] for t, ti in stack.tis(PROBE, r["dag_run_id"]).items()})
           for r in got if r["state"] != "success"}
    assert not why, (why, stack.task_logs(PROBE, list(why)))
    assert {r["dag_run_id"] for r in got} == {f"scheduled__dt={d}" for d in days}
    print(f"\nstartup {stack.startup_s:.0f} s; 5 catch-up runs created and done in "
          f"{time.monotonic() - t0:.0f} s")


def test_unfinished_and_pre_start_intervals_fail_at_once_saying_why(stack):
    today, start = stack.today, stack.probe_start
    cases = {
        "manual__future": (today, today + timedelta(days=1), "is not over yet"),
        "manual__before": (start - timedelta(days=3), start - timedelta(days=2),
                           "starts before the DAG's start date"),
    }
    t0 = time.monotonic()
    for run_id, (a, b, _) in cases.items():
        stack.trigger(PROBE, a, b, run_id)
    for run_id, (_a, _b, why) in cases.items():
        run = stack.finished(PROBE, run_id, timeout=120)
        assert run["state"] == "failed", run
        assert why in (run.get("note") or ""), run
        # nothing ran: no task of a refused run reached a worker
        assert {t["state"] for t in stack.tis(PROBE, run_id).values()} <= {None}
    print(f"\nrefused 2 runs in {time.monotonic() - t0:.1f} s")


# -- item 3: the officer's view -----------------------------------------------------------
def _wait_request(stack, run_id: str) -> dict:
    path = (f"/api/v2/dags/{DAG_311}/dagRuns/{quote(run_id, safe='')}/taskInstances/"
            "approval.wait/-1/hitlDetails")
    stack.wait("approval.wait awaiting_input", lambda: stack.tis(DAG_311, run_id)[
        "approval.wait"]["state"] == "awaiting_input", 420, every=2)
    # Answer only once the scheduler has taken in the park (see test_approval_airflow.py).
    stack.wait("the park of approval.wait", lambda: re.search(
        rf"TaskInstance Finished: dag_id={DAG_311}, task_id=approval.wait, "
        rf"run_id={re.escape(run_id)}, .*state=awaiting_input",
        stack.tail("scheduler", 10**8)), 120, every=0.5)
    return stack.api("GET", path)


def _answer(stack, run_id: str, option: str, comment: str) -> None:
    stack.api("PATCH", f"/api/v2/dags/{DAG_311}/dagRuns/{quote(run_id, safe='')}/"
                       "taskInstances/approval.wait/-1/hitlDetails",
              {"chosen_options": [option], "params_input": {"comment": comment}})


def test_report_opens_from_the_request_officer_is_told_rejection_is_red(stack):
    run_id = "manual__dt=2026-10-05"
    stack.trigger(DAG_311, datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 12, tzinfo=UTC),
                  run_id)
    detail = _wait_request(stack, run_id)
    links = re.findall(r"\((http://127\.0\.0\.1:\d+/opencity/report/[^)\s]+)\)", detail["body"])
    assert len(links) == 2, detail["body"]  # the weekly table and the microdata
    assert "file://" not in detail["body"]
    for link in links:
        path = link.split(str(stack.api_port), 1)[1]
        status, html = stack.http("GET", path)
        assert status == 200, (status, html[:300])
        assert b"pending approval" in html
        assert stack.http("GET", path, auth=False)[0] == 401  # behind Airflow's login
    # the officer is told, once, with no personal data (names, ids, rows)
    opened = [p for p in stack.hook.posts if p.get("event") == "approval_requested"]
    assert len(opened) == 1 and opened[0]["run_id"] == run_id
    assert opened[0]["partition"] == "dt=2026-10-05"
    assert set(opened[0]["reports"]) == {WEEKLY, "opencity-311-requests-microdata"}
    assert set(opened[0]) == {"event", "dag_id", "run_id", "partition", "datasets", "policy",
                              "reports", "message"}

    _answer(stack, run_id, "Reject", "not this week")
    run = stack.finished(DAG_311, run_id)
    tis = stack.tis(DAG_311, run_id)
    assert run["state"] == "failed"
    assert tis["approval.record"]["state"] == "failed"
    assert tis["publish_weekly"]["state"] == "upstream_failed"
    assert tis["publish_microdata"]["state"] == "upstream_failed"
    assert not (stack.run_dir / "catalog" / WEEKLY / "package.json").exists()
    # the week's spend shows as rejected in `opencity budget --json`
    from opencity.budget import budget_report

    releases = [r for u in budget_report(stack.env["OPENCITY_STATE_URL"])["units"]
                for r in u["releases"] if r["dataset"] == WEEKLY]
    assert [(r["partition"], r["status"]) for r in releases] == [("dt=2026-10-05", "rejected")]
    out = subprocess.run([str(Path(sys.executable).with_name("opencity")), "budget",
                          str(stack.run_dir)], env=stack.env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "REJECTED" in out.stdout and "dt=2026-10-05" in out.stdout


# -- item 1: reruns ------------------------------------------------------------------------
def _tries(stack, run_id: str) -> dict[str, int]:
    return {t: ti["try_number"] for t, ti in stack.tis(DAG_311, run_id).items()}


def _clear(stack, task_id: str, day: str, *extra: str) -> None:
    """The README recipe, as a steward types it."""
    stack.airflow_cli("tasks", "clear", DAG_311, "-t", task_id, "-s", day, "-e", day, "-y",
                      *extra)


def test_readme_recipe_clears_exactly_one_task_and_reruns_clean_up(stack):
    readme = (REPO / "README.md").read_text()
    assert "`airflow tasks clear DAG -t TASK_ID -s DAY -e DAY -y`" in readme
    run_id, day = "manual__dt=2026-10-12", "2026-10-12"
    stack.trigger(DAG_311, datetime(2026, 10, 12, tzinfo=UTC),
                  datetime(2026, 10, 19, tzinfo=UTC), run_id)
    _wait_request(stack, run_id)  # the policy is still not approved (last week's rejection)
    _answer(stack, run_id, "Approve", "reviewed")
    assert stack.finished(DAG_311, run_id)["state"] == "success"
    outputs = stack.run_dir / "outputs" / WEEKLY
    assert (outputs / f"dt={day}" / "part-0.parquet").exists()
    before = _tries(stack, run_id)

    t0 = time.monotonic()
    _clear(stack, "publish_weekly", day)
    stack.wait("publish_weekly rerun", lambda: _tries(stack, run_id)["publish_weekly"]
               == before["publish_weekly"] + 1, 120)
    assert stack.finished(DAG_311, run_id)["state"] == "success"
    after = _tries(stack, run_id)
    assert {t for t in after if after[t] != before[t]} == {"publish_weekly"}
    took = time.monotonic() - t0

    # `aggregate` alone: its staged copy has no consumer...
    _clear(stack, "aggregate", day)
    stack.wait("aggregate rerun", lambda: _tries(stack, run_id)["aggregate"]
               == before["aggregate"] + 1, 180)
    assert stack.finished(DAG_311, run_id)["state"] == "success"
    assert list(outputs.glob(f".dt={day}*")), "expected the staged copy of the rerun"
    changed = _tries(stack, run_id)
    assert {t for t in changed if changed[t] != after[t]} == {"aggregate"}
    # ... until the publish rerun that supersedes it removes it.
    _clear(stack, "publish_weekly", day)
    stack.wait("publish_weekly rerun", lambda: _tries(stack, run_id)["publish_weekly"]
               == after["publish_weekly"] + 1, 120)
    assert stack.finished(DAG_311, run_id)["state"] == "success"
    assert not list(outputs.glob(f".dt={day}*")), "a staged leftover survived"
    print(f"\nREADME recipe: publish_weekly alone rerun in {took:.0f} s")
