"""Keyed pseudonyms for direct identifiers: HMAC-SHA256 computed inside DuckDB.

The same identifier and key always give the same token (so a subscriber's events can be linked
within the pipeline), another key gives unrelated tokens, and without the key a token cannot be
reversed or recomputed from a guessed phone number. Identifiers are normalized first (phone
numbers to digits, e-mail and names lower-cased, whitespace collapsed) so formatting does not
split one person into two.

The key comes from OPENCITY_HMAC_KEY or the Airflow connection ``opencity_hmac`` (password
field), resolved by the caller (``opencity.secrets.resolve_hmac_key``). Only the demo may
generate a throwaway key (``opencity.secrets.throwaway_key``), and it says so.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Protocol

HMAC_ENV_VAR = "OPENCITY_HMAC_KEY"
HMAC_CONN_ID = "opencity_hmac"
TOKEN_HEX_CHARS = 32  # 128-bit tokens
_BLOCK = 64  # SHA-256 block size in bytes
MIN_KEY_BYTES = 16


class Secret(Protocol):
    """The HMAC key as this stage takes it: any object whose ``reveal()`` returns the key,
    e.g. ``opencity.secrets.Secret`` (typed so it is never printed). The caller resolves it
    (``opencity.secrets.resolve_hmac_key``); this stage never reads the environment."""

    def reveal(self) -> str: ...


def _pads(key: Secret) -> tuple[bytes, bytes]:
    k = key.reveal().encode()
    if len(k) > _BLOCK:
        k = hashlib.sha256(k).digest()
    k = k.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in k), bytes(b ^ 0x5C for b in k)


def normalize_sql(expr: str, kind: str) -> str:
    """SQL normalizing an identifier expression before hashing (NULL stays NULL)."""
    if kind == "phone":
        return f"nullif(regexp_replace(CAST({expr} AS VARCHAR), '[^0-9]', '', 'g'), '')"
    return f"nullif(lower(trim(regexp_replace(CAST({expr} AS VARCHAR), '\\s+', ' ', 'g'))), '')"


def identifier_kind(column: str) -> str:
    name = column.lower()
    if any(p in name for p in ("phone", "msisdn", "subscriber_id", "imsi", "imei")):
        return "phone"
    return "text"


class Pseudonymizer:
    """Builds DuckDB SQL computing HMAC-SHA256 tokens, with the key bound as parameters.

    Usage: ``sql = p.token_sql("col")`` then execute with ``params=p.params``.
    The key's pads are passed as prepared-statement parameters, never inlined in SQL text.
    """

    def __init__(self, key: Secret) -> None:
        self._ipad, self._opad = _pads(key)

    @property
    def params(self) -> dict[str, bytes]:
        return {"hmac_ipad": self._ipad, "hmac_opad": self._opad}

    def token_sql(self, normalized_expr: str) -> str:
        inner = f"unhex(sha256($hmac_ipad::BLOB || encode({normalized_expr})))"
        return (
            f"CASE WHEN {normalized_expr} IS NULL THEN NULL ELSE "
            f"left(sha256($hmac_opad::BLOB || {inner}), {TOKEN_HEX_CHARS}) END"
        )

    def token_for_columns_sql(self, columns: Mapping[str, str]) -> str:
        """Token of the first non-null (normalized) identifier.

        Args:
            columns: identifier name -> SQL expression reading it, in priority order; the
                name decides the normalization (phone-like names keep digits only).
        """
        parts = [normalize_sql(expr, identifier_kind(name)) for name, expr in columns.items()]
        expr = parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"
        return self.token_sql(expr)


def token_python(key: Secret, normalized_value: str) -> str:
    """Reference implementation (pure Python) used by tests to check the SQL independently."""
    digest = hmac.new(key.reveal().encode(), normalized_value.encode(), hashlib.sha256)
    return digest.hexdigest()[:TOKEN_HEX_CHARS]
