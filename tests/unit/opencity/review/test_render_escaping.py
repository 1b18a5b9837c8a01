"""Issue 19 item 5: the review reports are Jinja2 templates with autoescape. A district or
category name, a dataset title, a comment or a guard detail with markup is shown as text."""

from __future__ import annotations

from pathlib import Path

from opencity.review import render

EVIL = '<script>alert("x")</script>'
ESCAPED = "&lt;script&gt;alert("


def _release(**over) -> dict:
    r = {
        "title": f"Requests {EVIL}", "partition": "dt=2026-10-05", "dataset": "opencity-test",
        "status": "withdrawn", "privacy_method": "k_anonymity", "generated_at": "2026-12-06",
        "policy": {"hash": "ab" * 32, "source": "policy.yaml",
                   "decisions": [{"decision": "approved", "decided_by": f"officer {EVIL}",
                                  "decided_at": "2026-12-01", "source": "cli",
                                  "comment": f"fine {EVIL}"}]},
        "budget_spent": [],
        "withdrawal": {"withdrawn_at": "2026-12-02", "withdrawn_by": "o", "target": "local",
                       "reason": f"district {EVIL} named"},
        "changes": {"first_release": False, "previous_partition": "dt=2026-09-28",
                    "policy_changed": False,
                    "parameters": [{"key": "k", "before": 5, "after": EVIL}]},
        "microdata": {
            "achievable": True, "k": 5, "l": 2, "t": None, "sensitive": f"category {EVIL}",
            "suppressed_records": 1, "suppressed_share": 0.01, "suppression_limit": 0.05,
            "classes": {"histogram": [{"size": f"5 {EVIL}", "classes": 3, "records": 15}]},
            "generalization": {f"district {EVIL}": 1}, "hierarchy_heights": {},
            "rows_in": 16, "rows_out": 15, "rows_missing_quasi_identifier": 0},
        "parameters": {"categories": [EVIL]},
        "guard": {"passed": False, "releases_considered": [EVIL],
                  "checks": [{"name": f"differencing {EVIL}", "passed": False,
                              "cells": [EVIL]}]},
        "data_quality": [{"suite": "s", "success": False, "evaluated": 3, "rows": 16,
                          "failures": [{"expectation": "not_null", "column": EVIL}],
                          "data_docs": None}],
        "inputs": {"reconciliation": {"rows_in": 16, "reconciles": True, "source": "manifest"},
                   "hashes": {f"raw {EVIL}.csv": "00"}},
        "resources": [{"name": EVIL, "format": "csv", "size": 10, "hash": "sha256:00"}],
    }
    return {**r, **over}


def test_release_report_escapes_every_value():
    html = render.release_html(_release(), Path("/tmp/report"))
    assert "<script" not in html
    # title (twice), decision by + comment, withdrawal, change, sensitive, histogram label
    # (chart label, alt text, title, table), generalization, parameter, guard (3), quality,
    # input, resource
    assert html.count(ESCAPED) >= 18
    assert '<svg role="img"' in html and "Group sizes" in html


def test_portal_report_escapes_every_value():
    p = {"generated_at": "2026-12-06", "run_dir": f"/runs/{EVIL}",
         "approvals": {"open": [{"dataset": EVIL, "partition": "dt=2026-10-05",
                                 "policy_hash": "ab" * 32, "requested_at": "2026-12-01"}],
                       "decisions": [{"decided_at": "2026-12-01", "dataset": "d",
                                      "decision": "rejected", "decided_by": EVIL,
                                      "policy_hash": "cd" * 32, "source": "cli",
                                      "comment": EVIL}]},
         "withdrawn": [],
         "budget": [{"privacy_unit": f"unit {EVIL}", "month": "2026-10", "epsilon_spent": 3.0,
                     "epsilon_cap": 2.0, "epsilon_remaining": 0.0, "delta_spent": 0.0,
                     "datasets": {EVIL: 3.0},
                     "by_partition": [{"partition": "dt=2026-10-05", "datasets": {EVIL: 1.0}},
                                      {"partition": "dt=2026-10-12", "datasets": {EVIL: 2.0}}]}],
         "non_dp_releases": [],
         "datasets": [{"title": f"District {EVIL}", "name": "d", "privacy_method": "dp",
                       "releases": [{"partition": "dt=2026-10-05", "status": "published",
                                     "summary": EVIL, "policy_hash": "ef" * 32,
                                     "policy_approved": True, "report": "r.html"}]}]}
    html = render.portal_html(p, Path("/tmp/report"))
    assert "<script" not in html
    assert html.count(ESCAPED) >= 10
    assert "OVER THE CAP (150%)" in html  # the gauge still says it in words
    assert html.count('<svg role="img"') == 2  # the gauge and the per-release budget chart
