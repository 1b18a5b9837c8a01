"""Issue 20: a fresh (or reset) state database cannot publish into a CKAN portal whose
releases it does not hold (the portal's partition list is the witness); the portal is left as
it was. Real CKAN, real registry."""

from __future__ import annotations

import datetime as dt

import pytest

from opencity.errors import ConfigError

pytestmark = [pytest.mark.integration, pytest.mark.ckan]

WEEK1, WEEK2 = dt.date(2026, 10, 5), dt.date(2026, 10, 12)


def test_fresh_state_database_is_refused_by_the_portal(samples, ckan_server, ckan_admin,
                                                       org_name, tmp_path, monkeypatch):
    import yaml

    from opencity.registry import publish_partition
    from opencity.review.testing import approve_policy
    from opencity.settings import Settings
    from publish.ckan import CkanPublisher

    name = samples.unique_name("witness")
    cols = ["district_id", "request_type", "week_start", "requests", "median_hours_to_close",
            "suppressed"]
    policy = {"version": 1,
              "units": {"requester": {"period": "month", "epsilon": 5.0, "delta": 0.0}},
              "datasets": {name: {"method": "small_count_suppression", "unit": "requester",
                                  "cadence": "weekly", "threshold": 15,
                                  "columns": dict.fromkeys(cols, "public")}}}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("OPENCITY_POLICY", str(tmp_path / "policy.yaml"))
    pub = CkanPublisher(ckan_server.url, ckan_server.token, organization=org_name,
                        backoff_s=0.2)
    state_a, state_b = str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")
    for url in (state_a, state_b):
        approve_policy(url)
    portal = Settings(run_dir=str(tmp_path / "run"), state_url=state_a)
    publish_partition(portal, samples.kpi_release(name, tmp_path / "w1", WEEK1),
                      {"threshold": 15}, publisher=pub)
    assert pub.published_records(name) == {f"dt={WEEK1}": None}
    before = samples.portal_state(ckan_admin, [name])

    fresh = Settings(run_dir=str(tmp_path / "run"), state_url=state_b)
    with pytest.raises(ConfigError, match="does not hold the releases the catalog published"):
        publish_partition(fresh, samples.kpi_release(name, tmp_path / "w2", WEEK2),
                          {"threshold": 15}, publisher=pub)
    assert samples.portal_state(ckan_admin, [name]) == before
    # the portal's own state database goes on publishing
    publish_partition(portal, samples.kpi_release(name, tmp_path / "w2", WEEK2),
                      {"threshold": 15}, publisher=pub)
    assert sorted(pub.published_records(name)) == [f"dt={WEEK1}", f"dt={WEEK2}"]
