"""A run directory on object storage (opencity.runstore) against a real S3-compatible server
(moto's server process, see tests/conftest.py ``s3_server``): what a task pulls, pushes,
deletes and leaves behind, and how it fails when the store does not answer."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import fsspec
import pytest

from opencity.errors import ConfigError, StorageError
from opencity.runstore import is_remote, join, scratch
from opencity.settings import Settings

pytestmark = [pytest.mark.integration]


def _fs():
    return fsspec.filesystem("s3", skip_instance_cache=True)


def _settings(run_dir: str, **kw) -> Settings:
    kw.setdefault("publish_target", "ckan")
    kw.setdefault("ckan_url", "http://127.0.0.1:9")
    kw.setdefault("state_url", "postgresql://opencity@127.0.0.1:9/state")
    return Settings(run_dir=run_dir, **kw)


def _scratch_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("opencity-task-*")}


def test_urls_are_not_folded_like_paths():
    assert is_remote("s3://b/run") and not is_remote("/srv/run")
    assert not is_remote("file:///srv/run")
    assert join("s3://b/run/", "raw") == "s3://b/run/raw"
    assert Settings(run_dir="s3://b/run", publish_target="ckan",
                    ckan_url="http://x").raw_dir == "s3://b/run/raw"


def test_a_task_pulls_works_locally_pushes_changes_and_leaves_nothing(s3_env):
    fs = _fs()
    run = f"{s3_env}/run"
    fs.pipe_file(f"{run}/raw/city/districts.csv", b"district\nA\n")
    fs.pipe_file(f"{run}/clean/old/dt=2026-10-05/part-0.parquet", b"PAR1old")
    fs.pipe_file(f"{run}/outputs/x/_staging/part-0.parquet", b"staged")
    before = _scratch_dirs()

    with scratch(_settings(run)) as sc:
        local = Path(sc.settings.run_dir)
        assert not is_remote(sc.settings.run_dir)
        assert Path(sc.settings.raw_dir) == local / "raw"
        assert (local / "raw" / "city" / "districts.csv").read_bytes() == b"district\nA\n"
        assert oct(local.parent.stat().st_mode & 0o777) == "0o700"
        # the task: a new file, a changed one, a removed one, a report naming its own path
        (local / "outputs" / "x" / "dt=2026-10-05").mkdir(parents=True)
        (local / "outputs" / "x" / "dt=2026-10-05" / "part-0.parquet").write_bytes(b"PAR1new")
        (local / "clean" / "old" / "dt=2026-10-05" / "part-0.parquet").write_bytes(b"PAR1v2")
        (local / "outputs" / "x" / "_staging" / "part-0.parquet").unlink()
        report = local / "reports" / "x" / "guard.json"
        report.parent.mkdir(parents=True)
        report.write_text(json.dumps({"output": str(local / "outputs" / "x")}))
        xcom = sc.to_uris({"output_dir": str(local / "outputs" / "x"), "rows": 3,
                           "files": [str(local / "raw" / "city" / "districts.csv")]})
        assert sc.to_local(xcom)["output_dir"] == str(local / "outputs" / "x")
        scratch_root = local.parent

    assert xcom == {"output_dir": f"{run}/outputs/x", "rows": 3,
                    "files": [f"{run}/raw/city/districts.csv"]}
    assert fs.cat_file(f"{run}/outputs/x/dt=2026-10-05/part-0.parquet") == b"PAR1new"
    assert fs.cat_file(f"{run}/clean/old/dt=2026-10-05/part-0.parquet") == b"PAR1v2"
    assert not fs.exists(f"{run}/outputs/x/_staging/part-0.parquet")
    assert json.loads(fs.cat_file(f"{run}/reports/x/guard.json")) == {
        "output": f"{run}/outputs/x"}, "a file names a scratch path no other worker has"
    assert not scratch_root.exists() and _scratch_dirs() == before


def test_a_failed_task_pushes_nothing_and_still_removes_its_copy(s3_env):
    fs = _fs()
    run = f"{s3_env}/run"
    fs.pipe_file(f"{run}/clean/s/dt=2026-10-05/part-0.parquet", b"restricted")
    with pytest.raises(RuntimeError, match="boom"), scratch(_settings(run)) as sc:
        local = Path(sc.settings.run_dir)
        (local / "outputs").mkdir()
        (local / "outputs" / "partial.parquet").write_bytes(b"half")
        (local / "clean" / "s" / "dt=2026-10-05" / "part-0.parquet").unlink()
        raise RuntimeError("boom")
    assert not local.exists(), "restricted clean data left on the worker's disk"
    kept = f"{run.removeprefix('s3://')}/clean/s/dt=2026-10-05/part-0.parquet"
    assert sorted(fs.find(run)) == [kept]


def test_raw_inputs_on_their_own_prefix_are_read_never_written(s3_env):
    fs = _fs()
    raw = f"{s3_env}/landing"
    fs.pipe_file(f"{raw}/service_requests/requests.csv", b"id\n1\n")
    with scratch(_settings(f"{s3_env}/run", raw_dir=raw)) as sc:
        got = Path(sc.settings.raw_dir) / "service_requests" / "requests.csv"
        assert got.read_bytes() == b"id\n1\n"
        got.write_bytes(b"changed by a task")
        assert sc.to_uris(str(got)) == f"{raw}/service_requests/requests.csv"
    assert fs.cat_file(f"{raw}/service_requests/requests.csv") == b"id\n1\n"


def test_object_storage_refuses_per_worker_state_and_a_local_catalog(s3_env):
    with pytest.raises(ConfigError, match="local catalog"), \
            scratch(_settings(f"{s3_env}/run", publish_target="local")):
        pass
    with pytest.raises(ConfigError, match="OPENCITY_STATE_URL=postgresql"), \
            scratch(_settings(f"{s3_env}/run", state_url="state.sqlite")):
        pass


def test_a_store_that_does_not_answer_fails_the_task_with_the_endpoint_named(
        s3_env, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    from s3fs import S3FileSystem

    S3FileSystem.clear_instance_cache()
    before = _scratch_dirs()
    with pytest.raises(StorageError) as err, scratch(_settings(f"{s3_env}/run")):
        pytest.fail("the body ran without its inputs")
    message = str(err.value)
    assert f"{s3_env}/run" in message and "AWS_ENDPOINT_URL" in message
    assert err.value.transient, "a network failure is worth Airflow's retry"
    assert _scratch_dirs() == before
    S3FileSystem.clear_instance_cache()


def test_local_run_directories_are_used_as_they_are(tmp_path):
    s = Settings(run_dir=str(tmp_path / "run"))
    with scratch(s) as sc:
        assert sc.settings is s
        assert sc.to_uris({"p": str(tmp_path)}) == {"p": str(tmp_path)}
    assert not os.listdir(tmp_path)
