"""Secrets are resolved by orchestration (opencity.secrets) and passed into the stages:
transforms and publish.ckan never read the environment or Airflow for a key or token."""

from __future__ import annotations

import pytest

from opencity.errors import ConfigError
from opencity.secrets import Secret, resolve_ckan_token, resolve_hmac_key


def test_ckan_token_missing_names_every_place_looked(monkeypatch):
    monkeypatch.delenv("OPENCITY_CKAN_TOKEN", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_OPENCITY_CKAN", raising=False)
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    with pytest.raises(ConfigError) as err:
        resolve_ckan_token()
    assert "OPENCITY_CKAN_TOKEN" in str(err.value) and "opencity_ckan" in str(err.value)


def test_ckan_token_from_environment_is_typed(monkeypatch):
    monkeypatch.setenv("OPENCITY_CKAN_TOKEN", "tok-from-env-123")
    token = resolve_ckan_token()
    assert isinstance(token, Secret) and token.reveal() == "tok-from-env-123"
    assert "tok-from-env-123" not in repr(token)


def test_publisher_does_not_read_the_environment(monkeypatch):
    from publish.ckan import CkanPublisher

    monkeypatch.setenv("OPENCITY_CKAN_TOKEN", "tok-from-env-123")
    with pytest.raises(ConfigError) as err:
        CkanPublisher("http://127.0.0.1:9", None, organization="city")
    assert "resolve_ckan_token" in str(err.value) and "tok-from-env" not in str(err.value)


@pytest.mark.parametrize("token", ["plain-token-456", Secret("plain-token-456", "argument")])
def test_publisher_takes_a_string_or_a_secret_and_never_shows_it(token):
    from publish.ckan import CkanPublisher

    pub = CkanPublisher("http://127.0.0.1:9", token, organization="city")
    assert pub._client.auth_header == {"Authorization": "plain-token-456"}
    shown = repr(pub) + repr(pub._client) + repr(pub._client._token) + str(pub._client._token)
    assert "plain-token-456" not in shown


def test_hmac_key_resolved_by_orchestration(monkeypatch):
    monkeypatch.setenv("OPENCITY_HMAC_KEY", "k" * 32)
    key = resolve_hmac_key()
    assert key.reveal() == "k" * 32 and "kkkk" not in repr(key)
    monkeypatch.setenv("OPENCITY_HMAC_KEY", "short")
    with pytest.raises(ConfigError, match="shorter than 16 bytes"):
        resolve_hmac_key()
