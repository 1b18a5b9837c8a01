"""The microdata's per-person cap (max_records_per_person): validated, tighten-only."""

from __future__ import annotations

import copy

import pytest
import yaml

from opencity.errors import ConfigError
from privacy.policy import DEFAULT_POLICY, load_policy, parse_policy

BASE = yaml.safe_load(DEFAULT_POLICY.read_text())
MICRO = "opencity-311-requests-microdata"


def _with(**kw):
    doc = copy.deepcopy(BASE)
    doc["datasets"][MICRO].update(kw)
    return doc


def test_stored_policy_caps_a_persons_records_below_k():
    micro = load_policy().dataset(MICRO)
    assert micro.max_records_per_person is not None
    assert 1 <= micro.max_records_per_person < micro.k
    assert micro.params()["max_records_per_person"] == micro.max_records_per_person


@pytest.mark.parametrize(("value", "message"), [
    (0, "max_records_per_person must be >= 1"),
    (-3, "max_records_per_person must be >= 1"),
    (2.5, "max_records_per_person must be an integer"),
    (float("nan"), "max_records_per_person must be an integer"),
    (float("inf"), "max_records_per_person must be an integer"),
    (True, "max_records_per_person must be an integer"),
    ("4", "max_records_per_person must be an integer"),
    (5, "must be smaller than k=5"),  # just over the limit: one person could fill a class
    (50, "must be smaller than k=5"),
])
def test_bad_cap_is_refused_naming_the_key(value, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_policy(_with(max_records_per_person=value))
    assert f"datasets.{MICRO}.max_records_per_person" in str(err.value)


def test_cap_applies_only_to_k_anonymity():
    doc = copy.deepcopy(BASE)
    doc["datasets"]["opencity-311-requests-weekly"]["max_records_per_person"] = 3
    with pytest.raises(ConfigError, match="unknown key"):
        parse_policy(doc)


def test_cap_may_only_be_lowered():
    micro = parse_policy(_with(max_records_per_person=4)).dataset(MICRO)
    assert micro.tightened(max_records_per_person=2).max_records_per_person == 2
    with pytest.raises(ConfigError, match="may only lower it"):
        micro.tightened(max_records_per_person=10)


def test_cap_changes_the_policy_hash():
    assert parse_policy(_with(max_records_per_person=3)).hash != parse_policy(
        _with(max_records_per_person=4)).hash
