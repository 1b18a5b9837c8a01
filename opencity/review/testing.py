"""Helpers for tests and the demo: a throwaway privacy-officer key, and approving the current
policy of every dataset with it (recorded in the review records and the release registry, as
the tests' or the demo's decision).

The throwaway key is generated the way the demo generates a throwaway HMAC key: it is a real
Ed25519 key registered as the officer key of *that* state store only, and its private half is
kept owner-only next to a SQLite state file (or in a temporary folder for PostgreSQL). A
portal with a real officer never uses this: once a key is registered, the throwaway one cannot
replace it, and this helper refuses to approve.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

THROWAWAY_KEY = "officer-throwaway.key"


def throwaway_key_path(state_url: str | None = None) -> Path:
    """Where the throwaway officer key of this state store is (or will be) kept."""
    from privacy.dp.ledger import StateDB, default_state_url

    db = StateDB(str(state_url or default_state_url()))
    if db.path is not None:
        return db.path.with_name(f"{db.path.name}.{THROWAWAY_KEY}")
    tag = hashlib.sha256(db.url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"opencity-{tag}.{THROWAWAY_KEY}"


def throwaway_officer(state_url: str | None = None, *, officer: str = "opencity tests",
                      airflow_user: str | None = None) -> Path:
    """Register a throwaway officer key for this state store (once) and return its private
    key file. Refuses when another (a real) officer key is registered."""
    from opencity.errors import ConfigError
    from opencity.io import restricted_file
    from privacy.approval import ApprovalStore, generate_key, key_id, public_pem_of

    store = ApprovalStore(state_url)
    path = throwaway_key_path(state_url)
    current = store.officer_key()
    if current is not None:
        if path.is_file() and key_id(public_pem_of(path.read_bytes())) == current.key_id:
            return path
        raise ConfigError(f"a privacy officer key ({current.key_id}, {current.officer}) is "
                          "registered in this state store; a throwaway key is not used here")
    private, public = generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(private)
    restricted_file(path)
    store.register_key(public, officer=officer, airflow_user=airflow_user)
    return path


def approve_policy(state_url: str | None = None, *, by: str = "opencity tests",
                   comment: str = "approved for the test run (not a privacy officer's review)",
                   source: str = "test") -> list[str]:
    """Approve every dataset's current policy version that is not approved yet, signed with
    this state store's throwaway officer key (:func:`throwaway_officer`).

    Returns the datasets approved now. The decision is recorded with ``by``/``source`` so it
    can never be mistaken for a privacy officer's.
    """
    from opencity.registry import Registry
    from opencity.review.approvals import ReviewStore
    from privacy.approval import ApprovalStore, dataset_version
    from privacy.policy import load_policy

    store = ReviewStore(state_url)
    registry = Registry(store.db)
    approvals = ApprovalStore(store.db)
    key = throwaway_officer(state_url, officer=by).read_bytes()
    policy = load_policy()
    done = []
    for name in sorted(policy.datasets):
        version = dataset_version(policy, name)
        if not approvals.is_approved(name, version.hash):
            approvals.approve(version, key, by=by, comment=comment)
            store.decide(name, version.hash, True, by=by, comment=comment, source=source)
            registry.record_decision(name, "", "approved", by, comment,
                                     details={"policy_hash": version.hash, "source": source})
            done.append(name)
    return done
