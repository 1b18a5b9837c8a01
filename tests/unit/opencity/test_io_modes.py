"""Restricted zones are owner-only whatever the umask; more open ones warn once."""

import grp
import logging
import os
import stat

import pyarrow as pa
import pytest

from opencity import io
from opencity.errors import ConfigError


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o000)
    yield
    os.umask(old)


def test_restricted_dir_and_writers_ignore_the_umask(tmp_path, loose_umask):
    d = io.restricted_dir(tmp_path / "a" / "b" / "c")
    for p in (tmp_path / "a", tmp_path / "a" / "b", d):
        assert mode(p) == 0o700
    t = pa.table({"x": [1]})
    f = io.write_parquet_atomic(t, tmp_path / "z" / "f.parquet", restricted=True)
    assert mode(f) == 0o600 and mode(f.parent) == 0o700
    staged = io.write_csv_atomic(t, tmp_path / "out" / ".dt=2026-10-05.staging" / "p.csv")
    assert mode(staged) == 0o600, "files in a staging folder are restricted without asking"
    assert mode(staged.parent) == 0o700
    public = io.write_csv_atomic(t, tmp_path / "catalog" / "p.csv")
    assert mode(public) == 0o666  # not a restricted zone: the umask (here 000) decides


def test_more_open_folder_is_tightened_with_one_warning(tmp_path, caplog):
    d = tmp_path / "clean"
    d.mkdir()
    os.chmod(d, 0o755)
    caplog.set_level(logging.WARNING, logger="opencity.io")
    io.restricted_dir(d)
    os.chmod(d, 0o755)
    io.restricted_dir(d)
    warnings = [r for r in caplog.records if "restricted path" in r.getMessage()]
    assert len(warnings) == 1 and "0755" in warnings[0].getMessage()
    assert mode(d) == 0o700


def test_configured_group(tmp_path, monkeypatch, loose_umask):
    group = grp.getgrgid(os.getgid()).gr_name
    monkeypatch.setenv(io.RESTRICTED_GROUP_ENV, group)
    d = io.restricted_dir(tmp_path / "q")
    f = io.write_parquet_atomic(pa.table({"x": [1]}), d / "q.parquet", restricted=True)
    assert (mode(d), mode(f)) == (0o750, 0o640)
    assert os.stat(f).st_gid == os.getgid()
    monkeypatch.setenv(io.RESTRICTED_GROUP_ENV, "no-such-group-opencity")
    with pytest.raises(ConfigError, match="OPENCITY_RESTRICTED_GROUP"):
        io.restricted_dir(tmp_path / "x")


def test_open_raw_input_warns_once_and_is_left_alone(tmp_path, caplog):
    raw = tmp_path / "requests.csv"
    raw.write_text("x\n")
    os.chmod(raw, 0o644)
    caplog.set_level(logging.WARNING, logger="opencity.io")
    assert io.warn_if_open(raw) and io.warn_if_open(raw)
    assert len([r for r in caplog.records if "restricted input" in r.getMessage()]) == 1
    assert mode(raw) == 0o644
    os.chmod(raw, 0o600)
    assert not io.warn_if_open(raw)
