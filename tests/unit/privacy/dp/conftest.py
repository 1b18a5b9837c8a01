"""Ledger test helpers: a state URL per backend (SQLite, PostgreSQL)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path):
    """A fresh state DB on each backend (the PostgreSQL server is real; it fails, not skips,
    when it cannot start)."""
    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite")
    return request.getfixturevalue("postgres_state_url")
