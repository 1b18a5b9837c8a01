"""``opencity report|approve|approvals|withdraw``: the privacy officer's commands.

    opencity report RUN_DIR --out DIR              portal report (DIR/index.html, portal.json)
                                                   and one release report per partition
    opencity approvals RUN_DIR                     open requests and past decisions
    opencity approve DATASET --policy HASH --key FILE
                                                   approve (signed with the officer's key)
                                                   or --reject (no key) a policy version
    opencity officer keygen FILE | register --public-key FILE.pub | show
                                                   the privacy officer's signing key
    opencity withdraw DATASET PARTITION --reason TEXT
                                                   take a published partition off the portal

Approvals and withdrawals are kept in the portal's state database (OPENCITY_STATE_URL, shared
with the budget ledger), so they apply to every later run.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC
from pathlib import Path

from opencity.errors import ConfigError
from opencity.runstore import location

_STATE_HELP = ("the portal's state database (budget ledger, approvals): a SQLite path or "
               "postgresql:// URL (default: $OPENCITY_STATE_URL, else "
               "~/.local/share/opencity/state.sqlite)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="write the portal report and every release report of a run directory",
        description="Write the privacy officer's reports of RUN_DIR into --out: index.html "
                    "and portal.json (every dataset, release, privacy budget per person, open "
                    "approvals, withdrawals) and releases/<dataset>/<partition>.html|.json. "
                    "The HTML works offline (no script, no third-party host).")
    p.add_argument("run_dir", type=location, metavar="RUN_DIR",
                   help="run directory, local or on object storage (s3://bucket/run)")
    p.add_argument("--out", type=Path, required=True, help="folder to write the reports to")
    p.add_argument("--raw-dir", type=Path, default=None,
                   help="where the city's reference tables are (district populations for the "
                        "re-identification risk; default: OPENCITY_RAW_DIR, else RUN_DIR/raw)")
    p.add_argument("--state-url", default=None, help=_STATE_HELP)
    p.set_defaults(func=_report)

    p = subparsers.add_parser(
        "approvals", help="list releases waiting for approval and past decisions",
        description="Releases waiting for a privacy officer (first release of a dataset, or "
                    "a new policy version) and every decision taken.")
    p.add_argument("run_dir", type=location, metavar="RUN_DIR", nargs="?",
                   help="run directory, local or on object storage (s3://bucket/run); only "
                        "used to find the state DB the run keeps itself")
    p.add_argument("--state-url", default=None, help=_STATE_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_approvals)

    p = subparsers.add_parser(
        "approve", help="approve (or --reject) a dataset's policy version",
        description="Record a privacy officer's decision on DATASET under policy version "
                    "HASH (the release policy's content hash, shown by 'opencity approvals' "
                    "and in the release report). Approving lets the waiting and every later "
                    "release under that version publish; rerun the waiting interval in "
                    "embedded mode. Rejecting publishes nothing and discards the staged files "
                    "of the waiting releases.")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--policy", required=True, metavar="HASH",
                   help="policy version (64 hex digits, or a unique prefix of at least 8)")
    p.add_argument("--reject", action="store_true", help="reject instead of approve")
    p.add_argument("--comment", default="", help="why (recorded with the decision)")
    p.add_argument("--by", default=None, help="who decides (default: the OS user)")
    p.add_argument("--key", type=Path, default=None, metavar="FILE",
                   help="the privacy officer's private key (Ed25519 PEM, from 'opencity "
                        "officer keygen'); an approval is signed with it and refused without "
                        "it (default: $OPENCITY_OFFICER_KEY). Not needed to --reject")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="run directory whose staged files a rejection discards "
                        "(default: OPENCITY_RUN_DIR)")
    p.add_argument("--state-url", default=None, help=_STATE_HELP)
    p.set_defaults(func=_approve)

    p = subparsers.add_parser(
        "officer", help="the privacy officer's signing key: keygen, register, show",
        description="Approvals are signed with the privacy officer's Ed25519 key. 'keygen' "
                    "writes a new key pair (FILE, owner-only, and FILE.pub); 'register' "
                    "records the public key in the portal's state database, once (a new key "
                    "must be endorsed by the registered one); 'show' prints the registered "
                    "key. Keep the private key where only the officer can read it.")
    osub = p.add_subparsers(dest="officer_command", metavar="ACTION", required=True)
    k = osub.add_parser("keygen", help="write a new Ed25519 key pair (FILE and FILE.pub)")
    k.add_argument("file", type=Path, metavar="FILE", help="private key file to create")
    k.set_defaults(func=_officer_keygen)
    r = osub.add_parser("register", help="register the officer's public key (once)")
    r.add_argument("--public-key", type=Path, required=True, metavar="FILE",
                   help="the officer's public key (PEM, FILE.pub of 'keygen')")
    r.add_argument("--officer", default=None,
                   help="the officer's name, recorded with the key (default: the OS user)")
    r.add_argument("--airflow-user", default=None, metavar="USER",
                   help="the officer's Airflow user: the only one who may answer the "
                        "approval task in Airflow")
    r.add_argument("--expires", default=None, metavar="YYYY-MM-DD",
                   help="the last day (UTC) the key may sign an approval (default: no expiry)")
    r.add_argument("--endorse-with", type=Path, default=None, metavar="FILE",
                   help="replacing the registered key: its private key, which signs the new "
                        "one")
    r.add_argument("--state-url", default=None, help=_STATE_HELP)
    r.set_defaults(func=_officer_register)
    s_ = osub.add_parser("show", help="print the registered officer key")
    s_.add_argument("--state-url", default=None, help=_STATE_HELP)
    s_.set_defaults(func=_officer_show)

    p = subparsers.add_parser(
        "withdraw", help="take a published partition back off the portal",
        description="Remove PARTITION's resources of DATASET from the local catalog (and from "
                    "CKAN with --target ckan), update the package metadata and the "
                    "datapackage, and record the withdrawal (reason, who, when). The release's "
                    "registry entry and the privacy budget it spent are kept: spent budget "
                    "cannot be given back.")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("partition", metavar="PARTITION", help="e.g. dt=2026-10-05")
    p.add_argument("--reason", required=True, help="why the release is withdrawn (recorded)")
    p.add_argument("--by", default=None, help="who withdraws (default: the OS user)")
    p.add_argument("--run-dir", type=Path, default=None, help="run directory "
                   "(default: OPENCITY_RUN_DIR)")
    p.add_argument("--target", choices=("local", "ckan"), default=None,
                   help="catalog to withdraw from (default: OPENCITY_PUBLISH_TARGET or local)")
    p.add_argument("--ckan-url", default=None, help="CKAN base URL (with --target ckan)")
    p.add_argument("--state-url", default=None, help=_STATE_HELP)
    p.set_defaults(func=_withdraw)


def _state(args: argparse.Namespace) -> str | None:
    """--state-url, else RUN_DIR/state.url (a run with its own state, e.g. the demo), else
    None (the settings default, OPENCITY_STATE_URL)."""
    if args.state_url:
        return args.state_url
    run_dir = getattr(args, "run_dir", None)
    if run_dir:
        from opencity.budget import state_url_for

        return state_url_for(run_dir)
    return None


def _settings(args: argparse.Namespace, **extra):
    from opencity.settings import Settings

    explicit = {"run_dir": str(args.run_dir) if getattr(args, "run_dir", None) else None,
                "state_url": _state(args), **extra}
    return Settings.resolve(explicit)


def _report(args: argparse.Namespace) -> int:
    from opencity.review.report import write_reports
    from opencity.runstore import read_copy, uris_in_texts

    state_url = _state(args)
    # A run directory on object storage is read from a temporary owner-only copy; the
    # reports then name the store's URIs, not the copy.
    with read_copy(args.run_dir) as (run_dir, to_uris):
        res = write_reports(run_dir, args.out, state_url=state_url, raw_dir=args.raw_dir)
        uris_in_texts(Path(args.out), to_uris)
    print(f"portal report:   {res['index']}")
    print(f"portal JSON:     {res['portal_json']}")
    print(f"release reports: {res['releases']} in {Path(res['index']).parent / 'releases'}")
    print(f"waiting for approval: {res['open_approvals']}; withdrawn: {res['withdrawn']}")
    return 0


def _approvals(args: argparse.Namespace) -> int:
    from opencity.review.approvals import OPEN, ReviewStore

    store = ReviewStore(_state(args))
    open_ = store.requests(status=OPEN)
    decisions = store.decisions()
    if args.json:
        print(json.dumps({"open": [r.as_dict() for r in open_],
                          "decisions": [d.as_dict() for d in decisions]}, indent=2))
        return 0
    if open_:
        print(f"{len(open_)} release(s) wait for approval:")
        for r in open_:
            print(f"  {r.dataset} {r.partition} (requested {r.requested_at}"
                  + (f", DAG {r.dag_id}" if r.dag_id else "") + ")")
            if r.report:
                print(f"    release report: {r.report}")
            print(f"    approve: opencity approve {r.dataset} --policy {r.policy_hash} "
                  "--key OFFICER_KEY")
            print(f"    reject:  opencity approve {r.dataset} --policy {r.policy_hash} "
                  "--reject --comment '...'")
    else:
        print("nothing waits for approval")
    if decisions:
        print(f"\n{len(decisions)} decision(s):")
        for d in decisions:
            print(f"  {d.decided_at} {d.dataset}: {d.decision} by {d.decided_by} ({d.source}), "
                  f"policy {d.policy_hash[:16]}…" + (f" - {d.comment}" if d.comment else ""))
    return 0


def _resolve_hash(store, dataset: str, given: str) -> str:
    import re

    from opencity.review.approvals import OPEN
    from opencity.review.policy import policy_version
    from privacy.approval import ApprovalStore

    given = given.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", given):
        raise ConfigError(f"--policy {given!r} is not a policy hash (64 hex digits, or a "
                          "unique prefix of at least 8)")
    known = {policy_version(dataset)["hash"]}
    known |= {r.policy_hash for r in store.requests(status=OPEN) if r.dataset == dataset}
    known |= set(ApprovalStore(store.db).versions(dataset))
    found = sorted(h for h in known if h.startswith(given))
    if len(found) != 1:
        raise ConfigError(
            f"--policy {given} matches {'no' if not found else 'more than one'} policy "
            f"version of {dataset} (current policy: {policy_version(dataset)['hash']}; see "
            "'opencity approvals')")
    return found[0]


def _approve(args: argparse.Namespace) -> int:
    from opencity.review.approvals import OPEN, ReviewStore, current_user
    from opencity.review.gate import discard_staged, record_in_registry
    from privacy.approval import ApprovalStore, dataset_version, read_private_key
    from privacy.policy import load_policy

    settings = _settings(args)
    store = ReviewStore(settings.state_url)
    h = _resolve_hash(store, args.dataset, args.policy)
    key = None if args.reject else read_private_key(args.key)  # approving needs the key
    approvals = ApprovalStore(store.db)
    current = dataset_version(load_policy(), args.dataset)
    version = current if current.hash == h else approvals.known_version(args.dataset, h)
    if version is None:
        raise ConfigError(f"policy version {h} of {args.dataset} is not known to the state "
                          "store; approve it from the policy file that defines it "
                          "(OPENCITY_POLICY=FILE opencity approve ...)")
    who = args.by or current_user()
    if args.reject:
        approvals.reject(version, by=who, comment=args.comment)
    else:
        approvals.approve(version, key, by=who, comment=args.comment)
    waiting = [r for r in store.requests(status=OPEN)
               if r.dataset == args.dataset and r.policy_hash == h]
    d = store.decide(args.dataset, h, not args.reject, by=who,
                     comment=args.comment, source="cli",
                     partition=waiting[-1].partition if waiting else None)
    for part in sorted({r.partition for r in waiting}) or [""]:
        record_in_registry(settings, args.dataset, part, not args.reject, d.decided_by,
                           args.comment, h, "cli")
    print(f"{args.dataset}: policy {h[:16]}… {d.decision} by {d.decided_by} at {d.decided_at}")
    if args.reject and waiting:
        from datetime import date, datetime, time

        for r in waiting:
            day = date.fromisoformat(r.partition.removeprefix("dt="))
            removed = discard_staged(settings, args.dataset,
                                     datetime.combine(day, time(), UTC))
            print(f"  {r.partition}: nothing published; staged files discarded "
                  f"({', '.join(removed) or 'none left'})")
    elif waiting:
        print("  rerun the waiting interval(s) to publish: "
              + ", ".join(r.partition for r in waiting))
    if not args.reject:
        try:
            from opencity.review.gate import write_catalog_review

            write_catalog_review(settings, args.dataset, store)
        except ConfigError:
            pass
    return 0


def _officer_keygen(args: argparse.Namespace) -> int:
    from opencity.io import restricted_file
    from privacy.approval import generate_key, key_id

    path: Path = args.file
    pub = path.with_name(path.name + ".pub")
    for p in (path, pub):
        if p.exists():
            raise ConfigError(f"{p} exists; choose another file (a key is never overwritten)")
    private, public = generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    restricted_file(path)
    path.write_bytes(private)
    pub.write_bytes(public)
    print(f"private key: {path} (owner-only; keep it where only the privacy officer can read "
          "it)")
    print(f"public key:  {pub} (key id {key_id(public)})")
    print(f"register it once: opencity officer register --public-key {pub}")
    return 0


def _officer_register(args: argparse.Namespace) -> int:
    from opencity.review.approvals import current_user
    from privacy.approval import ApprovalStore

    try:
        public = args.public_key.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read --public-key {args.public_key}: {err.strerror}") from None
    endorse = None
    if args.endorse_with is not None:
        try:
            endorse = args.endorse_with.read_bytes()
        except OSError as err:
            raise ConfigError(f"cannot read --endorse-with {args.endorse_with}: "
                              f"{err.strerror}") from None
    store = ApprovalStore(_state(args))
    rec = store.register_key(public, officer=args.officer or current_user(),
                             airflow_user=args.airflow_user, endorsed_by=endorse,
                             expires=args.expires)
    print(f"officer key {rec.key_id} of {rec.officer} registered in {store.db.where}"
          + (f"; Airflow user {rec.airflow_user} answers the approval tasks"
             if rec.airflow_user else ""))
    return 0


def _officer_show(args: argparse.Namespace) -> int:
    from privacy.approval import ApprovalStore

    store = ApprovalStore(_state(args))
    rec = store.officer_key()
    if rec is None:
        print(f"no officer key is registered in {store.db.where}")
        return 1
    print(f"officer key {rec.key_id} of {rec.officer}, registered {rec.registered_at}"
          + (f", Airflow user {rec.airflow_user}" if rec.airflow_user else ""))
    return 0


def _withdraw(args: argparse.Namespace) -> int:
    from opencity.review.withdraw import withdraw

    extra = {"publish_target": args.target, "ckan_url": args.ckan_url}
    settings = _settings(args, **extra)
    res = withdraw(settings, args.dataset, args.partition, args.reason, by=args.by)
    print(f"{args.dataset} {args.partition} withdrawn from the {res['target']} catalog: "
          f"{len(res['removed'])} resource(s) removed ({', '.join(res['removed'])}).")
    print("  the registry entry, the reason and the privacy budget the release spent are kept")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from opencity.cli import main

    sys.exit(main(["report", *sys.argv[1:]]))
