"""What a steward meets operating the DAGs: typed params, unknown keys, intervals without
input, alerts, retries of transient errors, and clearing any single task (real Airflow,
dag.test on SQLite; the real scheduler + Celery version is test_airflow_celery.py)."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
pytestmark = [pytest.mark.integration, pytest.mark.airflow]
WEEK_END = datetime(2026, 10, 12, tzinfo=UTC)  # manual run: the week 2026-10-05..12


def _dag(dag_id: str, file: str):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS / file)).get_dag(dag_id)


class _Receiver:
    """A real local HTTP webhook receiver (ephemeral port) recording JSON POSTs."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append({"path": self.path, **json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def alerts(monkeypatch):
    with _Receiver() as rec:
        monkeypatch.setenv("AIRFLOW_CONN_OPENCITY_ALERTS", f"http://127.0.0.1:{rec.port}/hook")
        yield rec


def test_every_param_is_typed_and_documented():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    for dag in bag.dags.values():
        assert dag.dagrun_timeout is not None
        assert dag.default_args["retries"] >= 1
        assert dag.default_args["retry_exponential_backoff"] > 0
        assert "How to" in dag.doc_md or "Running a given" in dag.doc_md
        assert "Who to ask" in dag.doc_md
        for task in dag.tasks:
            assert task.execution_timeout is not None, (dag.dag_id, task.task_id)
            assert task.on_failure_callback
        for name in dag.params:
            param = dag.params.get_param(name)
            assert param.description, (dag.dag_id, name)
            assert "type" in param.schema, (dag.dag_id, name)
        assert "daily_cap" not in dag.params


@pytest.mark.parametrize("conf, fragment", [
    ({"epsilon": "lots"}, "epsilon"),
    ({"epsilon": 5.0}, "epsilon"),          # looser than the policy
    ({"delta": 1e-3}, "delta"),
    ({"publish_target": "ftp"}, "publish_target"),
])
def test_bad_param_values_are_refused_when_the_run_is_created(airflow_db, tmp_path, conf,
                                                              fragment):
    from airflow.sdk.definitions.param import ParamValidationError

    dag = _dag("cdr_mobility", "cdr_mobility.py")
    with pytest.raises(ParamValidationError, match=fragment):
        dag.test(logical_date=datetime(2026, 10, 6, tzinfo=UTC),
                 run_conf={"run_dir": str(tmp_path), **conf})
    assert not any(tmp_path.iterdir()), "nothing ran"


def test_311_privacy_params_can_only_tighten(airflow_db, tmp_path):
    from airflow.sdk.definitions.param import ParamValidationError

    dag = _dag("opencity_311", "opencity_311.py")
    for loose in ({"suppression_k": 5}, {"microdata_k": 2}, {"microdata_max_suppression": 0.5}):
        with pytest.raises(ParamValidationError):
            dag.test(logical_date=WEEK_END, run_conf={"run_dir": str(tmp_path), **loose})


def test_unknown_param_fails_the_first_task_and_reads_nothing(airflow_db, sample_raw, tmp_path,
                                                              alerts):
    from airflow.sdk import DagRunState

    dag = _dag("opencity_311", "opencity_311.py")
    run_dir = tmp_path / "run"
    dr = dag.test(logical_date=WEEK_END, run_conf={"run_dir": str(run_dir),
                                                   "raw_dir": str(sample_raw), "epsilonn": 3})
    assert dr.state == DagRunState.FAILED
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert tis["ingest"].state == "failed"
    assert tis["ingest"].try_number == 1, "a terminal error is not retried"
    assert not run_dir.exists(), "the run touched the run directory"
    assert [p["task_id"] for p in alerts.posts] == ["ingest"]
    assert "epsilonn" in alerts.posts[0]["message"]


def test_tightened_suppression_k_is_applied(airflow_db, sample_raw, tmp_path, monkeypatch):
    from airflow.sdk import DagRunState

    from opencity.review.testing import approve_policy

    # A portal of its own: the registry would (rightly) refuse the other tests of this module
    # republishing the same week with the policy's k after this run published it with k = 6.
    state = str(tmp_path / "state.sqlite")
    monkeypatch.setenv("OPENCITY_STATE_URL", state)
    approve_policy(state)

    dag = _dag("opencity_311", "opencity_311.py")
    run_dir = tmp_path / "run"
    dr = dag.test(logical_date=WEEK_END, run_conf={"run_dir": str(run_dir),
                                                   "raw_dir": str(sample_raw),
                                                   "suppression_k": 30, "microdata_k": 6})
    assert dr.state == DagRunState.SUCCESS
    manifest = json.loads((run_dir / "manifests" / "opencity_311" / "dt=2026-10-05.json")
                          .read_text())
    from privacy.policy import load_policy

    if load_policy().dataset("opencity-311-requests-weekly").method == "small_count_suppression":
        assert manifest["parameters"]["suppression_k"] == 30
    else:  # a DP weekly table withholds nothing: the threshold does not apply to it
        assert manifest["parameters"]["suppression_k"] is None
    assert manifest["microdata"]["k"] == 6


def test_interval_without_input_fails_early_and_alerts(airflow_db, sample_raw, tmp_path, alerts):
    """A week after the sample data: ingest fails once (no retry), names the interval,
    the alert fires, and no partition (clean or output) is left behind."""
    from airflow.sdk import DagRunState

    dag = _dag("opencity_311", "opencity_311.py")
    run_dir = tmp_path / "run"
    dr = dag.test(logical_date=datetime(2026, 11, 9, tzinfo=UTC),
                  run_conf={"run_dir": str(run_dir), "raw_dir": str(sample_raw)})
    assert dr.state == DagRunState.FAILED
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert tis["ingest"].state == "failed" and tis["ingest"].try_number == 1
    assert all(tis[t].state == "upstream_failed" for t in tis if t != "ingest")
    assert not list(run_dir.glob("clean/*/dt=*")), "an empty clean partition was left"
    assert not (run_dir / "outputs").exists()
    assert not (run_dir / "catalog").exists()
    assert len(alerts.posts) == 1
    alert = alerts.posts[0]
    assert alert["path"] == "/hook"
    assert alert["dag_id"] == "opencity_311" and alert["task_id"] == "ingest"
    assert alert["partition"] == "dt=2026-11-02"
    assert "no input rows for service_requests" in alert["message"]
    assert "2026-11-02" in alert["message"]


@pytest.mark.slow
def test_transient_publish_error_is_retried_then_alerts(airflow_db, sample_raw, tmp_path,
                                                        alerts, monkeypatch):
    """CKAN down (a closed port): the publisher's PublishError is transient, so Airflow retries
    the task (try 2) before failing it; the alert fires once, for the final failure."""
    import socket

    from airflow.sdk import DagRunState

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENCITY_CKAN_TOKEN", "not-a-real-token")
    dag = _dag("cdr_mobility", "cdr_mobility.py")
    run_dir = tmp_path / "run"
    dr = dag.test(logical_date=datetime(2026, 10, 6, tzinfo=UTC),
                  run_conf={"run_dir": str(run_dir), "raw_dir": str(sample_raw),
                            "publish_target": "ckan", "ckan_url": f"http://127.0.0.1:{port}"})
    assert dr.state == DagRunState.FAILED
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert tis["release"].state == "success"
    assert tis["publish"].state == "failed"
    assert tis["publish"].try_number == 2, "the transient error was not retried"
    assert [p["task_id"] for p in alerts.posts] == ["publish"]
    assert "unavailable" in alerts.posts[0]["message"]


def _tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every output file. A staged copy left by rerunning a staging task alone
    (``.dt=X.staging/f``) must equal its committed partition (``dt=X/f``): same result."""
    skip = ("reports", "manifests")  # validation reports and manifests carry run times
    digest, staged = {}, {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or rel.parts[0] in skip or "airflow" in rel.parts:
            continue
        if rel.parts[0] in ("clean", "quarantine") and p.suffix == ".parquet":
            # Restricted intermediate data: the same rows, in whatever order DuckDB wrote them.
            import pyarrow.parquet as pq

            t = pq.read_table(p)
            rows = sorted(map(repr, t.to_pylist()))
            h = hashlib.sha256("\n".join([repr(t.schema), *rows]).encode()).hexdigest()
        else:
            h = hashlib.sha256(p.read_bytes()).hexdigest()
        if p.parent.name.endswith(".staging"):
            committed = p.parent.with_name(p.parent.name[1:].removesuffix(".staging")) / p.name
            staged[str(committed.relative_to(root))] = h
        else:
            digest[str(rel)] = h
    for rel, h in staged.items():
        assert digest.get(rel) == h, f"staged {rel} differs from the committed partition"
    return digest


def _rerun_alone(dag, dr, task_id: str) -> str:
    """Clear one task instance of a finished run (no downstream) and run it again, as the
    scheduler does after `airflow tasks clear -t '^task_id$'`."""
    from airflow.models.taskinstance import clear_task_instances
    from airflow.sdk.definitions.dag import _run_task
    from airflow.settings import Session
    from airflow.utils.state import TaskInstanceState

    session = Session()
    ti = next(t for t in dr.get_task_instances(session=session) if t.task_id == task_id)
    clear_task_instances([ti], session)
    session.commit()
    ti.refresh_from_db(session=session)
    ti.try_number += 1
    ti.state = TaskInstanceState.SCHEDULED
    session.commit()
    _run_task(ti=ti, task=dag.task_dict[task_id])
    session.expire_all()
    ti.refresh_from_db(session=session)
    return ti.state


@pytest.mark.slow
def test_every_311_task_can_be_cleared_and_rerun_alone(airflow_db, sample_raw, tmp_path):
    from airflow.sdk import DagRunState

    dag = _dag("opencity_311", "opencity_311.py")
    run_dir = tmp_path / "run"
    dr = dag.test(logical_date=WEEK_END,
                  run_conf={"run_dir": str(run_dir), "raw_dir": str(sample_raw)})
    assert dr.state == DagRunState.SUCCESS
    before = _tree_digest(run_dir)
    assert any("catalog" in k for k in before)
    order = ["commit_partition", "commit_microdata", "publish_microdata", "publish_weekly",
             "aggregate",
             "anonymize_microdata", "approval.record", "approval.preapproved", "approval.check",
             "manifest", "ingest"]
    # the officer's wait (and its "approved" step) only run when a policy version is new;
    # under the approved test policy they are skipped, so there is nothing to rerun
    assert set(order) | {"approval.wait", "approval.approved"} == set(dag.task_ids)
    for task_id in order:
        assert _rerun_alone(dag, dr, task_id) == "success", task_id
        assert _tree_digest(run_dir) == before, f"rerunning {task_id} alone changed outputs"


@pytest.mark.slow
def test_every_cdr_task_can_be_cleared_and_rerun_alone(airflow_db, sample_raw, tmp_path):
    from airflow.sdk import DagRunState

    dag = _dag("cdr_mobility", "cdr_mobility.py")
    run_dir = tmp_path / "run"
    dr = dag.test(logical_date=datetime(2026, 10, 6, tzinfo=UTC),
                  run_conf={"run_dir": str(run_dir), "raw_dir": str(sample_raw)})
    assert dr.state == DagRunState.SUCCESS
    before = _tree_digest(run_dir)
    for task_id in ("publish", "commit_partition", "release", "ingest"):
        assert _rerun_alone(dag, dr, task_id) == "success", task_id
        assert _tree_digest(run_dir) == before, f"rerunning {task_id} alone changed outputs"


def test_a_worker_without_the_shared_run_dir_fails_with_a_clear_message(airflow_db, sample_raw,
                                                                       tmp_path, alerts):
    """Tasks hand each other run-directory paths: a worker that does not mount the shared
    run directory (simulated by removing the run's marker) fails its task saying so."""
    import shutil

    from airflow.sdk import DagRunState

    dag = _dag("cdr_mobility", "cdr_mobility.py")
    run_dir = tmp_path / "run"
    dr = dag.test(logical_date=datetime(2026, 10, 6, tzinfo=UTC),
                  run_conf={"run_dir": str(run_dir), "raw_dir": str(sample_raw)})
    assert dr.state == DagRunState.SUCCESS
    markers = list((run_dir / "_runs" / "cdr_mobility").glob("*.json"))
    assert len(markers) == 1
    shutil.rmtree(run_dir / "_runs")
    assert _rerun_alone(dag, dr, "publish") == "failed"
    from airflow.settings import Session

    ti = next(t for t in dr.get_task_instances(session=Session()) if t.task_id == "publish")
    assert ti.try_number == 2  # one rerun, no retry: the failure is terminal
    assert "does not see the run directory" in alerts.posts[-1]["message"]


def test_one_approval_mechanism_gates_every_publish():
    """opencity.review.airflow.approval_gate is the one step between a release and its
    publication (the unused RELEASE_STEPS hook of opencity.dagkit is gone): every publishing
    task of every DAG has a task of an approval group directly upstream."""
    from airflow.dag_processing.dagbag import DagBag

    from opencity import dagkit

    assert not hasattr(dagkit, "RELEASE_STEPS") and not hasattr(dagkit, "before_publish")
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    publishing = {(dag_id, t.task_id) for dag_id, dag in bag.dags.items() for t in dag.tasks
                  if t.task_id.split(".")[-1].startswith("publish")}
    assert publishing >= {("opencity_311", "publish_weekly"),
                          ("opencity_311", "publish_microdata"),
                          ("cdr_mobility", "publish"), ("opencity_kpi", "publish")}
    ungated = sorted((dag_id, task_id) for dag_id, task_id in publishing
                     if not any(u.startswith("approval")
                                for u in bag.dags[dag_id].task_dict[task_id].upstream_task_ids))
    assert ungated == []


def test_kpi_month_without_input_fails_at_ingest(airflow_db, sample_raw, tmp_path, alerts):
    from airflow.sdk import DagRunState

    dag = _dag("opencity_kpi", "opencity_kpi.py")
    run_dir = tmp_path / "run"
    dr = dag.test(logical_date=datetime(2026, 12, 1, tzinfo=UTC),  # November: no sample data
                  run_conf={"run_dir": str(run_dir), "raw_dir": str(sample_raw)})
    assert dr.state == DagRunState.FAILED
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert tis["ingest"].state == "failed" and tis["ingest"].try_number == 1
    assert not list(run_dir.glob("clean/**/dt=*")), "an empty clean partition was left"
    assert not (run_dir / "outputs").exists()
    assert "no input rows for any KPI event source" in alerts.posts[-1]["message"]
