"""CDR mobility: ingest the day's CDR (pseudonymized) -> DP mobility products -> publish.

Runs once per daily data interval (00:00 UTC to the next 00:00). Budget per subscriber per
day from the stored release policy (privacy/policy.yaml); the params epsilon/delta may only
tighten it. The ledger is the portal's state DB (OPENCITY_STATE_URL), so a retry or rerun of a
day returns the recorded release, whatever run_dir says.
Task bodies live in privacy.mobility.pipeline and are imported inside the tasks.

Params (or OPENCITY_* environment variables): run_dir, raw_dir, publish_target, ckan_url,
epsilon (default 1.0), delta (default 1e-7).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from opencity.airflow_context import SETTINGS_PARAMS, data_interval, run_settings

PRODUCT = Asset("opencity://outputs/opencity-cdr-mobility-daily")



@dag(
    dag_id="cdr_mobility",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 10, 5, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={**SETTINGS_PARAMS, "epsilon": 1.0, "delta": 1e-7},
    tags=["opencity", "cdr", "differential-privacy"],
    doc_md=__doc__,
)
def cdr_mobility():
    @task
    def ingest() -> dict:
        from privacy.mobility import pipeline

        start, end = data_interval()
        return pipeline.ingest(run_settings(), start, end)

    @task
    def release(ingested: dict) -> dict:
        from privacy.mobility import pipeline

        params = get_current_context()["params"]
        return pipeline.release(run_settings(), ingested, data_interval()[0], float(params["epsilon"]),
                                float(params["delta"]))

    @task(outlets=[PRODUCT])
    def publish(released: dict) -> dict:
        from privacy.mobility import pipeline

        start, end = data_interval()
        return pipeline.publish(run_settings(), released, start, end,
                                get_current_context()["run_id"])

    publish(release(ingest()))


cdr_mobility()
