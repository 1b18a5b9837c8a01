"""Approved policy versions: what the privacy officer signed, per dataset, in the state store.

A release runs only under a policy version the privacy officer approved. A *version* is the
part of the release policy that governs one dataset: its entry (method, units, cadence,
columns and roles, epsilon/delta or k/l/max_suppression or threshold) and the budgets of the
privacy units it protects. Its hash (:func:`dataset_version`) changes only when that part
changes, so lowering one dataset's epsilon does not re-open the others.

Usage::

    from privacy.approval import ApprovalStore, dataset_version, generate_key

    store = ApprovalStore(state_url)
    private_pem, public_pem = generate_key()              # opencity officer keygen
    store.register_key(public_pem, officer="A. Officer", airflow_user="officer")
    v = dataset_version(load_policy(), "opencity-cdr-mobility-daily")
    store.approve(v, private_pem, by="A. Officer")         # opencity approve ... --key FILE
    store.require_approved(load_policy(), dataset)        # before publishing: exact version
    store.check_compute(load_policy(), dataset)           # before computing/spending

Contracts:

* An approval from the command line is an Ed25519 signature (``cryptography``) by the
  officer's private key over (dataset, version hash, decision, who, when, comment); the
  public key is registered once in the state store (a replacement must be signed by the
  registered key). An approval whose signature does not verify against the registered key is
  not an approval, whoever wrote the row.
* An approval from Airflow (the gate's HITL task) has no signature: Airflow's own users
  decide who may answer (``assigned_users`` = the officer's registered Airflow user), and it
  counts only when it was answered by that user.
* A rejection needs no key (it can only stop releases). The latest decision on a version wins.
* :meth:`ApprovalStore.check_compute` refuses, before anything is computed or spent, a version
  that is not approved and is looser than the dataset's approved version (or whose unit
  budgets exceed an approved unit budget); a version that is new but no looser may compute
  and then waits for the officer at the publication gate. :meth:`require_approved` (the
  publication door, and commands without a gate such as ``opencity mobility``) accepts only
  an approved version.

Schema (``state_meta`` key ``schema_version:approval`` = 1)::

    officer_keys(id, key_id, public_key, officer, airflow_user, registered_at, endorsement)
    policy_versions(dataset, version, content, first_seen)        -- every version seen
    policy_approvals(id, dataset, version, content, decision, decided_by, decided_at,
                     comment, source, key_id, signature)          -- decision: approved|rejected

What someone with write access to the state database can still do is stated in
docs/approvals.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from opencity.errors import ConfigError
from privacy.dp.db import StateDB, default_state_url
from privacy.dp.db import officer_keys as t_keys
from privacy.dp.db import policy_approvals as t_approvals
from privacy.dp.db import policy_versions as t_versions
from privacy.policy import POLICY_ENV, Policy, canonical_hash

SCHEMA_VERSION = "1"  # the approval tables' version (state_meta schema_version:approval)
KEY_ENV = "OPENCITY_OFFICER_KEY"
APPROVED, REJECTED = "approved", "rejected"
PURPOSE = "opencity-policy-approval/1"



class PolicyNotApprovedError(ConfigError):
    """A release was asked under a policy version the privacy officer has not approved."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


# -- versions ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetVersion:
    """The policy version of one dataset: ``hash`` = sha256 of ``content``'s canonical form."""

    dataset: str
    hash: str
    content: dict[str, Any]
    source: str = ""


def dataset_version(policy: Policy, dataset: str) -> DatasetVersion:
    """The version of ``dataset`` under ``policy`` (its entry and its units' budgets)."""
    entry = policy.dataset(dataset)
    content = {
        "dataset": dataset,
        "method": entry.method,
        "units": list(entry.units),
        "cadence": entry.cadence,
        "columns": {c.name: c.role for c in entry.columns},
        "params": entry.params(),
        "unit_budgets": {u: {"period": policy.unit(u).period, "epsilon": policy.unit(u).epsilon,
                             "delta": policy.unit(u).delta} for u in entry.units},
    }
    return DatasetVersion(dataset, canonical_hash(content), content, policy.path)


def looser(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[str]:
    """How ``new`` (a version's content) is looser than ``old``; [] when it is not.

    Any change of method, units, cadence, a new column or a changed role counts as looser
    (it needs the officer's review before anything runs); so do a larger epsilon/delta, a
    smaller k/l/threshold, a larger max_suppression, and a larger unit budget.
    """
    ds = new.get("dataset")
    out = []
    for key in ("method", "cadence"):
        if new.get(key) != old.get(key):
            out.append(f"datasets.{ds}.{key}: {new.get(key)!r} (approved {old.get(key)!r})")
    if sorted(new.get("units", [])) != sorted(old.get("units", [])):
        out.append(f"datasets.{ds}.unit: {new.get('units')} (approved {old.get('units')})")
    ocols = old.get("columns", {})
    for col, role in new.get("columns", {}).items():
        if ocols.get(col) != role:
            out.append(f"datasets.{ds}.columns.{col}: {role} (approved "
                       f"{ocols.get(col) or 'not published'})")
    np_, op = new.get("params", {}), old.get("params", {})
    for unit, cost in (np_.get("spend") or {}).items():
        ocost = (op.get("spend") or {}).get(unit)
        for k in ("epsilon", "delta"):
            if ocost is None or cost[k] > ocost[k] * (1 + 1e-12):
                out.append(f"datasets.{ds}.{k}[{unit}]: {cost[k]:g} (approved "
                           f"{'none' if ocost is None else format(ocost[k], 'g')})")
    for key, larger_is_tighter in (("k", True), ("l", True), ("threshold", True),
                                   ("max_suppression", False)):
        if key in np_ or key in op:
            a, b = np_.get(key), op.get(key)
            if a is None or b is None or ((a < b) if larger_is_tighter else (a > b)):
                out.append(f"datasets.{ds}.{key}: {a!r} (approved {b!r})")
    out += _looser_units(new.get("unit_budgets", {}), old.get("unit_budgets", {}))
    return out


def _looser_units(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[str]:
    out = []
    for unit, b in new.items():
        ob = old.get(unit)
        if ob is None:
            continue
        if b["period"] != ob["period"]:
            out.append(f"units.{unit}.period: {b['period']} (approved {ob['period']})")
        for k in ("epsilon", "delta"):
            if b[k] > ob[k] * (1 + 1e-12):
                out.append(f"units.{unit}.{k}: {b[k]:g} (approved {ob[k]:g})")
    return out


# -- keys ----------------------------------------------------------------------------------
def generate_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair: (private key PEM, unencrypted PKCS8; public key PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def _load_private(pem: bytes, where: str = "the officer key"):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where} is not an unencrypted PEM private key ({err}); create one "
                          "with 'opencity officer keygen'") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{where} is not an Ed25519 key; create one with "
                          "'opencity officer keygen'")
    return key


def _load_public(pem: bytes, where: str = "the public key"):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where} is not a PEM public key ({err}); 'opencity officer keygen' "
                          "writes one next to the private key (.pub)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where} is not an Ed25519 public key")
    return key


def public_pem_of(private_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return _load_private(private_pem).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(public_pem: bytes) -> str:
    """sha256 of the raw public key, hex, first 16 digits (shown and recorded)."""
    from cryptography.hazmat.primitives import serialization

    raw = _load_public(public_pem).public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def read_private_key(path: str | Path | None) -> bytes:
    """The officer's private key file (``path``, else $OPENCITY_OFFICER_KEY)."""
    import os

    p = path or os.environ.get(KEY_ENV)
    if not p:
        raise ConfigError("approving needs the privacy officer's private key: pass --key FILE "
                          f"(or set {KEY_ENV}); only the officer holds it. The operator may "
                          "reject (--reject) without it, never approve")
    try:
        return Path(p).read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read the officer key {p}: {err.strerror}") from None


@dataclass(frozen=True)
class OfficerKey:
    key_id: str
    public_key: str
    officer: str
    airflow_user: str | None
    registered_at: str
    expires_at: str | None = None  # ISO date (UTC): the key signs nothing after that day

    def expired(self, at: str | None = None) -> bool:
        """Whether the key had expired at ``at`` (ISO time; default now)."""
        if not self.expires_at:
            return False
        return (at or _now())[:10] > self.expires_at


@dataclass(frozen=True)
class Approval:
    """One recorded decision on a dataset's policy version, and whether it verified."""

    dataset: str
    version: str
    content: dict[str, Any]
    decision: str
    decided_by: str
    decided_at: str
    comment: str
    source: str
    key_id: str | None
    verified: bool


def _message(dataset: str, version: str, decision: str, by: str, at: str,
             comment: str) -> bytes:
    return _canonical({"purpose": PURPOSE, "dataset": dataset, "version": version,
                       "decision": decision, "decided_by": by, "decided_at": at,
                       "comment": comment})


class ApprovalStore:
    """Officer keys, policy versions and approvals in the portal's state database.

    Args:
        url: state URL (SQLite path, ``postgresql://``) or a StateDB; None = the default
            ($OPENCITY_STATE_URL).
    """

    def __init__(self, url: Any = None) -> None:
        self.db = url if isinstance(url, StateDB) else StateDB(str(url or default_state_url()))
        self.db.ensure()  # approvals are witnessed by the state store's hash chain

    def _read(self, query: Any) -> list:
        with self.db.read() as con:
            return list(con.execute(query).all())

    # -- keys -------------------------------------------------------------------------
    def keys(self) -> list[OfficerKey]:
        k = t_keys.c
        return [OfficerKey(*r) for r in self._read(
            select(k.key_id, k.public_key, k.officer, k.airflow_user, k.registered_at,
                   k.expires_at).order_by(k.id))]

    def officer_key(self) -> OfficerKey | None:
        """The registered officer key in force (the latest registered), if any."""
        keys = self.keys()
        return keys[-1] if keys else None

    def register_key(self, public_pem: bytes, *, officer: str, airflow_user: str | None = None,
                     endorsed_by: bytes | None = None,
                     expires: str | None = None) -> OfficerKey:
        """Register the officer's public key (once; a replacement must be signed by the
        registered key's private key, ``endorsed_by``, even an expired one). ``expires``: the
        last day (YYYY-MM-DD, UTC) the key may sign an approval."""
        kid = key_id(public_pem)
        if expires is not None:
            from datetime import date

            try:
                expires = date.fromisoformat(str(expires)).isoformat()
            except ValueError:
                raise ConfigError(f"--expires must be a date YYYY-MM-DD, got {expires!r}"
                                  ) from None
            if expires < _now()[:10]:
                raise ConfigError(f"--expires {expires} is in the past; the key would sign "
                                  "nothing")
        if not officer or not officer.strip():
            raise ConfigError("registering the officer key needs the officer's name (--officer)")
        current = self.officer_key()
        endorsement = None
        if current is not None:
            if current.key_id == kid and endorsed_by is None:
                raise ConfigError(f"this key ({kid}) is already the registered officer key")
            if endorsed_by is None:
                raise ConfigError(
                    f"an officer key is already registered (key {current.key_id}, "
                    f"{current.officer}, since {current.registered_at}); a new key must be "
                    "endorsed by it: opencity officer register --public-key NEW.pub "
                    "--endorse-with CURRENT_PRIVATE_KEY")
            signer = _load_private(endorsed_by, "--endorse-with")
            if key_id(public_pem_of(endorsed_by)) != current.key_id:
                raise ConfigError("--endorse-with is not the registered officer key "
                                  f"({current.key_id}); the key was not replaced")
            endorsement = base64.b64encode(signer.sign(_canonical(
                {"purpose": PURPOSE, "new_key": kid, "officer": officer}))).decode()
        rec = OfficerKey(kid, public_pem.decode(), officer.strip(),
                         (airflow_user or "").strip() or None, _now(), expires)
        with self.db.write() as con:
            con.execute(t_keys.insert().values(
                key_id=rec.key_id, public_key=rec.public_key, officer=rec.officer,
                airflow_user=rec.airflow_user, registered_at=rec.registered_at,
                endorsement=endorsement, expires_at=rec.expires_at))
        return rec

    # -- versions ---------------------------------------------------------------------
    def note_version(self, version: DatasetVersion) -> None:
        """Remember a version's content (so the officer can approve it by hash)."""
        with self.db.write() as con:
            v = t_versions.c
            if con.execute(select(v.version).where(
                    v.dataset == version.dataset, v.version == version.hash)).first() is None:
                con.execute(t_versions.insert().values(
                    dataset=version.dataset, version=version.hash,
                    content=_canonical(version.content).decode(), first_seen=_now()))

    def known_version(self, dataset: str, version: str) -> DatasetVersion | None:
        v = t_versions.c
        rows = self._read(select(v.content).where(v.dataset == dataset, v.version == version))
        if not rows:
            return None
        return DatasetVersion(dataset, version, json.loads(rows[0][0]), "state store")

    def versions(self, dataset: str) -> list[str]:
        v = t_versions.c
        return [r[0] for r in self._read(select(v.version).where(v.dataset == dataset))]

    # -- decisions --------------------------------------------------------------------
    def approve(self, version: DatasetVersion, private_pem: bytes, *, by: str,
                comment: str = "") -> Approval:
        """Sign and record the officer's approval of ``version``.

        Raises:
            ConfigError: no officer key is registered, or ``private_pem`` is not it.
        """
        current = self.officer_key()
        if current is None:
            raise ConfigError("no privacy officer key is registered in the state store "
                              f"{self.db.where}; the officer runs 'opencity officer keygen' "
                              "and 'opencity officer register --public-key FILE' once")
        signer = _load_private(private_pem)
        if key_id(public_pem_of(private_pem)) != current.key_id:
            raise ConfigError(
                f"this key is not the privacy officer's registered key ({current.key_id}, "
                f"{current.officer}); nothing was approved. Only the officer can approve; "
                "the operator may reject (--reject)")
        if canonical_hash(version.content) != version.hash:
            raise ConfigError(f"policy version {version.hash} does not match its content; "
                              "this is a bug")
        at = _now()
        if current.expired(at):
            raise ConfigError(
                f"the privacy officer's key {current.key_id} expired on {current.expires_at}; "
                "nothing was approved. Register a new key, endorsed by this one: opencity "
                "officer register --public-key NEW.pub --endorse-with CURRENT_PRIVATE_KEY "
                "[--expires YYYY-MM-DD]")
        sig = signer.sign(_message(version.dataset, version.hash, APPROVED, by, at, comment))
        return self._insert(version, APPROVED, by, at, comment, "cli", current.key_id,
                            base64.b64encode(sig).decode())

    def reject(self, version: DatasetVersion, *, by: str, comment: str = "",
               source: str = "cli") -> Approval:
        """Record a rejection (no key needed: a rejection only stops releases)."""
        return self._insert(version, REJECTED, by, _now(), comment, source, None, None)

    def record_airflow(self, version: DatasetVersion, approve: bool, *, by: str,
                       comment: str = "") -> Approval:
        """Record the answer of the gate's HITL task (Airflow authenticated ``by``)."""
        return self._insert(version, APPROVED if approve else REJECTED, by, _now(), comment,
                            "airflow", None, None)

    def _insert(self, version: DatasetVersion, decision: str, by: str, at: str, comment: str,
                source: str, kid: str | None, sig: str | None) -> Approval:
        self.note_version(version)
        with self.db.write() as con:
            con.execute(t_approvals.insert().values(
                dataset=version.dataset, version=version.hash,
                content=_canonical(version.content).decode(), decision=decision,
                decided_by=by, decided_at=at, comment=comment or "", source=source, key_id=kid,
                signature=sig))
            from privacy.dp import chain

            chain.append(con, "approval", version.dataset, "", {
                "version": version.hash, "decision": decision, "source": source,
                "key_id": kid, "signature": sig})
        return next(a for a in reversed(self.decisions(version.dataset))
                    if a.version == version.hash)

    def decisions(self, dataset: str | None = None) -> list[Approval]:
        """Every decision (of one dataset), oldest first, each with ``verified``."""
        a = t_approvals.c
        query = select(a.dataset, a.version, a.content, a.decision, a.decided_by, a.decided_at,
                       a.comment, a.source, a.key_id, a.signature).order_by(a.id)
        if dataset:
            query = query.where(a.dataset == dataset)
        keys = {k.key_id: k for k in self.keys()}
        officer = self.officer_key()
        out = []
        for r in self._read(query):
            content = json.loads(r[2])
            ok = self._verified(r, content, keys, officer)
            out.append(Approval(r[0], r[1], content, r[3], r[4], r[5], r[6], r[7], r[8], ok))
        return out

    @staticmethod
    def _verified(r: tuple, content: dict, keys: dict, officer: OfficerKey | None) -> bool:
        dataset, version, _, decision, by, at, comment, source, kid, sig = r
        if decision == REJECTED:
            return True  # anyone may stop a release
        if canonical_hash(content) != version:
            return False
        if source == "airflow":
            return bool(officer and officer.airflow_user and by == officer.airflow_user)
        key = keys.get(kid or "")
        if key is None or not sig or key.expired(at):
            return False  # unknown key, no signature, or signed after the key expired
        from cryptography.exceptions import InvalidSignature

        try:
            _load_public(key.public_key.encode()).verify(
                base64.b64decode(sig), _message(dataset, version, decision, by, at, comment))
        except (InvalidSignature, ValueError):
            return False
        return True

    def _latest(self, dataset: str) -> dict[str, Approval]:
        """Latest verified decision per version of ``dataset``."""
        latest: dict[str, Approval] = {}
        for a in self.decisions(dataset):
            if a.verified:
                latest[a.version] = a
        return latest

    def is_approved(self, dataset: str, version: str) -> bool:
        """The latest verified decision on this version is an approval."""
        d = self._latest(dataset).get(version)
        return d is not None and d.decision == APPROVED

    def approved(self, dataset: str) -> list[Approval]:
        """The versions of ``dataset`` in force (latest verified decision is an approval),
        most recently approved last."""
        return sorted((a for a in self._latest(dataset).values() if a.decision == APPROVED),
                      key=lambda a: a.decided_at)

    # -- the doors ----------------------------------------------------------------------
    def check_compute(self, policy: Policy, dataset: str) -> DatasetVersion:
        """Before computing or spending: refuse a version looser than what is approved.

        Returns the version. An approved version passes; a new version that is no looser
        than the dataset's latest approved version (and whose unit budgets exceed no approved
        unit budget) may compute and waits for the officer before publication.

        Raises:
            PolicyNotApprovedError: looser than approved (nothing may run under it).
        """
        v = dataset_version(policy, dataset)
        if self.is_approved(dataset, v.hash):
            return v
        self.note_version(v)
        diffs: list[str] = []
        mine = self.approved(dataset)
        if mine:
            diffs = looser(v.content, mine[-1].content)
        for other in {a.dataset for a in self.decisions()} - {dataset}:
            for a in self.approved(other):
                diffs += [d for d in _looser_units(v.content["unit_budgets"],
                                                   a.content.get("unit_budgets", {}))
                          if d not in diffs]
        if diffs:
            raise PolicyNotApprovedError(self._refusal(v, diffs))
        return v

    def require_approved(self, policy: Policy, dataset: str) -> DatasetVersion:
        """Before publishing (or running a command without an approval gate): the version
        must be approved.

        Raises:
            PolicyNotApprovedError: naming the dataset and the officer's command.
        """
        v = dataset_version(policy, dataset)
        if self.is_approved(dataset, v.hash):
            return v
        self.note_version(v)
        mine = self.approved(dataset)
        diffs = looser(v.content, mine[-1].content) if mine else []
        raise PolicyNotApprovedError(self._refusal(v, diffs))

    def _refusal(self, v: DatasetVersion, diffs: list[str]) -> str:
        why = (f"; it is looser than the approved version: {'; '.join(diffs)}" if diffs
               else "")
        return (f"{v.dataset}: policy version {v.hash} (from {v.source}) is not approved by "
                f"the privacy officer{why}. Nothing was computed, spent or published. The "
                f"privacy officer reviews it and runs: opencity approve {v.dataset} --policy "
                f"{v.hash} --key OFFICER_KEY (or run with an approved policy file: unset "
                f"{POLICY_ENV} or point it at the approved one)")
