"""One publisher per CKAN dataset at a time, through the portal's state database.

Two publishers of one dataset (a rerun next to a scheduled run, two Airflow workers) would
each find a file missing, each upload it and leave duplicates for a later clean-up. The
publisher therefore holds a lock on (portal, dataset) for the whole publish:

* PostgreSQL state database: a session-level advisory lock (``pg_try_advisory_lock``) on a
  key derived from the portal URL and the dataset name, held by one dedicated connection;
* SQLite state database: an exclusive ``flock`` on a lock file next to the database
  (``<state dir>/locks/ckan-<digest>.lock``, owner-only).

Both are released by the operating system or the database when the publisher dies (a killed
process closes its connection and its file), so a crash never leaves a stale lock. A
publisher that waits longer than ``timeout_s`` fails with a transient PublishError (rerun).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from opencity.errors import ConfigError, PublishError

log = logging.getLogger("publish.ckan")

DEFAULT_LOCK_TIMEOUT_S = 900.0
_POLL_S = 0.2


def _redact(url: str) -> str:
    return re.sub(r"://[^@/]*@", "://***@", url)


def lock_key(portal_url: str, dataset: str) -> int:
    """A signed 64-bit advisory-lock key of (portal, dataset): stable across processes."""
    digest = hashlib.sha256(f"opencity-ckan-publish\0{portal_url.rstrip('/')}\0{dataset}"
                            .encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PublishLock:
    """Serialises publishers of one dataset through the state database at ``state_url``.

    Args:
        state_url: ``postgresql://...``, ``sqlite:///path`` or a path (as ``Settings.state_url``).
        timeout_s: seconds to wait for another publisher of the same dataset.
    """

    def __init__(self, state_url: str | Path, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        text = str(state_url or "")
        if not text:
            raise ConfigError("the state URL for the CKAN publish lock is empty; set "
                              "OPENCITY_STATE_URL")
        if not 0 < float(timeout_s) <= 86400:
            raise ConfigError(f"lock timeout must be in (0, 86400] seconds, got {timeout_s!r}")
        self.url = text
        self.timeout_s = float(timeout_s)
        self.postgres = text.startswith(("postgresql://", "postgres://"))

    def __repr__(self) -> str:
        return f"PublishLock({_redact(self.url)!r})"

    @contextlib.contextmanager
    def hold(self, portal_url: str, dataset: str) -> Iterator[None]:
        """Hold the lock of (``portal_url``, ``dataset``) for the ``with`` block."""
        key = lock_key(portal_url, dataset)
        holder = self._postgres if self.postgres else self._flock
        with holder(key, dataset):
            yield

    def _timeout(self, dataset: str, started: float) -> PublishError:
        return PublishError(
            f"dataset {dataset!r} is being published by another publisher (lock in the state "
            f"database {_redact(self.url)}) for more than {time.monotonic() - started:.0f} s; "
            "rerun later", transient=True)

    @contextlib.contextmanager
    def _postgres(self, key: int, dataset: str) -> Iterator[None]:
        import psycopg

        try:
            con = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as err:
            raise PublishError(f"cannot connect to the state database {_redact(self.url)} for "
                               f"the publish lock ({type(err).__name__}); check that it runs "
                               "and OPENCITY_STATE_URL", transient=True) from None
        try:
            started = time.monotonic()
            waited = False
            while not con.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                if not waited:
                    log.info("dataset %r: waiting for another publisher", dataset)
                    waited = True
                if time.monotonic() - started > self.timeout_s:
                    raise self._timeout(dataset, started)
                time.sleep(_POLL_S)
            try:
                yield
            finally:
                with contextlib.suppress(psycopg.Error):
                    con.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            con.close()

    @contextlib.contextmanager
    def _flock(self, key: int, dataset: str) -> Iterator[None]:
        import fcntl

        db = Path(self.url.removeprefix("sqlite:///") if self.url.startswith("sqlite:///")
                  else self.url.removeprefix("sqlite://"))
        folder = db.expanduser().absolute().parent / "locks"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"ckan-{key & 0xFFFFFFFFFFFFFFFF:016x}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            started = time.monotonic()
            waited = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited:
                        log.info("dataset %r: waiting for another publisher", dataset)
                        waited = True
                    if time.monotonic() - started > self.timeout_s:
                        raise self._timeout(dataset, started) from None
                    time.sleep(_POLL_S)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


__all__ = ["DEFAULT_LOCK_TIMEOUT_S", "PublishLock", "lock_key"]
