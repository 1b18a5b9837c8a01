"""Pure parts of publish/ckan.py and publish/cli.py (no server needed)."""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
import pytest

from opencity import cli
from opencity.errors import ConfigError
from publish.base import Field
from publish.ckan import (
    CkanPublisher,
    RetryPolicy,
    _inclusive_end,
    _record_batches,
    datastore_fields,
    flatten_privacy,
    format_validation_error,
)


@pytest.mark.parametrize("retries", [-1, 21, 1.5, True, "3", math.nan])
def test_retry_policy_rejects_bad_retries(retries):
    with pytest.raises(ConfigError):
        RetryPolicy(retries=retries)


@pytest.mark.parametrize("backoff", [-0.1, math.nan, math.inf, 601, True, "1"])
def test_retry_policy_rejects_bad_backoff(backoff):
    with pytest.raises(ConfigError):
        RetryPolicy(backoff_s=backoff)


def test_retry_policy_backoff_doubles_up_to_the_cap():
    policy = RetryPolicy(retries=6, backoff_s=1.0, max_backoff_s=5.0)
    assert [policy.delay(i) for i in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert RetryPolicy(retries=0).retries == 0


def test_validation_error_is_listed_field_by_field():
    error = {"__type": "Validation Error",
             "name": ["That URL is already in use."],
             "tags": [{}, {"name": ['Tag "a/b" must be alphanumeric']}],
             "extras": [{"key": ["There is a schema field with the same name"]}]}
    text = format_validation_error(error)
    assert text.split("; ") == [
        "name: That URL is already in use.",
        'tags[1].name: Tag "a/b" must be alphanumeric',
        "extras[0].key: There is a schema field with the same name",
    ]
    assert "__type" not in text
    assert format_validation_error({}) == "no details given"


def test_privacy_parameters_flatten_to_clear_string_extras():
    extras = flatten_privacy({"privacy_method": "differential_privacy", "epsilon": 1.0,
                              "delta": 1e-7, "bounds": {"lower": 0, "upper": 50},
                              "quasi_identifiers": ["age_band", "district_id"],
                              "contribution_bounded": True})
    assert extras == {"privacy_method": "differential_privacy", "epsilon": "1.0",
                      "delta": "1e-07", "bounds_lower": "0", "bounds_upper": "50",
                      "quasi_identifiers": '["age_band", "district_id"]',
                      "contribution_bounded": "true"}


def test_temporal_end_becomes_the_last_covered_day():
    assert _inclusive_end("2026-10-12") == "2026-10-11"
    assert _inclusive_end("2026-03-01") == "2026-02-28"
    assert _inclusive_end("not a date") == "not a date"


def test_record_batches_are_json_ready():
    table = pa.table({
        "d": pa.array([dt.date(2026, 10, 5), None], pa.date32()),
        "ts": pa.array([dt.datetime(2026, 10, 5, 8, tzinfo=dt.UTC), None],
                       pa.timestamp("us", tz="UTC")),
        "x": pa.array([1.5, math.nan]),
        "n": pa.array([3, None], pa.int64()),
        "c": pa.array(["a", "b"]).dictionary_encode(),
    })
    batches = list(_record_batches(table, rows=1))
    assert len(batches) == 2
    first, second = batches[0][0], batches[1][0]
    assert first["d"] == "2026-10-05" and first["ts"].startswith("2026-10-05 08:00:00")
    assert first["x"] == 1.5 and first["n"] == 3 and first["c"] == "a"
    assert second == {"d": None, "ts": None, "x": None, "n": None, "c": "b"}


def test_datastore_fields_carry_the_data_dictionary():
    schema = pa.schema([("district_id", pa.string()), ("hours", pa.float64()),
                        ("extra", pa.int32())])
    fields = (Field("district_id", "string", "District code"),
              Field("hours", "number", "Median time", "hours"),
              Field("not_in_table", "integer", "dropped"))
    got = datastore_fields(fields, schema)
    assert [(f["id"], f["type"]) for f in got] == [("district_id", "text"),
                                                   ("hours", "numeric")]
    assert got[1]["info"]["notes"] == "Median time (unit: hours)"
    inferred = datastore_fields((), schema)
    assert [(f["id"], f["type"]) for f in inferred] == [
        ("district_id", "text"), ("hours", "numeric"), ("extra", "int8")]


@pytest.mark.parametrize("org", ["", "A", "Has Space", "x" * 101, "bad/slash"])
def test_publisher_rejects_bad_organization_names(org):
    with pytest.raises(ConfigError, match="organization"):
        CkanPublisher("http://127.0.0.1:9", "token", organization=org)


def test_publisher_repr_never_shows_the_token():
    pub = CkanPublisher("http://127.0.0.1:9", "s3cr3t-token-value", organization="city")
    assert "s3cr3t" not in repr(pub) and "s3cr3t" not in str(vars(pub).get("_token"))


def test_cli_rejects_a_directory_without_catalog(tmp_path, capsys):
    assert cli.main(["publish", str(tmp_path), "--target", "local"]) == 1
    err = capsys.readouterr().err
    assert "no catalog/ folder" in err and "Traceback" not in err


def test_cli_ckan_target_needs_a_url(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENCITY_CKAN_URL", raising=False)
    (tmp_path / "catalog").mkdir()
    assert cli.main(["publish", str(tmp_path), "--target", "ckan"]) == 1
    assert "--ckan-url" in capsys.readouterr().err


def test_timeout_from_argument_then_environment_then_default(monkeypatch):
    from publish.ckan import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, resolve_timeout

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert resolve_timeout(None) == DEFAULT_TIMEOUT_S
    monkeypatch.setenv(TIMEOUT_ENV, "7.5")
    assert resolve_timeout(None) == 7.5
    assert resolve_timeout(3) == 3.0


@pytest.mark.parametrize("bad", [0, -1, 3601, "soon", math.nan, math.inf])
def test_bad_timeouts_are_config_errors(bad, monkeypatch):
    from publish.ckan import TIMEOUT_ENV, resolve_timeout

    with pytest.raises(ConfigError, match="seconds"):
        resolve_timeout(bad)
    monkeypatch.setenv(TIMEOUT_ENV, str(bad))
    with pytest.raises(ConfigError, match=TIMEOUT_ENV):
        resolve_timeout(None)


def test_resource_keys_recognise_resources_written_before_the_key_existed():
    from publish.ckan.resources import hex_hash, key_of

    assert key_of("ds", {"opencity_key": "ds/dt=1/x"}) == "ds/dt=1/x"
    assert key_of("ds", {"opencity_resource": "x", "partition": "dt=1"}) == "ds/dt=1/x"
    assert key_of("ds", {"opencity_resource": "datapackage", "partition": ""}) == \
        "ds/_/datapackage"
    assert key_of("ds", {"name": "someone else's"}) == ""
    assert hex_hash({"hash": "sha256:" + "a" * 64}) == "a" * 64 == hex_hash({"hash": "a" * 64})


def test_ckan_datapackage_keeps_the_sha256_prefix(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from publish.base import DatasetRelease, Resource
    from publish.ckan import ckan_datapackage

    f = tmp_path / "p.parquet"
    pq.write_table(pa.table({"district_id": ["D01"], "requests": [3]}), f)
    rel = DatasetRelease(name="ds-x", title="t", description="d",
                         resources=(Resource(f, "p", "parquet", "", "dt=1"),))
    dp = ckan_datapackage(rel, [{
        "name": "p dt=1", "opencity_resource": "p", "url": "http://x/p.parquet", "hash": "b" * 64, "partition": "dt=1",
        "format": "http://publications.europa.eu/resource/authority/file-type/PARQUET",
        "mimetype": "https://www.iana.org/assignments/media-types/application/vnd.apache.parquet"}])
    (res,) = dp["resources"]
    assert res["hash"] == "sha256:" + "b" * 64  # a bare hex digest would read as MD5
    assert res["format"] == "parquet" and res["mediatype"] == "application/vnd.apache.parquet"
