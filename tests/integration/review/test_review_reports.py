"""Release and portal reports from real pipeline output, withdrawal, and the embedded gate.

The module runs the real DAGs with ``dag.test()`` on generated sample data (311 for two
weeks, CDR mobility for two days), then checks the reports against the pipeline's own files
(the published Parquet, the ledger, the policy), validates the JSON against the schemas kept
in the repository, withdraws a partition, and exercises the embedded (``cli``) approval gate
with a changed policy: the run stops before publishing, ``opencity approvals`` lists it,
``opencity approve --reject`` discards the staged files, an approval lets the rerun publish.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from opencity.cli import main as cli

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

REPO = Path(__file__).resolve().parents[3]
DAGS = REPO / "dags"
WEEKLY = "opencity-311-requests-weekly"
MICRO = "opencity-311-requests-microdata"
CDR = "opencity-cdr-mobility-daily"


def _dag(name: str, file: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / file))
    assert bag.import_errors == {}
    return bag.get_dag(name)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """Three weeks of sample data (the third week is released under a changed policy)."""
    from sample_data import generate

    out = tmp_path_factory.mktemp("review-sample") / "raw"
    generate(out, seed=7, scale=0.3, days=21, progress=False)
    return out


@pytest.fixture(scope="module")
def run(airflow_db, raw, tmp_path_factory):
    """A run directory with two weeks of 311 and two days of CDR releases, and its reports."""
    from airflow.sdk import DagRunState

    from opencity.review.report import write_reports

    run_dir = tmp_path_factory.mktemp("review") / "run"
    conf = {"run_dir": str(run_dir), "raw_dir": str(raw)}
    for name, file, ends in (("opencity_311", "opencity_311.py", (12, 19)),
                             ("cdr_mobility", "cdr_mobility.py", (6, 7))):
        dag = _dag(name, file)
        for day in ends:
            dr = dag.test(logical_date=datetime(2026, 10, day, tzinfo=UTC), run_conf=conf)
            assert dr.state == DagRunState.SUCCESS, name
    out = run_dir.parent / "review"
    res = write_reports(run_dir, out, raw_dir=raw)
    return run_dir, out, res


def _load(out: Path, dataset: str, part: str) -> dict:
    return json.loads((out / "releases" / dataset / f"{part}.json").read_text())


def test_reports_validate_against_the_schemas_in_the_repository(run):
    import jsonschema

    _, out, res = run
    schemas = REPO / "opencity" / "review" / "schemas"
    portal = json.loads((out / "portal.json").read_text())
    jsonschema.validate(portal, json.loads((schemas / "portal-report.schema.json").read_text()))
    release_schema = json.loads((schemas / "release-report.schema.json").read_text())
    files = sorted((out / "releases").rglob("*.json"))
    assert len(files) == res["releases"] == 2 + 2 + 2
    for f in files:
        jsonschema.validate(json.loads(f.read_text()), release_schema)
    # The schema is not a rubber stamp: a report missing its policy hash fails it.
    broken = json.loads(files[0].read_text())
    broken["policy"]["hash"] = "not-a-hash"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, release_schema)


def test_microdata_report_matches_the_published_records(run):
    from privacy.policy import load_policy

    run_dir, out, _ = run
    r = _load(out, MICRO, "dt=2026-10-05")
    m = r["microdata"]
    from privacy.approval import dataset_version

    policy = load_policy().dataset(MICRO)
    assert r["status"] == "published"
    assert r["policy"]["hash"] == dataset_version(load_policy(), MICRO).hash
    assert r["policy"]["approved"]
    assert m["k"] == policy.k and m["l"] == policy.l
    table = pq.read_table(run_dir / "outputs" / MICRO / "dt=2026-10-05" / "part-0.parquet")
    sizes = table.group_by(m["quasi_identifiers"]).aggregate([([], "count_all")])[
        "count_all"].to_pylist()
    assert sum(h["records"] for h in m["classes"]["histogram"]) == table.num_rows
    assert sum(h["classes"] for h in m["classes"]["histogram"]) == len(sizes)
    assert min(sizes) >= m["k"]
    risk = m["risk"]
    assert risk["prosecutor"]["max"] == pytest.approx(1 / min(sizes))
    # The population (district residents) is larger than the sample: journalist risk below.
    assert 0 < risk["journalist"]["max"] < risk["prosecutor"]["max"]
    assert 0 < risk["marketer"]["average"] <= risk["prosecutor"]["average"]
    assert "districts.csv" in risk["population_model"]
    assert m["suppressed_records"] == m["rows_in"] - m["rows_out"]
    # issue 20: k counts persons; the headline is the worst measure, never the mildest
    assert m["persons"]["min_persons"] >= m["k"] and m["persons"]["classes_below_k_persons"] == 0
    assert m["max_records_per_person"] == policy.max_records_per_person
    head = m["headline_risk"]
    assert head["value"] == max(head["measures"].values()) >= risk["prosecutor"]["max"]
    portal = json.loads((out / "portal.json").read_text())
    micro = [x for x in portal["non_dp_releases"] if x["dataset"] == MICRO]
    assert micro and all(x["k_counts"] == "persons" and x["epsilon"] is None and
                         x["privacy_unit"] == "requester" for x in micro)
    summary = next(x["summary"] for d in portal["datasets"] if d["name"] == MICRO
                   for x in d["releases"] if x["partition"] == "dt=2026-10-05")
    assert f"k = {m['k']} persons" in summary and f"{head['value']:.2%}" in summary
    assert set(r["inputs"]["hashes"]) == {"requests.csv", "districts.csv"}
    assert r["inputs"]["reconciliation"]["reconciles"] is True
    assert r["data_quality"] and all(q["success"] for q in r["data_quality"])
    assert all(Path(q["data_docs"]).is_file() for q in r["data_quality"])
    later = _load(out, MICRO, "dt=2026-10-12")
    assert later["changes"]["previous_partition"] == "dt=2026-10-05"
    assert later["changes"]["policy_changed"] is False
    assert r["changes"]["first_release"] is True


def test_dp_report_totals_come_from_the_ledger(run):
    from privacy.dp.ledger import Ledger

    run_dir, out, _ = run
    r = _load(out, CDR, "dt=2026-10-06")
    dp = r["dp"]
    assert {p["name"] for p in dp["products"]} == {"hourly_presence", "od_matrix",
                                                    "home_region", "gyration"}
    for p in dp["products"]:
        assert p["mechanism"] and p["epsilon"] > 0
        eb = p["error_bound"]
        if eb["cells"]:
            assert eb["median"] <= eb["worst"]
            col = pq.read_table(run_dir / "outputs" / CDR / "dt=2026-10-06" /
                                f"{p['name']}.parquet")["error_bound_95"].to_pylist()
            assert eb["worst"] == max(col) and eb["cells"] == len(col)
    accounts = {(a["unit"], a["period"]): a for a in Ledger(os.environ["OPENCITY_STATE_URL"])
                .accounts()}
    (total,) = dp["portal_totals"]
    acc = accounts[(total["privacy_unit"], total["month"])]
    assert total["epsilon"] == pytest.approx(acc["spent_epsilon"])
    assert total["cap_epsilon"] == acc["cap_epsilon"]
    assert len(total["by_partition"]) == 2  # two days spent from the month's account
    portal = json.loads((out / "portal.json").read_text())
    row = next(b for b in portal["budget"] if b["privacy_unit"] == "subscriber")
    assert row["epsilon_remaining"] == pytest.approx(acc["cap_epsilon"] - acc["spent_epsilon"])


def test_html_reports_are_offline_pages(run):
    import re

    _, out, _ = run
    pages = [out / "index.html", *sorted((out / "releases").rglob("*.html"))]
    for page in pages:
        text = page.read_text()
        assert "<script" not in text and "<link" not in text
        assert not re.search(r"https?://", text), page
        assert "<svg" in text or page.name != "index.html"
    micro = (out / "releases" / MICRO / "dt=2026-10-05.html").read_text()
    assert "Group sizes" in micro and "journalist" in micro and "<svg" in micro
    assert "person (prosecutor" in micro
    index = (out / "index.html").read_text()
    assert "spend no ε" in index and "k = 5 persons per group" in index
    cdr = (out / "releases" / CDR / "dt=2026-10-06.html").read_text()
    assert "error bound (worst)" in cdr and "across the whole portal" in cdr


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_withdraw_removes_the_partition_and_keeps_the_record(run, raw, capsys):
    from privacy.dp.ledger import Ledger

    run_dir, out, _ = run
    state = os.environ["OPENCITY_STATE_URL"]
    spent_before = Ledger(state).accounts()
    cat = run_dir / "catalog" / CDR
    assert cli(["withdraw", CDR, "dt=2026-10-05", "--reason", "wrong tower map",
                "--run-dir", str(run_dir), "--by", "officer-b"]) == 0
    pkg = json.loads((cat / "package.json").read_text())
    assert {r["partition"] for r in pkg["resources"]} == {"dt=2026-10-06"}
    assert not list(cat.glob("*/*/dt=2026-10-05"))  # data/<table>/, csv/<table>/
    assert not (cat / "files" / "dt=2026-10-05").exists()
    dp = json.loads((cat / "datapackage.json").read_text())
    assert all("2026-10-05" not in r["path"] for r in dp["resources"])
    assert dp["withdrawn"][0]["reason"] == "wrong tower map"
    assert pkg["opencity"]["withdrawn"][0]["withdrawn_by"] == "officer-b"
    from publish.local import LocalCatalog

    assert LocalCatalog(cat.parent).verify(CDR) == []  # what is listed is what is on disk
    assert not list(cat.glob("*/*/dt=2026-10-05"))  # data/<table>/, csv/<table>/
    assert not (cat / "files" / "dt=2026-10-05").exists()
    assert Ledger(state).accounts() == spent_before  # spent budget is never given back
    # Withdrawing again, or a partition that was never published, is refused by name.
    capsys.readouterr()
    assert cli(["withdraw", CDR, "dt=2026-10-05", "--reason", "again",
                "--run-dir", str(run_dir)]) == 1
    assert "already withdrawn" in capsys.readouterr().err
    assert cli(["withdraw", CDR, "dt=2026-09-01", "--reason", "never there",
                "--run-dir", str(run_dir)]) == 1
    assert "dt=2026-10-06" in capsys.readouterr().err  # lists what is published
    from opencity.registry import Registry

    reg = Registry(state)
    assert reg.withdrawn(CDR, "dt=2026-10-05") and reg.get(CDR, "dt=2026-10-05") is not None
    assert cli(["report", str(run_dir), "--out", str(out), "--raw-dir", str(raw)]) == 0
    portal = json.loads((out / "portal.json").read_text())
    assert [(w["dataset"], w["partition"]) for w in portal["withdrawn"]] == [
        (CDR, "dt=2026-10-05")]
    statuses = {r["partition"]: r["status"] for d in portal["datasets"] if d["name"] == CDR
                for r in d["releases"]}
    assert statuses == {"dt=2026-10-05": "withdrawn", "dt=2026-10-06": "published"}
    assert "wrong tower map" in (out / "index.html").read_text()


def test_embedded_gate_waits_for_a_new_policy_version(run, raw, tmp_path, monkeypatch, capsys):
    """A tightened version of one dataset (the weekly table's epsilon 0.6 -> 0.5) computes,
    then waits for the officer; the other datasets' versions are unchanged and publish. The
    operator may reject without a key; only the officer's key approves."""
    from airflow.sdk import DagRunState

    from opencity.review.approvals import ReviewStore
    from opencity.review.testing import throwaway_key_path
    from privacy.approval import dataset_version
    from privacy.policy import load_policy

    run_dir, out, _ = run
    old_micro = dataset_version(load_policy(), MICRO).hash
    policy = tmp_path / "policy.yaml"
    shutil.copy(REPO / "privacy" / "policy.yaml", policy)
    text = policy.read_text()
    # A new policy version: the weekly table's epsilon per release lowered from 0.6 to 0.5.
    assert text.count("    epsilon: 0.6\n") == 1
    policy.write_text(text.replace("    epsilon: 0.6\n", "    epsilon: 0.5\n"))
    monkeypatch.setenv("OPENCITY_POLICY", str(policy))
    monkeypatch.setenv("OPENCITY_APPROVAL_MODE", "cli")
    new_hash = dataset_version(load_policy(), WEEKLY).hash
    assert dataset_version(load_policy(), MICRO).hash == old_micro  # not re-opened
    catalog_before = _tree(run_dir / "catalog")

    dag = _dag("opencity_311", "opencity_311.py")
    conf = {"run_dir": str(run_dir), "raw_dir": str(raw)}
    dr = dag.test(logical_date=datetime(2026, 10, 26, tzinfo=UTC), run_conf=conf)
    assert dr.state == DagRunState.FAILED  # the check says: waiting for approval
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["approval.check"] == "failed"
    assert states["publish_weekly"] != "success" and states["publish_microdata"] != "success"
    assert _tree(run_dir / "catalog") == catalog_before
    pending = ReviewStore().requests(status="open")
    assert {(r.dataset, r.partition, r.policy_hash) for r in pending} >= {
        (WEEKLY, "dt=2026-10-19", new_hash)}
    assert not [r for r in pending if r.dataset == MICRO]

    capsys.readouterr()
    assert cli(["approvals", str(run_dir)]) == 0
    listed = capsys.readouterr().out
    assert f"opencity approve {WEEKLY} --policy {new_hash}" in listed

    # The operator rejects (no key needed): the staged files go, nothing is published.
    assert cli(["approve", WEEKLY, "--policy", new_hash[:12], "--reject", "--comment",
                "not this week", "--run-dir", str(run_dir)]) == 0
    assert not (run_dir / "outputs" / WEEKLY / "dt=2026-10-19").exists()
    # A wrong hash is refused with the current one in the message.
    assert cli(["approve", WEEKLY, "--policy", "deadbeefdeadbeef"]) == 1
    assert new_hash in capsys.readouterr().err
    # Approving without the officer's key is refused; with it, the rerun publishes.
    assert cli(["approve", WEEKLY, "--policy", new_hash, "--by", "officer-a"]) == 1
    assert "--key FILE" in capsys.readouterr().err
    key = throwaway_key_path(os.environ["OPENCITY_STATE_URL"])
    assert cli(["approve", WEEKLY, "--policy", new_hash, "--comment", "epsilon 0.5 ok",
                "--by", "officer-a", "--key", str(key), "--run-dir", str(run_dir)]) == 0
    dr = dag.test(logical_date=datetime(2026, 10, 26, tzinfo=UTC), run_conf=conf)
    assert dr.state == DagRunState.SUCCESS
    assert cli(["report", str(run_dir), "--out", str(out), "--raw-dir", str(raw)]) == 0
    r = _load(out, WEEKLY, "dt=2026-10-19")
    assert r["policy"]["hash"] == new_hash and r["policy"]["approved"]
    assert r["changes"]["policy_changed"] is True
    assert any(c.get("before") == 0.6 and c.get("after") == 0.5
               for c in r["changes"]["parameters"]), r["changes"]["parameters"]
    assert r["policy"]["decisions"][-1]["decided_by"] == "officer-a"
    review = json.loads((run_dir / "catalog" / WEEKLY / "review.json").read_text())
    assert review["approvals"][-1]["policy_hash"] == new_hash
    from opencity.registry import Registry

    reg = Registry(os.environ["OPENCITY_STATE_URL"])
    assert reg.get(WEEKLY, "dt=2026-10-19").policy_hash == new_hash
    assert reg.get(MICRO, "dt=2026-10-19").policy_hash == old_micro
    decided = [(d["partition"], d["decision"], d["actor"]) for d in reg.decisions(WEEKLY)]
    assert ("dt=2026-10-19", "rejected") in [(p, d) for p, d, _ in decided]
    assert decided[-1][1:] == ("approved", "officer-a")


# ------------------------------------------------------------------ headless Chromium
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
_URL = re.compile(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(https?:)?//([^/"'\s>]+)"""
                  r"""|url\(\s*["']?(https?:)?//([^/"')\s]+)""", re.IGNORECASE)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=3000", *args],
        capture_output=True, text=True, timeout=180, check=False)


def _external_refs(dom: str) -> list[str]:
    hosts = []
    for m in _URL.finditer(dom):
        host = m.group(2) or m.group(4)
        if host and host.split(":")[0] not in ("localhost", "127.0.0.1"):
            hosts.append(host)
    hosts += [u for u in re.findall(r"https?://[^\s\"'<>)]+", dom)
              if not re.match(r"https?://(localhost|127\.0\.0\.1)[:/]", u)]
    return hosts


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y "
                    "--no-install-recommends chromium)")
@pytest.mark.parametrize("page", ["index.html", f"releases/{MICRO}/dt=2026-10-05.html",
                                  f"releases/{CDR}/dt=2026-10-06.html",
                                  f"releases/{WEEKLY}/dt=2026-10-05.html"])
@pytest.mark.browser
def test_report_renders_offline_without_errors(run, tmp_path, page):
    _, out, _ = run
    url = (out / page).as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<main>" in dom.stdout and "</html>" in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "error" in line.lower()], console
    assert not [line for line in dom.stderr.splitlines()
                if "Content Security Policy" in line or "net::ERR" in line]
    assert _external_refs(dom.stdout) == []
    if page == "index.html":
        assert dom.stdout.count("<svg") >= 1  # budget gauges / chart
        assert "Privacy budget per person" in dom.stdout
    if MICRO in page:
        assert 'aria-label="Number of groups per group size' in dom.stdout
    shot = tmp_path / "page.png"
    res = _chromium(tmp_path, "--window-size=1280,2200", f"--screenshot={shot}", url)
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_external_reference_detector_is_not_blind():
    assert _external_refs('<img src="https://cdn.example.org/x.png">') == [
        "cdn.example.org", "https://cdn.example.org/x.png"]
    assert _external_refs('<a href="releases/a.html">x</a><a href="../data_docs/i.html">') == []
    assert _external_refs("<style>body{background:url(//evil.example/x)}</style>") == [
        "evil.example"]
