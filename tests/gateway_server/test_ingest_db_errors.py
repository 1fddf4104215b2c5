"""Which database errors the ingest treats as caused by the data (split the batch, dead-
letter the message) and which as the database being away (wait, retry): decided from
the driver's error — PostgreSQL's SQLSTATE, SQLite's result code, the DB-API class —
never from the message text. Every error here is provoked on a real database."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError

from gateway_server.ingest.writer import _is_data_error
from gateway_server.store.database import Store


def _raised(engine: Engine, *steps: tuple[str, dict[str, Any]]) -> DBAPIError:
    with pytest.raises(DBAPIError) as info, engine.begin() as c:
        for sql, params in steps:
            c.execute(text(sql), params)
    return info.value


def _sql(sql: str, **params: Any) -> tuple[str, dict[str, Any]]:
    return sql, params


# -- SQLite --------------------------------------------------------------------------------

@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path}/e.db", connect_args={"timeout": 0})
    event.listen(engine, "connect", lambda dbapi, _: dbapi.setlimit(
        sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, _MAX_VARIABLES))
    with engine.begin() as c:
        c.execute(text("CREATE TABLE t (x INTEGER PRIMARY KEY, y INTEGER NOT NULL)"))
    yield engine
    engine.dispose()


#: SQLite's limit before 3.32 (Debian's build allows 250,000: slow to exceed in a test)
_MAX_VARIABLES = 999


def _in_list(n: int) -> tuple[str, dict[str, Any]]:
    return (f"SELECT 1 WHERE 1 IN ({', '.join(f':p{i}' for i in range(n))})",
            {f"p{i}": i for i in range(n)})


SQLITE_DATA: dict[str, Callable[[], list[tuple[str, dict[str, Any]]]]] = {
    "too many SQL variables": lambda: [_in_list(_MAX_VARIABLES + 1)],
    "expression tree too large": lambda: [
        _sql("SELECT 1 FROM t WHERE " + " OR ".join(["x = 0"] * 1500))],
    "syntax error": lambda: [_sql("SELEC 1")],
    "no such table": lambda: [_sql("SELECT * FROM nowhere")],
    "no such column": lambda: [_sql("SELECT nothing FROM t")],
    "string or blob too big": lambda: [_sql("SELECT zeroblob(2000000000)")],
    "unique constraint": lambda: [_sql("INSERT INTO t VALUES (1, 1)"),
                                  _sql("INSERT INTO t VALUES (1, 2)")],
    "not null constraint": lambda: [_sql("INSERT INTO t VALUES (2, NULL)")],
    "parameter it cannot bind": lambda: [_sql("SELECT :v", v={"a": 1})],
}


@pytest.mark.parametrize("case", sorted(SQLITE_DATA))
def test_sqlite_refusals_of_the_request_are_data_errors(lite: Engine, case: str) -> None:
    err = _raised(lite, *SQLITE_DATA[case]())
    assert _is_data_error(err), (case, err.orig)


def test_sqlite_locked_database_is_not_a_data_error(lite: Engine) -> None:
    holder = lite.raw_connection()
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock; the engine's timeout is 0
        err = _raised(lite, _sql("INSERT INTO t VALUES (3, 3)"))
    finally:
        holder.rollback()
        holder.close()
    assert isinstance(err.orig, sqlite3.OperationalError)
    assert err.orig.sqlite_errorcode == sqlite3.SQLITE_BUSY
    assert not _is_data_error(err)


def test_sqlite_unreachable_or_read_only_file_is_not_a_data_error(tmp_path: Path,
                                                                  lite: Engine) -> None:
    away = create_engine(f"sqlite:///{tmp_path}/no/such/dir/e.db")
    err = _raised(away, _sql("SELECT 1"))
    away.dispose()
    assert err.orig.sqlite_errorcode == sqlite3.SQLITE_CANTOPEN
    assert not _is_data_error(err)
    ro = create_engine(f"sqlite:///file:{tmp_path}/e.db?mode=ro&uri=true")
    err = _raised(ro, _sql("INSERT INTO t VALUES (4, 4)"))
    ro.dispose()
    assert err.orig.sqlite_errorcode & 0xFF == sqlite3.SQLITE_READONLY
    assert not _is_data_error(err)


# -- PostgreSQL ----------------------------------------------------------------------------

@pytest.fixture
def pg(pg_url: str) -> Iterator[Engine]:
    engine = Store.from_url(pg_url).engine
    yield engine
    engine.dispose()


PG_DATA: dict[str, Callable[[], list[tuple[str, dict[str, Any]]]]] = {
    "22012 division by zero": lambda: [_sql("SELECT 1 / 0")],
    "22003 numeric out of range": lambda: [_sql("SELECT CAST(:v AS integer)", v=2**40)],
    "22P02 invalid text representation": lambda: [_sql("SELECT CAST('x' AS integer)")],
    "23505 unique violation": lambda: [
        _sql("CREATE TEMP TABLE u (x integer PRIMARY KEY)"),
        _sql("INSERT INTO u VALUES (1), (1)")],
    "42P01 undefined table": lambda: [_sql("SELECT * FROM nowhere")],
    "42601 syntax error": lambda: [_sql("SELEC 1")],
    "54023 too many arguments": lambda: [_sql("SELECT concat(" + ", ".join(["1"] * 101) + ")")],
    "NUL in a text (refused by psycopg, no SQLSTATE)": lambda: [_sql("SELECT CAST(:v AS text)",
                                                                     v="a\x00b")],
}


@pytest.mark.parametrize("case", sorted(PG_DATA))
def test_postgresql_refusals_of_the_request_are_data_errors(pg: Engine, case: str) -> None:
    err = _raised(pg, *PG_DATA[case]())
    code = case.split()[0]
    if code[:2].isdigit():
        assert err.orig.sqlstate == code  # type: ignore[union-attr]
    assert _is_data_error(err), (case, err.orig)


def test_postgresql_timeouts_and_locks_are_not_data_errors(pg: Engine) -> None:
    err = _raised(pg, _sql("SET LOCAL statement_timeout = '20ms'"), _sql("SELECT pg_sleep(2)"))
    assert err.orig.sqlstate == "57014"  # type: ignore[union-attr]
    assert not _is_data_error(err)
    with pg.connect() as holder:
        holder.execute(text("CREATE TABLE IF NOT EXISTS locked_t (x integer)"))
        holder.commit()
        holder.execute(text("LOCK TABLE locked_t IN ACCESS EXCLUSIVE MODE"))
        err = _raised(pg, _sql("SET LOCAL lock_timeout = '20ms'"),
                      _sql("SELECT * FROM locked_t"))
        holder.rollback()
    assert err.orig.sqlstate == "55P03"  # type: ignore[union-attr]
    assert not _is_data_error(err)


def test_postgresql_terminated_or_refused_connection_is_not_a_data_error(pg: Engine) -> None:
    with pg.connect() as victim:
        pid = victim.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with pg.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            admin.commit()
        with pytest.raises(DBAPIError) as info:
            victim.execute(text("SELECT 1"))
    assert not _is_data_error(info.value)
    refused = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test")
    err = _raised(refused, _sql("SELECT 1"))
    refused.dispose()
    assert not _is_data_error(err)


def test_postgresql_too_many_connections_is_not_a_data_error(pg: Engine) -> None:
    """The server is full (53300). Its message says "too many", which the old search of the
    message text took for a data error (and dead-lettered good messages)."""
    role = f"gw_full_{secrets.token_hex(4)}"
    with pg.connect() as admin:
        admin.execute(text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0'))
        admin.commit()
    try:
        full = create_engine(pg.url.set(username=role))
        err = _raised(full, _sql("SELECT 1"))
        full.dispose()
        # refused while connecting: psycopg reports no SQLSTATE then (53300 on the wire)
        assert "too many connections" in str(err.orig)
        assert not _is_data_error(err)
    finally:
        with pg.connect() as admin:
            admin.execute(text(f'DROP ROLE "{role}"'))
            admin.commit()
