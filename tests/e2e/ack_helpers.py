"""Helpers of the end-to-end acknowledgement tests: a register with keyed scales, and
counts of what the database holds by (device, seq)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from gateway_server.registry import register as registry
from gateway_server.store.database import Store
from gateway_server.store.tables import events, sales

PROFILE = "toledo-15kg-5g"


def key_hex(device: str) -> str:
    """A per-device key (distinct per device, so a mix-up shows as a bad signature)."""
    return (device.encode().hex() + "a1" * 16)[:32]


def register(db_url: str, market: str, devices: list[str]) -> Store:
    """A migrated database with ``market`` and its keyed scales in the register."""
    store = Store.from_url(db_url)
    store.migrate()
    now = time.time_ns() // 1_000_000
    with store.engine.begin() as conn:
        registry.create_market(conn, market, now_ms=now, name=market)
        for d in devices:
            registry.register_scale(conn, d, market_id=market, now_ms=now, key_hex=key_hex(d),
                                    max_mg=15_000_000, e_mg=5_000)
    return store


def sale_counts(store: Store) -> tuple[Counter[tuple[str, int]], dict[str, list[int]]]:
    """``(device, seq)`` → rows (always 1: the table is unique on it) and net weights
    per device in seq order."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(sales.c.device, sales.c.seq, sales.c.net_mg)
                            .order_by(sales.c.device, sales.c.seq)).fetchall()
    by_dev: dict[str, list[int]] = {}
    for r in rows:
        by_dev.setdefault(r.device, []).append(r.net_mg)
    return Counter((r.device, r.seq) for r in rows), by_dev


def event_count(store: Store, kind: str | None = None) -> int:
    with store.engine.connect() as conn:
        q = select(func.count()).select_from(events)
        if kind is not None:
            q = q.where(events.c.kind == kind)
        return int(conn.execute(q).scalar_one())


def sqlite_url(tmp: Path, name: str = "gateway.db") -> str:
    return f"sqlite:///{tmp / name}"
