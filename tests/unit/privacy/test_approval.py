"""Approved policy versions: signed by the officer's key, per dataset, looser refused."""

from __future__ import annotations

import sqlite3

import pytest

from opencity.errors import ConfigError
from privacy.approval import (
    ApprovalStore,
    PolicyNotApprovedError,
    dataset_version,
    generate_key,
    looser,
)
from privacy.policy import DEFAULT_POLICY, load_policy

MOB = "opencity-cdr-mobility-daily"
WEEKLY = "opencity-311-requests-weekly"
MICRO = "opencity-311-requests-microdata"


@pytest.fixture
def store(tmp_path):
    return ApprovalStore(tmp_path / "state.sqlite")


@pytest.fixture
def officer(store):
    private, public = generate_key()
    store.register_key(public, officer="A. Officer", airflow_user="officer")
    return private


def _policy(tmp_path, old: str, new: str, name: str = "policy.yaml"):
    text = DEFAULT_POLICY.read_text()
    assert text.count(old) == 1, old
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return load_policy(path)


def test_a_version_is_per_dataset(tmp_path):
    base = load_policy()
    changed = _policy(tmp_path, "    epsilon: 0.6\n", "    epsilon: 0.5\n")
    assert dataset_version(changed, WEEKLY).hash != dataset_version(base, WEEKLY).hash
    # Lowering the weekly table's epsilon does not re-open the other datasets.
    for ds in (MOB, MICRO, "opencity-kpis"):
        assert dataset_version(changed, ds).hash == dataset_version(base, ds).hash
    # A unit budget belongs to every dataset that spends from it.
    caps = _policy(tmp_path, "    epsilon: 32.0\n", "    epsilon: 64.0\n", "caps.yaml")
    assert dataset_version(caps, MOB).hash != dataset_version(base, MOB).hash
    assert dataset_version(caps, WEEKLY).hash == dataset_version(base, WEEKLY).hash


def test_signed_approval_verifies_and_latest_decision_wins(store, officer):
    v = dataset_version(load_policy(), MOB)
    assert not store.is_approved(MOB, v.hash)
    a = store.approve(v, officer, by="A. Officer", comment="ok")
    assert a.verified and a.source == "cli" and store.is_approved(MOB, v.hash)
    assert not store.is_approved(WEEKLY, v.hash)  # per dataset
    store.reject(v, by="operator", comment="stop")  # anyone may stop a release
    assert not store.is_approved(MOB, v.hash)
    store.approve(v, officer, by="A. Officer")
    assert store.is_approved(MOB, v.hash)


def test_approval_without_the_officer_key_is_refused(store, officer):
    v = dataset_version(load_policy(), MOB)
    other, _ = generate_key()
    with pytest.raises(ConfigError, match="not the privacy officer's registered key"):
        store.approve(v, other, by="operator")
    assert store.decisions() == [] and not store.is_approved(MOB, v.hash)


def test_no_registered_key_no_approval(store):
    private, _ = generate_key()
    with pytest.raises(ConfigError, match="officer register"):
        store.approve(dataset_version(load_policy(), MOB), private, by="x")


def test_forged_or_edited_rows_do_not_approve(store, officer):
    v = dataset_version(load_policy(), MOB)
    store.approve(v, officer, by="A. Officer")
    # An operator with write access copies the signed row onto another dataset, edits the
    # comment of a signed row, and inserts an unsigned "approval".
    w = dataset_version(load_policy(), WEEKLY)
    con = sqlite3.connect(store.db.path)
    con.execute("INSERT INTO policy_approvals (dataset, version, content, decision, "
                "decided_by, decided_at, comment, source, key_id, signature) SELECT ?, ?, ?, "
                "decision, decided_by, decided_at, comment, source, key_id, signature FROM "
                "policy_approvals WHERE id = 1",
                (WEEKLY, w.hash, __import__("json").dumps(w.content)))
    con.execute("INSERT INTO policy_approvals (dataset, version, content, decision, "
                "decided_by, decided_at, comment, source) VALUES (?, ?, ?, 'approved', "
                "'officer?', '2026-01-01', '', 'cli')", (MICRO, "0" * 64, "{}"))
    con.commit()
    assert not store.is_approved(WEEKLY, w.hash)
    assert not store.is_approved(MICRO, "0" * 64)
    con.execute("UPDATE policy_approvals SET comment = 'edited' WHERE id = 1")
    con.commit()
    con.close()
    assert not store.is_approved(MOB, v.hash)


def test_airflow_answers_count_only_from_the_officers_airflow_user(store, officer):
    v = dataset_version(load_policy(), MOB)
    store.record_airflow(v, True, by="operator")
    assert not store.is_approved(MOB, v.hash)
    store.record_airflow(v, True, by="officer")
    assert store.is_approved(MOB, v.hash)


def test_a_key_is_registered_once_and_replaced_only_with_its_endorsement(store, officer):
    _, mine = generate_key()
    with pytest.raises(ConfigError, match="already registered"):
        store.register_key(mine, officer="operator")
    stranger, _ = generate_key()
    with pytest.raises(ConfigError, match="not the registered officer key"):
        store.register_key(mine, officer="operator", endorsed_by=stranger)
    new_private, new_public = generate_key()
    store.register_key(new_public, officer="B. Officer", endorsed_by=officer)
    v = dataset_version(load_policy(), MOB)
    with pytest.raises(ConfigError, match="not the privacy officer's registered key"):
        store.approve(v, officer, by="A. Officer")  # the old key no longer approves
    store.approve(v, new_private, by="B. Officer")
    assert store.is_approved(MOB, v.hash)


def test_looser_versions_are_refused_before_computing(tmp_path, store, officer):
    base = load_policy()
    store.approve(dataset_version(base, MOB), officer, by="A. Officer")
    store.check_compute(base, MOB)
    store.require_approved(base, MOB)
    loose = _policy(tmp_path, "    epsilon: 1.0\n    # delta 0: every product",
                    "    epsilon: 19.0\n    # delta 0: every product")
    with pytest.raises(PolicyNotApprovedError) as err:
        store.check_compute(loose, MOB)
    msg = str(err.value)
    assert MOB in msg and "epsilon[subscriber]: 19 (approved 1)" in msg
    assert f"opencity approve {MOB} --policy {dataset_version(loose, MOB).hash} --key" in msg
    # A tighter, not yet approved version may compute (it waits at the gate) but not publish.
    tight = _policy(tmp_path, "    epsilon: 1.0\n    # delta 0: every product",
                    "    epsilon: 0.5\n    # delta 0: every product", "tight.yaml")
    store.check_compute(tight, MOB)
    with pytest.raises(PolicyNotApprovedError, match="not approved"):
        store.require_approved(tight, MOB)
    # A larger unit cap is looser for every dataset of that unit, approved or not.
    caps = _policy(tmp_path, "    epsilon: 32.0\n", "    epsilon: 64.0\n", "caps.yaml")
    with pytest.raises(PolicyNotApprovedError, match="units.subscriber.epsilon: 64"):
        store.check_compute(caps, "opencity-kpis")


@pytest.mark.parametrize("old,new,key", [
    ("    l: 2\n", "    l: 1\n", ".l: 1"),
    ("    max_suppression: 0.05\n", "    max_suppression: 0.2\n", "max_suppression: 0.2"),
    ("      request_type: sensitive\n", "      request_type: sensitive\n      ward: public\n",
     "columns.ward"),
    ("      gender: quasi_identifier\n", "      gender: public\n", "columns.gender"),
])
def test_what_counts_as_looser_for_microdata(tmp_path, old, new, key):
    base = dataset_version(load_policy(), MICRO).content
    changed = dataset_version(_policy(tmp_path, old, new), MICRO).content
    found = looser(changed, base)
    assert any(key in d for d in found), found
    assert looser(base, changed) == [] or key.startswith("columns")


def test_a_lower_k_is_looser(tmp_path):
    """(k cannot go below the person cap of 4 + 1 in the shipped policy: compare 6 with 5.)"""
    base = dataset_version(load_policy(), MICRO).content
    six = dataset_version(_policy(tmp_path, "    k: 5\n", "    k: 6\n", "six.yaml"),
                          MICRO).content
    assert any(".k: 5" in d for d in looser(base, six)), looser(base, six)
    assert looser(six, base) == []


def test_bad_keys_are_clear_errors(store, tmp_path):
    with pytest.raises(ConfigError, match="not a PEM public key"):
        store.register_key(b"nope", officer="x")
    from privacy.approval import read_private_key

    with pytest.raises(ConfigError, match="--key FILE"):
        read_private_key(None)
    with pytest.raises(ConfigError, match="cannot read"):
        read_private_key(tmp_path / "missing.key")


def test_an_expired_officer_key_approves_nothing_after_its_last_day(store, monkeypatch):
    """Issue 20 (bad input): an expired key is refused with what to do; what it signed while
    valid stays approved."""
    from datetime import UTC, datetime, timedelta

    from privacy import approval

    today = datetime.now(UTC).date()
    private, public = generate_key()
    with pytest.raises(ConfigError, match="in the past"):
        store.register_key(public, officer="A. Officer",
                           expires=(today - timedelta(days=1)).isoformat())
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        store.register_key(public, officer="A. Officer", expires="next year")
    store.register_key(public, officer="A. Officer", expires=today.isoformat())
    v = dataset_version(load_policy(), MOB)
    store.approve(v, private, by="A. Officer")  # on its last day: valid
    assert store.is_approved(MOB, v.hash)
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="seconds")
    monkeypatch.setattr(approval, "_now", lambda: later)
    w = dataset_version(load_policy(), MICRO)
    with pytest.raises(ConfigError, match="expired on .*--endorse-with"):
        store.approve(w, private, by="A. Officer")
    assert not store.is_approved(MICRO, w.hash)
    assert store.is_approved(MOB, v.hash)  # signed while the key was valid
    # the expired key may still endorse its successor, which then approves
    new_private, new_public = generate_key()
    store.register_key(new_public, officer="A. Officer", endorsed_by=private)
    store.approve(w, new_private, by="A. Officer")
    assert store.is_approved(MICRO, w.hash)
