import pytest

from opencity.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("sample-data", "ingest", "demo"):
        assert cmd in out


def test_ingest_without_key_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("OPENCITY_HMAC_KEY", raising=False)
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    f = tmp_path / "r.csv"
    f.write_text("a\n1\n")
    code = main(["ingest", "service_requests", str(f), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert "OPENCITY_HMAC_KEY" in err and "Traceback" not in err


def test_ingest_missing_column_is_a_clear_error(tmp_path, capsys):
    f = tmp_path / "r.csv"
    f.write_text("a\n1\n")
    code = main(["ingest", "service_requests", str(f), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "missing column" in err and "r.csv" in err
