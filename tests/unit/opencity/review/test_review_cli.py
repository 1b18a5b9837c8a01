"""The privacy officer's commands explain themselves and fail with clear messages."""

from __future__ import annotations

import pytest

from opencity.cli import main


@pytest.mark.parametrize("cmd", ["report", "approve", "approvals", "withdraw", "officer"])
def test_each_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: opencity " + cmd in capsys.readouterr().out


def test_report_of_a_missing_run_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("given", ["xyz", "1234", "0" * 64])
def test_approve_refuses_a_hash_that_is_not_a_policy_version(given, tmp_path, capsys):
    code = main(["approve", "opencity-311-requests-weekly", "--policy", given,
                 "--state-url", str(tmp_path / "s.sqlite")])
    err = capsys.readouterr().err
    assert code == 1 and "--policy" in err


def test_approve_and_list(tmp_path, capsys):
    from opencity.review.policy import policy_version

    state = str(tmp_path / "s.sqlite")
    h = policy_version("opencity-kpis")["hash"]
    key = tmp_path / "officer.key"
    assert main(["officer", "keygen", str(key)]) == 0
    assert main(["officer", "register", "--public-key", f"{key}.pub", "--officer", "officer",
                 "--state-url", state]) == 0
    assert main(["approve", "opencity-kpis", "--policy", h[:10], "--by", "officer",
                 "--comment", "fine", "--state-url", state, "--key", str(key),
                 "--run-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["approvals", "--state-url", state]) == 0
    out = capsys.readouterr().out
    assert "nothing waits for approval" in out
    assert "opencity-kpis: approved by officer (cli)" in out and "fine" in out


def test_withdraw_needs_a_published_partition(tmp_path, capsys):
    code = main(["withdraw", "opencity-kpis", "dt=2026-10-01", "--reason", "x",
                 "--run-dir", str(tmp_path), "--state-url", str(tmp_path / "s.sqlite")])
    assert code == 1 and "not in the local catalog" in capsys.readouterr().err


def test_officer_keygen_register_show_and_no_key_no_approval(tmp_path, capsys):
    import stat

    from opencity.review.policy import policy_version

    state = str(tmp_path / "s.sqlite")
    key = tmp_path / "officer.key"
    assert main(["officer", "show", "--state-url", state]) == 1
    assert main(["officer", "keygen", str(key)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) & 0o077 == 0  # owner-only
    assert main(["officer", "keygen", str(key)]) == 1  # never overwritten
    assert "exists" in capsys.readouterr().err
    assert main(["officer", "register", "--public-key", f"{key}.pub", "--officer", "A",
                 "--airflow-user", "a.officer", "--state-url", state]) == 0
    assert main(["officer", "show", "--state-url", state]) == 0
    assert "Airflow user a.officer" in capsys.readouterr().out
    # The operator: a key of their own is neither registrable nor accepted.
    mine = tmp_path / "mine.key"
    assert main(["officer", "keygen", str(mine)]) == 0
    assert main(["officer", "register", "--public-key", f"{mine}.pub",
                 "--state-url", state]) == 1
    assert "already registered" in capsys.readouterr().err
    h = policy_version("opencity-kpis")["hash"]
    for extra in ([], ["--key", str(mine)], ["--key", str(tmp_path / "none.key")]):
        assert main(["approve", "opencity-kpis", "--policy", h, "--state-url", state,
                     *extra]) == 1
    err = capsys.readouterr().err
    assert "--key FILE" in err and "not the privacy officer's registered key" in err
    assert "cannot read the officer key" in err and "Traceback" not in err
    # Rejecting needs no key.
    assert main(["approve", "opencity-kpis", "--policy", h, "--reject", "--state-url",
                 state]) == 0
    # A public key that is not one: a clear error.
    (tmp_path / "bad.pub").write_text("not a key")
    assert main(["officer", "register", "--public-key", str(tmp_path / "bad.pub"),
                 "--state-url", str(tmp_path / "t.sqlite")]) == 1
    assert "not a PEM public key" in capsys.readouterr().err
