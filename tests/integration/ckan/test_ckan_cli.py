"""`opencity publish RUN_DIR --target ckan` against the real local CKAN; the token never leaks."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from opencity import cli
from publish.local import LocalCatalog

pytestmark = [pytest.mark.integration, pytest.mark.ckan]

WEEK = dt.date(2026, 10, 5)


@pytest.fixture()
def run_dir(samples, tmp_path):
    """A run directory whose catalog/ holds two products, as `opencity demo` leaves it."""
    root = tmp_path / "run"
    catalog = LocalCatalog(root / "catalog")
    names = []
    for release in (samples.kpi_release(samples.unique_name("kpi"), tmp_path / "out", WEEK),
                    samples.microdata_release(samples.unique_name("micro"), tmp_path / "out",
                                              WEEK)):
        catalog.publish(release)
        names.append(release.name)
    return root, names


def test_cli_publishes_a_run_idempotently_without_leaking_the_token(
        ckan_server, ckan_anon, org_name, run_dir, samples, monkeypatch, caplog, capsys):
    root, names = run_dir
    monkeypatch.setenv("OPENCITY_CKAN_TOKEN", ckan_server.token)
    argv = ["-v", "publish", str(root), "--target", "ckan", "--ckan-url", ckan_server.url,
            "--organization", org_name]
    with caplog.at_level(logging.DEBUG):
        assert cli.main(argv) == 0
        first = capsys.readouterr()
        assert cli.main(argv) == 0
        second = capsys.readouterr()

    assert "published 2 dataset(s) to ckan" in first.out
    assert "0 file(s) uploaded" in second.out
    for name in names:
        assert samples.product(ckan_anon, name)["private"] is False
    for text in (caplog.text, first.out, first.err, second.out, second.err):
        assert ckan_server.token not in text


def test_cli_token_from_an_airflow_connection(
        ckan_server, ckan_anon, org_name, run_dir, samples, monkeypatch, tmp_path, capsys):
    root, names = run_dir
    monkeypatch.delenv("OPENCITY_CKAN_TOKEN", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_OPENCITY_CKAN", json.dumps(
        {"conn_type": "http", "host": ckan_server.url, "password": ckan_server.token}))
    assert cli.main(["publish", str(root), "--target", "ckan", "--ckan-url", ckan_server.url,
                     "--organization", org_name, "--dataset", names[1]]) == 0
    assert samples.product(ckan_anon, names[1])["private"] is False
    out = capsys.readouterr()
    assert ckan_server.token not in out.out + out.err


def test_cli_without_token_names_every_place_it_looked(
        ckan_server, org_name, run_dir, monkeypatch, capsys):
    root, _ = run_dir
    monkeypatch.delenv("OPENCITY_CKAN_TOKEN", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_OPENCITY_CKAN", raising=False)
    code = cli.main(["publish", str(root), "--target", "ckan", "--ckan-url", ckan_server.url,
                     "--organization", org_name])
    err = capsys.readouterr().err
    assert code == 1
    assert "OPENCITY_CKAN_TOKEN" in err and "opencity_ckan" in err
    assert "Traceback" not in err

