"""``opencity verify RUN_DIR|CATALOG [--json] [--state URL]``: audit the portal from what it
published (a contract: exit 0 only when everything is consistent).

From the public catalog alone:

* every published file hashes to the SHA-256 its record states;
* every partition's record carries its entry of the state store's hash chain
  (:mod:`privacy.dp.chain`), whose hash recomputes from its own content, and whose files
  are exactly the partition's published files;
* each privacy unit's totals per period, recounted from the spends the entries state, stay
  within the caps the published statements give.

With the portal's state database (``--state``, ``RUN_DIR/state.url`` or
``OPENCITY_STATE_URL`` when RUN_DIR is given), also:

* the chain links from its first entry to its last (an edited, deleted or inserted row
  breaks it) and holds every entry the catalog carries;
* every spend row of the ledger has its chain entry and every chain spend its rows (a
  deleted spend row is found); every registry record matches its newest chain entry (an
  edited release record is found);
* the totals per privacy unit and period from the ledger equal those from the chain.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="audit the published catalog (files, hash chain, per-person totals)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", type=Path, help="a run directory (RUN_DIR/catalog) or a catalog")
    p.add_argument("--state", default=None,
                   help="the portal's state URL to check the catalog against (default: "
                        "RUN_DIR/state.url, else $OPENCITY_STATE_URL when RUN_DIR is given)")
    p.add_argument("--public-only", action="store_true",
                   help="check the catalog alone, as a citizen would (no state database)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd)


def _catalog_root(target: Path) -> tuple[Path, Path | None]:
    target = target.resolve()
    if (target / "catalog").is_dir():
        return target / "catalog", target
    if target.is_dir() and any(target.glob("*/package.json")):
        return target, None
    raise ConfigError(f"{target} is neither a run directory (with catalog/) nor a local catalog "
                      "(folders with package.json)")


def _state_url(run_dir: Path | None, explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if run_dir is None:
        return None
    from opencity.budget import state_url_for

    return state_url_for(run_dir)


def verify_catalog(catalog: Path) -> dict[str, Any]:
    """The public checks; returns {problems, entries, totals, datasets}."""
    from privacy.dp import chain
    from publish.local import LocalCatalog

    cat = LocalCatalog(catalog)
    problems: list[str] = []
    entries: dict[str, dict] = {}  # hash -> public entry
    caps: dict[str, tuple[float, float]] = {}
    datasets: dict[str, int] = {}
    for pkg_path in sorted(catalog.glob("*/package.json")):
        name = pkg_path.parent.name
        pkg = cat.load_package(name) or {}
        meta = pkg.get("opencity", {})
        problems += [f"{name} {p}" for p in cat.verify(name)]
        published: dict[str, dict[str, str]] = defaultdict(dict)
        for r in pkg.get("resources", []):
            if r.get("partition"):
                published[r["partition"]][f"{r['partition']}/{r['name']}"] = str(
                    r.get("hash", "")).removeprefix("sha256:")
        parts = [p for p in meta.get("partitions", []) if p.get("partition")]
        datasets[name] = len(parts)
        for p in parts:
            part, privacy = p["partition"], p.get("privacy") or {}
            entry = privacy.get("chain")
            if not entry:
                problems.append(f"{name} {part}: its record carries no hash-chain entry")
                continue
            if not chain.self_consistent(entry):
                problems.append(f"{name} {part}: its chain entry does not match its hash")
            if entry.get("dataset") != name or entry.get("partition") != part:
                problems.append(f"{name} {part}: its chain entry names {entry.get('dataset')} "
                                f"{entry.get('partition')}")
            if entry.get("body", {}).get("files") != published.get(part, {}):
                problems.append(f"{name} {part}: the published files differ from the files "
                                "its chain entry witnesses")
            entries[entry["hash"]] = entry
            for unit, b in (privacy.get("portal_budget") or {}).items():
                if b.get("cap_epsilon") is not None:
                    caps[unit] = (float(b["cap_epsilon"]), float(b.get("cap_delta") or 0.0))
    totals = _totals(e.get("body", {}).get("spends", []) for e in entries.values())
    for (unit, period), (eps, delta) in sorted(totals.items()):
        if unit in caps:
            cap_e, cap_d = caps[unit]
            if eps > cap_e * (1 + 1e-9) or delta > cap_d * (1 + 1e-9) + 1e-15:
                problems.append(f"{unit} {period}: published releases total epsilon {eps:.6g}"
                                f", delta {delta:.3g}, over the cap ({cap_e:g}, {cap_d:g})")
    return {"problems": problems, "entries": entries, "totals": totals, "caps": caps,
            "datasets": datasets}


def _totals(spend_lists) -> dict[tuple[str, str], tuple[float, float]]:
    acc: dict[tuple[str, str], list[list[float]]] = defaultdict(lambda: [[], []])
    for spends in spend_lists:
        for s in spends:
            acc[(s["unit"], s["period"])][0].append(float(s["epsilon"]))
            acc[(s["unit"], s["period"])][1].append(float(s["delta"]))
    return {k: (math.fsum(v[0]), math.fsum(v[1])) for k, v in acc.items()}


def verify_state(state_url: str, public: dict[str, Any]) -> dict[str, Any]:
    """The checks against the state database."""
    from sqlalchemy import select

    from privacy.dp import chain
    from privacy.dp import db as state

    db = state.StateDB(state_url)
    problems: list[str] = []
    log = chain.entries(db)
    problems += chain.link_problems(log)
    by_hash = {e["hash"]: e for e in log}
    for h, e in public["entries"].items():
        mine = by_hash.get(h)
        if mine is None:
            problems.append(f"{e['dataset']} {e['partition']}: the catalog's chain entry "
                            f"{e['seq']} is not in the state database's chain")
    spends_chain = {}
    for e in log:
        if e["kind"] == "spend":
            key = (e["dataset"], e["partition"], e["body"].get("release_id"))
            spends_chain[key] = sorted((s["unit"], s["period"], float(s["epsilon"]),
                                        float(s["delta"])) for s in e["body"].get("spends", []))
    r, s, p = state.releases.c, state.spends.c, state.published.c
    with db.read() as con:
        ledger_rows = con.execute(
            select(r.dataset, r.partition, r.release_id, s.privacy_unit, s.period, s.epsilon,
                   s.delta).join_from(state.releases, state.spends, s.release_pk == r.id,
                                      isouter=True)).all()
        published = con.execute(select(p.dataset, p.partition, p.params_json, p.policy_hash,
                                       p.files_json)).all()
    spends_ledger: dict[tuple, list] = defaultdict(list)
    for r in ledger_rows:
        spends_ledger.setdefault((r[0], r[1], r[2]), [])
        if r[3] is not None:
            spends_ledger[(r[0], r[1], r[2])].append((r[3], r[4], float(r[5]), float(r[6])))
    for key in sorted(set(spends_chain) | set(spends_ledger), key=str):
        a, b = spends_chain.get(key), sorted(spends_ledger.get(key, []))
        if a is None:
            problems.append(f"{key[0]} {key[1]}: ledger spends with no chain entry")
        elif key not in spends_ledger or a != b:
            problems.append(f"{key[0]} {key[1]}: the ledger's spend rows differ from the "
                            "chain's spend entry (a row was deleted or edited)")
    newest: dict[tuple[str, str], dict] = {}
    for e in log:
        if e["kind"] == "release":
            newest[(e["dataset"], e["partition"])] = e
    for ds, part, params_json, policy_hash, files_json in published:
        e = newest.get((ds, part))
        if e is None:
            problems.append(f"{ds} {part}: a registry record with no chain entry")
            continue
        body = e["body"]
        if (body.get("params") != json.loads(params_json)
                or body.get("policy_hash") != policy_hash
                or body.get("files") != dict(sorted(json.loads(files_json).items()))):
            problems.append(f"{ds} {part}: the registry record differs from its chain entry "
                            "(the record was edited)")
    ledger_totals = _totals([[{"unit": s[0], "period": s[1], "epsilon": s[2], "delta": s[3]}
                              for s in v] for v in spends_ledger.values()])
    chain_totals = _totals([[{"unit": s[0], "period": s[1], "epsilon": s[2], "delta": s[3]}
                             for s in v] for v in spends_chain.values()])
    for key in sorted(set(ledger_totals) | set(chain_totals)):
        a, b = ledger_totals.get(key, (0.0, 0.0)), chain_totals.get(key, (0.0, 0.0))
        if not (math.isclose(a[0], b[0], rel_tol=1e-12, abs_tol=1e-12)
                and math.isclose(a[1], b[1], rel_tol=1e-12, abs_tol=1e-18)):
            problems.append(f"{key[0]} {key[1]}: ledger total epsilon {a[0]:.6g} but the chain "
                            f"states {b[0]:.6g}")
    return {"problems": problems, "chain_entries": len(log), "totals": chain_totals}


def run_verify(target: Path, state: str | None = None, public_only: bool = False
               ) -> dict[str, Any]:
    catalog, run_dir = _catalog_root(target)
    public = verify_catalog(catalog)
    report: dict[str, Any] = {
        "catalog": str(catalog),
        "datasets": public["datasets"],
        "published_chain_entries": len(public["entries"]),
        "totals": [{"unit": u, "period": p, "epsilon": e, "delta": d,
                    "cap_epsilon": public["caps"].get(u, (None, None))[0],
                    "cap_delta": public["caps"].get(u, (None, None))[1]}
                   for (u, p), (e, d) in sorted(public["totals"].items())],
        "problems": list(public["problems"]),
        "state_checked": False,
    }
    url = None if public_only else _state_url(run_dir, state)
    if url:
        st = verify_state(url, public)
        report["state_checked"] = True
        report["state_chain_entries"] = st["chain_entries"]
        report["problems"] += st["problems"]
    report["ok"] = not report["problems"]
    return report


def _cmd(args: argparse.Namespace) -> int:
    report = run_verify(args.target, args.state, args.public_only)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(f"catalog {report['catalog']}: {sum(report['datasets'].values())} partitions in "
              f"{len(report['datasets'])} datasets, {report['published_chain_entries']} chain "
              f"entries published; state database "
              f"{'checked' if report['state_checked'] else 'not checked'}")
        for t in report["totals"]:
            cap = f" of cap {t['cap_epsilon']:g}" if t["cap_epsilon"] is not None else ""
            print(f"  {t['unit']} {t['period']}: epsilon {t['epsilon']:.4g}{cap}, "
                  f"delta {t['delta']:.3g}")
        for p in report["problems"]:
            print(f"PROBLEM: {p}", file=sys.stderr)
        print("consistent" if report["ok"] else f"{len(report['problems'])} problem(s)")
    return 0 if report["ok"] else 1
