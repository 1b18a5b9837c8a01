"""The policy version a release is made under: the approved-policy unit of one dataset.

:func:`policy_version` is the one place the review package asks "which policy governs this
dataset now?" (privacy/policy.yaml, or $OPENCITY_POLICY, loaded by :mod:`privacy.policy`). The
hash is the dataset's own version (:func:`privacy.approval.dataset_version`: its entry and the
budgets of its privacy units), so changing one dataset's epsilon re-opens only that dataset;
``policy_hash`` is the whole file's (what every spend and published partition records). The
parameters are the dataset's own entry, which the release report shows and diffs against the
previous release.
"""

from __future__ import annotations

from typing import Any


def policy_version(dataset: str, path: str | None = None) -> dict[str, Any]:
    """``{"hash", "policy_hash", "parameters", "content", "source", "description"}`` of the
    policy governing ``dataset``.

    Raises:
        ConfigError: the policy file is invalid, or has no entry for ``dataset``.
    """
    from privacy.approval import dataset_version
    from privacy.policy import load_policy

    policy = load_policy(path)
    entry = policy.dataset(dataset)
    version = dataset_version(policy, dataset)
    return {"hash": version.hash, "policy_hash": policy.hash, "parameters": entry.params(),
            "content": version.content, "source": str(policy.path),
            "description": entry.description}
