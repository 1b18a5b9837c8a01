"""Replay of the empirical DP audit (tests/unit/privacy/dp/test_dp_audit.py) with a person who
uses three identifiers: issue 20 item 6, "one person, one unit".

In every replica, D' adds one requester with three requests in the replica's public key:
(e-mail + phone), (phone + name with address), (name with address). Pseudonymized as before
linkage (the first of e-mail, phone, name), that person is three units, each allowed the
contribution bound, so the count moves by 3 instead of 1 and the audit certifies an epsilon
far above the claim (issue 20: 1.212 against 0.45). Ingested by the real ingestion (HMAC +
linkage), the three requests are one unit, bounded to one row, and the certified lower bound
stays within the claim. The audit itself (events, Clopper-Pearson, Bonferroni) is the one of
test_dp_audit.py.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from stat_budget import epsilon_lower_bound

from opencity.secrets import Secret
from privacy.dp import ContributionBounds, DPBudget, dp_count
from transforms.ingest import ingest_file
from transforms.pseudonymize import Pseudonymizer

KEY = Secret("audit-key-" + "k" * 22, "test")
R = 20_000
EPS = 0.45  # the claim (per requester)
HEADER = ("request_id,created_at,closed_at,request_type,agency,status,district_id,lat,lon,"
          "description,requester_name,requester_phone,requester_email,requester_address,"
          "requester_age,requester_gender")


@pytest.fixture(scope="module")
def three_identifier_person(tmp_path_factory):
    """Raw 311 rows of D' (one three-identifier requester per replica) and their ingestion."""
    tmp = tmp_path_factory.mktemp("audit3")
    lines = [HEADER]
    for i in range(R):
        email, phone = f"p{i}@example.org", f"+49 151 {i:07d}"
        name, address = f"Person {i}", f"Street {i}"
        for j, (n, p, e, a) in enumerate([("", phone, email, ""), (name, phone, "", address),
                                          (name, "", "", address)]):
            lines.append(f"R{i:06d}{j},2026-10-05T10:00:00+00:00,,pothole,Transport,open,D01,,,"
                         f"hole,{n},{p},{e},{a},34,female")
    raw = tmp / "requests.csv"
    raw.write_text("\n".join(lines) + "\n")
    res = ingest_file("service_requests", raw, tmp / "clean", quarantine_dir=tmp / "q", key=KEY)
    assert res.rows_out == 3 * R
    return raw, pq.read_table(res.clean_path)


def _release_sums(person_rows: pa.Table, random_state=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-replica released counts of D (background only) and D' (plus the person)."""
    keys = [f"r{i:06d}" for i in range(R)]
    public = pa.table({"key": keys + ["bg"]})
    background = pa.table({"unit": ["bg0", "bg1"], "key": ["bg", "bg"]})
    d1 = pa.concat_tables([background, person_rows.select(["unit", "key"])])
    kw = {"unit": "unit", "by": ["key"], "budget": DPBudget(EPS),
          "bounds": ContributionBounds(max_partitions=1, max_rows_per_partition=1),
          "public_keys": public}

    def sums(out):
        out = out.filter(pc.not_equal(out.column("key"), "bg")).sort_by("key")
        return out.column("value").to_numpy().astype(np.int64)

    # independent noise for D and D': two seeds, or the CSPRNG twice
    rs_d1 = None if random_state is None else random_state + 1
    return (sums(dp_count(background, **kw, random_state=random_state)),
            sums(dp_count(d1, **kw, random_state=rs_d1)))


def _with_key(table: pa.Table, unit: pa.Array) -> pa.Table:
    rid = table.column("request_id")
    return pa.table({"unit": unit, "key": pc.binary_join_element_wise(
        "r", pc.utf8_slice_codeunits(rid, 1, 7), "")})


def test_three_identifier_person_before_linkage_exceeds_the_claim(three_identifier_person,
                                                                 capsys, noise_random_state):
    """Negative control: the pre-linkage pseudonym (first of e-mail, phone, name) over the
    same raw rows gives the person three units; the audit must see it."""
    raw, _ = three_identifier_person
    pseudo = Pseudonymizer(KEY)
    sql = pseudo.token_for_columns_sql({"requester_email": "requester_email",
                                        "requester_phone": "requester_phone",
                                        "requester_name": "requester_name"})
    con = duckdb.connect()
    before = con.sql(
        f"SELECT request_id, {sql} AS pid FROM read_csv('{raw}', all_varchar=true) "
        "ORDER BY request_id", params=pseudo.params).to_arrow_table()
    con.close()
    assert len(set(before["pid"].to_pylist()[:3])) == 3  # three units for one person
    s_d, s_d1 = _release_sums(_with_key(before, before["pid"]), noise_random_state)
    lb = epsilon_lower_bound(s_d, s_d1)
    with capsys.disabled():
        print(f"\naudit three-identifier person, first-identifier pseudonym: epsilon lower "
              f"bound {lb:.3f} (claim {EPS})")
    assert lb > EPS


@pytest.mark.statistical(assertions=1)
def test_three_identifier_person_after_linkage_within_the_claim(three_identifier_person,
                                                               capsys, noise_random_state):
    """The real ingestion links the three requests: one unit, lower bound within the claim."""
    _, clean = three_identifier_person
    clean = clean.sort_by("request_id")
    pids = clean["requester_pid"].to_pylist()
    assert all(len(set(pids[3 * i:3 * i + 3])) == 1 for i in range(0, R, 997))
    assert len(set(pids)) == R
    s_d, s_d1 = _release_sums(_with_key(clean, clean["requester_pid"]), noise_random_state)
    lb = epsilon_lower_bound(s_d, s_d1)
    with capsys.disabled():
        print(f"\naudit three-identifier person, linked pseudonym: epsilon lower bound "
              f"{lb:.3f} (claim {EPS})")
    assert lb <= EPS
