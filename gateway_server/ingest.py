"""Ingest: MQTT → validate → deduplicate → store, acknowledging only what is stored.

Rules (architecture.md §6):

* One paho subscriber per worker, persistent session (``clean_session=False``, fixed
  client id), QoS 1, ``manual_ack``: a message is acknowledged to the broker only
  after the transaction holding it has committed. A gateway crash before that means
  the broker redelivers; the (device, seq) uniqueness turns the redelivery into a
  counted duplicate.
* Messages are handed from paho's network thread to one writer thread through a
  queue and stored in batches (up to ``ingest_batch`` messages or
  ``ingest_max_delay_ms``), because a single Python subscriber, not the broker, is the
  bottleneck (DEVELOPERS.md measurements).
* A payload that fails validation is kept in ``dead_letters`` with its reason and
  counted; it never stops the worker and never takes good messages down with it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway_server.settings import Settings
from gateway_server.store import DEAD_LETTER_KEEP_BYTES, Store
from weighing import wire
from weighing.errors import WireDecodeError

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class IngestStats:
    received: int = 0
    stored_sales: int = 0
    stored_events: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    samples: int = 0
    batches: int = 0
    connected: bool = False
    dead_by_reason: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "dead_by_reason"}
        d["dead_by_reason"] = dict(self.dead_by_reason)
        return d


@dataclass
class Batch:
    """What one batch of messages amounts to, before it is stored."""

    births: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    sales: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    latest: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def classify(batch: Batch, topic: str, payload: bytes, received_ms: int) -> None:
    """Decode one message into ``batch``; a bad one becomes a dead letter with its reason."""
    try:
        parts, msg = wire.decode(topic, payload)
    except WireDecodeError as err:
        batch.dead.append({
            "received_ms": received_ms, "topic": topic[:512], "reason": str(err)[:2000],
            "payload": payload[:DEAD_LETTER_KEEP_BYTES], "size": len(payload),
        })
        return
    device, market = parts.device, parts.market
    if isinstance(msg, wire.Birth):
        batch.births.append({
            "device": device, "market": market, "role": msg.role.value, "profile": msg.profile,
            "protocol": msg.protocol, "max_mg": msg.max_mg, "e_mg": msg.e_mg,
            "accuracy_class": msg.accuracy_class.value, "serial": msg.serial,
            "agent_version": msg.agent_version, "boot_id": msg.boot_id, "birth_ms": msg.ts_ms,
            "last_seen_ms": received_ms,
        })
        return
    if isinstance(msg, wire.State):
        batch.states.append({
            "device": device, "market": market, "state": msg.state.value,
            "state_ms": msg.ts_ms if msg.ts_ms is not None else received_ms,
        })
        return
    batch.seen[device] = received_ms
    if isinstance(msg, wire.SampleBatch):
        batch.samples += len(msg.t_ms)
        if msg.t_ms:
            batch.latest[device] = (msg.t_ms[-1], msg.net_mg[-1], msg.flags[-1])
        return
    assert isinstance(msg, wire.EventBatch)
    for ev in msg.events:
        if isinstance(ev, wire.SaleEvent):
            batch.sales.append({
                "device": device, "market": market, "seq": ev.seq, "ts_ms": ev.ts_ms,
                "received_ms": received_ms, "net_mg": ev.net_mg, "settled_mg": ev.settled_mg,
                "peak_mg": ev.peak_mg, "tare_mg": ev.tare_mg, "stable_device": ev.stable_device,
                "stable_software": ev.stable_software, "unsettled_commit": ev.unsettled_commit,
                "duration_ms": ev.duration_ms,
                "unit_price_fen_per_kg": ev.unit_price_fen_per_kg, "amount_fen": ev.amount_fen,
                "plu": ev.plu, "trace_code": ev.trace_code, "signed": ev.sig is not None,
            })
        else:
            batch.events.append({
                "device": device, "market": market, "seq": ev.seq,
                "kind": type(ev).__struct_config__.tag, "ts_ms": ev.ts_ms,
                "received_ms": received_ms, "payload": wire.encode_event(ev).decode(),
            })


class Ingestor:
    """The MQTT subscriber and its writer thread."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.stats = IngestStats()
        self.latest: dict[str, tuple[int, int, int]] = {}
        self._q: queue.Queue[mqtt.MQTTMessage] = queue.Queue(maxsize=100_000)
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self.listeners: list[Any] = []  # callables(kind, data) for live updates (SSE)
        u = urlsplit(settings.mqtt_url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 1883
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.mqtt_client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if u.username:
            self.client.username_pw_set(u.username, u.password)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        self._writer.start()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._stop.set()
        if self._writer:
            self._writer.join(5)

    # -- paho callbacks ---------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            log.error("broker refused the ingest connection: %s", reason_code)
            return
        self.stats.connected = True
        subs = [(wire.subscription(m), 1) for m in self.settings.market_list]
        client.subscribe(subs)
        log.info("ingest connected to %s:%s, subscribed to %s", self.host, self.port,
                 ", ".join(s for s, _ in subs))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self.stats.connected = False
        log.warning("ingest disconnected: %s", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:  # type: ignore[no-untyped-def]
        self._q.put(msg)

    # -- the writer ---------------------------------------------------------------------

    def _write_loop(self) -> None:
        max_n = self.settings.ingest_batch
        delay = self.settings.ingest_max_delay_ms / 1000
        while not self._stop.is_set() or not self._q.empty():
            try:
                first = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            msgs = [first]
            deadline = time.monotonic() + delay
            while len(msgs) < max_n:
                remaining = deadline - time.monotonic()
                try:
                    msgs.append(self._q.get(timeout=max(remaining, 0)) if remaining > 0
                                else self._q.get_nowait())
                except queue.Empty:
                    break
            self._process(msgs)

    def _process(self, msgs: list[mqtt.MQTTMessage]) -> None:
        batch = Batch()
        t = now_ms()
        for m in msgs:
            try:
                topic = m.topic
            except UnicodeDecodeError:
                topic = repr(m._topic)[:500]
            classify(batch, topic, m.payload, t)
        while True:
            try:
                new_sales, new_events = self.store.write_batch(
                    births=batch.births, states=batch.states, sale_rows=batch.sales,
                    event_rows=batch.events, dead=batch.dead, seen=batch.seen,
                )
                break
            except Exception:  # the database is down: keep the batch, retry; never ack
                log.exception("store failed; retrying the batch in 1 s")
                if self._stop.wait(1.0):
                    return
        for m in msgs:
            if m.qos:
                self.client.ack(m.mid, m.qos)
        s = self.stats
        s.received += len(msgs)
        s.batches += 1
        s.stored_sales += len(new_sales)
        s.stored_events += new_events
        s.duplicates += (len(batch.sales) - len(new_sales)) + (len(batch.events) - new_events)
        s.samples += batch.samples
        s.dead_letters += len(batch.dead)
        for d in batch.dead:
            s.dead_by_reason[d["reason"].split(": ", 1)[-1][:80]] += 1
            log.warning("dead letter on %s: %s", d["topic"], d["reason"])
        self.latest.update(batch.latest)
        for cb in self.listeners:
            for sale in new_sales:
                cb("sale", sale)


__all__ = ["Batch", "IngestStats", "Ingestor", "classify"]
