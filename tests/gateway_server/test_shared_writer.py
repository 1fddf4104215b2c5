"""One writer and one network thread for several MQTT sessions (a sharded worker's
markets, issue 17), with a real Mosquitto: every market's messages are stored, each message
is acknowledged on the session that delivered it, so none comes back when the sessions
reconnect, and the sessions come back by themselves after the broker restarts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from support import open_session, publish_qos1, start_mosquitto, wait_until

from gateway_server.ingest import writer as writer_mod
from gateway_server.ingest.ingestor import Ingestor
from gateway_server.ingest.netloop import NetLoop
from gateway_server.ingest.sharding import client_id_for
from gateway_server.ingest.writer import IngestWriter
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.tables import sales
from weighing import wire

MARKETS = ["wa", "wb", "wc"]
T0 = 1_790_000_000_000


def sale_messages(seqs: range) -> list[tuple[str, bytes]]:
    out = []
    for m in MARKETS:
        for j in range(2):
            device = f"{m}-s{j}"
            evs = [wire.SaleEvent(seq=s, ts_ms=T0 + s * 1000, net_mg=150_000 + s,
                                  settled_mg=150_000 + s, peak_mg=150_000 + s,
                                  stable_device=True, stable_software=True) for s in seqs]
            for ev in evs:  # one message a sale: many messages, several batches
                out.append((wire.topic(m, device, wire.Channel.EVENTS),
                            wire.encode(wire.EventBatch(device=device, events=[ev]))))
    return out


Sessions = tuple[IngestWriter, NetLoop, list[Ingestor]]


def sessions(settings: Settings, store: Store, *, start_writer: bool = True) -> Sessions:
    """As a worker owning the three markets has them."""
    writer = IngestWriter(settings, store)
    if start_writer:
        writer.start()
    net = NetLoop(paused=writer.backlogged)
    ings = [Ingestor(settings, store, client_id=client_id_for(m), markets=[m], writer=writer,
                     netloop=net) for m in MARKETS]
    for ing in ings:
        ing.start()
    return writer, net, ings


def stop(s: Sessions) -> None:
    writer, net, ings = s
    for ing in ings:
        ing.stop()
    net.stop()
    writer.stop()


def store_and_settings(tmp_path: Path, mqtt_url: str) -> tuple[Store, Settings]:
    """A fresh SQLite store, and the settings of an ingest that accepts unknown scales."""
    store = Store.from_url(f"sqlite:///{tmp_path}/gw.db")
    store.create_all()
    return store, Settings(database_url="sqlite://", mqtt_url=mqtt_url,
                           unknown_devices="accept", ingest_max_delay_ms=100)


def stored(store: Store) -> int:
    with store.engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(sales)).scalar_one())


def test_one_writer_stores_every_market_and_acks_on_the_delivering_session(
        tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    store, settings = store_and_settings(tmp_path, broker.url)
    try:
        for m in MARKETS:
            open_session(broker.port, client_id_for(m), wire.subscription(m))
        first = sale_messages(range(1, 41))
        publish_qos1(broker.port, first)  # queued in the three sessions
        s = sessions(settings, store)
        writer, _, ings = s
        try:
            wait_until(lambda: writer.stats.stored_sales == len(first), 60,
                       what="every market's sales stored by the one writer")
            # each session saw its own market, all were stored by the one writer
            assert all(ing.stats is writer.stats for ing in ings)
            assert [ing.done for ing in ings] == [len(first) // 3] * 3
            assert all(ing.queue_depth() == 0 for ing in ings)
            assert writer.stats.dead_letters == 0 and writer.stats.duplicates == 0
        finally:
            stop(s)
        assert stored(store) == len(first)

        # the same sessions again: had a message been acknowledged on another session
        # (a message id means something only on the connection that delivered it), the
        # broker would deliver it again now, ahead of the new messages, as a duplicate
        later = sale_messages(range(41, 43))
        publish_qos1(broker.port, later)
        s = sessions(settings, store)
        writer, _, ings = s
        try:
            wait_until(lambda: writer.stats.stored_sales == len(later), 60,
                       what="the new sales stored after the reconnection")
            assert writer.stats.duplicates == 0, "a message came back: it was never acknowledged"
            assert writer.stats.received == len(later)
        finally:
            stop(s)
        assert stored(store) == len(first) + len(later)
    finally:
        store.engine.dispose()
        broker.stop()


def test_the_sessions_reconnect_by_themselves_after_the_broker_restarts(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    store, settings = store_and_settings(tmp_path, broker.url)
    s = sessions(settings, store)
    writer, _, ings = s
    try:
        wait_until(lambda: all(ing.connected for ing in ings), 60, what="three sessions up")
        first = sale_messages(range(1, 3))
        publish_qos1(broker.port, first)
        wait_until(lambda: writer.stats.stored_sales == len(first), 60, what="first sales")
        broker.stop()  # the broker saves the persistent sessions and goes away
        wait_until(lambda: not any(ing.connected for ing in ings), 60,
                   what="every session noticing the broker gone")
        broker.start()
        later = sale_messages(range(3, 5))
        publish_qos1(broker.port, later)  # queued in the sessions until they are back
        wait_until(lambda: writer.stats.stored_sales == len(first) + len(later), 60,
                   what="the sales published while the gateway reconnected, stored")
        assert all(ing.connected for ing in ings)
        assert writer.stats.dead_letters == 0
    finally:
        stop(s)
        store.engine.dispose()
        broker.stop()


def test_the_sessions_come_back_after_a_broker_sigkill_at_default_settings(
        tmp_path: Path) -> None:
    """Killed without warning, a broker at Mosquitto's defaults (no persistence) forgets
    the sessions: the loop reconnects each, its CONNECT makes a new persistent session
    and ``on_connect`` subscribes again, and what is published from then on is stored.
    (What a killed broker held is the edge's to resend: the agents' outboxes keep every
    sale until the gateway confirms it, tests/e2e/test_end_to_end_ack.py.)"""
    broker = start_mosquitto(tmp_path, default_config=True)
    store, settings = store_and_settings(tmp_path, broker.url)
    s = sessions(settings, store)
    writer, _, ings = s
    try:
        wait_until(lambda: all(ing.connected for ing in ings), 60, what="three sessions up")
        broker.proc.kill()  # SIGKILL
        broker.proc.wait(30)
        wait_until(lambda: not any(ing.connected for ing in ings), 60,
                   what="every session noticing the broker gone")
        broker.start()
        # subscribed again once a probe of each market is stored (one new seq a try)
        seq = iter(range(1, 10_000))

        def probes_stored() -> bool:
            stored_markets = {m for m in MARKETS if any(
                ing.markets == [m] and ing.done > 0 for ing in ings)}
            missing = [m for m in MARKETS if m not in stored_markets]
            for m in missing:
                n = next(seq)
                ev = wire.SaleEvent(seq=n, ts_ms=T0 + n, net_mg=1_000, settled_mg=1_000,
                                    peak_mg=1_000, stable_device=True, stable_software=True)
                publish_qos1(broker.port, [(wire.topic(m, f"{m}-probe", wire.Channel.EVENTS),
                                            wire.encode(wire.EventBatch(
                                                device=f"{m}-probe", events=[ev])))])
            return not missing

        wait_until(probes_stored, 60, 0.2, what="every session subscribed again")
        later = sale_messages(range(1, 3))
        publish_qos1(broker.port, later)

        def later_stored() -> int:
            with store.engine.connect() as c:
                return int(c.execute(select(func.count()).select_from(sales).where(
                    sales.c.device.not_like("%-probe"))).scalar_one())

        wait_until(lambda: later_stored() == len(later), 60,
                   what="what was published after the reconnection, stored")
        assert all(ing.connected for ing in ings)
        assert writer.stats.dead_letters == 0
    finally:
        stop(s)
        store.engine.dispose()
        broker.stop()


def test_a_writer_behind_stops_the_reading_and_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the writer's high-water mark the sessions stop reading: the backlog stays in
    the broker (its session queues, TCP), not in the worker's memory."""
    monkeypatch.setattr(writer_mod, "HIGH_WATER", 10)
    broker = start_mosquitto(tmp_path, extra="max_inflight_messages 0\n")
    store = Store.from_url(f"sqlite:///{tmp_path}/gw.db")
    store.create_all()
    settings = Settings(database_url="sqlite://", mqtt_url=broker.url,
                        unknown_devices="accept", ingest_max_delay_ms=50)
    s = sessions(settings, store, start_writer=False)  # the writer is "behind": not running
    writer, _, ings = s
    try:
        wait_until(lambda: all(ing.connected for ing in ings), 60, what="three sessions up")
        msgs = sale_messages(range(1, 41))  # 240 messages, all sent to the sessions at once
        publish_qos1(broker.port, msgs)
        wait_until(lambda: writer.queue_depth() >= 10, 60, what="the high-water mark reached")
        time.sleep(0.5)  # room for a loop that kept reading to overshoot (it must not)
        # each session may finish the packet it was reading: the mark plus one a session
        assert writer.max_depth <= 10 + len(ings), writer.max_depth
        writer.start()
        wait_until(lambda: writer.stats.stored_sales == len(msgs), 60,
                   what="everything held back, stored once the writer runs")
        assert writer.stats.duplicates == 0 and writer.stats.dead_letters == 0
    finally:
        stop(s)
        store.engine.dispose()
        broker.stop()


def test_an_event_is_stored_ahead_of_queued_samples_and_acknowledged_after_them(
        tmp_path: Path) -> None:
    """Issue 17 (sale → finding under a province's sample streams): a sale waits for no
    sample batch queued before it, yet the broker's acknowledgements keep the order the
    messages arrived in (MQTT 3.1.1 §4.6), so the samples before it are not acknowledged
    by its PUBACK and none comes back once all are stored."""
    broker = start_mosquitto(tmp_path)
    store, settings = store_and_settings(tmp_path, broker.url)
    device = "wa-s0"
    samples = [(wire.topic("wa", device, wire.Channel.SAMPLES), wire.encode(wire.SampleBatch(
        device=device, t_ms=[T0 + k * 1000 + i * 50 for i in range(20)],
        net_mg=[100_000] * 20, flags=[1] * 20))) for k in range(5)]
    sale = sale_messages(range(1, 2))[0]
    assert sale[0].startswith("scales/v1/wa/")
    s = sessions(settings, store, start_writer=False)
    writer, _, ings = s
    wa = ings[0]
    try:
        wait_until(lambda: all(ing.connected for ing in ings), 60, what="three sessions up")
        publish_qos1(broker.port, [*samples, sale])
        wait_until(lambda: writer.queue_depth() == 6, 60, what="all six messages received")
        assert wa.order.waiting() == 6
        first = writer._next_batch()
        assert [m.topic for _, m, _ in first] == [sale[0]], "the sale goes first"
        writer.process(first)
        assert stored(store) == 1
        assert wa.order.waiting() == 6, "acknowledged before the samples received before it"
        rest = writer._next_batch()
        assert [m.topic for _, m, _ in rest] == [t for t, _ in samples]
        writer.process(rest)
        assert wa.order.waiting() == 0 and writer.stats.samples == 100
        assert writer.stats.dead_letters == 0
    finally:
        stop(s)
    # everything was acknowledged: the same sessions get nothing again
    s = sessions(settings, store)
    writer, _, ings = s
    try:
        wait_until(lambda: all(ing.connected for ing in ings), 60, what="sessions back")
        publish_qos1(broker.port, sale_messages(range(2, 3))[:1])
        wait_until(lambda: writer.stats.stored_sales == 1, 60, what="a new sale stored")
        assert writer.stats.received == 1 and writer.stats.duplicates == 0
    finally:
        stop(s)
        store.engine.dispose()
        broker.stop()


def test_ack_order_releases_the_stored_prefix_and_forgets_an_old_connection() -> None:
    import paho.mqtt.client as mqtt

    def msg(mid: int, qos: int = 1) -> mqtt.MQTTMessage:
        m = mqtt.MQTTMessage(mid, b"t")
        m.qos = qos
        return m

    order = writer_mod.AckOrder()
    a, b, c, zero = msg(1), msg(2), msg(3), msg(4, qos=0)
    for m in (a, zero, b, c):
        order.received(m)
    assert order.waiting() == 3  # QoS 0 is never acknowledged
    assert order.stored([c, zero]) == []
    assert order.stored([a]) == [a]
    assert order.stored([b]) == [b, c]
    old = msg(5)
    order.received(old)
    order.reset()  # reconnected: the old connection's message is never acknowledged
    new = msg(5)
    order.received(new)
    assert order.stored([old]) == [] and order.waiting() == 1
    assert order.stored([new]) == [new] and order.waiting() == 0


def test_a_samples_transaction_is_bounded_an_events_one_is_not(tmp_path: Path) -> None:
    """``ingest_samples_batch`` bounds what an event may wait behind; events themselves are
    taken up to ``ingest_batch`` (issue 17)."""
    from gateway_server.ingest.writer import decode_message

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'w.db'}", ingest_batch=5,
                        ingest_samples_batch=3, ingest_max_delay_ms=1)
    store = Store.from_url(settings.database_url)
    writer = IngestWriter(settings, store)  # not started: batches taken by hand

    def submit(channel: wire.Channel, n: int) -> None:
        for i in range(n):
            d = f"d{i}"
            msg: wire.Payload = (
                wire.SampleBatch(device=d, t_ms=[T0], net_mg=[0], flags=[1])
                if channel is wire.Channel.SAMPLES else wire.EventBatch(device=d, events=[
                    wire.SaleEvent(seq=1, ts_ms=T0, net_mg=1, settled_mg=1, peak_mg=1,
                                   stable_device=True, stable_software=True)]))
            inc = decode_message(wire.topic("m1", d, channel), wire.encode(msg), T0)
            assert inc.error is None, inc.error
            writer.submit(None, None, inc)  # type: ignore[arg-type]

    submit(wire.Channel.SAMPLES, 7)
    assert [len(writer._next_batch()) for _ in range(3)] == [3, 3, 1]
    submit(wire.Channel.SAMPLES, 4)
    submit(wire.Channel.EVENTS, 7)
    got = [writer._next_batch() for _ in range(4)]
    assert [len(b) for b in got] == [5, 2, 3, 1]  # the events first, up to ingest_batch
    assert all(not writer_mod._is_samples(inc) for b in got[:2] for _, _, inc in b)
    assert all(writer_mod._is_samples(inc) for b in got[2:] for _, _, inc in b)
    store.engine.dispose()
