"""Relational store: SQLAlchemy Core over SQLite (embedded default) or PostgreSQL.

Rules:

* Exactly-once: sales and other events are unique on (device, seq); inserts use
  ``ON CONFLICT DO NOTHING ... RETURNING`` so a redelivered message is counted as a
  duplicate and changes nothing.
* One transaction per ingest batch; the ingest acknowledges the broker only after it
  commits (see ``ingest``).
* Invalid messages are kept in ``dead_letters`` with the reason, never dropped.
* Mass in integer mg, money in integer fen, time in integer UTC ms (BigInteger).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite

from gateway_server.tables import dead_letters, events, metadata, sales, scales

DEAD_LETTER_KEEP_BYTES = 64 * 1024  # an oversized payload is kept truncated, its size recorded


def make_engine(url: str) -> Engine:
    """Engine for ``url``; SQLite gets WAL and a busy timeout for concurrent readers."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _rec: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return create_engine(url, pool_pre_ping=True)


def _insert(engine: Engine, table: Table) -> Any:
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class Store:
    """All database access of the gateway."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(make_engine(url))

    def create_all(self) -> None:
        metadata.create_all(self.engine)

    # -- ingest writes (one transaction per batch) ------------------------------------

    def write_batch(
        self,
        *,
        births: Sequence[dict[str, Any]] = (),
        states: Sequence[dict[str, Any]] = (),
        sale_rows: Sequence[dict[str, Any]] = (),
        event_rows: Sequence[dict[str, Any]] = (),
        dead: Sequence[dict[str, Any]] = (),
        seen: dict[str, int] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Store one ingest batch atomically; return (new sales, new other events)."""
        new_sales: list[dict[str, Any]] = []
        new_events = 0
        with self.engine.begin() as conn:
            for b in births:
                ins = _insert(self.engine, scales).values(**b)
                conn.execute(ins.on_conflict_do_update(
                    index_elements=["device"], set_={k: ins.excluded[k] for k in b if k != "device"}
                ))
            for s in states:
                ins = _insert(self.engine, scales).values(**s)
                conn.execute(ins.on_conflict_do_update(
                    index_elements=["device"],
                    set_={"state": ins.excluded.state, "state_ms": ins.excluded.state_ms},
                ))
            if sale_rows:
                stmt = (
                    _insert(self.engine, sales)
                    .on_conflict_do_nothing(index_elements=["device", "seq"])
                    .returning(sales.c.device, sales.c.seq)
                )
                got = {(r.device, r.seq) for r in conn.execute(stmt, list(sale_rows))}
                new_sales = [r for r in sale_rows if (r["device"], r["seq"]) in got]
            if event_rows:
                stmt = (
                    _insert(self.engine, events)
                    .on_conflict_do_nothing(index_elements=["device", "seq"])
                    .returning(events.c.id)
                )
                new_events = len(conn.execute(stmt, list(event_rows)).all())
            if dead:
                conn.execute(dead_letters.insert(), list(dead))
            for device, ts in (seen or {}).items():
                conn.execute(
                    scales.update().where(scales.c.device == device).values(last_seen_ms=ts)
                )
        return new_sales, new_events

    # -- queries ----------------------------------------------------------------------

    def list_scales(self, market: str | None = None) -> list[dict[str, Any]]:
        q = select(scales).order_by(scales.c.market, scales.c.device)
        if market:
            q = q.where(scales.c.market == market)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def list_sales(
        self, *, market: str | None = None, device: str | None = None,
        merchant_id: int | None = None, since_ms: int | None = None, until_ms: int | None = None,
        limit: int = 100, offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        conds = []
        if market:
            conds.append(sales.c.market == market)
        if device:
            conds.append(sales.c.device == device)
        if merchant_id is not None:
            conds.append(sales.c.merchant_id == merchant_id)
        if since_ms is not None:
            conds.append(sales.c.ts_ms >= since_ms)
        if until_ms is not None:
            conds.append(sales.c.ts_ms < until_ms)
        q = select(sales).where(*conds).order_by(sales.c.ts_ms.desc(), sales.c.id.desc())
        with self.engine.connect() as conn:
            count = select(func.count()).select_from(sales).where(*conds)
            total = conn.execute(count).scalar_one()
            rows = conn.execute(q.limit(limit).offset(offset))
            return [dict(r._mapping) for r in rows], int(total)

    def list_dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        q = select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def count(self, table: Table) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(1)).scalar_one() == 1
