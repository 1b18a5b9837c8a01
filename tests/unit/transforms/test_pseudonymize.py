import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencity.errors import ConfigError
from opencity.secrets import Secret, resolve_hmac_key
from transforms.pseudonymize import Pseudonymizer, token_python

KEY_A = Secret("a" * 32, "test")
KEY_B = Secret("b" * 32, "test")


def sql_token(key: Secret, value: str | None) -> str | None:
    p = Pseudonymizer(key)
    con = duckdb.connect()
    return con.execute(f"SELECT {p.token_sql('$v')}", {**p.params, "v": value}).fetchall()[0][0]


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_sql_hmac_equals_python_hmac(value):
    assert sql_token(KEY_A, value) == token_python(KEY_A, value)


def test_same_key_same_token_other_key_other_token():
    assert sql_token(KEY_A, "4915123456789") == sql_token(KEY_A, "4915123456789")
    assert sql_token(KEY_A, "4915123456789") != sql_token(KEY_B, "4915123456789")
    assert sql_token(KEY_A, "4915123456789") != sql_token(KEY_A, "4915123456788")


def test_long_key_follows_rfc2104():
    long_key = Secret("k" * 100, "test")
    assert sql_token(long_key, "x") == token_python(long_key, "x")


def test_null_stays_null():
    assert sql_token(KEY_A, None) is None


def test_key_resolution(monkeypatch):
    monkeypatch.setenv("OPENCITY_HMAC_KEY", "short")
    with pytest.raises(ConfigError, match="shorter than"):
        resolve_hmac_key()
    monkeypatch.delenv("OPENCITY_HMAC_KEY")
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    with pytest.raises(ConfigError, match="OPENCITY_HMAC_KEY"):
        resolve_hmac_key()
    key = resolve_hmac_key("z" * 40)
    assert "z" * 40 not in repr(key) and "z" * 40 not in str(key)
