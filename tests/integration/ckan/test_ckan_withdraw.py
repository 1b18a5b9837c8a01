"""Withdrawing a partition from the real local CKAN: its resources go, the rest stays, the
package says which partitions were withdrawn; a second withdrawal is refused by name."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from opencity.errors import ConfigError
from publish.ckan import CkanPublisher

pytestmark = [pytest.mark.integration, pytest.mark.ckan]


def test_withdraw_partition_removes_only_its_resources(samples, ckan_server, ckan_anon,
                                                       org_name, tmp_path):
    name = samples.unique_name("withdraw")
    pub = CkanPublisher(ckan_server.url, ckan_server.token, organization=org_name,
                        backoff_s=0.2)
    w1, w2 = dt.date(2026, 10, 5), dt.date(2026, 10, 12)
    pub.publish(samples.kpi_release(name, tmp_path / "a", w1))
    pub.publish(samples.kpi_release(name, tmp_path / "b", w2))
    removed = pub.withdraw_partition(name, "dt=2026-10-05", {"reason": "wrong map"})
    assert removed
    pkg = samples.product(ckan_anon, name)
    parts = {r.get("partition") for r in pkg["resources"]} - {"", None}
    assert parts == {"dt=2026-10-12"}
    extras = {e["key"]: e["value"] for e in pkg["extras"]}
    assert json.loads(extras["withdrawn_partitions"]) == ["dt=2026-10-05"]
    assert extras["withdrawn dt=2026-10-05"] == "wrong map"
    # The KPI release also went to the DataStore: its table (every partition's rows) is gone
    # until the dataset is published again from what remains, which rebuilds it.
    assert not [r for r in pkg["resources"] if r.get("opencity_resource") == "datastore-table"]
    pub.publish(samples.kpi_release(name, tmp_path / "b", w2))
    pkg = samples.product(ckan_anon, name)
    (table,) = [r for r in pkg["resources"] if r.get("opencity_resource") == "datastore-table"]
    rows = ckan_anon.action.datastore_search(resource_id=table["id"], limit=1000)["records"]
    assert rows and "datastore_loaded dt=2026-10-05" not in table
    with pytest.raises(ConfigError, match="dt=2026-10-05"):
        pub.withdraw_partition(name, "dt=2026-10-05", {"reason": "again"})
