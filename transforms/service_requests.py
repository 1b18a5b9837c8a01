"""311 service-request aggregates (pure functions: Arrow tables in, Arrow table out)."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa

from transforms.schemas import SERVICE_REQUEST_TYPES


def weekly_requests(
    clean: pa.Table,
    districts: pa.Table,
    week_start: datetime,
    request_types: tuple[str, ...] = SERVICE_REQUEST_TYPES,
) -> pa.Table:
    """Requests per district x request type for the week starting ``week_start``.

    Rows come from the public key set districts x request types (every cell is present, zero
    included), never from keys found only in the data. Requests whose district or type is
    outside the key set are counted in ``unmatched`` metadata by the caller, not published.

    Returns columns: week_start (date), district_id, request_type, requests (int64),
    requesters (distinct requester pseudonyms; the request count where no pseudonym exists),
    median_resolution_hours (double, closed requests only).
    """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("clean", clean)
        con.register("districts", districts)
        con.register("types", pa.table({"request_type": list(request_types)}))
        return con.sql(
            """
            WITH keys AS (
                SELECT CAST(d.district_id AS VARCHAR) AS district_id, t.request_type
                FROM districts d CROSS JOIN types t
            ), agg AS (
                SELECT district_id, request_type, count(*) AS requests,
                       count(DISTINCT coalesce(requester_pid, request_id)) AS requesters,
                       median(date_diff('second', created_at, closed_at) / 3600.0)
                           AS median_resolution_hours
                FROM clean GROUP BY ALL
            )
            SELECT CAST($week AS DATE) AS week_start, k.district_id, k.request_type,
                   coalesce(a.requests, 0)::BIGINT AS requests,
                   coalesce(a.requesters, 0)::BIGINT AS requesters,
                   a.median_resolution_hours
            FROM keys k LEFT JOIN agg a USING (district_id, request_type)
            ORDER BY k.district_id, k.request_type
            """,
            params={"week": week_start},
        ).to_arrow_table()
    finally:
        con.close()
