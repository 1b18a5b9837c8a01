"""Secrets: typed so they are never printed, resolved from the environment or Airflow."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from opencity.errors import ConfigError


@dataclass(frozen=True)
class Secret:
    """A secret value whose repr and str never show it."""

    _value: str = field(repr=False)
    source: str = "unknown"

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return f"Secret(from {self.source})"

    __repr__ = __str__


def airflow_connection_password(conn_id: str) -> tuple[str | None, str]:
    """Password of an Airflow connection, or None. Never raises when Airflow is absent.

    Returns (value, where-looked) so callers can name every place they looked.
    """
    where = f"Airflow connection {conn_id!r}"
    if not (os.environ.get("AIRFLOW_HOME") or os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")):
        return None, where + " (skipped: no AIRFLOW_HOME)"
    try:
        from airflow.sdk import Connection

        conn = Connection.get(conn_id)
    except Exception:  # noqa: BLE001 - any failure means "not configured here"
        return None, where
    return (conn.password or None), where


def resolve_secret(
    name: str, *, explicit: str | None, env_var: str, airflow_conn_id: str | None
) -> Secret:
    """Resolve a secret from an explicit value, then the environment, then Airflow.

    Raises:
        ConfigError: naming every place that was looked at, when none has a value.
    """
    if explicit:
        return Secret(explicit, "argument")
    looked = [f"environment variable {env_var}"]
    value = os.environ.get(env_var)
    if value:
        return Secret(value, f"environment variable {env_var}")
    if airflow_conn_id:
        value, where = airflow_connection_password(airflow_conn_id)
        looked.append(where)
        if value:
            return Secret(value, where)
    raise ConfigError(f"no {name} found; looked in: " + ", ".join(looked))


def resolve_hmac_key(explicit: str | None = None) -> Secret:
    """The HMAC key from an argument, OPENCITY_HMAC_KEY or the Airflow connection opencity_hmac.

    Resolved here (orchestration) and passed to transforms (``key=``); stages never read
    the environment for a secret.
    """
    from transforms.pseudonymize import HMAC_CONN_ID, HMAC_ENV_VAR, MIN_KEY_BYTES

    key = resolve_secret(
        "HMAC pseudonymization key",
        explicit=explicit,
        env_var=HMAC_ENV_VAR,
        airflow_conn_id=HMAC_CONN_ID,
    )
    if len(key.reveal().encode()) < MIN_KEY_BYTES:
        raise ConfigError(
            f"the HMAC key ({key.source}) is shorter than {MIN_KEY_BYTES} bytes; generate one "
            "with: python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return key


def throwaway_key() -> Secret:
    """A random key for demos only: pseudonyms from it cannot be linked across runs."""
    import logging
    import secrets

    from transforms.pseudonymize import HMAC_ENV_VAR

    logging.getLogger("transforms.pseudonymize").warning(
        "DEMO: no %s set - using a throwaway random HMAC key for this run only; pseudonyms "
        "will differ from any other run. Set %s for real data.",
        HMAC_ENV_VAR,
        HMAC_ENV_VAR,
    )
    return Secret(secrets.token_hex(32), "throwaway demo key")


def resolve_ckan_token(token: str | Secret | None = None) -> Secret:
    """The CKAN API token: explicit value, then $OPENCITY_CKAN_TOKEN, then the password of the
    Airflow connection ``opencity_ckan``; passed to ``publish.ckan.CkanPublisher(token=)``."""
    from publish.ckan.client import AIRFLOW_CONN_ID, TOKEN_ENV

    if isinstance(token, Secret):
        return token
    return resolve_secret("CKAN API token", explicit=token, env_var=TOKEN_ENV,
                          airflow_conn_id=AIRFLOW_CONN_ID)
