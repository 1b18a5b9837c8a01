"""Helpers for tests and the demo: approve the current policy of every dataset (recorded in
the review records and the release registry, as the tests' or the demo's decision)."""

from __future__ import annotations


def approve_policy(state_url: str | None = None, *, by: str = "opencity tests",
                   comment: str = "approved for the test run (not a privacy officer's review)",
                   source: str = "test") -> list[str]:
    """Approve every dataset's current policy version that is not approved yet.

    Returns the datasets approved now. The decision is recorded with ``by``/``source`` so it
    can never be mistaken for a privacy officer's.
    """
    from opencity.registry import Registry
    from opencity.review.approvals import ReviewStore
    from opencity.review.policy import policy_version
    from privacy.policy import load_policy

    store = ReviewStore(state_url)
    registry = Registry(store.db)
    done = []
    for name in sorted(load_policy().datasets):
        h = policy_version(name)["hash"]
        if not store.is_approved(name, h):
            store.decide(name, h, True, by=by, comment=comment, source=source)
            registry.record_decision(name, "", "approved", by, comment,
                                     details={"policy_hash": h, "source": source})
            done.append(name)
    return done
