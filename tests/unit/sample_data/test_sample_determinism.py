"""Same seed -> byte-identical files; another seed -> other data."""

from __future__ import annotations

from pathlib import Path

from sample_data import generate


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = generate(tmp_path / "a", seed=11, scale=0.05, days=3, progress=False)
    b = generate(tmp_path / "b", seed=11, scale=0.05, days=3, progress=False)
    assert a == b
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa.keys() == fb.keys() == a.keys()
    different = [k for k in fa if fa[k] != fb[k]]
    assert different == []


def test_other_seed_gives_other_data(tmp_path):
    generate(tmp_path / "a", seed=11, scale=0.05, days=3, progress=False)
    generate(tmp_path / "b", seed=12, scale=0.05, days=3, progress=False)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    for rel in ("city/districts.csv", "city/towers.csv", "cdr/part-00000.parquet",
                "service_requests/requests.csv", "meters/registry.csv",
                "transit/taps.parquet", "waste/pickups.parquet"):
        assert fa[rel] != fb[rel], rel
