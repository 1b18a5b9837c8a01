"""The embedded engine: contribution bounding and aggregation in DuckDB (the default)."""

from __future__ import annotations

import dataclasses
from typing import Any

import duckdb
import pyarrow as pa

from opencity.errors import ConfigError, DataQualityError
from privacy.dp.backends import MICRO, SEP, BoundingSpec

# Types whose ::VARCHAR text is one-to-one with the value (grouping either is the same).
_TEXT_EXACT = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                         "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "VARCHAR"})


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class DuckDBBackend:
    """Bounding in one DuckDB query (streaming, spills under the connection's memory limit)."""

    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection | None = None, *,
                 one_row_per_unit: bool = False) -> None:
        """``one_row_per_unit``: the data this backend bounds is declared to have at most
        one row per unit (sets :attr:`BoundingSpec.one_row_per_unit`: checked, never
        trusted)."""
        self.con = con
        self.one_row_per_unit = one_row_per_unit

    def accepts(self, data: Any) -> bool:
        return isinstance(data, (duckdb.DuckDBPyRelation, pa.Table))

    def relation(self, data: Any) -> duckdb.DuckDBPyRelation:
        if isinstance(data, duckdb.DuckDBPyRelation):
            return data
        if isinstance(data, pa.Table):
            return (self.con or duckdb.connect()).from_arrow(data)
        raise ConfigError(f"data must be a DuckDB relation or an Arrow table, got {type(data)}")

    def bounded_aggregate(self, data: Any, spec: BoundingSpec,
                          public_keys: pa.Table | None) -> pa.Table:
        rel = self.relation(data)
        missing = [c for c in spec.columns if c not in rel.columns]
        if missing:
            raise DataQualityError(
                f"input is missing column(s) {missing}; it has {list(rel.columns)}")
        if self.one_row_per_unit and not spec.one_row_per_unit:
            spec = dataclasses.replace(spec, one_row_per_unit=True)
        if spec.one_row_per_unit:
            # the hint is checked on the data in the same query; if it does not hold, the
            # aggregates of that query are dropped unread and the unit is bounded as usual
            table = self._run(rel, spec, public_keys, one_row=True)
            dup = table.column("_dup_units")
            if table.num_rows == 0 or dup[0].as_py() == 0:
                return table.drop_columns(["_dup_units"])
        return self._run(rel, spec, public_keys, one_row=False)

    def _run(self, rel: duckdb.DuckDBPyRelation, spec: BoundingSpec,
             public_keys: pa.Table | None, *, one_row: bool) -> pa.Table:
        by = list(spec.by)
        types = {c: str(t) for c, t in zip(rel.columns, rel.types, strict=True)}
        # Units are grouped in their own type when its text form is one-to-one (integers,
        # strings): the same groups as grouping the text, without turning every row's unit
        # into a string (the largest cost at 100M events). The text is only built for the
        # keyed hash, i.e. for the rows being sampled.
        ucast = "" if types[spec.unit].upper() in _TEXT_EXACT else "::VARCHAR"
        # ENUM keys (the mobility products' region ids) are grouped by their 1-2 byte code;
        # their text (hashed, returned) and their order are the value's. The public keys are
        # cast to the same ENUM so the semi join compares codes, not strings.
        enums = {k: types[k] for k in by if types[k].upper().startswith("ENUM(")}
        keys = ", ".join(_q(k) for k in by)
        keys_c = keys + ", " if by else ""
        # keyed SHA-256 of (seed, unit, key..., [value]): the same text in Spark (sha2)
        key_text = "".join(f", {_q(k)}::VARCHAR" for k in by)
        utext = "_u::VARCHAR" + key_text
        seed = _lit(str(int(spec.seed)))
        sep = _lit(SEP)
        not_null = " AND ".join(f"{_q(c)} IS NOT NULL" for c in spec.columns)
        lo, hi = spec.micro_bounds
        # values in integer micro-units, clamped inside [lower, upper]
        vexpr = (f"greatest({lo}, least({hi}, round({_q(spec.value)}::DOUBLE * {MICRO})))"
                 f"::BIGINT" if spec.value else "0::BIGINT")
        semi = ""
        if public_keys is not None and by:
            pk = ", ".join(f"TRY_CAST({_q(k)} AS {enums[k]}) AS {_q(k)}" if k in enums
                           else _q(k) for k in by)
            semi = f"SEMI JOIN (SELECT {pk} FROM _opencity_public_keys) USING ({keys})"
        m, l0 = spec.bounds.max_rows_per_partition, spec.bounds.max_partitions
        out_keys = ", ".join(f"{_q(k)}::VARCHAR AS {_q(k)}" if k in enums else _q(k)
                             for k in by)
        final = f"""
            SELECT {out_keys + ', ' if by else ''}count(*)::BIGINT AS n_units,
                   sum(_n)::BIGINT AS n_rows,
                   (sum(_s)::DOUBLE / {MICRO})::DOUBLE AS value_sum
            FROM picked {'GROUP BY ' + keys if by else ''}"""
        base = f"""base AS {'MATERIALIZED ' if one_row else ''}(
                SELECT {_q(spec.unit)}{ucast} AS _u, {keys_c}{vexpr} AS _v FROM src {semi}
                WHERE {not_null}
            )"""
        if one_row:
            # At most one row per unit (checked: _dup_units = 0): every unit has one key and
            # one row there, so L0 >= 1 and L-inf >= 1 keep it whole; the per-unit grouping
            # and sampling below would return exactly these rows.
            s_expr = "_v::HUGEINT" if spec.statistic in ("sum", "mean") else "0::HUGEINT"
            sql = f"""
                WITH {base},
                picked AS (SELECT _u, {keys_c}1::BIGINT AS _n, {s_expr} AS _s FROM base),
                result AS ({final})
                SELECT *, (SELECT count(*) - count(DISTINCT _u) FROM base) AS _dup_units
                FROM result
            """
            return self._query(rel, sql, public_keys, by)
        # per_unit is materialized (read by the L0 check and the pick): only the columns
        # that vary are stored; constant _n / _s are added when picking.
        if spec.statistic == "count_distinct":
            per_unit = f"SELECT _u{', ' + keys if by else ''} FROM base GROUP BY ALL"
            consts = ", 1 AS _n, 0::HUGEINT AS _s"
        elif spec.statistic == "count":
            per_unit = (f"SELECT _u, {keys_c}least(count(*), {m}) AS _n "
                        "FROM base GROUP BY ALL")
            consts = ", 0::HUGEINT AS _s"
        else:
            consts = ""
            per_unit = f"""
                SELECT _u, {keys_c}count(*) AS _n, sum(_v)::HUGEINT AS _s FROM (
                    SELECT *, row_number() OVER (
                        PARTITION BY _u{', ' + keys if by else ''}
                        ORDER BY sha256(concat_ws({sep}, {seed}, {utext}, _v::VARCHAR)), _v
                    ) AS _rn
                    FROM base) WHERE _rn <= {m}
                GROUP BY ALL"""
        sql = f"""
            WITH {base},
            per_unit AS MATERIALIZED ({per_unit}),
            -- L0: units over the limit keep the keys with the smallest keyed hash; the sort
            -- only runs on those units (typically few), the others pass through untouched.
            heavy AS (SELECT _u FROM per_unit GROUP BY _u HAVING count(*) > {l0}),
            picked AS (
                SELECT *{consts} FROM per_unit ANTI JOIN heavy USING (_u)
                UNION ALL
                SELECT * EXCLUDE (_pn){consts} FROM (
                    SELECT *, row_number() OVER (
                        PARTITION BY _u
                        ORDER BY sha256(concat_ws({sep}, {seed}, {utext})){', ' + keys if by else ''}
                    ) AS _pn FROM (SELECT * FROM per_unit SEMI JOIN heavy USING (_u)))
                WHERE _pn <= {l0}
            )
            {final}
        """
        return self._query(rel, sql, public_keys, by)

    @staticmethod
    def _query(rel: duckdb.DuckDBPyRelation, sql: str, public_keys: pa.Table | None,
               by: list[str]) -> pa.Table:
        _opencity_public_keys = public_keys.select(by) if public_keys is not None else None
        try:
            # The query sees _opencity_public_keys through DuckDB's replacement scan.
            return rel.query("src", sql).to_arrow_table()
        except duckdb.Error as err:
            raise DataQualityError(f"contribution bounding failed in DuckDB: {err}") from err
