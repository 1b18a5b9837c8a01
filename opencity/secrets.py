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
