"""`opencity mobility` end to end: real tower sites (Melbourne, ACMA), synthetic events."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opencity.cli import main

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "celltowers_melbourne_acma"
DAY = "2026-10-05"
N_SUBS = 3000


def _towers(tmp: Path) -> tuple[Path, list[str]]:
    """Real Optus sites; region = cell of a 3 x 3 grid over their bounding box."""
    with open(DATA / "site-optus-melbCBD.csv", newline="") as fh:
        sites = list(csv.DictReader(fh))
    lat = np.array([float(s["LATITUDE"]) for s in sites])
    lon = np.array([float(s["LONGITUDE"]) for s in sites])
    row = np.minimum(((lat - lat.min()) / (np.ptp(lat) + 1e-9) * 3).astype(int), 2)
    col = np.minimum(((lon - lon.min()) / (np.ptp(lon) + 1e-9) * 3).astype(int), 2)
    path = tmp / "towers.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["cell_id", "lat", "lon", "region_id"])
        for s, r, c in zip(sites, row, col, strict=True):
            w.writerow([s["SITE_ID"], s["LATITUDE"], s["LONGITUDE"], f"R{r}{c}"])
    return path, [s["SITE_ID"] for s in sites]


def _cdr(tmp: Path, cells: list[str]) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(4)
    msisdn = [f"+614{rng.integers(10**7, 10**8)}" for _ in range(N_SUBS)]
    per = rng.integers(2, 15, N_SUBS)
    subs = np.repeat(np.arange(N_SUBS), per)
    home = rng.integers(0, len(cells), N_SUBS)
    # Mostly near home, sometimes anywhere.
    cell_idx = np.where(rng.random(len(subs)) < 0.6, home[subs],
                        rng.integers(0, len(cells), len(subs)))
    t0 = datetime.fromisoformat(DAY + "T00:00:00+00:00")
    times = [t0 + timedelta(seconds=int(s)) for s in rng.integers(0, 86_400, len(subs))]
    table = pa.table({
        "subscriber_id": [msisdn[i] for i in subs],
        "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
        "cell_id": [cells[i] for i in cell_idx],
    })
    extra = pa.table({
        "subscriber_id": [msisdn[0]] * 3,
        "event_time": pa.array([t0 + timedelta(hours=5), t0 - timedelta(minutes=1),
                                t0 + timedelta(days=1)], pa.timestamp("us", tz="UTC")),
        "cell_id": ["NOT-A-CELL", cells[0], cells[0]],
    })
    d = tmp / "cdr"
    d.mkdir()
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), d / "part-00000.parquet")
    pq.write_table(pa.concat_tables([table.slice(half), extra]), d / "part-00001.parquet")
    return d, msisdn


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mobility_in")
    towers, cells = _towers(tmp)
    cdr, msisdn = _cdr(tmp, cells)
    return cdr, towers, msisdn


def _run(cdr, towers, out, ledger, *extra):
    from opencity.review.testing import approve_policy

    approve_policy(str(ledger))  # this portal's officer approved the policy in force
    return main(["mobility", str(cdr), "--towers", str(towers), "--date", DAY,
                 "--out", str(out), "--ledger", str(ledger), "--quiet", *extra])


def _hashes(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.glob("*.*"))}


def test_release_files_privacy_json_and_rerun(inputs, tmp_path, capsys):
    cdr, towers, msisdn = inputs
    out, ledger = tmp_path / "out", tmp_path / "ledger.sqlite"
    assert _run(cdr, towers, out, ledger, "--epsilon", "1", "--seed", "3") == 0
    names = {"hourly_presence.parquet", "od_matrix.parquet", "home_region.parquet",
             "gyration.parquet", "privacy.json"}
    assert names <= {p.name for p in out.iterdir()}
    doc = json.loads((out / "privacy.json").read_text())
    assert doc["budget"] == {"epsilon": 1.0, "delta": 0.0,
                             "per": "subscriber per day (UTC), all products together"}
    prods = doc["products"]
    assert set(prods) == {"hourly_presence", "od_matrix", "home_region", "gyration"}
    assert sum(p["epsilon"] for p in prods.values()) == pytest.approx(1.0)
    # The stored policy's delta is 0: OD lists every ordered pair of regions (public keys),
    # no selection threshold, nothing withheld.
    assert prods["od_matrix"]["delta"] == 0 and prods["hourly_presence"]["delta"] == 0
    assert prods["od_matrix"]["selection_threshold_subscribers"] is None
    assert prods["od_matrix"]["withheld_rows"] == 0
    assert all(p["mechanism"] == "Geometric" for p in prods.values())
    assert doc["ledger"]["epsilon"] == 1.0 and doc["ledger"]["partition"] == f"dt={DAY}"
    hourly = pq.read_table(out / "hourly_presence.parquet")
    with open(towers, newline="") as fh:
        n_regions = len({r["region_id"] for r in csv.DictReader(fh)})
    assert hourly.num_rows == n_regions * 24
    assert hourly.column_names[:3] == ["date", "region_id", "hour"]
    report = json.loads((out / "_run" / "report.json").read_text())
    assert report["rows_set_aside"] == {"outside_date": 2, "unknown_cell": 1}
    assert report["unknown_cell_ids_sample"] == ["NOT-A-CELL"]

    # No raw identifier anywhere in what was written.
    ids = set(msisdn)
    for path in out.rglob("*"):
        if path.suffix == ".parquet":
            t = pq.read_table(path)
            cells = {v for c in t.columns if pa.types.is_string(c.type) for v in c.to_pylist()}
            assert not (cells & ids) and not (set(t.column_names) & {"subscriber_id", "unit"})
        elif path.is_file():
            text = path.read_text()
            assert not any(i in text for i in ids)
    capsys.readouterr()

    # Rerun: same bytes, no new spend.
    before = _hashes(out)
    assert _run(cdr, towers, out, ledger, "--epsilon", "1") == 0
    assert "already recorded" in capsys.readouterr().out
    assert _hashes(out) == before

    # A second release the same day goes over the day's per-release budget (policy).
    assert _run(cdr, towers, tmp_path / "o2", ledger, "--epsilon", "0.5",
                "--release-id", "extra") == 1
    err = capsys.readouterr().err
    assert "requested epsilon=0.5" in err and "remaining epsilon=0" in err
    assert not (tmp_path / "o2" / "privacy.json").exists()


def test_attack_caller_cannot_raise_the_cap(inputs, tmp_path, capsys):
    """Issue 10 attack replay: on a ledger that already released the day,
    `--daily-cap 100 --epsilon 50` succeeded and the day read epsilon = 52. Now the flag is
    gone (usage error) and --epsilon may only tighten the policy: nothing is spent."""
    from privacy.dp import Ledger

    cdr, towers, _ = inputs
    ledger = tmp_path / "state.sqlite"
    assert _run(cdr, towers, tmp_path / "o1", ledger, "--epsilon", "1") == 0
    with pytest.raises(SystemExit) as exc:
        _run(cdr, towers, tmp_path / "o2", ledger, "--daily-cap", "100", "--epsilon", "50",
             "--release-id", "x")
    assert exc.value.code == 2 and "--daily-cap" in capsys.readouterr().err
    assert _run(cdr, towers, tmp_path / "o3", ledger, "--epsilon", "50",
                "--release-id", "x") == 1
    err = capsys.readouterr().err
    assert "may only lower it" in err and "allows at most 1 per release" in err
    led = Ledger(ledger)
    assert [r.epsilon for r in led.releases()] == [1.0]
    assert led.recorded_spend("opencity-cdr-mobility-daily", f"dt={DAY}") == (1.0, 0.0)
    assert not (tmp_path / "o3").exists()


def test_cli_default_state_is_the_shared_one(inputs, tmp_path, monkeypatch, capsys):
    """Without --ledger the CLI spends from OPENCITY_STATE_URL, the DAGs' state: another
    --out does not open another account."""
    cdr, towers, _ = inputs
    state = tmp_path / "shared.sqlite"
    monkeypatch.setenv("OPENCITY_STATE_URL", str(state))
    from opencity.review.testing import approve_policy

    approve_policy(str(state))
    base = ["mobility", str(cdr), "--towers", str(towers), "--date", DAY, "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    assert "already recorded" in capsys.readouterr().out
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")
    from privacy.dp import Ledger
    assert len(Ledger(state).releases()) == 1


@pytest.mark.parametrize("eps,msg", [("0", "epsilon must be > 0"), ("-1", "epsilon must be > 0")])
def test_bad_epsilon_is_a_clear_error(inputs, tmp_path, capsys, eps, msg):
    cdr, towers, _ = inputs
    assert _run(cdr, towers, tmp_path / "o", tmp_path / "l.sqlite", "--epsilon", eps) == 1
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize("eps", ["nan", "inf"])
def test_non_finite_epsilon_is_refused_by_the_parser(inputs, tmp_path, capsys, eps):
    cdr, towers, _ = inputs
    with pytest.raises(SystemExit) as exc:
        _run(cdr, towers, tmp_path / "o", tmp_path / "l.sqlite", "--epsilon", eps)
    assert exc.value.code == 2
    assert "finite" in capsys.readouterr().err


def test_delta_too_large_for_the_population(inputs, tmp_path, capsys, monkeypatch):
    import yaml

    from privacy.policy import DEFAULT_POLICY

    cdr, towers, _ = inputs
    # Above the stored policy's per-release delta: refused before anything runs.
    assert _run(cdr, towers, tmp_path / "o", tmp_path / "l.sqlite", "--epsilon", "1",
                "--delta", "0.001") == 1
    assert "delta[subscriber]: the policy allows at most 0" in capsys.readouterr().err
    # A (reviewed) policy that allows it still meets the 1/n rule of the mechanism.
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["units"]["subscriber"]["delta"] = 0.1
    doc["datasets"]["opencity-cdr-mobility-daily"]["delta"] = 0.01
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("OPENCITY_POLICY", str(tmp_path / "policy.yaml"))
    assert _run(cdr, towers, tmp_path / "o", tmp_path / "l.sqlite", "--epsilon", "1",
                "--delta", "0.001") == 1
    err = capsys.readouterr().err
    assert "1/n" in err and "3000 privacy units" in err
    # Nothing was spent.
    from privacy.dp import Ledger
    assert Ledger(tmp_path / "l.sqlite").releases() == []


def test_glob_input_and_missing_file(inputs, tmp_path, capsys):
    cdr, towers, _ = inputs
    assert _run(f"{cdr}/part-*.parquet", towers, tmp_path / "o", tmp_path / "l.sqlite",
                "--epsilon", "1") == 0
    assert _run(tmp_path / "nope.parquet", towers, tmp_path / "o3", tmp_path / "l2.sqlite",
                "--epsilon", "1") == 1
    assert "no such file" in capsys.readouterr().err
