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

from gateway_server.pipeline import BatchResult, Incoming, decode_message, store_batch
from gateway_server.settings import Settings
from gateway_server.store import Store
from weighing import wire

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
    quarantined: int = 0
    bad_signatures: int = 0
    sequence_gaps: int = 0
    samples: int = 0
    batches: int = 0
    store_retries: int = 0
    connected: bool = False
    last_batch_ms: int = 0
    dead_by_reason: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "dead_by_reason"}
        d["dead_by_reason"] = dict(self.dead_by_reason)
        return d


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
        self.sink: Any = None  # a gateway_server.tssink.TimeSeriesSink, when configured
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
        t = now_ms()
        batch: list[Incoming] = []
        for m in msgs:
            try:
                topic = m.topic
            except UnicodeDecodeError:
                topic = repr(m._topic)[:500]
            batch.append(decode_message(topic, m.payload, t))
        while True:
            try:
                with self.store.engine.begin() as conn:
                    res = store_batch(conn, batch, now_ms=t,
                                      unknown_devices=self.settings.unknown_devices)
                break
            except Exception:  # the database is down: keep the batch, retry; never ack
                self.stats.store_retries += 1
                log.exception("store failed; retrying the batch in 1 s")
                if self._stop.wait(1.0):
                    return
        for m in msgs:
            if m.qos:
                self.client.ack(m.mid, m.qos)
        self._account(len(msgs), res)
        if self.sink is not None:
            for market, device, sb in res.sample_batches:
                self.sink.write_samples(market, device, sb.t_ms, sb.net_mg, sb.flags)
            if res.new_sales:
                self.sink.write_sales(res.new_sales)

    def _account(self, n: int, res: BatchResult) -> None:
        s = self.stats
        s.received += n
        s.batches += 1
        s.last_batch_ms = now_ms()
        s.stored_sales += len(res.new_sales)
        s.stored_events += res.new_events
        s.duplicates += res.duplicates
        s.samples += res.samples
        s.dead_letters += len(res.dead)
        s.quarantined += res.quarantined
        s.bad_signatures += res.bad_signatures
        s.sequence_gaps += res.gaps
        for d in res.dead:
            s.dead_by_reason[d["reason"].split(": ", 1)[-1][:80]] += 1
            log.warning("dead letter on %s: %s", d["topic"], d["reason"])
        self.latest.update(res.latest)


__all__ = ["IngestStats", "Ingestor", "wire"]
