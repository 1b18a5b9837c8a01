"""The policy version a release is made under: the content hash of the stored release policy.

:func:`policy_version` is the one place the review package asks "which policy governs this
dataset now?" (privacy/policy.yaml, or $OPENCITY_POLICY, loaded by :mod:`privacy.policy`). The
hash is the whole policy's (what every spend and published partition records); the parameters
are the dataset's own entry, which the release report shows and diffs against the previous
release.
"""

from __future__ import annotations

from typing import Any


def policy_version(dataset: str, path: str | None = None) -> dict[str, Any]:
    """``{"hash", "parameters", "source", "description"}`` of the policy governing ``dataset``.

    Raises:
        ConfigError: the policy file is invalid, or has no entry for ``dataset``.
    """
    from privacy.policy import load_policy

    policy = load_policy(path)
    entry = policy.dataset(dataset)
    return {"hash": policy.hash, "parameters": entry.params(), "source": str(policy.path),
            "description": entry.description}
