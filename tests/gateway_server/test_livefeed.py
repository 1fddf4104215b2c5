"""Findings and sales pushed to the SSE stream (issue 17): PostgreSQL NOTIFY is delivered on
commit only, and a stream sends every new row, however many one batch stored."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from sqlalchemy import insert
from support import free_port, wait_port, wait_until

from gateway_server.api.app import create_app
from gateway_server.ingest.livefeed import hub_for, mark_new
from gateway_server.ingest.pipeline import decode_message, store_batch
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.tables import markets, scales
from weighing import wire

T0 = 1_790_000_000_000


def _register(store: Store) -> None:
    with store.engine.begin() as c:
        c.execute(insert(markets).values(id="lf", name="lf", created_ms=T0))
        c.execute(insert(scales).values(device="lf-1", market="lf", registered=True,
                                        role="trade", state="unknown", max_mg=15_000_000,
                                        e_mg=5_000))


def _sales(first: int, n: int) -> bytes:
    evs = [wire.SaleEvent(seq=s, ts_ms=T0 + s * 1000, net_mg=155_000, settled_mg=155_000,
                          peak_mg=160_000, stable_device=True, stable_software=True)
           for s in range(first, first + n)]
    return wire.encode(wire.EventBatch(device="lf-1", events=evs))


def test_pg_notify_reaches_a_listener_on_commit_not_on_rollback(pg_url: str) -> None:
    reader, writer = Store.from_url(pg_url), Store.from_url(pg_url)
    try:
        hub, listener = hub_for(reader.engine)
        assert listener is not None
        listener.ensure()
        wait_until(lambda: hub.notified >= 1, 30, what="the listener's LISTEN")  # its hello
        with writer.engine.connect() as c:  # a rolled-back batch tells nobody
            with c.begin() as tx:
                mark_new(c)
                tx.rollback()
            with c.begin():
                mark_new(c)
        wait_until(lambda: hub.notified >= 2, 30, what="the committed batch's notification")
        assert hub.notified == 2
    finally:
        reader.engine.dispose()
        writer.engine.dispose()


@pytest.fixture
def api(store: Store, settings: Settings) -> Iterator[int]:
    port = free_port()
    app = create_app(store, None, settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    wait_port(port, 30)
    yield port
    server.should_exit = True
    t.join(10)


def test_stream_sends_every_sale_of_a_big_batch(store: Store, api: int,
                                                inspector: dict[str, str]) -> None:
    _register(store)
    got: list[str] = []
    opened = threading.Event()

    def read() -> None:
        # poll_s at its maximum: the rows come by the commit's wake-up, all of them (the old
        # stream sent at most 500 a poll)
        with httpx.stream("GET", f"http://127.0.0.1:{api}/api/v1/stream?market=lf&poll_s=10",
                          headers=inspector, timeout=60) as r:
            assert r.status_code == 200, r.read()
            for line in r.iter_lines():
                opened.set()
                if line.startswith("event: sale"):
                    got.append(line)
                    if len(got) >= 1_500:
                        return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert opened.wait(30)
    now = time.time_ns() // 1_000_000
    batch = [decode_message("scales/v1/lf/lf-1/events", _sales(1 + 500 * i, 500), now)
             for i in range(3)]
    with store.engine.begin() as c:
        res = store_batch(c, batch, now_ms=now)
    assert len(res.new_sales) == 1_500
    wait_until(lambda: len(got) >= 1_500, 60, what="1,500 sales through the stream")
    reader.join(10)
