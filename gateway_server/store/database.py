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

from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, func, select

from gateway_server.store import (
    tables_trust,  # noqa: F401 - registers its tables on metadata
    tables_workflow,  # noqa: F401 - registers its tables on metadata
)
from gateway_server.store.tables import dead_letters, findings, metadata, quarantine, sales, scales


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


class Store:
    """All database access of the gateway."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(make_engine(url))

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (``gateway_server/store/migrations``).

        A database created by :meth:`create_all` before migrations existed (tables, no
        ``alembic_version``) is stamped as current instead of re-created.
        """
        from pathlib import Path

        from alembic import command
        from alembic.config import Config
        from sqlalchemy import inspect

        cfg = Config(str(Path(__file__).with_name("migrations") / "alembic.ini"))
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # workers starting together migrate once
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(72430001)")
            cfg.attributes["connection"] = conn
            names = set(inspect(conn).get_table_names())
            if "alembic_version" not in names and "sales" in names:
                command.stamp(cfg, "head")
            else:
                command.upgrade(cfg, "head")

    def create_all(self) -> None:
        metadata.create_all(self.engine)

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

    def list_quarantine(self, limit: int = 100) -> list[dict[str, Any]]:
        q = select(quarantine).order_by(quarantine.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def list_findings(
        self, *, market: str | None = None, device: str | None = None,
        kind: str | None = None, status: str | None = None, limit: int = 100, offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        conds = []
        for col, val in ((findings.c.market, market), (findings.c.device, device),
                         (findings.c.kind, kind), (findings.c.status, status)):
            if val is not None:
                conds.append(col == val)
        q = select(findings).where(*conds).order_by(findings.c.ts_ms.desc(), findings.c.id.desc())
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(findings).where(*conds))
            rows = conn.execute(q.limit(limit).offset(offset))
            return [dict(r._mapping) for r in rows], int(total.scalar_one())

    def list_dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        q = select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def purge_dead_letters(self, *, older_than_ms: int) -> int:
        """Delete dead letters received before ``older_than_ms`` (retention); how many."""
        with self.engine.begin() as conn:
            res = conn.execute(dead_letters.delete().where(
                dead_letters.c.received_ms < older_than_ms))
            return int(res.rowcount or 0)

    def count(self, table: Table) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(select(1)).scalar_one() == 1)
