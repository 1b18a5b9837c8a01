"""``opencity publish RUN_DIR``: publish every dataset of a run's local catalog.

The contract other tools rely on::

    opencity publish RUN_DIR [--target local|ckan] [--ckan-url URL] [--organization ORG]

RUN_DIR is a run directory as left by ``opencity demo --out RUN_DIR`` (or a DAG run); its
``catalog/`` folder (the local catalog) lists the datasets and their files. With
``--target ckan`` the API token comes from $OPENCITY_CKAN_TOKEN or the Airflow connection
``opencity_ckan`` (password = token, host = URL); it is never printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from opencity.errors import ConfigError

log = logging.getLogger(__name__)

HELP = "publish the datasets of a run to the local catalog or a CKAN portal"
DESCRIPTION = """\
Publish every dataset of a finished run (RUN_DIR/catalog, as written by 'opencity demo' or
the DAGs) to a publish target:

  local  the local catalog (default): RUN_DIR/catalog, or the folder given with --out
  ckan   a CKAN portal: one dataset per product in ORGANIZATION, Parquet and CSV files
         uploaded, full metadata and privacy parameters, KPI tables in the DataStore

Publishing is idempotent: run it again after a failure or for the same data and the portal
ends up in the same state, without duplicates. A new CKAN dataset stays private until all
its files are uploaded and checked.

CKAN API token: set OPENCITY_CKAN_TOKEN (or an Airflow connection 'opencity_ckan' whose
password is the token). For the project's local CKAN: eval "$(scripts/ckan-dev env)".
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("publish", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path,
                   help="run directory (with a catalog/ folder) to publish")
    p.add_argument("--target", choices=("local", "ckan"), default=None,
                   help="where to publish (default: $OPENCITY_PUBLISH_TARGET or 'local')")
    p.add_argument("--ckan-url", metavar="URL",
                   help="CKAN base URL, e.g. https://data.city.example "
                        "(default: $OPENCITY_CKAN_URL)")
    p.add_argument("--organization", metavar="ORG",
                   help="CKAN organization that owns the datasets; created if missing "
                        "(default: $OPENCITY_CKAN_ORGANIZATION or 'opencity')")
    p.add_argument("--dataset", metavar="NAME", action="append", default=[],
                   help="publish only this dataset (repeatable; default: all)")
    p.add_argument("--out", metavar="DIR", type=Path,
                   help="--target local only: catalog folder to publish into "
                        "(default: RUN_DIR/catalog)")
    p.add_argument("--retries", type=int, default=4, metavar="N",
                   help="retries of a CKAN call after a temporary failure (default 4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from opencity.settings import Settings
    from publish.local import LocalCatalog, iter_releases

    settings = Settings.resolve({
        "run_dir": str(args.run_dir),
        "publish_target": args.target,
        "ckan_url": args.ckan_url,
        "ckan_organization": args.organization,
    })
    catalog = settings.layout.catalog
    if not catalog.is_dir():
        raise ConfigError(f"{args.run_dir} has no catalog/ folder: give a run directory as left "
                          "by 'opencity demo --out RUN_DIR'")
    releases = [r for r in iter_releases(catalog) if not args.dataset or r.name in args.dataset]
    unknown = set(args.dataset) - {r.name for r in releases}
    if unknown:
        raise ConfigError(f"dataset(s) {', '.join(sorted(unknown))} not found in {catalog}")
    if not releases:
        raise ConfigError(f"the catalog {catalog} holds no dataset to publish")

    if settings.publish_target == "ckan":
        from opencity.secrets import resolve_ckan_token
        from publish.ckan import CkanPublisher

        publisher = CkanPublisher.from_settings(settings, token=resolve_ckan_token(),
                                                retries=args.retries)
    else:
        if args.out is None:
            log.info("target 'local': re-publishing into the run's own catalog %s", catalog)
        publisher = LocalCatalog(args.out or catalog)

    total_up = total_same = 0
    with tqdm(releases, desc=f"publish to {publisher.target}", unit="dataset",
              file=sys.stderr, disable=None) as bar:
        for release in bar:
            bar.set_postfix_str(release.name)
            result = publisher.publish(release)
            total_up += len(result.uploaded)
            total_same += len(result.unchanged)
            state = "created" if result.created else "updated"
            print(f"{release.name}: {state} at {result.url} ({len(result.uploaded)} uploaded, "
                  f"{len(result.unchanged)} unchanged)")
    print(f"published {len(releases)} dataset(s) to {publisher.target}: {total_up} file(s) "
          f"uploaded, {total_same} unchanged")
    return 0
