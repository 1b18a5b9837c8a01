"""Reruns and leftovers of the local catalog: byte-identical reruns write nothing, history is
kept per partition, a crash's leftovers are cleaned, tampered files are repaired or withdrawn."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from publish.base import DatasetRelease, Field, Resource, sha256_file
from publish.leftovers import clean_partition_leftovers
from publish.local import LocalCatalog, iter_releases


def _release(tmp_path: Path, part: str, values: list[int], *, threshold: int = 15,
             run_id: str = "r1", inputs: str = "aaa") -> DatasetRelease:
    start = part.removeprefix("dt=")
    f = tmp_path / "src" / part / "part-0.parquet"
    f.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"district_id": ["D01", "D02"], "requests": values}), f)
    return DatasetRelease(
        name="opencity-test", title="Test", description="d",
        resources=(Resource(f, "counts", "parquet", "week", part),),
        fields=(Field("district_id", "string"), Field("requests", "integer")),
        privacy={"privacy_method": "small_count_suppression", "suppression_threshold": threshold},
        temporal_coverage=(start, start), provenance={"run_id": run_id,
                                                      "input_hashes": {"x.csv": inputs}},
    )


def _tree(root: Path) -> dict[str, bytes]:
    out = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            p = Path(folder) / name
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def test_byte_identical_rerun_from_another_run_changes_no_byte(tmp_path):
    cat = LocalCatalog(tmp_path / "catalog")
    cat.publish(_release(tmp_path, "dt=2026-10-05", [20, 30]))
    cat.publish(_release(tmp_path, "dt=2026-10-12", [25, 35]))
    before = _tree(tmp_path / "catalog")
    # Same files, another run id: nothing is rewritten, the provenance stays the one of the
    # run that produced the published files.
    res = cat.publish(_release(tmp_path, "dt=2026-10-12", [25, 35], run_id="r2"))
    assert res.unchanged == ("counts",) and not res.uploaded
    assert _tree(tmp_path / "catalog") == before


def test_privacy_and_provenance_are_stated_per_partition(tmp_path):
    cat = LocalCatalog(tmp_path / "catalog")
    cat.publish(_release(tmp_path, "dt=2026-10-05", [20, 30], threshold=15, run_id="r1"))
    cat.publish(_release(tmp_path, "dt=2026-10-12", [25, 35], threshold=10, run_id="r2",
                         inputs="bbb"))
    pkg = cat.load_package("opencity-test")
    parts = {p["partition"]: p for p in pkg["opencity"]["partitions"]}
    assert parts["dt=2026-10-05"]["privacy"]["suppression_threshold"] == 15
    assert parts["dt=2026-10-12"]["privacy"]["suppression_threshold"] == 10
    assert parts["dt=2026-10-05"]["provenance"]["run_id"] == "r1"
    assert parts["dt=2026-10-12"]["provenance"]["input_hashes"] == {"x.csv": "bbb"}
    extras = {e["key"]: e["value"] for e in pkg["extras"]}
    assert "15" in extras["privacy dt=2026-10-05"] and "10" in extras["privacy dt=2026-10-12"]
    dp = json.loads((tmp_path / "catalog" / "opencity-test" / "datapackage.json").read_text())
    assert dp["partitions"] == pkg["opencity"]["partitions"]


def test_crash_leftovers_are_removed_and_never_listed(tmp_path):
    cat = LocalCatalog(tmp_path / "catalog")
    cat.publish(_release(tmp_path, "dt=2026-10-05", [20, 30]))
    ddir = tmp_path / "catalog" / "opencity-test"
    # what a publish killed at different instants leaves behind
    half = ddir / ".snapshots" / "s-deadbeef.staging" / "resources" / "dt=2026-10-12"
    half.mkdir(parents=True)
    (half / "part-0.parquet").write_bytes(b"half a file")
    (ddir / ".snapshots" / "s-0000complete").mkdir()
    os.symlink(".snapshots/s-0000complete", ddir / ".current.1234.tmp")
    assert "s-deadbeef" not in json.dumps(cat.load_package("opencity-test"))
    cat.publish(_release(tmp_path, "dt=2026-10-12", [25, 35]))
    assert sorted(p.name for p in (ddir / ".snapshots").iterdir()) == [
        (ddir / "current").resolve().name]
    assert not list(ddir.glob(".*.tmp"))
    assert not cat.verify("opencity-test")


def test_tampered_partition_is_repaired_by_its_rerun_and_withdrawn_otherwise(tmp_path):
    cat = LocalCatalog(tmp_path / "catalog")
    rel5 = _release(tmp_path, "dt=2026-10-05", [20, 30])
    cat.publish(rel5)
    cat.publish(_release(tmp_path, "dt=2026-10-12", [25, 35]))
    ddir = tmp_path / "catalog" / "opencity-test"
    f5 = ddir / "data" / "counts" / "dt=2026-10-05" / "part-0.parquet"
    f12 = ddir / "data" / "counts" / "dt=2026-10-12" / "part-0.parquet"
    # The files are hard links into an immutable snapshot: replace, do not write through.
    for f, values in ((f5, [2, 3]), (f12, [9, 9, 9])):
        tmp = f.with_name("x.tmp")
        pq.write_table(pa.table({"district_id": ["D01"] * len(values), "requests": values}),
                       tmp)
        os.replace(tmp, f)
    assert len(cat.verify("opencity-test")) == 2
    res = cat.publish(rel5)  # the rerun of 2026-10-05 verifies the file on disk, not the record
    assert res.uploaded == ("counts",)
    pkg = cat.load_package("opencity-test")
    assert [r["partition"] for r in pkg["resources"]] == ["dt=2026-10-05"]  # 10-12 withdrawn
    assert sha256_file(f5) == sha256_file(rel5.resources[0].path)
    assert not f12.exists() and not cat.verify("opencity-test")


def test_read_back_keeps_the_release_licence_and_newest_metadata(tmp_path):
    cat = LocalCatalog(tmp_path / "catalog")
    cat.publish(_release(tmp_path, "dt=2026-10-12", [25, 35], threshold=10))
    cat.publish(_release(tmp_path, "dt=2026-10-05", [20, 30], threshold=15))  # backfill
    back = next(iter_releases(tmp_path / "catalog"))
    assert back.license_id == "CC-BY-4.0"
    assert back.privacy["suppression_threshold"] == 10  # the newest partition's, not the last run's
    assert back.temporal_coverage == ("2026-10-05", "2026-10-12")


def test_output_leftovers_of_killed_runs_are_cleaned(tmp_path):
    ds = tmp_path / "outputs" / "opencity-test"
    part = ds / "dt=2026-10-05"
    part.mkdir(parents=True)
    (part / "part-0.parquet").write_bytes(b"x")
    (part / ".part-0.parquet.1a2b.tmp").write_bytes(b"half")
    own_old = ds / ".dt=2026-10-05.1a2b.old"
    own_old.mkdir()
    other_staging = ds / ".dt=2026-10-12.staging"  # another run may still be using it
    other_staging.mkdir()
    stale = ds / ".dt=2026-09-28.9f9f.tmp"
    stale.mkdir()
    old = time.time() - 3 * 24 * 3600
    os.utime(stale, (old, old))
    removed = clean_partition_leftovers(part)
    assert {p.name for p in removed} == {".part-0.parquet.1a2b.tmp", own_old.name, stale.name}
    assert other_staging.exists() and (part / "part-0.parquet").exists()


def test_a_leftover_breaks_a_hive_read_until_cleaned(tmp_path):
    import duckdb
    import pytest

    ds = tmp_path / "outputs" / "opencity-test"
    for folder in ("dt=2026-10-05", ".dt=2026-10-05.1a2b.old"):
        (ds / folder).mkdir(parents=True)
        pq.write_table(pa.table({"a": [1]}), ds / folder / "part-0.parquet")
    query = "SELECT count(*) FROM read_parquet(?, hive_partitioning=true)"
    glob = (ds / "*" / "*.parquet").as_posix()
    with pytest.raises(duckdb.Error, match="Hive partition mismatch"):
        duckdb.connect().execute(query, [glob]).fetchone()
    clean_partition_leftovers(ds / "dt=2026-10-05")
    assert duckdb.connect().execute(query, [glob]).fetchone() == (1,)


def test_a_catalog_of_the_old_layout_is_carried_over(tmp_path):
    """A run directory published before snapshots keeps its partitions on the next publish."""
    rel = _release(tmp_path, "dt=2026-10-05", [20, 30])
    ddir = tmp_path / "catalog" / "opencity-test"
    part = ddir / "resources" / "dt=2026-10-05"
    part.mkdir(parents=True)
    src = rel.resources[0].path
    (part / "part-0.parquet").write_bytes(src.read_bytes())
    (ddir / "package.json").write_text(json.dumps({
        "name": "opencity-test", "title": "Test", "notes": "d", "license_id": "CC-BY-4.0",
        "resources": [{"name": "counts", "path": "resources/dt=2026-10-05/part-0.parquet",
                       "format": "PARQUET", "partition": "dt=2026-10-05",
                       "hash": "sha256:" + sha256_file(src), "size": src.stat().st_size}],
        "opencity": {"privacy": rel.privacy, "temporal_coverage": ["2026-10-05", "2026-10-05"]},
    }))
    cat = LocalCatalog(tmp_path / "catalog")
    cat.publish(_release(tmp_path, "dt=2026-10-12", [25, 35]))
    pkg = cat.load_package("opencity-test")
    assert [r["partition"] for r in pkg["resources"]] == ["dt=2026-10-05", "dt=2026-10-12"]
    assert not cat.verify("opencity-test")
    assert "migrated" in pkg["opencity"]["partitions"][0]["provenance"]


def test_withdrawal_is_one_atomic_step_and_survives_later_publishes(tmp_path):
    import pytest

    from opencity.errors import ConfigError

    cat = LocalCatalog(tmp_path / "catalog")
    cat.publish(_release(tmp_path, "dt=2026-10-05", [20, 30]))
    cat.publish(_release(tmp_path, "dt=2026-10-12", [25, 35]))
    assert cat.withdraw("opencity-test", "dt=2026-10-05", {"reason": "wrong map"}) == ["counts"]
    pkg = cat.load_package("opencity-test")
    assert {r["partition"] for r in pkg["resources"]} == {"dt=2026-10-12"}
    assert [w["partition"] for w in pkg["opencity"]["withdrawn"]] == ["dt=2026-10-05"]
    assert cat.verify("opencity-test") == []
    assert not (tmp_path / "catalog" / "opencity-test" / "data" / "counts" / "dt=2026-10-05"
                ).exists()
    # A later publish of another partition keeps the withdrawal note and does not bring the
    # withdrawn partition back.
    cat.publish(_release(tmp_path, "dt=2026-10-19", [40, 50]))
    pkg = cat.load_package("opencity-test")
    assert {r["partition"] for r in pkg["resources"]} == {"dt=2026-10-12", "dt=2026-10-19"}
    dp = json.loads((tmp_path / "catalog" / "opencity-test" / "datapackage.json").read_text())
    assert dp["withdrawn"][0]["reason"] == "wrong map"
    with pytest.raises(ConfigError, match="dt=2026-10-12"):
        cat.withdraw("opencity-test", "dt=2026-10-05", {"reason": "again"})
    # Withdrawing every partition leaves the dataset listed without files.
    cat.withdraw("opencity-test", "dt=2026-10-12", {"reason": "r"})
    cat.withdraw("opencity-test", "dt=2026-10-19", {"reason": "r"})
    pkg = cat.load_package("opencity-test")
    assert pkg["resources"] == [] and len(pkg["opencity"]["withdrawn"]) == 3
    assert [r.name for r in iter_releases(tmp_path / "catalog")] == []
