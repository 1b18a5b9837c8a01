"""The approval records: latest decision wins, requests close, withdrawals need a reason."""

from __future__ import annotations

import pytest

from opencity.errors import ConfigError
from opencity.review.approvals import ReviewStore

H1, H2 = "a" * 64, "b" * 64


@pytest.fixture
def store(tmp_path):
    return ReviewStore(tmp_path / "state.sqlite")


def test_a_decision_row_alone_approves_nothing(store):
    """review_decisions is the history; an approval is what the officer signed
    (privacy.approval, tests/unit/privacy/test_approval.py)."""
    assert not store.is_approved("ds", H1)
    store.decide("ds", H1, True, by="officer", comment="ok")
    assert not store.is_approved("ds", H1)
    assert store.latest_decision("ds", H1).decision == "approved"


def test_latest_decision_wins(store):
    store.decide("ds", H1, True, by="a")
    store.decide("ds", H1, False, by="b", comment="changed my mind")
    d = store.latest_decision("ds", H1)
    assert (d.decision, d.decided_by, d.comment) == ("rejected", "b", "changed my mind")
    store.decide("ds", H1, True, by="c")
    assert store.latest_decision("ds", H1).decided_by == "c"


def test_a_decision_closes_the_open_requests_of_its_version(store):
    r1 = store.request("ds", H1, "dt=2026-10-05", dag_id="d", run_id="r")
    assert store.request("ds", H1, "dt=2026-10-05").id == r1.id  # no duplicate
    store.request("ds", H2, "dt=2026-10-05")
    store.decide("ds", H1, False, by="officer")
    open_ = store.requests(status="open")
    assert [(r.policy_hash, r.status) for r in open_] == [(H2, "open")]
    assert [r.status for r in store.requests() if r.policy_hash == H1] == ["rejected"]


def test_decisions_persist_across_instances(tmp_path):
    ReviewStore(tmp_path / "s.sqlite").decide("ds", H1, True, by="x")
    assert ReviewStore(tmp_path / "s.sqlite").latest_decision("ds", H1).decided_by == "x"


@pytest.mark.parametrize("reason", ["", "   "])
def test_withdrawal_needs_a_reason(store, reason):
    with pytest.raises(ConfigError, match="reason"):
        store.withdraw("ds", "dt=2026-10-05", reason, by="x", target="local", resources=[])


def test_withdrawals_are_kept(store):
    store.withdraw("ds", "dt=2026-10-05", " wrong data ", by="x", target="local",
                   resources=["a", "b"])
    (w,) = store.withdrawals("ds")
    assert (w.reason, w.resources) == ("wrong data", ("a", "b"))
    assert store.is_withdrawn("ds", "dt=2026-10-05")
    assert not store.is_withdrawn("ds", "dt=2026-10-12")


@pytest.mark.parametrize("dataset,policy", [("", H1), ("ds", "")])
def test_decision_needs_dataset_and_hash(store, dataset, policy):
    with pytest.raises(ConfigError):
        store.decide(dataset, policy, True, by="x")
