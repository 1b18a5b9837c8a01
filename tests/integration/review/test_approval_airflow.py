"""The approval gate in a real Airflow: scheduler + API server + dag-processor (SQLite DB).

The test starts Airflow 3.3 on 127.0.0.1:8091 (other ports 8800-8809), runs the 311 DAG on
generated sample data and answers the ApprovalOperator through the REST API, as a privacy
officer would from the UI:

1. week 1, first release: the run waits in ``approval.wait`` (state ``awaiting_input``) and
   nothing is in the catalog; a second Airflow user (an admin, not the privacy officer) is
   refused (HTTP 403: the task is assigned to the officer's registered Airflow user only);
   the officer's approval publishes (time from approval to publication is
   measured and printed);
2. week 2, same policy: publishes without waiting (``approval.wait`` skipped);
3. week 3 under a changed (tightened) policy: waits again; a rejection publishes nothing,
   the catalog stays byte-identical and the staged outputs are discarded.

Every process is stopped by its PID (SIGINT, then SIGKILL).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
# Another checkout may run this test at the same time: OPENCITY_TEST_AIRFLOW_PORT moves it.
API_PORT = int(os.environ.get("OPENCITY_TEST_AIRFLOW_PORT", "8091"))
LOG_PORTS = tuple(range(API_PORT + 709, API_PORT + 712))  # 8800-8802 for 8091
BASE = f"http://127.0.0.1:{API_PORT}"
DAG_ID = "opencity_311"
WEEKLY = "opencity-311-requests-weekly"
MICRO = "opencity-311-requests-microdata"
START = date(2026, 10, 5)  # a Monday
OFFICER, PASSWORD = "officer", secrets.token_hex(8)
# A second Airflow user, also an admin, who is not the privacy officer: Airflow refuses their
# answer to the approval task (HITL assigned_users = the officer's registered Airflow user).
OPERATOR, OPERATOR_PASSWORD = "operator", secrets.token_hex(8)


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


class HTTPFailure(AssertionError):
    """An HTTP error answer of the Airflow REST API."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Airflow:
    """The Airflow components of the test, each started and stopped by PID."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env, self.procs = home, env, {}
        self.token = None

    def start(self) -> None:
        airflow = str(Path(sys.executable).with_name("airflow"))
        subprocess.run([airflow, "db", "migrate"], env=self.env, check=True,
                       capture_output=True, timeout=300)
        cmds = {
            "api-server": [airflow, "api-server", "--host", "127.0.0.1", "--port",
                           str(API_PORT), "--workers", "1"],
            "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
            "dag-processor": [airflow, "dag-processor"],
        }
        for name, cmd in cmds.items():
            log = open(self.home / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
            self.procs[name] = (subprocess.Popen(cmd, env=self.env, stdout=log,
                                                 stderr=subprocess.STDOUT), log)
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{BASE}/api/v2/monitor/health", timeout=5) as r:
                    health = json.load(r)
                if health.get("scheduler", {}).get("status") == "healthy":
                    break
            except (OSError, urllib.error.URLError, ValueError):
                pass
            dead = [n for n, (p, _) in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"Airflow did not become healthy (exited: {dead}); logs in "
                                   f"{self.home}: " + self.tail("api-server"))
            time.sleep(1)
        self.token = self.request("POST", "/auth/token",
                                  {"username": OFFICER, "password": PASSWORD},
                                  auth=False)["access_token"]

    def tail(self, name: str, n: int = 3000) -> str:
        p = self.home / f"{name}.log"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    def stop(self) -> None:
        for proc, _log in reversed(list(self.procs.values())):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGINT)
        for proc, log in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            log.close()

    def request(self, method: str, path: str, body: dict | None = None, auth: bool = True,
                tries: int = 4):
        """One REST call; a timeout or refused connection (an API server busy on a loaded
        machine) is retried, an HTTP error is not."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(tries):
            req = urllib.request.Request(f"{BASE}{path}", data=data, method=method)
            req.add_header("Content-Type", "application/json")
            if auth:
                req.add_header("Authorization", f"Bearer {self.token}")
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return json.load(r)
            except urllib.error.HTTPError as err:
                raise HTTPFailure(err.code, f"{method} {path}: HTTP {err.code} "
                                            f"{err.read()[:500]!r}") from None
            except (TimeoutError, ConnectionError, urllib.error.URLError):
                if attempt == tries - 1:
                    raise
                time.sleep(2)
        raise AssertionError("unreachable")

    def trigger(self, week_start: date) -> str:
        end = week_start + timedelta(weeks=1)
        run = self.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {
            "dag_run_id": f"test__{week_start.isoformat()}",
            "logical_date": f"{end.isoformat()}T00:00:00Z",
            "data_interval_start": f"{week_start.isoformat()}T00:00:00Z",
            "data_interval_end": f"{end.isoformat()}T00:00:00Z",
        })
        return run["dag_run_id"]

    def ti_state(self, run_id: str, task_id: str) -> str | None:
        return self.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/"
                                   f"{task_id}")["state"]

    def ti(self, run_id: str, task_id: str) -> dict:
        return self.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/"
                                   f"{task_id}")

    def run_state(self, run_id: str) -> str:
        return self.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]

    def wait_for(self, what, predicate, timeout: float = 420, every: float = 1.0):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; scheduler log: "
                                     + self.tail("scheduler"))
            time.sleep(every)

    def parked(self, run_id: str) -> bool:
        """Has the scheduler taken in the executor's report that ``approval.wait`` parked?

        Airflow 3.3 races here: an answer that arrives before the scheduler processed that
        report moves the task to ``scheduled``/``queued``; the late report then reads as "state
        changed externally", the resumed task is killed and retried, and the retry asks again
        (measured: an answer 0.9 s after the park, in CI and here). A privacy officer answers
        minutes later; the test waits for the report as the officer's reading time does.
        """
        finished = (f"TaskInstance Finished: dag_id={DAG_ID}, task_id=approval.wait, "
                    f"run_id={run_id}, ")
        return any(finished in line and "state=awaiting_input" in line
                   for line in self.tail("scheduler", n=10**8).splitlines())

    def respond(self, run_id: str, option: str, comment: str) -> dict | None:
        self.wait_for("the scheduler to take in the park of approval.wait",
                      lambda: self.parked(run_id), timeout=120, every=0.5)
        try:
            return self.request(
                "PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approval.wait/"
                         "-1/hitlDetails",
                {"chosen_options": [option], "params_input": {"comment": comment}})
        except HTTPFailure as err:
            if err.code == 409:  # a retried PATCH whose first try was applied
                return None
            raise


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    for port in (API_PORT, *LOG_PORTS):
        if not _free(port):
            pytest.fail(f"port {port} is in use; stop what listens there (i11-review's ports)")
    from sample_data import generate

    base = tmp_path_factory.mktemp("approval-airflow")
    home, run_dir, dags = base / "airflow", base / "run", base / "dags"
    for p in (home, run_dir, dags):
        p.mkdir()
    # The DAG file as it is, but run on demand only: with its weekly timetable the scheduler
    # would also start its intervals by itself (catch-up from 2026-10-05) and queue the
    # test's runs behind them. Triggered runs carry their data interval.
    text = (REPO / "dags" / "opencity_311.py").read_text()
    timetable = 'PartitionTimetable("0 0 * * 1", timezone="UTC")'
    assert timetable in text
    (dags / "opencity_311.py").write_text(text.replace(timetable, "None"))
    generate(run_dir / "raw", seed=11, scale=0.3, start=START, days=21, progress=False)
    policy = base / "policy.yaml"
    shutil.copy(REPO / "privacy" / "policy.yaml", policy)
    (home / "passwords.json").write_text(json.dumps({OFFICER: PASSWORD,
                                                      OPERATOR: OPERATOR_PASSWORD}))
    from opencity.review.testing import throwaway_officer

    # The portal's privacy officer: key registered once, with their Airflow user.
    throwaway_officer(str(base / "state.sqlite"), officer="privacy officer",
                      airflow_user=OFFICER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{BASE}/execution/",
        "AIRFLOW__API__BASE_URL": BASE,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(API_PORT),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{OFFICER}:admin,{OPERATOR}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(LOG_PORTS[0]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(LOG_PORTS[1]),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "OPENCITY_RUN_DIR": str(run_dir),
        "OPENCITY_RAW_DIR": str(run_dir / "raw"),
        "OPENCITY_STATE_URL": str(base / "state.sqlite"),
        "OPENCITY_POLICY": str(policy),
        "OPENCITY_APPROVAL_MODE": "airflow",
        "GX_ANALYTICS_ENABLED": "false",
        "PYTHONWARNINGS": "ignore",
    })
    af = Airflow(home, env)
    try:
        af.start()
        af.wait_for("the DAG to be parsed", lambda: _dag_ready(af), timeout=240, every=2)
        yield af, run_dir, base
    finally:
        af.stop()


def _dag_ready(af: Airflow) -> bool:
    try:
        af.request("GET", f"/api/v2/dags/{DAG_ID}")
        return True
    except HTTPFailure:
        return False


def _published(run_dir: Path, dataset: str, partition: str) -> bool:
    pkg = run_dir / "catalog" / dataset / "package.json"
    if not pkg.exists():
        return False
    return any(r.get("partition") == partition
               for r in json.loads(pkg.read_text()).get("resources", []))


def test_first_release_waits_then_publishes_then_skips_the_wait_then_rejects(airflow, capsys):
    af, run_dir, base = airflow
    catalog = run_dir / "catalog"
    state = base / "state.sqlite"

    # 1. First release: waits in the ApprovalOperator, nothing in the catalog.
    run1 = af.trigger(START)
    af.wait_for("approval.wait awaiting_input",
                lambda: af.ti_state(run1, "approval.wait") == "awaiting_input")
    assert not any(catalog.glob("*/package.json")), "published before the approval"
    assert af.run_state(run1) == "running"
    detail = af.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run1}/taskInstances/"
                               "approval.wait/-1/hitlDetails")
    assert WEEKLY in detail["subject"] and "release report" in detail["body"]
    # the report opens from the request: a page of the API server, behind its login
    link = re.search(r"\((http://127\.0\.0\.1:\d+/opencity/report/[^)\s]+)\)",
                     detail["body"]).group(1)
    req = urllib.request.Request(link, headers={"Authorization": f"Bearer {af.token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200 and "pending approval" in r.read().decode()
    from opencity.review.approvals import ReviewStore

    assert {r.dataset for r in ReviewStore(state).requests(status="open")} >= {WEEKLY}

    # The operator (an Airflow admin, not the officer) cannot answer: Airflow refuses it.
    officer_token = af.token
    af.token = af.request("POST", "/auth/token", {"username": OPERATOR,
                                                  "password": OPERATOR_PASSWORD},
                          auth=False)["access_token"]
    try:
        with pytest.raises(HTTPFailure) as refused:
            af.respond(run1, "Approve", "self-approval")
    finally:
        af.token = officer_token
    assert refused.value.code == 403, refused.value
    assert af.ti_state(run1, "approval.wait") == "awaiting_input"
    assert not any(catalog.glob("*/package.json"))
    assert detail["assigned_users"] == [{"id": OFFICER, "name": OFFICER}]

    t_approve = time.monotonic()
    af.respond(run1, "Approve", "first release reviewed")
    af.wait_for("week 1 published", lambda: _published(run_dir, WEEKLY, "dt=2026-10-05"),
                every=0.2)
    waited = time.monotonic() - t_approve
    af.wait_for("run 1 success", lambda: af.run_state(run1) in ("success", "failed"))
    assert af.run_state(run1) == "success", af.tail("scheduler")
    decisions = ReviewStore(state).decisions(WEEKLY)
    assert decisions[-1].decision == "approved" and decisions[-1].decided_by == OFFICER
    from privacy.approval import ApprovalStore

    signed = ApprovalStore(state).decisions(WEEKLY)[-1]
    assert (signed.source, signed.decided_by, signed.verified) == ("airflow", OFFICER, True)
    assert decisions[-1].comment == "first release reviewed"
    review = json.loads((catalog / WEEKLY / "review.json").read_text())
    assert review["approvals"][-1]["decided_by"] == OFFICER
    with capsys.disabled():
        print(f"\napproval -> publication of {WEEKLY} dt=2026-10-05: {waited:.1f} s")
    (base / "approval-wait.txt").write_text(f"{waited:.2f}\n")

    # 2. Same policy: publishes without waiting.
    run2 = af.trigger(START + timedelta(weeks=1))
    af.wait_for("run 2 done", lambda: af.run_state(run2) in ("success", "failed"))
    assert af.run_state(run2) == "success", af.tail("scheduler")
    assert af.ti_state(run2, "approval.wait") == "skipped"
    assert af.ti_state(run2, "approval.preapproved") == "success"
    assert _published(run_dir, WEEKLY, "dt=2026-10-12")

    # 3. A new (tightened) policy version waits again; a rejection leaves the catalog as it was.
    policy = base / "policy.yaml"
    text = policy.read_text()
    assert text.count("    epsilon: 0.6\n") == 1  # the weekly table's epsilon per release
    policy.write_text(text.replace("    epsilon: 0.6\n", "    epsilon: 0.5\n"))
    before = _tree_digest(catalog)
    run3 = af.trigger(START + timedelta(weeks=2))
    af.wait_for("approval.wait awaiting_input (new policy)",
                lambda: af.ti_state(run3, "approval.wait") == "awaiting_input")
    af.respond(run3, "Reject", "epsilon change not agreed")
    af.wait_for("run 3 done", lambda: af.run_state(run3) in ("success", "failed"))
    # a rejection is red in the grid: the gate's record fails, nothing after it runs
    assert af.run_state(run3) == "failed"
    assert af.ti_state(run3, "approval.record") == "failed"
    assert af.ti_state(run3, "publish_weekly") == "upstream_failed"
    assert af.ti_state(run3, "publish_microdata") == "upstream_failed"
    assert _tree_digest(catalog) == before, "the rejection changed the catalog"
    assert not (run_dir / "outputs" / WEEKLY / "dt=2026-10-19").exists()
    last = ReviewStore(state).decisions(WEEKLY)[-1]
    assert last.decision == "rejected" and last.comment == "epsilon change not agreed"
