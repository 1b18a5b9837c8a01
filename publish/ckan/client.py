"""The CKAN action API client of the publisher: one ckanapi session, timeouts, retries.

* Timeouts: ``timeout_s`` per HTTP response, from the argument, else
  ``$OPENCITY_CKAN_TIMEOUT``, else :data:`DEFAULT_TIMEOUT_S`.
* Retries (tenacity): connection refused or reset, timeouts, lost responses, HTTP 5xx and
  search-index errors are *transient*: retried with exponential backoff
  (``backoff_s * 2**i``, capped); after the last try a transient :class:`PublishError`.
* A write whose response was lost may have been committed. Callers give such calls a
  ``recover`` function (re-read the portal, find what the lost call made): it runs before
  every retry, and a result it finds is used instead of calling again. An error that follows
  a lost response (e.g. "That URL is already in use" after a lost ``package_create``) is
  ambiguous: it is retried as transient, never reported as permanent.
* CKAN validation errors are reported field by field; the token never appears in a message.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from opencity.errors import ConfigError, PublishError

log = logging.getLogger("publish.ckan")

TOKEN_ENV = "OPENCITY_CKAN_TOKEN"
URL_ENV = "OPENCITY_CKAN_URL"
TIMEOUT_ENV = "OPENCITY_CKAN_TIMEOUT"
AIRFLOW_CONN_ID = "opencity_ckan"
DEFAULT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
_STATUS_RE = re.compile(r"^\[\s*'[^']*',\s*(\d{3}),")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one API call: ``retries`` extra tries, sleeping ``backoff_s * 2**i`` seconds
    (capped at ``max_backoff_s``) before try i+1."""

    retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) \
                or not 0 <= self.retries <= 20:
            raise ConfigError(f"retries must be an integer from 0 to 20, got {self.retries!r}")
        for name in ("backoff_s", "max_backoff_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) \
                    or not 0 <= value <= 600:
                raise ConfigError(f"{name} must be a number of seconds from 0 to 600, "
                                  f"got {value!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to sleep after failed try ``attempt`` (0-based)."""
        return min(self.backoff_s * 2**attempt, self.max_backoff_s)

    def retrying(self, what: str) -> Any:
        """A tenacity ``Retrying`` for :class:`Transient` errors under this policy."""
        import tenacity

        def before_sleep(state: tenacity.RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome else None
            log.warning("%s failed (%s); retry %d/%d in %.1f s", what, _short(err),
                        state.attempt_number, self.retries,
                        state.next_action.sleep if state.next_action else 0)

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff_s, exp_base=2,
                                           min=self.backoff_s, max=self.max_backoff_s),
            retry=tenacity.retry_if_exception_type(Transient),
            before_sleep=before_sleep,
            reraise=True,
        )


class Transient(Exception):
    """A failure worth retrying (internal: becomes a transient PublishError at the end).

    ``lost``: the request may have reached CKAN and been committed (no answer, or no answer
    in time), as opposed to a refusal (HTTP 5xx, connection refused).
    """

    def __init__(self, message: str, lost: bool = False) -> None:
        super().__init__(message)
        self.lost = lost


_READ_ACTIONS = re.compile(r"_(show|list|search|list_for_user)$|^status_show$")


class Secret(Protocol):
    """An API token as this stage takes it: any object whose ``reveal()`` returns it, e.g.
    ``opencity.secrets.Secret`` (typed so it is never printed)."""

    def reveal(self) -> str: ...


class _Token:
    """A token given as a plain string, kept out of every repr."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(from argument)"

    __str__ = __repr__


def resolve_token(token: str | Secret | None = None) -> Secret:
    """The CKAN API token as given (a string or a Secret); the caller resolves it from
    $OPENCITY_CKAN_TOKEN or the Airflow connection ``opencity_ckan``
    (``opencity.secrets.resolve_ckan_token``): this stage never reads the environment for it.

    Raises:
        ConfigError: no token given.
    """
    if token is not None and not isinstance(token, str):
        return token
    if not token:
        raise ConfigError(
            "no CKAN API token given: pass one (e.g. opencity.secrets.resolve_ckan_token(), "
            f"which reads {TOKEN_ENV} or the Airflow connection {AIRFLOW_CONN_ID!r})")
    return _Token(token)


def resolve_timeout(timeout_s: float | str | None = None) -> float:
    """Seconds to wait for one CKAN response: explicit value, then $OPENCITY_CKAN_TIMEOUT,
    then :data:`DEFAULT_TIMEOUT_S`. Must be in (0, 3600]."""
    source = "timeout_s"
    if timeout_s in (None, ""):
        timeout_s, source = os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S, TIMEOUT_ENV
    try:
        value = float(timeout_s)
    except (TypeError, ValueError):
        raise ConfigError(f"{source} must be a number of seconds, got {timeout_s!r}") from None
    if not 0 < value <= 3600:  # also rejects NaN
        raise ConfigError(f"{source} must be a number of seconds in (0, 3600], got {value!r}")
    return value


def resolve_url(url: str | None = None) -> str:
    """The CKAN base URL: explicit value, then $OPENCITY_CKAN_URL, then the host of the Airflow
    connection ``opencity_ckan`` (``http[s]://host[:port]``)."""
    if url:
        return url.rstrip("/")
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV].rstrip("/")
    looked = ["--ckan-url", f"environment variable {URL_ENV}"]
    conn_env = f"AIRFLOW_CONN_{AIRFLOW_CONN_ID.upper()}"
    if os.environ.get("AIRFLOW_HOME") or os.environ.get(conn_env):
        try:
            from airflow.sdk import Connection

            conn = Connection.get(AIRFLOW_CONN_ID)
            if conn.host:
                host = conn.host if "://" in conn.host else \
                    f"{conn.schema or 'https'}://{conn.host}"
                return (f"{host}:{conn.port}" if conn.port else host).rstrip("/")
        except Exception as err:  # noqa: BLE001 - any failure means "not configured here"
            log.debug("no Airflow connection %s: %s", AIRFLOW_CONN_ID, type(err).__name__)
    looked.append(f"Airflow connection {AIRFLOW_CONN_ID!r} (host)")
    raise ConfigError("no CKAN URL found; looked in: " + ", ".join(looked))


def format_validation_error(error_dict: dict[str, Any]) -> str:
    """CKAN's ValidationError.error_dict as 'field: message; ...' lines (nested fields dotted)."""
    lines: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k != "__type":
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                if v:
                    walk(f"{prefix}[{i}]", v)
        elif isinstance(value, list):
            lines.append(f"{prefix}: {' '.join(str(v) for v in value)}")
        else:
            lines.append(f"{prefix}: {value}")

    walk("", error_dict)
    return "; ".join(lines) or "no details given"


def _short(err: BaseException | None) -> str:
    text = str(err).replace("\n", " ")
    return text if len(text) <= 200 else text[:197] + "..."


class CkanClient:
    """One ckanapi session to one portal, with the retry policy and timeout above."""

    def __init__(self, url: str, token: Secret, policy: RetryPolicy, timeout_s: float,
                 organization: str = "") -> None:
        import ckanapi

        self.url = url
        self._token = token
        self.policy = policy
        self.timeout_s = timeout_s
        self.organization = organization
        self._ckan = ckanapi.RemoteCKAN(url, apikey=token.reveal(),
                                        user_agent="opencity-publisher")

    def __repr__(self) -> str:  # never shows the token
        return f"CkanClient(url={self.url!r})"

    @property
    def auth_header(self) -> dict[str, str]:
        return {"Authorization": self._token.reveal()}

    def call(self, action: str, what: str, /, files: dict[str, Path] | None = None,
             recover: Callable[[], Any] | None = None, **data: Any) -> Any:
        """Call ``action``; retry transient failures (see the module docstring).

        Args:
            what: what the call is about, for messages ("dataset 'x'").
            files: upload fields -> local paths (reopened for every try).
            recover: after a failed try, before the next: returns what the failed try made
                (e.g. the resource found by its key) or None to call again.

        Raises:
            PublishError: terminal (validation, authorization) or, after the last try,
                transient.
            ckanapi.NotFound: the object does not exist (never retried).
        """
        lost = False
        try:
            for attempt in self.policy.retrying(f"CKAN {action} for {what}"):
                with attempt:
                    if lost and recover is not None:
                        found = recover()
                        if found is not None:
                            log.info("CKAN %s for %s: found what a lost response made",
                                     action, what)
                            return found
                    try:
                        return self._call_once(action, what, files, data, after_lost=lost)
                    except Transient as err:
                        lost = lost or (err.lost and not _READ_ACTIONS.search(action))
                        raise
        except Transient as err:
            raise PublishError(
                f"CKAN at {self.url} is unavailable ({_short(err)}) during {action} for "
                f"{what}, after {self.policy.retries + 1} tries; rerun later: the publish is "
                "idempotent and nothing half-done was made public", transient=True) from err
        raise AssertionError("unreachable")  # pragma: no cover

    def show(self, action: str, what: str, /, **data: Any) -> dict | None:
        """``call`` that returns None for NotFound."""
        import ckanapi

        try:
            return self.call(action, what, **data)
        except ckanapi.NotFound:
            return None

    def _call_once(self, action: str, what: str, files: dict[str, Path] | None,
                   data: dict[str, Any], after_lost: bool) -> Any:
        import ckanapi
        import requests

        handles = {k: open(p, "rb") for k, p in (files or {}).items()}  # noqa: SIM115
        try:
            return self._ckan.call_action(
                action, data, files=handles or None,
                requests_kwargs={"timeout": (CONNECT_TIMEOUT_S, self.timeout_s)})
        except ckanapi.ValidationError as err:
            detail = err.error_dict if isinstance(err.error_dict, dict) else {}
            if after_lost:  # maybe caused by the lost try's commit: not a verdict yet
                raise Transient(f"{action} rejected after a lost response: "
                                f"{format_validation_error(detail)}") from None
            raise PublishError(f"CKAN rejected {what} ({action}): "
                               f"{format_validation_error(detail)}") from None
        except ckanapi.NotAuthorized as err:
            raise PublishError(
                f"CKAN at {self.url} refused {action} for {what}: not authorized. The API "
                f"token must belong to a sysadmin or an editor of organization "
                f"{self.organization!r}; check {TOKEN_ENV} or the Airflow connection "
                f"{AIRFLOW_CONN_ID!r}") from err
        except ckanapi.NotFound:
            raise
        except (requests.ConnectionError, requests.Timeout, ckanapi.SearchIndexError,
                ckanapi.CKANAPIError) as err:
            if _is_transient(err):
                import urllib3

                refused = isinstance(err, requests.ConnectionError) and isinstance(
                    getattr(err.args[0], "reason", None) if err.args else None,
                    urllib3.exceptions.NewConnectionError)
                lost = isinstance(err, requests.ConnectionError | requests.Timeout) \
                    and not refused and not isinstance(err, requests.ConnectTimeout)
                raise Transient(_short(err), lost=lost) from err
            raise PublishError(f"CKAN call {action} for {what} failed: {_short(err)}") from err
        finally:
            for h in handles.values():
                h.close()

    def download_sha256(self, url: str, what: str, *, authenticated: bool) -> str:
        """Hex SHA-256 of the bytes at ``url`` (with the token when ``authenticated``: the
        dataset may still be private). Transient errors are retried; HTTP 4xx is terminal."""
        import hashlib

        import requests

        headers = self.auth_header if authenticated else {}
        try:
            for attempt in self.policy.retrying(f"download of {what}"):
                with attempt:
                    try:
                        with requests.get(url, headers=headers, stream=True,
                                          timeout=(CONNECT_TIMEOUT_S, self.timeout_s)) as r:
                            if r.status_code >= 500:
                                raise Transient(f"HTTP {r.status_code} from {url}")
                            if r.status_code != 200:
                                raise PublishError(f"{what} cannot be downloaded from its "
                                                   f"public URL (HTTP {r.status_code} from "
                                                   f"{url})")
                            h = hashlib.sha256()
                            for chunk in r.iter_content(1 << 20):
                                h.update(chunk)
                            return h.hexdigest()
                    except (requests.ConnectionError, requests.Timeout,
                            requests.exceptions.ChunkedEncodingError) as err:
                        raise Transient(_short(err)) from err
        except Transient as err:
            raise PublishError(f"{what}: could not download {url} to check it ({_short(err)}) "
                               f"after {self.policy.retries + 1} tries; rerun later",
                               transient=True) from err
        raise AssertionError("unreachable")  # pragma: no cover


def _is_transient(err: Exception) -> bool:
    import ckanapi
    import requests

    if isinstance(err, requests.ConnectionError | requests.Timeout | ckanapi.SearchIndexError):
        return True
    if type(err) is ckanapi.CKANAPIError:
        m = _STATUS_RE.match(str(err.args[0]) if err.args else "")
        return bool(m and int(m.group(1)) >= 500)
    return False
