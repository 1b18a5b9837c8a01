"""The release report's headline risk is the worst of its own measures (issue 20)."""

import pytest

from opencity.review.report import headline_risk, release_summary


def test_headline_is_the_worst_measure_not_the_journalist_one():
    # issue 20: the report headlined 0.09 % (journalist) beside a 20 % prosecutor maximum
    # and a 33 % person-level risk
    risk = {"prosecutor": {"max": 0.2}, "journalist": {"max": 0.0009},
            "marketer": {"average": 0.05}}
    head = headline_risk(risk, {"prosecutor_max": 1 / 3})
    assert head["value"] == pytest.approx(1 / 3)
    assert head["measure"] == "person-level prosecutor (highest)"
    assert headline_risk(risk, None)["value"] == 0.2
    assert headline_risk(None, None) is None


def test_summary_states_persons_cap_and_the_worst_risk():
    risk = {"prosecutor": {"max": 0.2}, "journalist": {"max": 0.0009}}
    m = {"achievable": True, "k": 5, "l": 2, "suppressed_records": 3,
         "persons": {"prosecutor_max": 0.2}, "max_records_per_person": 4,
         "headline_risk": headline_risk(risk, {"prosecutor_max": 0.2})}
    text = release_summary({"microdata": m, "privacy_method": "k_anonymity"})
    assert "k = 5 persons" in text and "at most 4 records per person" in text
    assert "20.00%" in text and "0.09%" not in text
