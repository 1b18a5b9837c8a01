"""Partition dataset names and the publish lock (publish.ckan.partitions, publish.ckan.lock):
pure helpers and a real lock file, no CKAN."""

from __future__ import annotations

import threading
import time

import pytest

from opencity.errors import PublishError
from publish.ckan.lock import PublishLock, lock_key
from publish.ckan.partitions import (
    listed_partitions,
    partition_dataset_name,
    partitions_extra,
)


def test_partition_dataset_names_are_valid_deterministic_and_distinct():
    assert partition_dataset_name("opencity-311", "dt=2026-10-05") == "opencity-311--dt-2026-10-05"
    long = "x" * 95
    a = partition_dataset_name(long, "dt=2026-10-05")
    b = partition_dataset_name(long, "dt=2026-10-06")
    assert len(a) <= 100 and len(b) <= 100 and a != b
    assert a == partition_dataset_name(long, "dt=2026-10-05")


def test_partitions_extra_round_trips_sorted_without_duplicates():
    value = partitions_extra(["dt=2026-10-06", "dt=2026-10-05", "dt=2026-10-05"])
    assert value == '["dt=2026-10-05","dt=2026-10-06"]'
    pkg = {"extras": [{"key": "opencity_partitions", "value": value}]}
    assert listed_partitions(pkg) == ["dt=2026-10-05", "dt=2026-10-06"]
    assert listed_partitions({"extras": [{"key": "opencity_partitions", "value": "{"}]}) == []
    assert listed_partitions(None) == []


def test_lock_keys_differ_per_portal_and_dataset():
    assert lock_key("http://a", "d") == lock_key("http://a/", "d")
    assert len({lock_key("http://a", "d"), lock_key("http://b", "d"),
                lock_key("http://a", "e")}) == 3


def test_a_second_holder_waits_then_times_out_transiently(tmp_path):
    url = str(tmp_path / "state.sqlite")
    first, second = PublishLock(url), PublishLock(url, timeout_s=0.5)
    with first.hold("http://ckan", "ds"):
        t0 = time.monotonic()
        with pytest.raises(PublishError) as err, second.hold("http://ckan", "ds"):
            pass
        assert err.value.transient and "another publisher" in str(err.value)
        assert time.monotonic() - t0 >= 0.5
        with second.hold("http://ckan", "other-dataset"):  # other datasets are free
            pass
    with second.hold("http://ckan", "ds"):  # released
        pass
    assert oct((tmp_path / "locks").stat().st_mode & 0o777) == "0o700"


def test_holders_in_threads_take_turns(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    inside, overlap = [], []

    def work() -> None:
        with PublishLock(url, timeout_s=10).hold("http://ckan", "ds"):
            if inside:
                overlap.append(True)
            inside.append(1)
            time.sleep(0.2)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlap


def test_a_postgres_url_that_does_not_answer_is_a_transient_error_without_password():
    lock = PublishLock("postgresql://u:secret@127.0.0.1:1/x")
    with pytest.raises(PublishError) as err, lock.hold("http://ckan", "ds"):
        pass
    assert err.value.transient and "secret" not in str(err.value)
    assert "secret" not in repr(lock)


def _release(tmp_path, partition: str, history: int):
    from publish.base import DatasetRelease, Resource

    f = tmp_path / partition / "part-0.csv"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("a\n1\n")
    statements = {f"dt=2026-01-{d:02d}": {"params": {"k": 5}, "policy_hash": "0" * 64}
                  for d in range(1, history + 1)}
    return DatasetRelease(
        name="product", title="A product", description="d",
        resources=(Resource(f, "rows", "csv", "", partition),),
        privacy={"privacy_method": "k_anonymity", "k_anonymity_k": 5,
                 "partitions": statements},
        temporal_coverage=("2026-01-01", "2026-01-02"), accrual_periodicity="R/P1D")


def test_product_metadata_stays_the_same_size_whatever_the_partition_history(tmp_path):
    """The per-partition statements go to the partition datasets: the product's metadata
    has no per-partition key but its partition list."""
    from dataclasses import replace

    from publish.ckan import CkanPublisher
    from publish.ckan.publisher import _partition_release, _without_history

    pub = CkanPublisher("http://127.0.0.1:9", "token")
    sizes = []
    for n in (2, 30):
        release = _release(tmp_path, f"dt=2026-01-{n:02d}", n)
        product = replace(release, privacy=_without_history(release.privacy))
        wanted = pub._product_metadata(product, None, {f"dt=2026-01-{n:02d}"})
        keys = {e["key"] for e in wanted["extras"]}
        assert not [k for k in keys if k.startswith(("privacy ", "partitions"))], keys
        sizes.append(len(repr(wanted)))
        child = _partition_release(release, "product--x", f"dt=2026-01-{n:02d}",
                                   release.resources)
        assert list(child.privacy["partitions"]) == [f"dt=2026-01-{n:02d}"]
        assert child.temporal_coverage == release.temporal_coverage
    assert sizes[0] == sizes[1]
