"""bench/bench_mobility_engines.py --merge: new runs are appended to an earlier (already
merged) result; every run keeps the file it came from and the earlier merge's list of
sources is kept, so the table grows with dated rows instead of replacing them."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]



def _run(engine: str, events: int, seconds: float, **kw) -> dict:
    return {"engine": engine, "events": events, "seconds": seconds, "cpu_seconds": seconds,
            "cores": 2, "events_per_s_per_core": round(events / seconds / 2),
            "peak_rss_mb": 100.0, "load": "", "load_1min": 1.0, **kw}


def test_merge_appends_to_an_earlier_merged_result(tmp_path, bench_engines):
    machine = {"cpus": 2, "platform": "x", "python": "3.11"}
    old = {"started": "2026-12-01T00:00:00+00:00", "machine": machine, "load_start": "a",
           "load_end": "b", "config": {"events": [1]},
           "merged_from": [{"file": "first.json", "started": "2026-12-01", "config": {}},
                           {"file": "second.json", "started": "2026-12-02", "config": {}}],
           "runs": [_run("lean", 1_000_000, 2.0, source="first.json"),
                    _run("duckdb", 1_000_000, 6.0, source="second.json")]}
    new = {"started": "2026-12-06T23:30:00+00:00", "machine": machine, "load_start": "c",
           "load_end": "d", "config": {"events": [10_000_000, 100_000_000]},
           "runs": [_run("duckdb", 10_000_000, 10.0), _run("duckdb", 100_000_000, 110.0)]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new-pair.json").write_text(json.dumps(new))
    out = tmp_path / "merged.json"
    assert bench_engines.main(["--merge", str(tmp_path / "old.json"), str(tmp_path / "new-pair.json"),
                          "--out", str(out), "--projection-min-events", "1000000"]) == 0
    got = json.loads(out.read_text())
    assert [r["source"] for r in got["runs"]] == ["first.json", "second.json",
                                                  "new-pair.json", "new-pair.json"]
    assert [m["file"] for m in got["merged_from"]] == ["first.json", "second.json",
                                                       "new-pair.json"]
    assert got["started"] == old["started"]
    # scaling is computed within one source only (loads differ between runs)
    assert got["scaling"] == {"duckdb (new-pair.json)": {"events_ratio": 10.0,
                                                        "time_ratio": 11.0}}
    md = out.with_suffix(".md").read_text()
    assert "| 100,000,000 | duckdb | 110.0 |" in md
    # each merged run's rows under its file name and start time
    assert "| **new-pair.json** | 2026-12-06T23:30:00+00:00 |" in md
    assert md.index("**second.json**") < md.index("**new-pair.json**")
