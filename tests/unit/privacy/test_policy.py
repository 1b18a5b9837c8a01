"""The stored release policy: validation naming the key, hash, tighten-only overrides."""

from __future__ import annotations

import copy
import math

import pytest
import yaml

from opencity.errors import ConfigError
from privacy.policy import DEFAULT_POLICY, load_policy, parse_policy

BASE = yaml.safe_load(DEFAULT_POLICY.read_text())
MOB = "opencity-cdr-mobility-daily"
MICRO = "opencity-311-requests-microdata"
WEEKLY = "opencity-311-requests-weekly"


def _with(edit):
    doc = copy.deepcopy(BASE)
    edit(doc)
    return doc


def test_stored_policy_loads_and_covers_every_published_dataset():
    p = load_policy()
    assert set(p.units) == {"subscriber", "household", "card", "requester", "request"}
    assert p.unit("request").level == "event" and p.unit("requester").level == "person"
    assert set(p.datasets) == {MOB, "opencity-kpis", WEEKLY, MICRO}
    assert p.dataset(MOB).budget.epsilon == 1.0 and p.dataset(MOB).cadence == "daily"
    assert set(p.dataset("opencity-kpis").spend) == set(p.units) - {"request"}
    assert p.dataset(MICRO).k == 5 and p.dataset(MICRO).sensitive == ("request_type",)
    assert len(p.hash) == 64
    # A full month of every scheduled DP release fits each unit's cap (the demo and beyond).
    for name, unit in p.units.items():
        per_month = {"daily": 31, "weekly": 5, "monthly": 1}
        total = math.fsum(ds.spend[name].epsilon * per_month[ds.cadence]
                          for ds in p.datasets.values() if name in ds.spend)
        assert total <= unit.epsilon + 1e-9, name


def test_hash_ignores_comments_and_order_but_not_values(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("# a comment\n" + yaml.safe_dump(BASE, sort_keys=False))
    b = tmp_path / "b.yaml"
    b.write_text(yaml.safe_dump(BASE, sort_keys=True))
    assert load_policy(a).hash == load_policy(b).hash == load_policy().hash
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump(_with(lambda d: d["datasets"][MICRO].update(k=6))))
    assert load_policy(c).hash != load_policy().hash


def test_opencity_policy_env_overrides_the_path(tmp_path, monkeypatch):
    alt = tmp_path / "p.yaml"
    alt.write_text(yaml.safe_dump(_with(lambda d: d["units"]["card"].update(epsilon=0.5) or
                                        d["datasets"]["opencity-kpis"]["epsilon"].update(
                                            card=0.5))))
    monkeypatch.setenv("OPENCITY_POLICY", str(alt))
    assert load_policy().unit("card").epsilon == 0.5
    monkeypatch.setenv("OPENCITY_POLICY", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml cannot be read"):
        load_policy()


BAD = [
    ("unknown unit", lambda d: d["units"].update(pet={"period": "month", "epsilon": 1}),
     "units.pet: unknown privacy unit 'pet'"),
    ("dataset with undeclared unit", lambda d: d["datasets"][MOB].update(unit="pet"),
     f"datasets.{MOB}.unit: unknown privacy unit 'pet'"),
    ("negative epsilon", lambda d: d["datasets"][MOB].update(epsilon=-1.0),
     f"datasets.{MOB}.epsilon must be > 0"),
    ("missing epsilon", lambda d: d["datasets"][MOB].pop("epsilon"),
     f"datasets.{MOB}.epsilon is missing"),
    ("nan epsilon", lambda d: d["units"]["card"].update(epsilon=float("nan")),
     "units.card.epsilon must be finite"),
    ("missing unit cap", lambda d: d["units"]["card"].pop("epsilon"),
     "units.card.epsilon is missing"),
    ("zero unit cap", lambda d: d["units"]["card"].update(epsilon=0),
     "units.card.epsilon must be > 0"),
    ("kpi epsilon missing for a unit", lambda d: d["datasets"]["opencity-kpis"]["epsilon"].pop(
        "card"), "datasets.opencity-kpis.epsilon is missing for unit(s) card"),
    ("dataset without unit", lambda d: d["datasets"][WEEKLY].pop("unit"),
     f"datasets.{WEEKLY}.unit is missing"),
    ("column without role", lambda d: d["datasets"][MICRO]["columns"].update(status=None),
     f"datasets.{MICRO}.columns.status has no role"),
    ("column with unknown role", lambda d: d["datasets"][MICRO]["columns"].update(
        status="maybe"), f"datasets.{MICRO}.columns.status: unknown role 'maybe'"),
    ("no columns", lambda d: d["datasets"][WEEKLY].pop("columns"),
     f"datasets.{WEEKLY}.columns is missing"),
    ("k too small", lambda d: d["datasets"][MICRO].update(k=1), f"datasets.{MICRO}.k must be >= 2"),
    ("unknown key", lambda d: d["datasets"][MOB].update(daily_cap=100),
     f"unknown key(s) datasets.{MOB}.daily_cap"),
    ("release above the unit cap", lambda d: d["datasets"][MOB].update(epsilon=40.0),
     "exceeds the unit's whole budget units.subscriber"),
    ("bad cadence", lambda d: d["datasets"][MOB].update(cadence="hourly"),
     f"datasets.{MOB}.cadence must be one of"),
    ("bad version", lambda d: d.update(version=7), "version must be one of"),
]


@pytest.mark.parametrize(("case", "edit", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_policy_names_the_key_and_nothing_loads(tmp_path, case, edit, message, monkeypatch):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(_with(edit)))
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert message in str(err.value) and str(path) in str(err.value)
    # and nothing runs: the ledger refuses to open with that policy
    monkeypatch.setenv("OPENCITY_POLICY", str(path))
    from privacy.dp import Ledger
    with pytest.raises(ConfigError):
        Ledger(tmp_path / "state.sqlite")
    assert not (tmp_path / "state.sqlite").exists()


def test_tighten_is_allowed_loosen_is_refused():
    p = load_policy()
    mob = p.dataset(MOB)
    assert mob.tightened(epsilon=0.25).budget.epsilon == 0.25
    assert mob.tightened(delta=0.0).budget.delta == 0.0
    assert mob.tightened().budget == mob.budget
    with pytest.raises(ConfigError, match=r"epsilon\[subscriber\]: the policy allows at most 1"):
        mob.tightened(epsilon=50)
    with pytest.raises(ConfigError, match="delta"):
        mob.tightened(delta=1e-3)
    micro = p.dataset(MICRO)
    assert micro.tightened(k=10, l=3, max_suppression=0.01).k == 10
    for kw, key in (({"k": 3}, "k"), ({"l": 1}, "l"), ({"max_suppression": 0.5},
                                                        "max_suppression")):
        with pytest.raises(ConfigError, match=f"{MICRO}.{key}: the policy sets"):
            micro.tightened(**kw)
    # a small-count-suppressed table (whatever method the stored policy gives the 311 table)
    weekly = parse_policy(_with(lambda d: d["datasets"].update(sup={
        "method": "small_count_suppression", "unit": "requester", "cadence": "weekly",
        "threshold": 15, "columns": {"requests": "public"}})), "t").dataset("sup")
    assert weekly.tightened(threshold=20).threshold == 20
    with pytest.raises(ConfigError, match="threshold: the policy sets 15"):
        weekly.tightened(threshold=10)
    with pytest.raises(ConfigError, match="do not apply"):
        weekly.tightened(epsilon=0.1)
    kpi = p.dataset("opencity-kpis")
    assert kpi.tightened(epsilon={"card": 0.5}).spend["card"].epsilon == 0.5
    with pytest.raises(ConfigError, match=r"epsilon\[household\]"):
        kpi.tightened(epsilon={"household": 9.0})


def test_parse_rejects_a_non_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_policy(["x"], "list.yaml")


def test_tightening_is_checked_at_the_boundary_and_keeps_the_other_parameters():
    """Equal is allowed, the smallest loosening is refused (a 2x cap must not slip through),
    and tightening one parameter keeps every other one of the release (delta included)."""
    # A mobility release that spends delta (the stored policy's is 0: public OD keys):
    # delta must survive an epsilon change.
    p = parse_policy(_with(lambda d: d["datasets"][MOB].update(delta=1e-7)), "t")
    mob = p.dataset(MOB)
    eps, delta = mob.budget.epsilon, mob.budget.delta
    assert delta > 0
    assert mob.tightened(epsilon=eps).budget == mob.budget
    assert mob.tightened(epsilon=eps / 2).budget.delta == delta
    assert mob.tightened(delta=delta / 2).budget.epsilon == eps
    for bad in (eps * 1.01, eps * 1.5, eps * 2, math.nan):
        with pytest.raises(ConfigError, match=(
                rf"datasets\.{MOB}\.epsilon\[subscriber\]: the policy allows at most "
                rf"{eps:g} per release; a caller may only lower it")):
            mob.tightened(epsilon=bad)
    with pytest.raises(ConfigError, match=rf"datasets\.{MOB}\.delta\[subscriber\]"):
        mob.tightened(delta=delta * 1.01)
    micro = p.dataset(MICRO)
    assert micro.tightened(k=micro.k).k == micro.k
    assert micro.tightened(l=micro.l, max_suppression=micro.max_suppression) == micro
    with pytest.raises(ConfigError, match=(
            rf"datasets\.{MICRO}\.k: the policy sets {micro.k!r}; a caller may only raise it, "
            rf"got {micro.k - 1!r}\. Change the reviewed policy file instead")):
        micro.tightened(k=micro.k - 1)
    with pytest.raises(ConfigError, match=rf"{MICRO}\.max_suppression: .* may only lower it"):
        micro.tightened(max_suppression=micro.max_suppression + 0.001)
    with pytest.raises(ConfigError, match=rf"datasets\.{MICRO}: epsilon/delta do not apply "
                                          "to method k_anonymity"):
        micro.tightened(epsilon=0.1)
    with pytest.raises(ConfigError, match=rf"datasets\.{MOB}: k does not apply to method "
                                          "differential_privacy"):
        mob.tightened(k=10)
    kpi = p.dataset("opencity-kpis")
    with pytest.raises(ConfigError, match=r"datasets\.opencity-kpis\.epsilon: unit\(s\) "
                                          r"\['pet'\] are not spent"):
        kpi.tightened(epsilon={"pet": 0.1})
    with pytest.raises(ConfigError, match=r"datasets\.opencity-kpis\.delta: unit\(s\) "
                                          r"\['pet'\] are not spent"):
        kpi.tightened(delta={"pet": 0.0})
    one = kpi.tightened(epsilon={"card": 0.5})
    assert {u: b for u, b in one.spend.items() if u != "card"} == {
        u: b for u, b in kpi.spend.items() if u != "card"}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["units"]["subscriber"].update(delta=1.0),
     "units.subscriber.delta must be in [0, 1), got 1.0"),
    (lambda d: d["units"]["subscriber"].update(delta="x"), "units.subscriber.delta"),
    (lambda d: d["datasets"][MICRO].pop("k"), f"datasets.{MICRO}.k is missing"),
    (lambda d: d["datasets"][MICRO].update(k=5.5),
     f"datasets.{MICRO}.k must be an integer, got 5.5"),
    (lambda d: d["datasets"][MICRO].update(k=True), f"datasets.{MICRO}.k must be an integer"),
])
def test_numbers_are_validated_with_the_key_named(tmp_path, edit, message):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(_with(edit)))
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert message in str(err.value)
