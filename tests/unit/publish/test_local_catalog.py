"""The local catalog: layout, idempotent reruns, partitions kept, catalog read back."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opencity.errors import ConfigError
from publish.base import DatasetRelease, Field, Resource, sha256_file
from publish.local import LocalCatalog, iter_releases


def release(tmp_path, part, values):
    start = part.removeprefix("dt=")
    end = f"{start[:8]}{int(start[8:]) + 7:02d}"
    f = tmp_path / "src" / part / "part-0.parquet"
    f.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"district_id": ["D01", "D02"], "requests": values}), f)
    return DatasetRelease(
        name="opencity-test", title="Test", description="d",
        resources=(Resource(f, "counts", "parquet", "week", part),),
        fields=(Field("district_id", "string"), Field("requests", "integer")),
        privacy={"privacy_method": "small_count_suppression", "suppression_threshold": 15},
        temporal_coverage=(start, end), provenance={"run_id": "r1"},
    )


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_publish_layout_and_metadata(tmp_path):
    cat = LocalCatalog(tmp_path / "catalog")
    res = cat.publish(release(tmp_path, "dt=2026-10-05", [20, 30]))
    assert res.created and res.uploaded == ("counts",)
    ddir = tmp_path / "catalog" / "opencity-test"
    pkg = json.loads((ddir / "package.json").read_text())
    extras = {e["key"]: e["value"] for e in pkg["extras"]}
    assert extras["privacy_method"] == "small_count_suppression"
    assert extras["suppression_threshold"] == "15"
    res0 = pkg["resources"][0]
    assert res0["hash"] == "sha256:" + sha256_file(ddir / res0["path"])
    dp = json.loads((ddir / "datapackage.json").read_text())
    assert [f["name"] for f in dp["resources"][0]["schema"]["fields"]] == ["district_id",
                                                                         "requests"]


def test_rerun_is_idempotent_and_new_partition_keeps_history(tmp_path):
    cat = LocalCatalog(tmp_path / "catalog")
    rel = release(tmp_path, "dt=2026-10-05", [20, 30])
    cat.publish(rel)
    before = snapshot(tmp_path / "catalog")
    res = cat.publish(rel)
    assert res.unchanged == ("counts",) and not res.uploaded and not res.created
    assert snapshot(tmp_path / "catalog") == before
    cat.publish(release(tmp_path, "dt=2026-10-12", [25, 35]))
    pkg = cat.load_package("opencity-test")
    assert [r["partition"] for r in pkg["resources"]] == ["dt=2026-10-05", "dt=2026-10-12"]
    assert pkg["opencity"]["temporal_coverage"] == ["2026-10-05", "2026-10-19"]
    # Changed content for an existing partition replaces that partition only.
    cat.publish(release(tmp_path, "dt=2026-10-05", [21, 30]))
    pkg = cat.load_package("opencity-test")
    assert len(pkg["resources"]) == 2
    back = {r.partition: pq.read_table(r.path)["requests"].to_pylist()
            for r in next(iter_releases(tmp_path / "catalog")).resources}
    assert back == {"dt=2026-10-05": [21, 30], "dt=2026-10-12": [25, 35]}


def test_read_back_release_round_trips_metadata(tmp_path):
    rel = release(tmp_path, "dt=2026-10-05", [20, 30])
    LocalCatalog(tmp_path / "catalog").publish(rel)
    back = next(iter_releases(tmp_path / "catalog"))
    assert (back.name, back.privacy, back.fields, back.provenance) == (
        rel.name, rel.privacy, rel.fields, rel.provenance)


@pytest.mark.parametrize("name", ["Bad Name", "x", "a" * 101, "ümlaut"])
def test_invalid_dataset_names_rejected(tmp_path, name):
    f = tmp_path / "f.parquet"
    pq.write_table(pa.table({"a": [1]}), f)
    with pytest.raises(ConfigError, match="not a valid portal name"):
        DatasetRelease(name=name, title="t", description="", resources=(
            Resource(f, "r", "parquet"),))
