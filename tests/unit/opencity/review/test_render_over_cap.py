"""Issue 20, item 7: a person's total over the cap is flagged with its true share, never shown
as a plain full (100 %) bar."""

from __future__ import annotations

from opencity.review.render import gauge


def test_over_the_cap_is_flagged_with_its_true_share():
    html = gauge(34.0, 32.0, "subscriber 2026-10")
    assert "OVER THE CAP" in html and "106%" in html
    assert "(100%)" not in html


def test_at_and_under_the_cap_are_not_flagged():
    assert "OVER" not in gauge(32.0, 32.0, "subscriber 2026-10")
    under = gauge(8.0, 32.0, "subscriber 2026-10")
    assert "OVER" not in under and "(25%)" in under
