"""The leanest DuckDB script for the four mobility aggregates (no privacy): the baseline.

What a DuckDB user would write: one pass joining the day's events to the towers into a
table, then four GROUP BYs written to Parquet (subscribers per region-hour, OD moves via
lag(), modal night-time home region, radius-of-gyration histogram).

Usage: python bench/lean_mobility.py CDR_DIR TOWERS.csv YYYY-MM-DD OUT_DIR
"""

import os
import sys

import duckdb

cdr, towers, day, out = sys.argv[1:5]
os.makedirs(out, exist_ok=True)
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
if os.environ.get("OPENCITY_DUCKDB_MEMORY_LIMIT"):
    con.execute(f"SET memory_limit = '{os.environ['OPENCITY_DUCKDB_MEMORY_LIMIT']}'")
src = os.path.join(cdr, "*.parquet") if os.path.isdir(cdr) else cdr
con.execute(f"""
    CREATE TEMP TABLE ev AS
    SELECT c.subscriber_id AS unit, c.event_time, hour(c.event_time) AS hour, t.region_id,
           t.lat, t.lon
    FROM read_parquet('{src}') c JOIN read_csv('{towers}') t USING (cell_id)
    WHERE c.event_time >= TIMESTAMPTZ '{day} 00:00:00+00'
      AND c.event_time < TIMESTAMPTZ '{day} 00:00:00+00' + INTERVAL 1 DAY
""")
queries = {
    "hourly_presence": "SELECT region_id, hour, count(DISTINCT unit) AS n FROM ev GROUP BY ALL",
    "od_matrix": """
        SELECT origin, destination, count(DISTINCT unit) AS n FROM (
            SELECT unit, region_id AS destination,
                   lag(region_id) OVER (PARTITION BY unit ORDER BY event_time) AS origin
            FROM ev) WHERE origin <> destination GROUP BY ALL""",
    "home_region": """
        SELECT region_id, count(*) AS n FROM (
            SELECT unit, arg_max(region_id, n) AS region_id FROM (
                SELECT unit, region_id, count(*) AS n FROM ev
                WHERE hour IN (22, 23, 0, 1, 2, 3, 4, 5) GROUP BY ALL) GROUP BY unit)
        GROUP BY ALL""",
    "gyration": """
        SELECT floor(rg) AS bin, count(*) AS n FROM (
            SELECT unit, sqrt(110.574 ^ 2 * var_pop(lat)
                              + (111.32 * cos(radians(avg(lat)))) ^ 2 * var_pop(lon)) AS rg
            FROM ev GROUP BY unit) GROUP BY ALL""",
}
for name, sql in queries.items():
    con.execute(f"COPY ({sql}) TO '{os.path.join(out, name + '.parquet')}' (FORMAT parquet)")
print("ok")
