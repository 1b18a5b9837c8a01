"""The policy version a release is made under: the content hash of the stored release policy.

:func:`policy_version` is the one place the review package asks "which policy governs this
dataset now?". It returns the hash the approval gate compares with the approved versions and
the parameters the release report shows and diffs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from opencity.settings import Settings


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _settings_parameters(settings: Settings, dataset: str) -> dict[str, Any]:
    """Privacy parameters of ``dataset`` as the run's Settings fix them (no stored policy)."""
    if dataset.endswith("-microdata"):
        return {"k": settings.microdata_k, "l": settings.microdata_l,
                "max_suppression": settings.microdata_max_suppression}
    if dataset.endswith("-weekly"):
        return {"suppression_k": settings.suppression_k}
    return {}


def policy_version(settings: Settings, dataset: str) -> dict[str, Any]:
    """``{"hash": ..., "parameters": {...}, "source": ...}`` of the policy governing ``dataset``.

    The hash is 64 hex digits; ``source`` says where the parameters came from.
    """
    params = _settings_parameters(settings, dataset)
    return {"hash": _hash({"dataset": dataset, "parameters": params}), "parameters": params,
            "source": "run settings"}
