"""Every package states its privacy mechanism, unit and post-processing with the effect on
sums, from the data dictionary's entry for the release's privacy method (issue 22)."""

from __future__ import annotations

import pytest

from publish import metadata as md
from publish.base import DatasetRelease, Resource
from publish.frictionless import load_dictionary, privacy_statement

PUBLISHED = {  # dataset -> the privacy method its pipeline publishes it with
    "opencity-311-requests-weekly": "differential_privacy",
    "opencity-311-requests-microdata": "k_anonymity",
    "opencity-cdr-mobility-daily": "differential_privacy",
    "opencity-kpis": "differential_privacy",
}


def _release(tmp_path, name: str, method: str) -> DatasetRelease:
    f = tmp_path / "part-0.parquet"
    f.write_bytes(b"PAR1")
    return DatasetRelease(
        name=name, title="t", description="What it is.",
        resources=(Resource(f, "t", "parquet", "week", "dt=2026-10-05"),),
        privacy={"privacy_method": method}, tags=("311",),
        temporal_coverage=("2026-10-05", "2026-10-12"), accrual_periodicity="R/P1W")


def test_every_dataset_of_the_dictionary_has_a_statement_per_published_method():
    assert set(load_dictionary()["datasets"]) == set(PUBLISHED)
    for name, method in PUBLISHED.items():
        statement = privacy_statement(name, method)
        assert set(statement) == set(md.STATEMENT_EXTRAS), name
        assert all(len(v) > 20 for v in statement.values()), name
    # the 311 weekly table may also be released with small-count suppression
    assert "withheld" in privacy_statement("opencity-311-requests-weekly",
                                           "small_count_suppression")["post_processing"]


@pytest.mark.parametrize("name,method", sorted(PUBLISHED.items()))
def test_package_extras_and_notes_state_it(tmp_path, name, method):
    pkg = md.package_dict(_release(tmp_path, name, method))
    ex = {e["key"]: e["value"] for e in pkg["extras"]}
    statement = privacy_statement(name, method)
    for key, extra in md.STATEMENT_EXTRAS.items():
        assert ex[extra] == statement[key]
    assert pkg["notes"].startswith("What it is.\n\nPost-processing: ")
    assert "Effect on sums: " in pkg["notes"]


def test_statement_follows_the_method_and_stale_extras_go(tmp_path):
    name = "opencity-311-requests-weekly"
    dp = md.package_dict(_release(tmp_path, name, "differential_privacy"))
    assert "floored at 0" in {e["key"]: e["value"] for e in dp["extras"]}["post_processing"]
    sup = md.package_dict(_release(tmp_path, name, "small_count_suppression"), previous=dp)
    ex = {e["key"]: e["value"] for e in sup["extras"]}
    assert "floored" not in ex["post_processing"] and "withheld" in ex["post_processing"]
    # a method the dictionary says nothing about: no statement, and none left over
    other = md.package_dict(_release(tmp_path, name, "something_else"), previous=dp)
    keys = {e["key"] for e in other["extras"]}
    assert not keys & set(md.STATEMENT_EXTRAS.values())
    assert other["notes"] == "What it is."
