"""Choose the publish target from Settings: the local catalog (default) or CKAN.

Orchestration (it reads the run's Settings), so it lives in opencity/, not in the publish stage."""

from __future__ import annotations

from pathlib import Path

from opencity.settings import Settings
from publish.base import Publisher


def publisher_for(settings: Settings) -> Publisher:
    """The configured publish target (Settings.publish_target: 'local' or 'ckan')."""
    if settings.publish_target == "ckan":
        from opencity.secrets import resolve_ckan_token
        from publish.ckan import CkanPublisher

        return CkanPublisher.from_settings(settings, token=resolve_ckan_token())
    from publish.local import LocalCatalog
    from publish.metadata import CatalogInfo

    # CSV copies of every table with names, and the city's reference datasets beside them.
    # The reference lists of the city's profiles (written by the ingest step to
    # <run_dir>/reference/) when there are any, else the raw landing area's city/ folder.
    profiled = settings.layout.root / "reference"
    reference = (profiled if (profiled / "districts.csv").is_file() else
                 Path(settings.raw_dir) / "city" if settings.raw_dir else None)
    return LocalCatalog(settings.layout.catalog, catalog_info=CatalogInfo.from_settings(settings),
                        csv_copies=True, city_name=settings.city_name,
                        reference_dir=reference if reference and reference.is_dir() else None)
