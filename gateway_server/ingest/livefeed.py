"""New sales and findings pushed to the SSE stream, not polled (issue 17).

How a batch reaches ``GET /api/v1/stream``:

* the ingest (``pipeline.store_batch``) marks a connection whose transaction stored new
  sales or findings (:func:`mark_new`); on PostgreSQL it also issues
  ``pg_notify('scalegw_new', …)`` in that transaction, which PostgreSQL delivers to
  listeners only on commit (and never for a rollback);
* in the process that ingested (``serve``, on SQLite or PostgreSQL), an engine ``commit``
  listener wakes the streams of that process (:class:`Hub`) once the flag is set;
* in any other process (``gateway-server api`` beside sharded workers), a thread
  ``LISTEN``\\s on its own PostgreSQL connection (:class:`PgListener`) and wakes them.

A woken stream reads what is new by id, page after page until nothing is left (no cap
that lets it fall behind a busy ingest); without any notification it still looks every
``poll_s`` seconds, so a lost notification (a listener reconnecting) costs latency,
never rows. The listener thread runs only while a stream is open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy import Connection, Engine, event, func, select, text

from gateway_server.store.tables import findings, sales

log = logging.getLogger(__name__)

CHANNEL = "scalegw_new"
PAGE = 1000  # rows a query; the stream pages until nothing new is left
_FLAG = "scalegw_livefeed_new"
_IDLE_STOP_S = 30.0  # a listener with no stream for this long stops (and its connection)


def mark_new(conn: Connection) -> None:
    """Called inside the storing transaction when it stored new sales or findings."""
    conn.info[_FLAG] = True
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:c, '')"), {"c": CHANNEL})


class Hub:
    """Wakes the open streams of one process; thread-safe ``notify``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.notified = 0
        self.last_subscriber_s = time.monotonic()

    def notify(self) -> None:
        self.notified += 1
        with self._lock:
            waiters = list(self._waiters)
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # its loop is closed: the stream is gone
                self.unsubscribe((loop, ev))

    def subscribe(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        w = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(w)
        return w

    def unsubscribe(self, w: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.discard(w)
            self.last_subscriber_s = time.monotonic()

    def subscribers(self) -> int:
        with self._lock:
            return len(self._waiters)


class PgListener:
    """``LISTEN scalegw_new`` on a connection of its own; wakes ``hub`` on each notification."""

    def __init__(self, engine: Engine, hub: Hub) -> None:
        self.dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.hub = hub
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure(self) -> None:
        with self._lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="livefeed-listen",
                                               daemon=True)
                self.thread.start()

    def _idle(self) -> bool:
        return (self.hub.subscribers() == 0
                and time.monotonic() - self.hub.last_subscriber_s > _IDLE_STOP_S)

    def _run(self) -> None:
        import psycopg

        while not self._idle():
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.hub.notify()  # whatever came while not listening
                    while not self._idle():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.hub.notify()
            except Exception as err:  # the database away: the streams still poll
                log.warning("live feed: LISTEN failed (%s); retrying in 1 s", err)
                time.sleep(1.0)


_hubs: weakref.WeakKeyDictionary[Engine, tuple[Hub, PgListener | None]] = (
    weakref.WeakKeyDictionary())
_hubs_lock = threading.Lock()


def hub_for(engine: Engine) -> tuple[Hub, PgListener | None]:
    """The hub of ``engine`` (created on first use, with its commit listener)."""
    with _hubs_lock:
        got = _hubs.get(engine)
        if got is None:
            hub = Hub()
            listener = PgListener(engine, hub) if engine.dialect.name == "postgresql" else None

            @event.listens_for(engine, "commit")
            def _committed(conn: Connection) -> None:
                if conn.info.pop(_FLAG, None):
                    hub.notify()

            @event.listens_for(engine, "rollback")
            def _rolled_back(conn: Connection) -> None:
                conn.info.pop(_FLAG, None)

            got = _hubs[engine] = (hub, listener)
        return got


def start_marks(engine: Engine) -> tuple[int, int]:
    """The newest sale and finding ids now: a stream sends what comes after them."""
    with engine.connect() as c:
        return (c.execute(select(func.coalesce(func.max(sales.c.id), 0))).scalar_one(),
                c.execute(select(func.coalesce(func.max(findings.c.id), 0))).scalar_one())


async def stream_events(engine: Engine, after: tuple[int, int], *, market: str | None,
                        poll_s: float,
                        is_disconnected: Callable[[], Any],
                        rows: Callable[[Any], list[dict[str, Any]]],
                        finding_out: Callable[[dict[str, Any]], dict[str, Any]],
                        ) -> AsyncIterator[bytes]:
    """The SSE body: every sale and finding with an id above ``after``, as pushed."""
    hub, listener = hub_for(engine)
    last_sale, last_finding = after

    def page(after_sale: int, after_finding: int
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with engine.connect() as c:
            qs = select(sales).where(sales.c.id > after_sale).order_by(sales.c.id)
            qf = select(findings).where(findings.c.id > after_finding).order_by(findings.c.id)
            if market:
                qs, qf = qs.where(sales.c.market == market), qf.where(findings.c.market == market)
            return rows(c.execute(qs.limit(PAGE))), rows(c.execute(qf.limit(PAGE)))

    waiter = hub.subscribe()
    if listener is not None:
        listener.ensure()
    try:
        yield b"retry: 3000\n\n"
        woken = False
        while not await is_disconnected():
            waiter[1].clear()  # before reading: a commit during the read wakes us again
            sent = False
            # SQLAlchemy's commit event fires just before the database commits: a stream
            # woken in this process may look a moment early, so it looks again, briefly
            tries = 3 if woken else 1
            while True:  # page until nothing new is left
                new_sales, new_findings = await asyncio.to_thread(page, last_sale, last_finding)
                for s in new_sales:
                    last_sale = max(last_sale, s["id"])
                    yield f"event: sale\ndata: {json.dumps(s)}\n\n".encode()
                for f in new_findings:
                    last_finding = max(last_finding, f["id"])
                    yield f"event: finding\ndata: {json.dumps(finding_out(f))}\n\n".encode()
                sent = sent or bool(new_sales or new_findings)
                if len(new_sales) == PAGE or len(new_findings) == PAGE:
                    continue
                tries -= 1
                if sent or tries <= 0:
                    break
                await asyncio.sleep(0.01)
            if not sent:
                yield b": keep-alive\n\n"
            try:
                await asyncio.wait_for(waiter[1].wait(), poll_s)
                woken = True
            except TimeoutError:
                woken = False
    finally:
        hub.unsubscribe(waiter)


__all__ = ["CHANNEL", "Hub", "PgListener", "hub_for", "mark_new", "start_marks",
           "stream_events"]
