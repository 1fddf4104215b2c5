"""Gateway workers sharded by market (architecture.md §7), coordinated through the database.

Rules:

* Every market is ingested by exactly one worker at a time. Ownership is a **lease** row
  per market (``market_leases``): a worker takes a market only with a conditional update
  that succeeds when the lease is free, expired, or already its own, and renews its
  leases every ``lease_s / 3``. A worker that stops renewing (killed, partitioned) loses
  its markets when the lease expires; a live worker then takes them over.
* Which live worker should own a market is decided by rendezvous (highest-random-weight)
  hashing over the workers that heartbeat in ``gateway_workers`` — every worker computes
  the same assignment, markets move only when the set of workers changes, and a worker
  gives up a market it no longer should own before the new owner may take it.
* Each owned market has two MQTT clients with persistent sessions (QoS 1), one a lane
  (``gateway_server.ingest.ingestor``): ``gw-market-{market}`` takes the sample
  batches, ``gw-market-{market}:events`` the births, states and events (``:`` is not a
  market id's character, so no market's client id is another's lane). All of a
  worker's sessions hand their messages to its one writer thread
  (``gateway_server.ingest.writer``), so a batch mixes the markets and a transaction's
  cost is shared by all of them. A new owner connects with the *same* client ids, so
  the broker hands it the sessions: messages queued while nobody owned the market, and
  messages the dead worker received but never acknowledged, are delivered to the new
  owner — no loss. The client id also fences: the broker never lets two connections
  share it. Duplicates from redelivery are absorbed by the (device, seq) uniqueness.
* Shared state — register, findings, inspections — is in PostgreSQL; API processes
  (``gateway-server api``) are stateless and serve any market.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, or_, select, update

from gateway_server.ingest.ingestor import Ingestor
from gateway_server.ingest.netloop import NetLoop
from gateway_server.ingest.writer import IngestWriter
from gateway_server.settings import Settings
from gateway_server.store.bulk import any_of, dialect_insert
from gateway_server.store.database import Store
from gateway_server.store.tables import markets
from gateway_server.store.tables_workflow import market_leases, workers_table

log = logging.getLogger(__name__)

def now_ms() -> int:
    return time.time_ns() // 1_000_000


def client_id_for(market: str, lane: str = "samples") -> str:
    """The MQTT client id of ``market``'s session of ``lane`` (``samples`` keeps the id
    of the one all-channel session a market had before lanes, and so its queue)."""
    return f"gw-market-{market}" if lane == "samples" else f"gw-market-{market}:{lane}"


class MarketSessions:
    """The two sessions of an owned market: its events lane and its samples lane."""

    def __init__(self, settings: Settings, store: Store, market: str, *,
                 writer: IngestWriter, netloop: NetLoop) -> None:
        self.events, self.samples = (
            Ingestor(settings, store, client_id=client_id_for(market, lane),
                     markets=[market], writer=writer, netloop=netloop, lane=lane)
            for lane in ("events", "samples"))
        # the events lane subscribed: an all-channel subscription of an older version on
        # the samples session may go, no event is left without a session to queue in
        self.events.on_subscribed = self.samples.retire_catch_all

    def start(self) -> None:
        self.events.start()
        self.samples.start()

    def stop(self) -> None:
        self.events.stop()
        self.samples.stop()

    @property
    def connected(self) -> bool:
        return self.events.connected and self.samples.connected

    def queue_depth(self) -> int:
        return self.events.queue_depth() + self.samples.queue_depth()

    @property
    def last_batch_ms(self) -> int:
        return max(self.events.last_batch_ms, self.samples.last_batch_ms)

    @property
    def newest_sample_ms(self) -> int:
        return self.samples.newest_sample_ms


def rendezvous_owner(market: str, workers: list[str]) -> str | None:
    """The worker with the highest hash weight for ``market`` (stable, evenly spread)."""
    if not workers:
        return None
    return max(workers, key=lambda w: hashlib.sha256(f"{w}|{market}".encode()).digest())


def take_many(conn: Connection, wanted: list[str], worker_id: str, *, now: int,
              lease_ms: int) -> set[str]:
    """Take or renew the leases of ``wanted``; the markets ``worker_id`` holds now (a lease
    is taken when it is free, expired or already its own).

    Three statements, whatever the count (a worker renews its 25 leases every few seconds:
    one transaction each was 5 % of its busy samples under load). The leases are locked in
    market order first, so two workers whose sets overlap while a market moves never
    deadlock."""
    if not wanted:
        return set()
    wanted = sorted(set(wanted))
    conn.execute(dialect_insert(conn, market_leases).on_conflict_do_nothing(
        index_elements=["market"]), [
        {"market": m, "worker_id": worker_id, "expires_ms": now + lease_ms, "taken_ms": now}
        for m in wanted])
    mine = any_of(conn, market_leases.c.market, wanted)
    conn.execute(select(market_leases.c.market).where(mine)
                 .order_by(market_leases.c.market).with_for_update()).all()
    res = conn.execute(update(market_leases).where(
        mine, or_(market_leases.c.worker_id == worker_id, market_leases.c.expires_ms < now),
    ).values(worker_id=worker_id, expires_ms=now + lease_ms).returning(market_leases.c.market))
    return {r.market for r in res}


def release(conn: Connection, market: str, worker_id: str) -> None:
    conn.execute(update(market_leases).where(
        market_leases.c.market == market, market_leases.c.worker_id == worker_id,
    ).values(expires_ms=0))


@dataclass
class Worker:
    """One ingest worker: owns a share of the markets, two MQTT sessions per market (its
    lanes: :class:`MarketSessions`)."""

    settings: Settings
    store: Store
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_ms: int = 10_000
    owned: dict[str, MarketSessions] = field(default_factory=dict)
    #: the time-series sink every owned market's ingest writes to (None: not configured)
    sink: Any = None
    #: the one writer of all owned markets (from :meth:`start`); its counters never go
    #: back when a market moves (``gateway_server.telemetry.metrics.render_worker``)
    writer: IngestWriter | None = None
    #: the one network thread of all owned markets' MQTT sessions (from :meth:`start`)
    netloop: NetLoop | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.store.migrate()
        with self.store.engine.begin() as c:
            t = now_ms()
            c.execute(dialect_insert(c, workers_table).values(
                worker_id=self.worker_id, host=socket.gethostname(), started_ms=t,
                heartbeat_ms=t).on_conflict_do_update(
                index_elements=["worker_id"], set_={"heartbeat_ms": t, "started_ms": t}))
        self.writer = IngestWriter(self.settings, self.store)
        self.writer.sink = self.sink
        self.writer.start()
        self.netloop = NetLoop(paused=self.writer.backlogged,
                               urgent_paused=self.writer.events_backlogged)
        self._thread = threading.Thread(target=self._loop, name="shard-coordinator",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        for market in list(self.owned):
            self._drop(market)
        if self.netloop is not None:
            self.netloop.stop()
        if self.writer is not None:
            self.writer.stop(10)  # what the sessions handed over is stored, not acknowledged
        with self.store.engine.begin() as c:
            c.execute(workers_table.delete().where(workers_table.c.worker_id == self.worker_id))

    def _loop(self) -> None:
        period = self.lease_ms / 3000
        while not self._stop.is_set():
            try:
                self.rebalance()
            except Exception:  # the database may be briefly away: keep trying
                log.exception("%s: rebalance failed", self.worker_id)
            self._stop.wait(period)

    def rebalance(self) -> None:
        t = now_ms()
        with self.store.engine.begin() as c:
            c.execute(update(workers_table).where(workers_table.c.worker_id == self.worker_id)
                      .values(heartbeat_ms=t))
            live = [r.worker_id for r in c.execute(select(workers_table.c.worker_id).where(
                workers_table.c.heartbeat_ms >= t - self.lease_ms))]
            all_markets = [r.id for r in c.execute(select(markets.c.id))]
        if self.settings.markets != "+":
            all_markets = [m for m in all_markets if m in self.settings.market_list]
        mine = {m for m in all_markets if rendezvous_owner(m, live) == self.worker_id}
        for market in list(self.owned):
            if market not in mine:
                self._drop(market)
        with self.store.engine.begin() as c:
            held = take_many(c, sorted(mine), self.worker_id, now=t, lease_ms=self.lease_ms)
        for market in sorted(mine):
            ok = market in held
            if ok and market not in self.owned:
                self._own(market)
            elif not ok and market in self.owned:  # someone else holds it: fence ourselves
                self._drop(market)

    def _own(self, market: str) -> None:
        assert self.writer is not None and self.netloop is not None, "Worker.start() first"
        ing = MarketSessions(self.settings, self.store, market, writer=self.writer,
                             netloop=self.netloop)
        ing.start()
        self.owned[market] = ing
        log.info("%s: took market %s", self.worker_id, market)

    def _drop(self, market: str) -> None:
        ing = self.owned.pop(market, None)
        if ing is not None:
            ing.stop()  # the persistent session stays at the broker for the next owner
        with self.store.engine.begin() as c:
            release(c, market, self.worker_id)
        log.info("%s: released market %s", self.worker_id, market)
