"""The granularity ladder's predictor (privacy.granularity) and the policy keys behind it
(privacy.policy: unit levels, granularity, target_relative_error)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from opencity.errors import ConfigError
from privacy.granularity import choose_level, noise_median_abs
from privacy.policy import DEFAULT_POLICY, parse_policy

LEVELS = [("fine", 120), ("mid", 84), ("coarse", 7), ("city", 1)]


def test_finest_level_meeting_the_target_is_chosen():
    # epsilon 0.225 per cell, one row per cell: median |noise| = 3
    kw = {"target": 0.25, "epsilon_per_cell": 0.225, "sensitivity": 1}
    assert noise_median_abs(0.225, 1) == 3
    assert choose_level(LEVELS, history_totals=[3000.0], **kw).level == "fine"  # 3/25
    assert choose_level(LEVELS, history_totals=[1200.0], **kw).level == "mid"   # 3/14.3
    low = choose_level(LEVELS, history_totals=[40.0], **kw)
    # coarse: 40 / 7 = 5.7 per cell, 3 / 5.7 = 0.53 > 0.25; city: 3 / 40 = 0.075
    assert low.level == "city" and low.met
    assert low.predictions[2].predicted_median_relative_error == pytest.approx(3 / (40 / 7))
    # a cell expected below one request is measured against 1 (relative error = |noise|)
    assert low.predictions[0].predicted_median_relative_error == pytest.approx(3.0)


def test_no_level_meets_the_target_or_no_history_gives_the_coarsest():
    kw = {"target": 0.01, "epsilon_per_cell": 0.225, "sensitivity": 1}
    choice = choose_level(LEVELS, history_totals=[10.0], **kw)
    assert choice.level == "city" and not choice.met
    assert "no level meets the target" in choice.basis
    first = choose_level(LEVELS, history_totals=[], target=0.5, epsilon_per_cell=1,
                         sensitivity=1)
    assert first.level == "city" and first.history_releases == 0
    assert all(p.predicted_median_relative_error is None for p in first.predictions)
    assert first.as_dict()["ladder"] == [name for name, _ in LEVELS]


def test_history_is_the_mean_of_recent_noisy_totals_clipped_at_zero():
    choice = choose_level(LEVELS, history_totals=[-50.0, 100.0, 200.0], target=0.5,
                          epsilon_per_cell=1, sensitivity=1)
    assert choice.expected_total == pytest.approx(100.0)
    many = choose_level(LEVELS, history_totals=[0.0] * 20 + [80.0] * 8, target=0.5,
                        epsilon_per_cell=1, sensitivity=1)
    assert many.expected_total == pytest.approx(80.0) and many.history_releases == 8


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf])
def test_bad_noise_parameters_are_refused(bad):
    with pytest.raises(ConfigError):
        noise_median_abs(bad, 1)
    with pytest.raises(ConfigError):
        choose_level(LEVELS, target=bad, epsilon_per_cell=1, sensitivity=1)


@pytest.mark.statistical(assertions=2)
def test_predicted_noise_median_is_the_mechanisms(noise_random_state):
    """The predictor's median |noise| is that of the count mechanism the release uses: with
    n draws, P(|Z| <= m) >= 1/2 > P(|Z| <= m - 1) holds by a margin of ~0.05 (epsilon 0.225
    per cell, sensitivity 1: 0.548 and 0.434), tested at the suite's per-assertion alpha."""
    from stat_budget import ALPHA, clopper_pearson

    from privacy.dp.mechanisms import count_noise

    m = noise_median_abs(0.225, 1)
    noise = count_noise(0.225, 0.0, 1, random_state=noise_random_state)
    z = np.abs(noise.randomise(np.zeros(20_000, dtype=np.int64)))
    n = len(z)
    lo, _ = clopper_pearson(int((z <= m).sum()), n, ALPHA)
    _, hi = clopper_pearson(int((z <= m - 1).sum()), n, ALPHA)
    assert lo > 0.5
    assert hi < 0.5


def _policy(**weekly):
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    data["datasets"]["opencity-311-requests-weekly"].update(weekly)
    return data


def test_policy_ladder_and_unit_levels_parse():
    p = parse_policy(_policy(granularity=["district x request_type x week",
                                          "city  x all x week"],
                             target_relative_error=0.25))
    w = p.dataset("opencity-311-requests-weekly")
    assert w.granularity == ("district x request_type x week", "city x all x week")
    assert w.target_relative_error == 0.25
    assert w.params()["granularity"] == list(w.granularity)
    assert p.unit("request").is_event and not p.unit("requester").is_event


@pytest.mark.parametrize(("weekly", "match"), [
    ({"granularity": ["district x request_type x week"]}, "go together"),
    ({"target_relative_error": 0.2}, "go together"),
    ({"granularity": [], "target_relative_error": 0.2}, "non-empty list"),
    ({"granularity": ["district/type/week"], "target_relative_error": 0.2}, "not a level"),
    ({"granularity": ["a x b", "a x b"], "target_relative_error": 0.2}, "twice"),
    ({"granularity": ["a x b"], "target_relative_error": 0}, "must be > 0"),
    ({"granularity": ["a x b"], "target_relative_error": math.nan}, "finite"),
])
def test_bad_ladders_are_refused(weekly, match):
    with pytest.raises(ConfigError, match=match):
        parse_policy(_policy(**weekly))


def test_bad_unit_level_is_refused():
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    data["units"]["request"]["level"] = "household"
    with pytest.raises(ConfigError, match="units.request.level must be one of person, event"):
        parse_policy(data)


def test_ladder_is_not_for_k_anonymity():
    data = yaml.safe_load(DEFAULT_POLICY.read_text())
    data["datasets"]["opencity-311-requests-microdata"]["granularity"] = ["a x b"]
    with pytest.raises(ConfigError, match="unknown key"):
        parse_policy(data)
