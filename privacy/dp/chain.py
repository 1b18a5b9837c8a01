"""The state store's tamper-evident log: an append-only hash chain of every spend, release,
decision and withdrawal, written in the same transaction as the row it witnesses.

Entry ``n``::

    hash_n = sha256(hash_{n-1} + "\\n" + canonical JSON of {seq, kind, dataset, partition,
                                                            at, body})

with ``hash_0 = "0" * 64``. A release entry's body holds what a citizen can check against the
public catalog (parameters, policy hash, the files' SHA-256, the units' spends of the
partition); the public record of every published partition carries its entry (see
:func:`public_entry`), so the catalog witnesses the chain: an edited, deleted or re-ordered
row of the state store no longer links, and a catalog file that was swapped no longer has the
hash its entry states (``opencity verify``).

What it does not prevent: someone with root on the state database can rewrite the whole
chain consistently. That rewrite is detectable from outside because every published partition
already carries its entry's hash in the public catalog (and in any copy a citizen kept).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
KINDS = ("spend", "release", "decision", "withdrawal", "approval")
SCHEMA_VERSION = "1"
DDL = """
CREATE TABLE IF NOT EXISTS chain (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    dataset TEXT NOT NULL,
    partition TEXT NOT NULL,
    at TEXT NOT NULL,
    body_json TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
)
"""


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def entry_hash(prev_hash: str, seq: int, kind: str, dataset: str, partition: str, at: str,
               body: Mapping[str, Any]) -> str:
    """The hash of one entry (anyone can recompute it from a public record)."""
    payload = canonical({"seq": seq, "kind": kind, "dataset": dataset, "partition": partition,
                         "at": at, "body": body})
    return hashlib.sha256(f"{prev_hash}\n{payload}".encode()).hexdigest()


def ensure(db: Any) -> None:
    db.ensure("chain", SCHEMA_VERSION, DDL)


def append(con: Any, kind: str, dataset: str, partition: str,
           body: Mapping[str, Any]) -> dict[str, Any]:
    """Append one entry inside the caller's write transaction (``StateDB.write``, which
    serialises writers); returns the entry as :func:`public_entry` gives it."""
    if kind not in KINDS:
        raise ValueError(f"chain entry kind must be one of {KINDS}, got {kind!r}")
    last = con.execute("SELECT seq, hash FROM chain ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (int(last[0]) + 1, last[1]) if last else (1, GENESIS)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    body = json.loads(canonical(dict(body)))  # exactly what is hashed
    h = entry_hash(prev, seq, kind, dataset, partition, at, body)
    con.execute("INSERT INTO chain (seq, kind, dataset, partition, at, body_json, prev_hash, "
                "hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, kind, dataset, partition, at, canonical(body), prev, h))
    return {"seq": seq, "kind": kind, "dataset": dataset, "partition": partition, "at": at,
            "body": body, "prev_hash": prev, "hash": h}


def entries(db: Any) -> list[dict[str, Any]]:
    ensure(db)
    with db.read() as con:
        rows = con.execute("SELECT seq, kind, dataset, partition, at, body_json, prev_hash, "
                           "hash FROM chain ORDER BY seq").fetchall()
    return [{"seq": int(r[0]), "kind": r[1], "dataset": r[2], "partition": r[3], "at": r[4],
             "body": json.loads(r[5]), "prev_hash": r[6], "hash": r[7]} for r in rows]


def link_problems(chain: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every entry whose hash does not recompute, or that does not link to the one before."""
    problems: list[str] = []
    prev, expect_seq = GENESIS, 1
    for e in chain:
        if int(e["seq"]) != expect_seq:
            problems.append(f"chain entry {e['seq']}: expected entry {expect_seq} (an entry is "
                            "missing or out of order)")
        if e["prev_hash"] != prev:
            problems.append(f"chain entry {e['seq']}: does not link to the entry before it")
        h = entry_hash(e["prev_hash"], int(e["seq"]), e["kind"], e["dataset"], e["partition"],
                       e["at"], e["body"])
        if h != e["hash"]:
            problems.append(f"chain entry {e['seq']} ({e['kind']} {e['dataset']} "
                            f"{e['partition']}): its content does not match its hash")
        prev, expect_seq = e["hash"], int(e["seq"]) + 1
    return problems


def public_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a chain entry a public record carries (everything needed to recompute
    its hash)."""
    return {k: entry[k] for k in ("seq", "kind", "dataset", "partition", "at", "body",
                                  "prev_hash", "hash")}


def self_consistent(entry: Mapping[str, Any]) -> bool:
    """Whether a public entry's hash recomputes from its own content."""
    try:
        return entry_hash(entry["prev_hash"], int(entry["seq"]), entry["kind"],
                          entry["dataset"], entry["partition"], entry["at"],
                          entry["body"]) == entry["hash"]
    except (KeyError, TypeError, ValueError):
        return False
