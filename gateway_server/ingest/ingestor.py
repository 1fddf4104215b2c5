"""Ingest: MQTT → validate → deduplicate → store, acknowledging only what is stored.

Rules (architecture.md §6):

* An :class:`Ingestor` is one paho subscriber: persistent session
  (``clean_session=False``, fixed client id), QoS 1, ``manual_ack``: a message is
  acknowledged to the broker only after the transaction holding it has committed. A
  gateway crash before that means the broker redelivers; the (device, seq) uniqueness
  turns the redelivery into a counted duplicate.
* Messages are decoded in paho's network thread as they arrive (``received_ms`` is
  their arrival) and handed to the process's one writer thread
  (:class:`gateway_server.ingest.writer.IngestWriter`), so decoding overlaps the writer's
  wait on the database (issue 17). ``serve`` has one session with a writer of its own; a
  sharded worker has one session per market, all handing to one shared writer.
* The client keeps its connection through a backlog drain: the network loop (paho's
  thread, or a worker's ``NetLoop``) waits for the writer only while the writer's queue
  is above its high-water mark (``writer.HIGH_WATER``), so the backlog stays in the
  broker, not in memory, and the keep-alive (``KEEPALIVE_S``) leaves room for a writer
  holding the GIL through a long transaction.
* **Lanes** (issue 17). A session takes every channel of its markets (``lane=None``,
  ``serve``), or one lane of them: a sharded worker holds two sessions a market, one for
  what the detectors judge (``"events"``: births, states, events) and one for the
  sample batches (``"samples"``), so a sale never waits at the broker, in the kernel's
  socket buffer or in the network loop behind the samples received before it (measured
  at 5,000 sample streams: that wait was most of sale → finding's p99). A samples
  session that still holds the catch-all subscription of an older version drops it
  (:meth:`Ingestor.retire_catch_all`) only once the events session's subscription is
  confirmed (its SUBACK): from then on the broker queues every event for the events
  session, and what it queued under the catch-all before is still delivered, so no event
  is ever without a session to wait in.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway_server.ingest.acks import AckTracker
from gateway_server.ingest.netloop import IngestClient, NetLoop
from gateway_server.ingest.pipeline import BatchResult, Incoming
from gateway_server.ingest.writer import AckOrder, IngestStats, IngestWriter, decode, now_ms
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from weighing import wire

log = logging.getLogger(__name__)

KEEPALIVE_S = 60
INFLIGHT = 1000  # messages delivered but not yet acknowledged, a session
#: the channels of each lane (``Ingestor(lane=...)``); ``None``: all of them
LANES: dict[str, tuple[wire.Channel, ...]] = {
    "events": (wire.Channel.BIRTH, wire.Channel.STATE, wire.Channel.EVENTS),
    "samples": (wire.Channel.SAMPLES,),
}


class Ingestor:
    """One MQTT session of the ingest, and the writer it hands its messages to.

    Without ``writer`` it has one of its own (started and stopped with it); without
    ``netloop`` paho's own network thread (``loop_start``). A sharded worker passes the
    process's shared writer and network loop (``gateway_server.ingest.netloop``).
    """

    def __init__(self, settings: Settings, store: Store, *, client_id: str | None = None,
                 markets: list[str] | None = None, acknowledge: bool = True,
                 writer: IngestWriter | None = None, netloop: NetLoop | None = None,
                 lane: str | None = None) -> None:
        if lane is not None and lane not in LANES:
            raise ValueError(f"unknown ingest lane {lane!r}; known: {', '.join(LANES)}")
        self.settings = settings
        self.lane = lane
        #: set once the events session of the same markets has its subscription: the
        #: catch-all of an older version may go (samples lane only)
        self._retire_catch_all = False
        #: called once the broker confirmed this session's subscription
        self.on_subscribed: Any = None
        #: the broker confirmed that the catch-all is gone (its UNSUBACK)
        self.catch_all_retired = False
        self.store = store
        self.markets = markets or settings.market_list
        self._own_writer = writer is None
        self.writer = writer or IngestWriter(settings, store, acknowledge=acknowledge)
        self.netloop = netloop
        # what the writer reads and writes of this session (writer.Session)
        self.order = AckOrder()  # the broker's acknowledgements, in arrival order
        self.stopped = False
        self.connected = False
        self.submitted = 0  # messages handed to the writer (this session's network thread)
        self.done = 0  # of those, stored (the writer thread)
        self.last_batch_ms = 0
        self.newest_sample_ms = 0
        u = urlsplit(settings.mqtt_url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 1883
        self.client_id = client_id or settings.mqtt_client_id
        self.client: mqtt.Client = IngestClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if u.username:
            self.client.username_pw_set(u.username, u.password)
        self.client.max_inflight_messages_set(INFLIGHT)
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe

    # -- the writer's state, as seen from the session (API, metrics, tests) ------------

    @property
    def stats(self) -> IngestStats:
        return self.writer.stats

    @property
    def latest(self) -> dict[str, tuple[int, int, int]]:
        return self.writer.latest

    @property
    def acks(self) -> AckTracker:
        return self.writer.acks

    @property
    def sink(self) -> Any:
        return self.writer.sink

    @sink.setter
    def sink(self, value: Any) -> None:
        self.writer.sink = value

    def queue_depth(self) -> int:
        """Messages of this session received, not yet stored."""
        return self.submitted - self.done

    def start(self) -> None:
        if self._own_writer:
            self.writer.start()
        if self.netloop is not None:
            self.netloop.add(self.client, self.host, self.port, KEEPALIVE_S,
                             urgent=self.lane == "events")
            return
        self.client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect; what is queued is still stored (not acknowledged: redelivered)."""
        self.stopped = True
        if self.netloop is not None:
            self.netloop.remove(self.client)
        else:
            self.client.disconnect()
            self.client.loop_stop()
        if self._own_writer:
            self.writer.stop(5)

    # -- paho callbacks ---------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            log.error("broker refused the ingest connection: %s", reason_code)
            return
        self.order.reset()  # a new connection: what the old one delivered is redelivered
        self._set_connected(True)
        subs = [(s, 1) for s in self.subscriptions()]
        client.subscribe(subs)
        if self._retire_catch_all:
            self._unsubscribe_catch_all()
        log.info("ingest connected to %s:%s, subscribed to %s", self.host, self.port,
                 ", ".join(s for s, _ in subs))

    def subscriptions(self) -> list[str]:
        """The topic filters of this session: its markets, its lane's channels."""
        if self.lane is None:
            return [wire.subscription(m) for m in self.markets]
        return [wire.subscription(m, c) for m in self.markets for c in LANES[self.lane]]

    def retire_catch_all(self) -> None:
        """Drop the all-channel subscription an older version left on this (samples)
        session; call it once the events session of the same markets is subscribed.
        Done now if connected, else on (every) connect."""
        self._retire_catch_all = True
        if self.connected:
            self._unsubscribe_catch_all()

    def _unsubscribe_catch_all(self) -> None:
        self.client.unsubscribe([wire.subscription(m) for m in self.markets])

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # type: ignore[no-untyped-def]
        if not self.catch_all_retired:
            log.info("ingest session %s: the all-channel subscription is gone, the events "
                     "go to the events lane", self.client_id)
        self.catch_all_retired = True

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # type: ignore[no-untyped-def]
        refused = [rc for rc in reason_codes if rc.is_failure]
        if refused:
            log.error("broker refused the ingest subscription of %s: %s",
                      ", ".join(self.subscriptions()), refused[0])
            return
        if self.on_subscribed is not None:
            self.on_subscribed()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self._set_connected(False)
        log.warning("ingest disconnected: %s", reason_code)

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        if self._own_writer:
            self.writer.stats.connected = up

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:  # type: ignore[no-untyped-def]
        if self.netloop is None:
            # paho's own thread: hold it (TCP pushes back on the broker) while the writer
            # is behind; a NetLoop stops reading instead
            while self.writer.backlogged() and not self.stopped:
                time.sleep(0.01)
        self.submitted += 1
        self.order.received(msg)
        self.writer.submit(self, msg, decode(msg, now_ms()))

    # -- direct use (tests, benches): store without the broker's delivery ---------------

    def _process(self, msgs: list[mqtt.MQTTMessage],
                 decoded: list[Incoming] | None = None) -> None:
        t = now_ms()
        batch = decoded if decoded is not None else [decode(m, t) for m in msgs]
        self.submitted += len(msgs)
        self.writer.process([(self, m, inc) for m, inc in zip(msgs, batch, strict=True)])

    def _store(self, batch: list[Incoming], t: int) -> list[BatchResult] | None:
        return self.writer._store(batch, t)

    def _account(self, res: BatchResult) -> None:
        self.writer._account(res)


__all__ = ["IngestStats", "Ingestor", "wire"]
