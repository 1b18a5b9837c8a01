"""opencity.airflow_listeners.refusal: which runs fail as they start, and the message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opencity.airflow_listeners import refusal

START = datetime(2026, 10, 5, tzinfo=UTC)
NOW = datetime(2026, 12, 6, 16, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.mark.parametrize(("start", "end", "tasks", "why"), [
    (START - DAY, START, 3, "starts before the DAG's start date 2026-10-05"),
    (START - 7 * DAY, START - 6 * DAY, 0, "starts before the DAG's start date"),
    (datetime(2026, 12, 6, tzinfo=UTC), datetime(2026, 12, 7, tzinfo=UTC), 3, "not over yet"),
    (datetime(2026, 12, 8, tzinfo=UTC), datetime(2026, 12, 9, tzinfo=UTC), 3, "not over yet"),
    (START, START + DAY, 0, "no task to execute"),
    (None, None, 0, "no task to execute"),
])
def test_runs_that_cannot_produce_a_partition_are_refused(start, end, tasks, why):
    reason = refusal(start, end, START, NOW, tasks)
    assert reason is not None and why in reason
    assert reason.startswith("refused: ")


@pytest.mark.parametrize(("start", "end"), [
    (START, START + DAY),                                  # the first interval
    (NOW.replace(hour=0) - DAY, NOW.replace(hour=0)),      # yesterday, just over
    (NOW - DAY, NOW),                                      # ends exactly now
])
def test_finished_intervals_from_the_start_date_on_may_run(start, end):
    assert refusal(start, end, START, NOW, 5) is None


def test_a_run_without_interval_but_with_tasks_may_run():
    assert refusal(None, None, START, NOW, 2) is None
