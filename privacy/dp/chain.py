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

from sqlalchemy import select

from privacy.dp.db import chain as t_chain

_COLS = (t_chain.c.seq, t_chain.c.kind, t_chain.c.dataset, t_chain.c.partition, t_chain.c.at,
         t_chain.c.body_json, t_chain.c.prev_hash, t_chain.c.hash)

GENESIS = "0" * 64
KINDS = ("spend", "release", "decision", "withdrawal", "approval")
SCHEMA_VERSION = "1"  # the chain table's version (state_meta schema_version:chain)


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def entry_hash(prev_hash: str, seq: int, kind: str, dataset: str, partition: str, at: str,
               body: Mapping[str, Any]) -> str:
    """The hash of one entry (anyone can recompute it from a public record)."""
    payload = canonical({"seq": seq, "kind": kind, "dataset": dataset, "partition": partition,
                         "at": at, "body": body})
    return hashlib.sha256(f"{prev_hash}\n{payload}".encode()).hexdigest()


def ensure(db: Any) -> None:
    """The chain table exists (it is in the state database's schema)."""
    db.ensure()


def append(con: Any, kind: str, dataset: str, partition: str,
           body: Mapping[str, Any]) -> dict[str, Any]:
    """Append one entry inside the caller's write transaction (``StateDB.write``, which
    serialises writers); returns the entry as :func:`public_entry` gives it."""
    if kind not in KINDS:
        raise ValueError(f"chain entry kind must be one of {KINDS}, got {kind!r}")
    last = con.execute(select(t_chain.c.seq, t_chain.c.hash)
                       .order_by(t_chain.c.seq.desc()).limit(1)).first()
    seq, prev = (int(last[0]) + 1, last[1]) if last else (1, GENESIS)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    body = json.loads(canonical(dict(body)))  # exactly what is hashed
    h = entry_hash(prev, seq, kind, dataset, partition, at, body)
    con.execute(t_chain.insert().values(seq=seq, kind=kind, dataset=dataset,
                                        partition=partition, at=at, body_json=canonical(body),
                                        prev_hash=prev, hash=h))
    return {"seq": seq, "kind": kind, "dataset": dataset, "partition": partition, "at": at,
            "body": body, "prev_hash": prev, "hash": h}


def entries(db: Any) -> list[dict[str, Any]]:
    ensure(db)
    with db.read() as con:
        rows = con.execute(select(*_COLS).order_by(t_chain.c.seq)).all()
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
