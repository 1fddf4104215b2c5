"""Bulk writes of the ingest pipeline whose statement text does not depend on the row count.

Why (issue 17, measured): SQLAlchemy sends an ``INSERT … RETURNING`` of many rows as a
multi-row ``VALUES`` list, so the statement text differs with every batch size and
PostgreSQL parses and plans it again on every call (psycopg prepares only statements it
has seen ``prepare_threshold`` times, and these it never sees twice): 56 % of the writer
thread. One ``INSERT … SELECT … FROM unnest(array, array, …)`` per table has one text for
every batch, which psycopg prepares once per connection; the rows travel as one array
parameter per column. The same for the per-device marks of ``scales``: one ``UPDATE … FROM
unnest(…)`` per batch on PostgreSQL instead of one ``UPDATE`` per device (38 % of the
gateway's CPU under mixed load), one ``executemany`` of a single prepared statement on
SQLite. Reads too: :func:`any_of` is ``column IN (…)`` as ``column = ANY(array)`` on
PostgreSQL, one statement text whatever the count (measured: 3x faster for 20 to 1,000
values, as SQLAlchemy's expanding ``IN`` renders one parameter per value, a new text for
each count, parsed and planned again every time).

Rules: every row of one call has the same keys; values are what the column's type takes
(integers for legal quantities, never floats); ``None`` is NULL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Integer,
    String,
    Table,
    any_,
    bindparam,
    cast,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import NullType

from gateway_server.store.partitions import exactly_once_gate

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]  # unannotated in SQLAlchemy


def dialect_insert(conn: Any, table: Table) -> Any:
    """``INSERT`` for the connection's dialect, so ``on_conflict_do_*`` is available on
    both SQLite and PostgreSQL."""
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)


@lru_cache(maxsize=256)
def _pg_type(table: Table, column: str) -> str:
    """The PostgreSQL array type of a column: ``BIGINT[]``, ``VARCHAR(64)[]`` …"""
    return f"{table.c[column].type.compile(dialect=_PG)}[]"


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(values: list[Any], sqltype: Any) -> str | list[Any]:
    """One column as a PostgreSQL array literal (``{1,2,NULL}``, ``{"a","b"}``), which the
    server parses in C; else the list itself, for psycopg to adapt.

    Why (issue 17, profiled): psycopg adapts a list parameter element by element in Python,
    with a regular-expression search per string: a quarter of the PostgreSQL sales path.
    Integers, booleans and text are written here with ``str`` / ``join`` / ``replace``;
    anything else (or a value of an unexpected type) goes the adapted way.
    """
    kinds = set(map(type, values))
    if isinstance(sqltype, Boolean) and kinds <= {bool, type(None)}:
        return "{" + ",".join("NULL" if v is None else "t" if v else "f" for v in values) + "}"
    if isinstance(sqltype, Integer) and kinds <= {int, type(None)}:
        if type(None) not in kinds:
            return "{" + ",".join(map(str, values)) + "}"
        return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"
    if isinstance(sqltype, String) and kinds <= {str, type(None)}:
        # String, Text, VARCHAR(n): every element quoted, so "NULL" is a string, not NULL
        if type(None) not in kinds:
            joined = '","'.join(values)
            if "\\" not in joined and joined.count('"') == 2 * (len(values) - 1):
                return '{"' + joined + '"}'  # no element holds a quote or a backslash
        return "{" + ",".join("NULL" if v is None else _quote(v) for v in values) + "}"
    return values


def any_of(conn: Connection, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN values`` with a statement text that does not depend on the count: on
    PostgreSQL ``column = ANY(CAST(:p AS T[]))``, the values in one array literal
    (:func:`_literal`), so psycopg prepares the statement once per connection; elsewhere
    SQLAlchemy's ``IN``. An empty ``values`` matches nothing."""
    vals = list(values)
    if conn.dialect.name != "postgresql":
        return column.in_(vals)  # type: ignore[no-any-return]
    # the parameter goes untyped (no ``::VARCHAR`` bind cast: NullType), so PostgreSQL
    # gives it the array type itself and parses it once; with a cast from VARCHAR the
    # conversion is redone for every row a sequential scan filters (measured: 154 ms
    # against 1.4 ms for 200 trace codes over 3,000 re-weighs)
    element = String() if isinstance(column.type, String) else column.type
    param = bindparam(None, _literal(vals, column.type), type_=NullType())
    return column == any_(cast(param, postgresql.ARRAY(element)))  # type: ignore[no-any-return]


def newest_in_ranges(conn: Connection, table: Table, cols: Sequence[str], *, key: str,
                     ts: str, tie: str, wants: Sequence[tuple[Any, int, int, int]]
                     ) -> dict[Any, list[Any]]:
    """For each ``(value, lo, hi, limit)`` of ``wants``: the ``limit`` newest rows (by
    ``ts``, then ``tie``) with ``key = value`` and ``lo <= ts <= hi``, returned oldest
    first under ``value``; each row has ``cols``.

    One statement on PostgreSQL (a ``LATERAL`` subquery per key over ``unnest`` of the
    wants: one index range scan each, one round trip), one per want elsewhere.
    """
    out: dict[Any, list[Any]] = {w[0]: [] for w in wants}
    if not wants:
        return out
    if conn.dialect.name == "postgresql":
        names = ", ".join(f"r.{c}" for c in cols)
        src, params = _unnest([(_pg_type(table, key), table.c[key].type, [w[0] for w in wants]),
                               (_pg_type(table, ts), table.c[ts].type, [w[1] for w in wants]),
                               (_pg_type(table, ts), table.c[ts].type, [w[2] for w in wants]),
                               ("INTEGER[]", Integer(), [w[3] for w in wants])])
        rows = conn.execute(text(
            f"SELECT w.k AS want_key, {names} FROM {src} AS w(k, lo, hi, n) "
            f"CROSS JOIN LATERAL (SELECT {', '.join(cols)} FROM {table.name} "
            f"WHERE {key} = w.k AND {ts} >= w.lo AND {ts} <= w.hi "
            f"ORDER BY {ts} DESC, {tie} DESC LIMIT w.n) AS r"), params)
        for r in rows:
            out[r.want_key].append(r)
    else:
        for value, lo, hi, n in wants:
            out[value] = list(conn.execute(
                select(*(table.c[c] for c in cols))
                .where(table.c[key] == value, table.c[ts] >= lo, table.c[ts] <= hi)
                .order_by(table.c[ts].desc(), table.c[tie].desc()).limit(n)))
    for got in out.values():
        got.reverse()  # oldest first
    return out


def _unnest(columns: Sequence[tuple[str, Any, list[Any]]]) -> tuple[str, dict[str, Any]]:
    """``unnest(CAST(:a0 AS T0[]), …)`` and its parameters, one array literal per column
    (array type, column type, values)."""
    params = {f"a{i}": _literal(values, sqltype) for i, (_, sqltype, values) in enumerate(columns)}
    args = ", ".join(f"CAST(:a{i} AS {array_type})" for i, (array_type, _, _) in enumerate(columns))
    return f"unnest({args})", params


def _arrays(table: Table, cols: Sequence[str], rows: Sequence[dict[str, Any]]) -> tuple[
        str, dict[str, Any]]:
    """:func:`_unnest` of ``rows``, one array per column of ``table``."""
    return _unnest([(_pg_type(table, c), table.c[c].type, [r[c] for r in rows]) for c in cols])


def pg_insert_unnest(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *,
                     conflict: Sequence[str], returning: Sequence[str] = (),
                     set_sql: str | None = None) -> list[Any]:
    """``INSERT INTO table (cols) SELECT * FROM unnest(…) ON CONFLICT (conflict) DO …``.

    ``set_sql``: the ``DO UPDATE SET`` clause (``excluded.`` names the new row); without
    it ``DO NOTHING``. Returns the ``returning`` rows (PostgreSQL only).
    """
    if not rows:
        return []
    stmt, params = _insert_unnest_statement(table, rows, conflict=conflict,
                                            returning=returning, set_sql=set_sql)
    if returning:
        return run_all(conn, stmt, params)
    conn.execute(stmt, params)
    return []


def _insert_unnest_statement(table: Table, rows: Sequence[dict[str, Any]], *,
                             conflict: Sequence[str], returning: Sequence[str] = (),
                             set_sql: str | None = None) -> tuple[TextClause, dict[str, Any]]:
    """The statement of :func:`pg_insert_unnest` and its parameters."""
    cols = list(rows[0])
    src, params = _arrays(table, cols, rows)
    action = f"DO UPDATE SET {set_sql}" if set_sql else "DO NOTHING"
    sql = (f"INSERT INTO {table.name} ({', '.join(cols)}) SELECT * FROM {src} "
           f"ON CONFLICT ({', '.join(conflict)}) {action}")
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    return text(sql), params


def insert_once(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *,
                returning: Sequence[str]) -> list[Any]:
    """Insert the rows whose ``(device, seq)`` is new; the ``returning`` columns of those.

    The ingest's exactly-once write of ``sales`` and ``events`` on every schema: a
    redelivered row (a key stored before, or twice in ``rows``) is not stored again.

    - PostgreSQL: :func:`insert_once_statement`, run;
    - SQLite: a multi-row ``INSERT … ON CONFLICT DO NOTHING RETURNING``.
    """
    if not rows:
        return []
    if conn.dialect.name != "postgresql":
        stmt = (sqlite.insert(table).on_conflict_do_nothing(index_elements=["device", "seq"])
                .returning(*(table.c[c] for c in returning)))
        return list(conn.execute(stmt, list(rows)).all())
    return run_all(conn, *insert_once_statement(
        table, rows, returning=returning, gate=exactly_once_gate(conn, table.name)))


def insert_once_statement(table: Table, rows: Sequence[dict[str, Any]], *,
                          returning: Sequence[str], gate: str | None
                          ) -> tuple[TextClause, dict[str, Any]]:
    """:func:`insert_once` on PostgreSQL as a statement and its parameters; ``gate`` is
    the table's key table (:func:`exactly_once_gate`). Built without the connection, so
    the rows of a chunk can be prepared while the previous chunk's statement runs on it
    (``gateway_server.store.overlap``).

    - partitioned (migration 0007): the keys go into the table's key table ``ON CONFLICT
      DO NOTHING``, and only the rows whose key it took into the table, one statement
      (``gateway_server.store.partitions``);
    - not partitioned: ``INSERT … SELECT FROM unnest … ON CONFLICT (device, seq) DO NOTHING``.
    """
    once: dict[tuple[Any, Any], dict[str, Any]] = {}
    for r in rows:  # a key twice in the batch: the first (the database need not sort)
        once.setdefault((r["device"], r["seq"]), r)
    if gate is None:
        return _insert_unnest_statement(table, list(once.values()), conflict=("device", "seq"),
                                        returning=returning)
    cols = list(rows[0])
    src, params = _arrays(table, cols, list(once.values()))
    names = ", ".join(cols)
    sql = (f"WITH src AS (SELECT * FROM {src} AS s({names})), "
           f"fresh AS (INSERT INTO {gate} (device, seq, ts_ms) SELECT device, seq, ts_ms "
           f"FROM src ON CONFLICT DO NOTHING RETURNING device, seq) "
           f"INSERT INTO {table.name} ({names}) SELECT src.* FROM src JOIN fresh "
           f"USING (device, seq) RETURNING {', '.join(returning)}")
    return text(sql), params


def run_all(conn: Connection, stmt: TextClause, params: dict[str, Any]) -> list[Any]:
    """Every row ``stmt`` returns, fetched at once: iterating the result fetches row by
    row (psycopg's fetchone per row was 10 % of the writer's busy time on a 10,000-sale
    batch)."""
    return list(conn.execute(stmt, params).all())


def update_by_key(conn: Connection, table: Table, key: str,
                  changes: dict[Any, dict[str, Any]]) -> None:
    """Set, for every key value in ``changes``, the columns given for it (and only those).

    Rows that change the same set of columns share one statement: on PostgreSQL an
    ``UPDATE … FROM unnest(…)``, elsewhere one ``executemany`` of a prepared ``UPDATE``.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for k, values in changes.items():
        if values:
            groups[tuple(sorted(values))].append({key: k, **values})
    for cols, rows in groups.items():
        if conn.dialect.name == "postgresql":
            src, params = _arrays(table, [key, *cols], rows)
            sets = ", ".join(f"{c} = v.{c}" for c in cols)
            conn.execute(text(
                f"UPDATE {table.name} AS t SET {sets} FROM {src} AS v({key}, {', '.join(cols)}) "
                f"WHERE t.{key} = v.{key}"), params)
        else:
            stmt = (update(table).where(table.c[key] == bindparam(f"k_{key}"))
                    .values({c: bindparam(f"v_{c}") for c in cols}))
            conn.execute(stmt, [{f"k_{key}": r[key], **{f"v_{c}": r[c] for c in cols}}
                                for r in rows])


__all__ = ["any_of", "insert_once", "insert_once_statement", "newest_in_ranges",
           "pg_insert_unnest", "run_all", "update_by_key"]
