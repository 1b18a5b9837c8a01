"""Issue 19 item 4: one atomic write with the zone's modes.

Every writer of opencity.io gives a file the modes of its zone whatever the process umask:
restricted (staging, state, reports, manifests, outputs) owner-only, the public catalog
world-readable. The KPI pipeline, which wrote ``privacy.json`` and ``dashboard.html`` into its
staging folder with the umask's modes, is run step by step under umask 022 (without the CLI's
final ``restrict_run_tree``, which would hide a wrong mode) and every file it wrote is checked.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from opencity import io


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def umask_077():
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


WRITERS = {
    "text": lambda p, **z: io.write_text_atomic("x", p, **z),
    "json": lambda p, **z: io.write_json_atomic({"a": 1}, p, **z),
    "bytes": lambda p, **z: io.write_bytes_atomic(b"x", p, **z),
    "parquet": lambda p, **z: io.write_parquet_atomic(pa.table({"x": [1]}), p, **z),
    "csv": lambda p, **z: io.write_csv_atomic(pa.table({"x": [1]}), p, **z),
    "callable": lambda p, **z: io.write_atomic(p, lambda t: t.write_text("x"), **z),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_restricted_zone_is_owner_only_under_umask_022(tmp_path, umask_022, monkeypatch,
                                                        writer):
    monkeypatch.delenv(io.RESTRICTED_GROUP_ENV, raising=False)
    f = WRITERS[writer](tmp_path / "state" / "sub" / "f.out", restricted=True)
    assert (mode(f), mode(f.parent), mode(f.parent.parent)) == (0o600, 0o700, 0o700)
    staged = WRITERS[writer](tmp_path / "outputs" / ".dt=2026-10-01.staging" / "f.out")
    assert (mode(staged), mode(staged.parent)) == (0o600, 0o700), "staging implies restricted"


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_public_zone_is_world_readable_under_umask_077(tmp_path, umask_077, writer):
    f = WRITERS[writer](tmp_path / "catalog" / "ds" / "f.out", public=True)
    assert (mode(f), mode(f.parent), mode(f.parent.parent)) == (0o644, 0o755, 0o755)


def test_default_zone_follows_the_umask(tmp_path, umask_022):
    f = io.write_text_atomic("x", tmp_path / "where-the-user-asked" / "f.html")
    assert (mode(f), mode(f.parent)) == (0o644, 0o755)


def test_a_file_cannot_be_both_restricted_and_public(tmp_path):
    from opencity.errors import ConfigError

    with pytest.raises(ConfigError, match="restricted or public"):
        io.write_text_atomic("x", tmp_path / "f", restricted=True, public=True)
    assert not (tmp_path / "f").exists()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = io.write_text_atomic("old", tmp_path / "f.json", restricted=True)

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.write_atomic(target, broken, restricted=True)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_replace_symlink_and_move_aside(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    link = io.replace_symlink(tmp_path / "current", "a")
    assert os.readlink(link) == "a"
    io.replace_symlink(link, "b")
    assert os.readlink(link) == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "current"]
    aside = io.move_aside(tmp_path / "a")
    assert aside.name.startswith(".a.") and aside.name.endswith(".old") and aside.is_dir()
    moved = io.rename_dir(tmp_path / "b", tmp_path / "c")
    assert moved.is_dir() and not (tmp_path / "b").exists()
    with pytest.raises(FileExistsError):
        io.rename_dir(aside, moved)


def test_local_catalog_is_world_readable_under_umask_077(tmp_path, umask_077):
    import pyarrow.parquet as pq

    from publish.base import DatasetRelease, Field, Resource
    from publish.local import LocalCatalog

    src = tmp_path / "outputs" / "part-0.parquet"
    io.write_parquet_atomic(pa.table({"district_id": ["D01"], "n": [20]}), src,
                            restricted=True)
    rel = DatasetRelease(
        name="opencity-test", title="Test", description="d",
        resources=(Resource(src, "counts", "parquet", "week", "dt=2026-10-05"),),
        fields=(Field("district_id", "string"), Field("n", "integer")),
        privacy={"privacy_method": "small_count_suppression", "suppression_threshold": 15},
        temporal_coverage=("2026-10-05", "2026-10-12"), provenance={"run_id": "r1"})
    LocalCatalog(tmp_path / "catalog").publish(rel)
    written = [f for f in _files(tmp_path / "catalog") if f.name != ".lock"]
    assert len(written) > 5 and any(f.suffix == ".parquet" for f in written)
    closed = [f"{f.relative_to(tmp_path)} {mode(f):04o}" for f in written
              if mode(f) not in (0o644, 0o755)]
    assert not closed, f"published files not world-readable: {closed}"
    assert pq.read_table(tmp_path / "catalog" / "opencity-test" / "current" / "data" / "counts"
                         / "dt=2026-10-05" / "part-0.parquet").num_rows == 1
    assert mode(src) == 0o600, "the restricted source keeps its mode"


def test_catalog_review_file_is_world_readable_under_umask_077(tmp_path, umask_077):
    """review.json (approvals and withdrawals) is published next to the dataset."""
    from opencity.review.approvals import ReviewStore
    from opencity.review.gate import write_catalog_review
    from opencity.settings import Settings

    settings = Settings.resolve({"run_dir": str(tmp_path / "run")})
    path = write_catalog_review(settings, "opencity-kpis", ReviewStore(settings.state_url))
    assert path is not None and path.is_file(), "no approval recorded: proves nothing"
    assert (mode(path), mode(path.parent), mode(path.parent.parent)) == (0o644, 0o755, 0o755)


def _files(root: Path) -> list[Path]:
    return [p for p in [root, *root.rglob("*")] if not p.is_symlink()]


@pytest.fixture(scope="module")
def kpi_raw(tmp_path_factory) -> Path:
    from sample_data import generate

    raw = tmp_path_factory.mktemp("kpi-sample") / "raw"
    generate(raw, seed=11, scale=0.1, start=date(2026, 10, 1), days=7, progress=False)
    return raw


def _kpi_staged(tmp_path: Path, kpi_raw: Path):
    from opencity.pipelines import kpi as p
    from opencity.settings import Settings

    settings = Settings.resolve({"run_dir": str(tmp_path / "run"), "raw_dir": str(kpi_raw)})
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    ingested = p.ingest(settings, start, end)
    staged = p.compute(settings, ingested, start, end, random_state=3)
    assert not staged.get("skipped"), "the sample month computed nothing: proves nothing"
    p.dashboard(settings, staged, start)
    return settings, (start, end), ingested, staged


def test_kpi_staging_is_owner_only(tmp_path, kpi_raw, umask_022, monkeypatch):
    """privacy.json and dashboard.html were written with the umask's modes (0644 here)."""
    monkeypatch.delenv(io.RESTRICTED_GROUP_ENV, raising=False)
    _, _, _, staged = _kpi_staged(tmp_path, kpi_raw)
    staging = Path(staged["staging_dir"])
    for name in ("privacy.json", "dashboard.html", "kpis.parquet"):
        assert mode(staging / name) == 0o600, f"staged {name} is {mode(staging / name):04o}"
    assert mode(staging) == 0o700


@pytest.mark.slow
def test_kpi_pipeline_writes_every_file_with_its_zone_modes(tmp_path, kpi_raw, umask_022,
                                                            monkeypatch):
    from opencity.pipelines import kpi as p

    monkeypatch.delenv(io.RESTRICTED_GROUP_ENV, raising=False)
    settings, (start, end), ingested, staged = _kpi_staged(tmp_path, kpi_raw)
    committed = p.commit_partition(settings, staged, start)
    published = p.publish(settings, committed, staged, start, end, "test__2026-10", ingested)
    p.manifest(settings, "opencity_kpi", "test__2026-10", start, end, ingested, staged,
               committed, published)

    root = settings.layout.root
    for zone in ("outputs", "reports", "manifests", "clean", "csv"):
        written = _files(root / zone)
        assert len(written) > 1, f"nothing written under {zone}/ (the test would prove nothing)"
        open_ = [f"{f.relative_to(root)} {mode(f):04o}" for f in written if mode(f) & 0o077]
        assert not open_, f"restricted zone {zone}/ readable beyond its owner: {open_}"
    catalog = [f for f in _files(root / "catalog" / p.DATASET)
               if not f.name.startswith(".lock")]
    assert any(f.name == "dashboard.html" for f in catalog)
    unreadable = [f"{f.relative_to(root)} {mode(f):04o}" for f in catalog
                  if (mode(f) & 0o044) != 0o044]
    assert not unreadable, f"published files not world-readable: {unreadable}"
