"""Issue 20 item 5 against the REAL pipeline output: the 311 microdata protects persons.

The 311 DAG's task bodies run on the demo's two weeks; then an independent recount groups
the PUBLISHED records by every published non-sensitive column and counts distinct persons,
using the restricted clean partition to map rows to persons: the clean rows are generalized
to the published levels, the documented per-person cap is re-applied in SQL (a requester's
first ``max_records_per_person`` requests by creation time, then request id), and the
recount first checks that this mapping reproduces the published file exactly (same records
per class and request type), so the person counts are those of the published records.

Before (record-level k, no cap; measured on these weeks): 4 classes with fewer than 5
persons, 39 classes holding k = 5 records of ONE requester with 2 request types (l = 2 by
one person), one requester with 70 % of a class. After: none, none, at most a third.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~45 s: two demo weeks

WEEKS = (datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 12, tzinfo=UTC))
MICRODATA = "opencity-311-requests-microdata"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from opencity.pipelines import microdata_311 as m
    from opencity.pipelines import service_requests as p
    from opencity.settings import Settings
    from sample_data import generate

    raw = tmp_path_factory.mktemp("demo") / "raw"
    generate(raw, seed=42, scale=1.0, days=14, progress=False)
    settings = Settings(run_dir=str(tmp_path_factory.mktemp("persons")), raw_dir=str(raw))
    runs = {}
    for start in WEEKS:
        end = start + timedelta(weeks=1)
        ingested = p.ingest(settings, start, end)
        staged = p.aggregate(settings, ingested, start)
        committed = p.commit_partition(settings, staged, start)
        p.publish(settings, committed, start, end, "persons-test", ingested)
        staged_md = m.anonymize_partition(settings, ingested, start, end)
        published_md = m.commit_and_publish(settings, staged_md, start, end, "persons-test",
                                            ingested.get("input_hashes", {}))
        runs[start] = {"ingested": ingested, "staged_md": staged_md,
                       "published_md": published_md}
    return settings, runs


def _generalized_clean(settings, start, staged) -> pa.Table:
    """The clean rows of the week, capped per person by SQL, generalized to the published
    levels, with the person behind every row (restricted data: test oracle only)."""
    import json

    from opencity.io import read_reference_csv
    from opencity.pipelines import microdata_311 as m
    from privacy.kanon import Hierarchy
    from transforms.schemas import DISTRICTS

    cap = staged["max_records_per_person"]
    cols = staged["columns"]
    src = {c: m.SOURCES[c] for c in cols}
    con = duckdb.connect()
    clean = pq.read_table(staged["clean_path"])
    con.register("clean", clean)
    not_null = " AND ".join(f"{s} IS NOT NULL" for s in src.values())
    rows = con.sql(f"""
        SELECT {', '.join(f'{s} AS {c}' for c, s in src.items())},
               coalesce(requester_pid, request_id) AS person
        FROM (SELECT *, row_number() OVER (PARTITION BY coalesce(requester_pid, request_id)
                                           ORDER BY created_at, request_id) AS nth
              FROM clean WHERE {not_null})
        WHERE nth <= {cap}""").to_arrow_table()
    con.close()
    report = json.loads(Path(staged["report_path"]).read_text())
    end = start + timedelta(weeks=1)
    districts = read_reference_csv(Path(settings.raw_dir) / "city" / "districts.csv", DISTRICTS)
    hs = {"age": Hierarchy.intervals(0, 120, (5, 10, 20)), "gender": Hierarchy.flat(m.GENDERS),
          "district_id": Hierarchy.flat(districts["district_id"].to_pylist()),
          "created": Hierarchy.timestamps(start, end, ("day", "week")),
          "status": Hierarchy.flat(m.STATUSES)}
    out = {}
    for c in cols:
        if c in report["generalization"]:
            h, level = hs[c], report["generalization"][c]
            labels = pa.array(h.labels(level), pa.string())
            out[c] = labels.take(pa.array(h.leaf_codes(level)[h.encode(rows, c)]))
        else:
            out[c] = rows[c]
    out["person"] = rows["person"]
    return pa.table(out)


def test_no_microdata_class_has_fewer_than_k_persons(published):
    settings, runs = published
    for start in WEEKS:
        run = runs[start]
        staged = {**run["staged_md"], "clean_path": run["ingested"]["clean_path"]}
        assert run["published_md"]["published"], run["published_md"]
        md = pq.read_table(settings.layout.output(MICRODATA, start) / "part-0.parquet")
        k, l_, sensitive = staged["k"], staged["l"], staged["sensitive"][0]
        assert staged["max_records_per_person"] < k
        qis = [c for c in md.column_names if c != sensitive]
        gen = _generalized_clean(settings, start, staged)
        con = duckdb.connect()
        con.register("md", md)
        con.register("gen", gen)
        by = ", ".join(f'"{c}"' for c in qis)
        # the mapping reproduces the published file exactly (records per class and type)
        diff = con.sql(f"""
            WITH pub AS (SELECT {by}, "{sensitive}", count(*) n FROM md GROUP BY ALL),
                 cl AS (SELECT g.{by.replace(', ', ', g.')}, g."{sensitive}", count(*) n
                        FROM gen g JOIN (SELECT DISTINCT {by} FROM md) USING ({by})
                        GROUP BY ALL)
            SELECT count(*) FROM pub FULL JOIN cl USING ({by}, "{sensitive}")
            WHERE pub.n IS DISTINCT FROM cl.n""").fetchall()[0][0]
        assert diff == 0
        classes = con.sql(f"""
            WITH g AS (SELECT * FROM gen JOIN (SELECT DISTINCT {by} FROM md) USING ({by})),
                 per AS (SELECT {by}, person, count(*) n, count(DISTINCT "{sensitive}") t
                         FROM g GROUP BY ALL),
                 -- values held by one person only, per (class, person)
                 holders AS (SELECT {by}, "{sensitive}", count(DISTINCT person) h,
                                    min(person) who FROM g GROUP BY ALL),
                 sole AS (SELECT {by}, who, count(*) s FROM holders WHERE h = 1 GROUP BY ALL),
                 worst AS (SELECT {by}, max(s) ws FROM sole GROUP BY ALL),
                 top AS (SELECT {by}, max(n) top, max(n) FILTER (WHERE t >= {l_}) top_div
                         FROM per GROUP BY ALL),
                 cls AS (SELECT {by}, count(DISTINCT person) persons, count(*) records,
                                count(DISTINCT "{sensitive}") types FROM g GROUP BY ALL)
            SELECT c.persons, c.records, c.types - coalesce(w.ws, 0) AS robust_l,
                   t.top, t.top_div
            FROM cls c JOIN top t USING ({by}) LEFT JOIN worst w USING ({by})""").fetchall()
        con.close()
        below_k = sum(1 for c in classes if c[0] < k)
        one_person_fills = sum(1 for c in classes if (c[4] or 0) >= k)
        max_share = max(c[3] / c[1] for c in classes)
        print(f"\n{start:%Y-%m-%d}: {len(classes)} classes over {qis}: {below_k} with fewer "
              f"than k={k} persons, {one_person_fills} filled to k, l={l_} by one person, "
              f"max share of one person {max_share:.1%}, min persons "
              f"{min(c[0] for c in classes)}")
        assert below_k == 0
        assert min(c[2] for c in classes) >= l_  # l over persons
        assert one_person_fills == 0
        assert max_share <= 0.5
        report = run["staged_md"]
        assert report["min_persons"] == min(c[0] for c in classes)


def test_microdata_statement_and_registry_say_persons(published):
    settings, runs = published
    import json

    for start in WEEKS:
        pkg = settings.layout.output(MICRODATA, start)
        staged = runs[start]["staged_md"]
        report = json.loads(Path(staged["report_path"]).read_text())
        assert report["persons"]["classes_below_k_persons"] == 0
        assert report["cap"]["max_records_per_person"] == staged["max_records_per_person"]
        assert report["cap"]["rows_capped"] > 0  # the demo's heavy requesters were capped
        assert "person" in report["risk"]
        assert pkg.exists()
