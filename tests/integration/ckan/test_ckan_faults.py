"""Lost, slow and reset CKAN responses, through a fault-injecting proxy in front of the real
local CKAN (scripts/ckan-dev): after every fault the public portal equals the local catalog.

"Equals" means: one resource per stable key (dataset, partition, resource name), each with
the SHA-256 of the local file, the datapackage descriptor once, and (KPI tables) exactly one
DataStore table holding exactly the local rows. The publish may fail with a transient
PublishError (then one normal rerun must repair everything) or succeed; it must never leave
duplicates, empty hashes or a second table behind.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from opencity.errors import PublishError
from publish.ckan import CkanPublisher
from publish.local import LocalCatalog

pytestmark = [pytest.mark.integration, pytest.mark.ckan]

WEEK1 = dt.date(2026, 10, 5)
WEEK2 = dt.date(2026, 10, 12)
WEEK3 = dt.date(2026, 10, 19)
CLIENT_TIMEOUT_S = 2.0

#: (action, mode, nth): nth 0 = every call of that action.
TRIALS = [
    (action, mode, 1)
    for action in ("package_show", "package_create", "package_patch", "resource_create",
                   "resource_patch", "datastore_create", "datastore_upsert")
    for mode in ("drop", "delay", "reset")
] + [("resource_create", "delay", 0)]


def _hex(value: str | None) -> str:
    return (value or "").removeprefix("sha256:")


def portal_vs_catalog(admin, release, catalog_pkg: dict) -> list[str]:
    """Differences between the portal's dataset and the local catalog's package.json."""
    pkg = admin.action.package_show(id=release.name)
    problems = []
    keys = Counter((r.get("opencity_resource"), r.get("partition") or "")
                   for r in pkg["resources"])
    for key, n in keys.items():
        if n > 1:
            problems.append(f"{n} resources for {key}")
    portal = {(r.get("opencity_resource"), r.get("partition") or ""): r
              for r in pkg["resources"]}
    for r in pkg["resources"]:
        if not r.get("hash") and r.get("opencity_resource") != "datastore-table":
            problems.append(f"empty hash on {r['name']}")
    for entry in catalog_pkg["resources"]:
        key = (entry["name"], entry.get("partition") or "")
        got = portal.get(key)
        if got is None:
            problems.append(f"missing {key}")
        elif _hex(got.get("hash")) != _hex(entry["hash"]):
            problems.append(f"hash of {key} differs")
    if keys.get(("datapackage", ""), 0) != 1:
        problems.append(f"{keys.get(('datapackage', ''), 0)} datapackage resources")
    if release.primary_key:
        tables = [r for r in pkg["resources"] if r.get("datastore_active")]
        if len(tables) != 1:
            problems.append(f"{len(tables)} DataStore tables")
        else:
            want = sum(pq.read_metadata(r.path).num_rows for r in release.resources
                       if r.format == "parquet")
            got = admin.action.datastore_search(resource_id=tables[0]["id"], limit=0)["total"]
            if got != want:
                problems.append(f"DataStore has {got} rows, the catalog {want}")
    if pkg["private"]:
        problems.append("still private")
    return problems


def local_package(tmp_path: Path, release) -> dict:
    catalog = LocalCatalog(tmp_path / "catalog")
    catalog.publish(release)
    return catalog.load_package(release.name)


def _publisher(url, server, org, **kw) -> CkanPublisher:
    kw.setdefault("backoff_s", 0.1)
    kw.setdefault("retries", 2)
    kw.setdefault("timeout_s", CLIENT_TIMEOUT_S)
    return CkanPublisher(url, server.token, organization=org, **kw)


def _run_trial(samples, ckan_server, ckan_admin, proxy, org, tmp_path, action, mode, nth) -> dict:
    name = samples.unique_name(f"f-{action.replace('_', '')}-{mode}")[:60]
    release = samples.kpi_release(name, tmp_path / name, WEEK1)
    expected = local_package(tmp_path / name, release)
    proxy.plan(proxy.fault(action, mode, nth=nth, delay_s=CLIENT_TIMEOUT_S + 2.5))
    pub = _publisher(proxy.url, ckan_server, org)
    t0 = time.monotonic()
    try:
        pub.publish(release)
        outcome = "ok"
    except PublishError as err:
        outcome = f"{'transient' if err.transient else 'TERMINAL'}: {str(err)[:160]}"
    took = time.monotonic() - t0
    fired = list(proxy.log)
    after_fault = portal_vs_catalog(ckan_admin, release, expected) if outcome == "ok" \
        else None
    proxy.plan()
    rerun_outcome = "ok"
    try:
        _publisher(ckan_server.url, ckan_server, org).publish(release)
    except PublishError as err:
        rerun_outcome = f"{'transient' if err.transient else 'TERMINAL'}: {str(err)[:160]}"
    after_rerun = portal_vs_catalog(ckan_admin, release, expected)
    return {"action": action, "mode": mode, "nth": nth, "fired": fired, "outcome": outcome,
            "seconds": round(took, 1), "after_fault": after_fault,
            "rerun": rerun_outcome, "after_rerun": after_rerun}


RESULTS = Path(__file__).resolve().parents[3] / ".ckan-dev" / "fault-results.json"


@pytest.mark.slow
def test_every_fault_on_every_call_leaves_the_portal_equal_to_the_catalog(
        samples, ckan_server, ckan_admin, fault_proxy, org_name, tmp_path):
    results = [_run_trial(samples, ckan_server, ckan_admin, fault_proxy, org_name, tmp_path,
                          action, mode, nth) for action, mode, nth in TRIALS]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    for r in results:
        print(f"{r['action']:17} {r['mode']:5} nth={r['nth']} {r['seconds']:5.1f}s "
              f"fired={len(r['fired'])} outcome={r['outcome'][:60]!r} "
              f"after_fault={r['after_fault']} rerun={r['rerun'][:40]!r} "
              f"after_rerun={r['after_rerun']}")
    bad = [r for r in results if r["after_rerun"] or r["after_fault"]
           or r["outcome"].startswith("TERMINAL") or not r["fired"]]
    assert not bad, json.dumps(bad, indent=1)
