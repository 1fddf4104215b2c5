"""A worker's two lanes a market (issue 17): events and sample batches in sessions of their
own, the events read while the samples wait, and an older all-channel session moved over
without losing an event.

On a real Mosquitto and PostgreSQL. What the broker holds for each session is read back by
connecting with that session's client id: the broker hands the session's queue over, in
the order it was queued.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pgutil import fresh_pg_database
from support import (
    Mosquitto,
    open_session,
    publish_qos1,
    register_keyed_markets,
    start_mosquitto,
    wait_until,
)
from test_sharding import stored

from gateway_server.ingest.netloop import IngestClient, NetLoop
from gateway_server.ingest.sharding import Worker, client_id_for
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from weighing import wire
from weighing.signing import sign_event, sign_message

MARKET = "mk-lanes"
DEVICE = "mk-lanes-s1"
KEY = bytes.fromhex("5a" * 16)
T0 = 1_790_000_000_000


def sale(seq: int) -> tuple[str, bytes]:
    ev = wire.SaleEvent(seq=seq, ts_ms=T0 + seq * 1000, net_mg=155_000, settled_mg=155_000,
                        peak_mg=155_000, stable_device=True, stable_software=True,
                        unsettled_commit=False)
    return (wire.topic(MARKET, DEVICE, wire.Channel.EVENTS),
            wire.encode(wire.EventBatch(device=DEVICE, events=[sign_event(KEY, DEVICE, ev)])))


def samples(seq: int) -> tuple[str, bytes]:
    t = T0 + seq * 1000
    sb = sign_message(KEY, DEVICE, wire.SampleBatch(
        device=DEVICE, seq=seq, t_ms=[t, t + 50], net_mg=[0, 0], flags=[1, 1]))
    return wire.topic(MARKET, DEVICE, wire.Channel.SAMPLES), wire.encode(sb)


def queued(port: int, client_id: str, until_topic_suffix: str) -> list[str]:
    """The topics the broker holds for the persistent session ``client_id``, up to and
    including the first one ending with ``until_topic_suffix`` (which must come). Nothing
    is acknowledged: the session's next owner gets them again."""
    got: list[str] = []
    done = threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=False, protocol=mqtt.MQTTv311, manual_ack=True)

    def on_message(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        if not done.is_set():
            got.append(m.topic)
            if m.topic.endswith(until_topic_suffix):
                done.set()

    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        assert done.wait(60), f"{client_id}: nothing ending {until_topic_suffix}, got {got}"
    finally:
        c.disconnect()
        c.loop_stop()
    return got


def test_an_old_all_channel_session_moves_to_two_lanes_without_losing_an_event(
        tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    workers: list[Worker] = []
    try:
        with fresh_pg_database() as url:
            store = register_keyed_markets(url, {MARKET: [DEVICE]}, KEY, T0)
            try:
                _move_to_lanes(broker, url, store, workers)
            finally:
                for w in workers:
                    w.stop()
                store.engine.dispose()
    finally:
        broker.stop()


def _move_to_lanes(broker: Mosquitto, url: str, store: Store, workers: list[Worker]) -> None:
    # the market's one session as an older version left it, a sale queued in it
    open_session(broker.port, client_id_for(MARKET), wire.subscription(MARKET))
    publish_qos1(broker.port, [sale(1)])
    settings = Settings(database_url=url, mqtt_url=broker.url)
    worker = Worker(settings, store, worker_id="lanes-w", lease_ms=3000)
    workers.append(worker)
    worker.start()
    wait_until(lambda: stored(store) == 1, 60,
               what="the sale queued under the all-channel subscription, stored")
    sessions = wait_until(lambda: worker.owned.get(MARKET), 30, what="the market")
    assert sessions.events.subscriptions() == [
        f"scales/v1/{MARKET}/+/birth", f"scales/v1/{MARKET}/+/state",
        f"scales/v1/{MARKET}/+/events"]
    assert sessions.samples.subscriptions() == [f"scales/v1/{MARKET}/+/samples"]
    wait_until(lambda: sessions.samples.catch_all_retired, 30,
               what="the all-channel subscription dropped once the events lane is subscribed")
    workers.remove(worker)
    worker.stop()
    # the sessions stay at the broker: a sale then a sample batch go to their lanes
    publish_qos1(broker.port, [sale(2), samples(1)])
    assert queued(broker.port, client_id_for(MARKET), "/samples") == [
        samples(1)[0]]  # no event before it: the catch-all is gone
    assert queued(broker.port, client_id_for(MARKET, "events"), "/events") == [sale(2)[0]]
    assert stored(store) == 1
    # a new owner takes both lanes over and stores what they held (nothing acknowledged
    # by the reads above) and what comes next
    worker = Worker(settings, store, worker_id="lanes-w2", lease_ms=3000)
    workers.append(worker)
    worker.start()
    publish_qos1(broker.port, [sale(3)])
    wait_until(lambda: stored(store) == 3, 60, what="sales 2 and 3 stored")


def test_the_urgent_lane_is_read_while_the_others_are_paused(mosquitto: Mosquitto) -> None:
    """The writer's backlog pauses the samples lane; events are still read (NetLoop)."""
    pause = threading.Event()
    got: dict[str, list[bytes]] = {"bulk": [], "urgent": []}
    subscribed: dict[str, threading.Event] = {k: threading.Event() for k in got}
    clients = {}
    for name in got:
        c = IngestClient(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id=f"lanes-{name}-{time.monotonic_ns()}", clean_session=True)
        c.on_connect = (lambda n: lambda cl, *_: cl.subscribe(f"lanes/{n}", qos=1))(name)
        c.on_subscribe = (lambda n: lambda *_: subscribed[n].set())(name)
        c.on_message = (lambda n: lambda _c, _u, m: got[n].append(m.payload))(name)
        clients[name] = c
    net = NetLoop(paused=pause.is_set)
    for name, c in clients.items():
        net.add(c, "127.0.0.1", mosquitto.port, 60, urgent=name == "urgent")
    try:
        assert all(e.wait(30) for e in subscribed.values())
        pause.set()  # the writer is behind
        publish_qos1(mosquitto.port, [("lanes/bulk", i.to_bytes(2, "big")) for i in range(50)])
        publish_qos1(mosquitto.port, [("lanes/urgent", b"sale")])
        wait_until(lambda: got["urgent"] == [b"sale"], 30, what="the urgent message, read")
        # at most the packet a turn already under way when the pause began had read
        assert len(got["bulk"]) <= 1, len(got["bulk"])
        pause.clear()
        wait_until(lambda: len(got["bulk"]) == 50, 30, what="the bulk lane, read once resumed")
    finally:
        for c in clients.values():
            net.remove(c)
        net.stop()
