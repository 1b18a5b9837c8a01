"""Withdraw a published partition: its files leave the catalog, its record stays.

:func:`withdraw` removes every resource of ``(dataset, partition)`` from the configured
catalog (the local catalog, or CKAN through ``opencity.publish_targets.publisher_for``),
rewrites the package metadata and the Frictionless datapackage without them (with a
``withdrawn`` note), and records the withdrawal (reason, who, when, what) in the portal's
review records. The release registry entry and the privacy budget the release spent are
never touched: spent budget cannot be given back, and the portal report keeps listing the
release as withdrawn.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError
from opencity.review.approvals import ReviewStore, current_user
from opencity.settings import Settings

log = logging.getLogger(__name__)


def withdraw_local(catalog_root: Path, dataset: str, partition: str, note: dict[str, Any]
                   ) -> list[str]:
    """Remove the partition's resources from the local catalog; returns their names.

    The catalog's own atomic step (:meth:`publish.local.LocalCatalog.withdraw`): a new
    snapshot without the partition, with the withdrawal noted in package.json and
    datapackage.json; a crash leaves the old or the new state.
    """
    from publish.local import LocalCatalog

    catalog = LocalCatalog(catalog_root)
    if catalog.load_package(dataset) is None:
        raise ConfigError(f"dataset {dataset!r} is not in the local catalog {catalog_root}")
    return catalog.withdraw(dataset, partition, note)


def withdraw_ckan(settings: Settings, dataset: str, partition: str, note: dict[str, Any]
                  ) -> list[str]:
    """Delete the partition's resources from CKAN and note the withdrawal in the package."""
    from opencity.publish_targets import publisher_for

    pub = publisher_for(settings)
    return list(pub.withdraw_partition(dataset, partition, note))


def withdraw(settings: Settings, dataset: str, partition: str, reason: str, *,
             by: str | None = None, state_url: str | None = None) -> dict[str, Any]:
    """Withdraw ``dataset``/``partition`` from the configured catalog and record it.

    Raises:
        ConfigError: no reason, or the partition is not published.
    """
    from opencity.review.gate import write_catalog_review
    from publish.local import LocalCatalog

    if not reason or not reason.strip():
        raise ConfigError("a withdrawal needs a reason (--reason TEXT)")
    from opencity.registry import Registry

    url = state_url or settings.state_url
    store = ReviewStore(url)
    registry = Registry(url)
    who = by or current_user()
    if registry.withdrawn(dataset, partition):
        raise ConfigError(f"{dataset} {partition} was already withdrawn")
    from datetime import UTC, datetime

    note = {"partition": partition, "reason": reason.strip(), "withdrawn_by": who,
            "withdrawn_at": datetime.now(UTC).isoformat(timespec="seconds")}
    # The local catalog is the source every target is published from: the partition leaves
    # it first, then the portal; the portal's datapackage and DataStore table are rebuilt from
    # what remains (a DataStore table cannot drop one partition's rows by itself).
    local = LocalCatalog(settings.layout.catalog)
    in_local = local.load_package(dataset) is not None
    removed: list[str] = []
    if in_local or settings.publish_target != "ckan":
        removed = withdraw_local(settings.layout.catalog, dataset, partition, note)
    if settings.publish_target == "ckan":
        removed = sorted({*removed, *withdraw_ckan(settings, dataset, partition, note)})
        if in_local:
            from opencity.publish_targets import publisher_for
            from publish.local import iter_releases

            pub = publisher_for(settings)
            for rel in iter_releases(settings.layout.catalog):
                if rel.name == dataset:
                    pub.publish(rel)
    # one record (the one store of withdrawals) and, for a partition in the registry, its
    # entry in the hash chain
    store.withdraw(dataset, partition, reason, by=who, target=settings.publish_target,
                   resources=removed)
    if registry.get(dataset, partition) is None:
        log.warning("%s %s is not in the release registry %s (published before it existed?); "
                    "the withdrawal is recorded in the review records only", dataset,
                    partition, registry.db.where)
    write_catalog_review(settings, dataset, store)
    log.warning("%s %s withdrawn by %s: %s", dataset, partition, who, reason.strip())
    return {"target": settings.publish_target, "removed": removed}
