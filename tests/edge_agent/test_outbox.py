from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.outbox import Outbox
from weighing import wire
from weighing.signing import verify_event


def sale(**kw: int) -> wire.SaleEvent:
    return wire.SaleEvent(seq=0, ts_ms=1, net_mg=kw.get("net", 1), settled_mg=1, peak_mg=1,
                          stable_device=True, stable_software=True)


def samples(n: int = 1) -> wire.SampleBatch:
    return wire.SampleBatch(device="d", t_ms=list(range(n)), net_mg=[0] * n, flags=[0] * n)


def test_seq_is_per_device_monotonic_and_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path)
    assert [ob.put_event("a", sale()) for _ in range(3)] == [1, 2, 3]
    assert ob.put_event("b", sale()) == 1
    ob.ack([r.id for r in ob.peek("a", "events")])
    ob.close()
    ob = Outbox(path)  # a restart: acked rows are gone, the sequence goes on
    assert ob.put_event("a", sale()) == 4
    assert [r.seq for r in ob.peek("a", "events")] == [4]
    assert [r.seq for r in ob.peek("b", "events")] == [1]


def test_rows_stay_until_acknowledged_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path)
    for i in range(5):
        ob.put_event("a", sale(net=i))
    rows = ob.peek("a", "events", limit=2)
    ob.ack([rows[0].id])
    ob.close()
    ob = Outbox(path)
    left = ob.peek("a", "events")
    assert [r.seq for r in left] == [2, 3, 4, 5]
    assert ob.counters()["queued"] == 4


def test_events_are_signed_with_the_device_key(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    ob.put_event("a", sale(), key=b"secret")
    (row,) = ob.peek("a", "events")
    _, batch = wire.decode("scales/v1/m/a/events", wire.event_batch_payload("a", [row.payload]))
    assert isinstance(batch, wire.EventBatch)
    assert verify_event(b"secret", "a", batch.events[0])


def test_full_outbox_drops_samples_first_and_never_sales(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_rows=10)
    for _ in range(6):
        assert ob.put_samples("a", samples())
    for _ in range(4):
        ob.put_event("a", wire.HeartbeatEvent(seq=0, ts_ms=1))
    # full: each sale evicts a sample first, then a heartbeat
    for _ in range(10):
        assert ob.put_event("a", sale()) > 0
    c = ob.counters()
    assert c["dropped_samples"] == 6 and c["dropped_low"] == 4
    # the last row that could give way is gone: full of sales, the alarm is raised once
    assert ob.alarm and ob.counters()["alarms"] == 1
    assert ob.take_alarm() and not ob.take_alarm()
    # the next sale is kept beyond the bound; still one alarm
    assert ob.put_event("a", sale()) > 0
    assert ob.alarm and ob.counters()["alarms"] == 1
    assert ob.depth() == 11
    # ... and samples are refused (counted) while the alarm stands
    assert not ob.put_samples("a", samples())
    assert ob.counters()["dropped_samples"] == 7
    # acknowledging makes room and clears the alarm
    ob.ack([r.id for r in ob.peek("a", "events", limit=5)])
    assert not ob.alarm and ob.put_samples("a", samples())
    assert ob.counters()["dropped"] == 6 + 4 + 1


def test_samples_evict_the_oldest_samples(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_rows=10)
    for i in range(15):
        assert ob.put_samples("a", samples(i + 1))
    left = [wire.decode("scales/v1/m/d/samples", r.payload)[1] for r in ob.peek("a", "samples")]
    assert [len(b.t_ms) for b in left] == list(range(6, 16))  # type: ignore[union-attr]
    assert ob.counters()["dropped_samples"] == 5


def test_a_heartbeat_always_gets_in_and_replaces_the_queued_one(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_rows=10)
    for _ in range(10):
        ob.put_event("a", sale())
    assert ob.alarm
    first = ob.put_event("a", wire.HeartbeatEvent(seq=0, ts_ms=1, queued=10))
    second = ob.put_event("a", wire.HeartbeatEvent(seq=0, ts_ms=2, queued=11))
    assert first > 0 and second > first
    beats = [r.seq for r in ob.peek("a", "events") if b'"heartbeat"' in r.payload]
    assert beats == [second]  # at most one per device beyond the bound
    assert ob.depth() == 11 and ob.counters()["dropped_low"] == 1
    # the heartbeat row does not lift the alarm for a sale that comes next
    assert ob.put_event("a", sale()) > 0 and ob.alarm


def test_state_is_written_with_the_event_that_completes_it(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = Outbox(path)
    ob.set_state("a", {"sm.load": b"settled 1 kg"})
    assert ob.get_state("a", "sm.load") == b"settled 1 kg"
    seq = ob.put_event("a", sale(), state={"sm.load": None})
    ob.close()
    ob = Outbox(path)
    assert ob.get_state("a", "sm.load") is None
    assert [r.seq for r in ob.peek("a", "events")] == [seq]


# -- end-to-end acknowledgement, retention, write failures (issue 15) ---------------------


def test_rows_leave_on_the_gateways_confirmation_not_on_a_puback(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    for _ in range(5):
        ob.put_event("a", sale())
    ob.put_event("b", sale())
    assert ob.floor("a") == 1
    assert ob.confirm("a", 3) == 3
    assert [r.seq for r in ob.peek("a", "events")] == [4, 5] and ob.floor("a") == 4
    assert ob.confirm("a", 3) == 0  # idempotent: a repeated confirmation deletes nothing
    assert ob.confirm("a", 2) == 0  # an older one neither
    assert [r.seq for r in ob.peek("b", "events")] == [1]  # another device's rows stay
    assert ob.confirm("a", 99) == 2 and ob.floor("a") == 6  # empty: the next seq
    assert ob.counters()["confirmed"] == 5 and ob.depth() == 1


def test_dropped_events_are_declared_once_in_an_outbox_dropped_fault(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_rows=10)
    for _ in range(3):
        ob.put_event("a", wire.HeartbeatEvent(seq=0, ts_ms=1))  # seqs 1-3
    ob.put_event("a", wire.ZeroCheckEvent(seq=0, ts_ms=1, mean_mg=0, spread_mg=0, n=1,
                                          duration_ms=1))  # seq 4
    for _ in range(2):
        assert ob.put_samples("a", samples())
    for _ in range(4):
        ob.put_event("a", sale())  # seqs 5-8: the bound is reached
    for _ in range(5):
        ob.put_event("a", sale())  # seqs 9-13: two samples, then heartbeats 1-3 go
    assert ob.has_undeclared_drops("a") and not ob.has_undeclared_drops("b")
    seq = ob.put_drop_report("a", key=b"k")
    assert seq == 14 and not ob.has_undeclared_drops("a")
    fault = next(e for e in _events(ob, "a") if e.seq == seq)
    assert isinstance(fault, wire.FaultEvent) and fault.code == "outbox-dropped"
    assert fault.dropped_seqs == [(1, 3)] and fault.dropped_samples == 2
    assert verify_event(b"k", "a", fault)  # signed like every event
    # the report itself needed room: the zero check gave way, declared by the next one
    seq2 = ob.put_drop_report("a")
    fault2 = next(e for e in _events(ob, "a") if e.seq == seq2)
    assert isinstance(fault2, wire.FaultEvent) and fault2.dropped_seqs == [(4, 4)]
    assert ob.put_drop_report("a") == 0  # each drop declared once
    # sales were never dropped, and a sale never went while a sample or heartbeat stayed
    assert sorted(e.seq for e in _events(ob, "a") if isinstance(e, wire.SaleEvent)) == list(
        range(5, 14))
    assert ob.alarm  # only never-dropped events left


def test_the_byte_and_age_bounds_drop_samples_and_heartbeats_never_sales(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_bytes=64 * 1024)
    big = samples(2000)  # ~ 14 KB each
    for _ in range(10):
        ob.put_samples("a", big)
    assert ob.counters()["queued_bytes"] <= 64 * 1024
    assert ob.counters()["dropped_samples"] >= 5
    for _ in range(20):
        assert ob.put_event("a", sale()) > 0
    aged = Outbox(tmp_path / "aged.db", max_age_s=0.001)
    aged.put_samples("a", samples())
    aged.put_event("a", wire.HeartbeatEvent(seq=0, ts_ms=1))
    aged.put_event("a", sale())
    import time

    time.sleep(1.1)  # past the bound's age and the once-a-second sweep
    aged.put_event("a", sale())
    assert [type(e).__name__ for e in _events(aged, "a")] == ["SaleEvent", "SaleEvent"]
    assert aged.depth("a", "samples") == 0 and aged.has_undeclared_drops("a")


def test_a_full_disk_is_an_error_that_writes_nothing_and_passes(tmp_path: Path) -> None:
    """SQLite's ``max_page_count`` makes the file "full" (SQLITE_FULL, what a full disk
    gives) without root or a small file system; it used to end in 'cannot rollback'."""
    from edge_agent.outbox import OutboxWriteError

    ob = Outbox(tmp_path / "o.db")
    for _ in range(5):
        ob.put_event("a", sale())
    _fill(ob)
    with pytest.raises(OutboxWriteError, match="full"):
        for _ in range(500):
            ob.put_event("a", sale())
    assert ob.depth() == ob.depth("a") == len(ob.peek("a", "events", limit=1000))
    _unfill(ob)
    seq = ob.put_event("a", sale())
    assert [r.seq for r in ob.peek("a", "events", limit=1000)][-1] == seq  # no seq skipped
    assert seq == len(ob.peek("a", "events", limit=1000))


def test_a_damaged_outbox_is_an_error_of_its_own(tmp_path: Path) -> None:
    from edge_agent.outbox import OutboxCorruptError

    path = tmp_path / "o.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxCorruptError):
        Outbox(path)


def _events(ob: Outbox, device: str) -> list[wire.Event]:
    rows = ob.peek(device, "events", limit=10_000)
    _, batch = wire.decode(f"scales/v1/m/{device}/events",
                           wire.event_batch_payload(device, [r.payload for r in rows]))
    assert isinstance(batch, wire.EventBatch)
    return list(batch.events)


def _fill(ob: Outbox) -> None:
    """Fill the outbox file as a full disk would: no page beyond the current ones
    (``max_page_count``), and the free pages taken by a filler table."""
    import sqlite3

    with ob._lock:
        first = not ob._db.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'filler'").fetchone()
        if first:  # compact: the room left in half-empty pages would take events first
            ob._db.execute("VACUUM")
        ob._db.execute("PRAGMA synchronous=OFF")  # filler rows need no fsync each
        try:
            ob._db.execute("CREATE TABLE IF NOT EXISTS filler (b BLOB)")
            n = ob._db.execute("PRAGMA page_count").fetchone()[0]
            ob._db.execute(f"PRAGMA max_page_count = {n}")
            for size in (65536, 4096, 1024):
                try:
                    while True:
                        ob._db.execute("INSERT INTO filler VALUES (zeroblob(?))", (size,))
                except sqlite3.OperationalError:
                    pass
        finally:
            ob._db.execute("PRAGMA synchronous=FULL")


def _unfill(ob: Outbox) -> None:
    with ob._lock:
        ob._db.execute("PRAGMA max_page_count = 1073741823")
        ob._db.execute("DROP TABLE IF EXISTS filler")


def test_disk_full_while_selling_loses_no_sale_and_resumes_without_a_restart(
        tmp_path: Path) -> None:
    """The agent's outbox is full (:func:`_fill`) while the scale sells; the worker reads on, holds the sales in memory, reports the fault and writes them in order
    once space returns, without a restart; the gateway stores every sale once. The issue
    asked for ~60 s of full disk: what matters is that sales are committed while it is
    full, so the test holds it full until three are held in memory (a condition, not a
    duration), which keeps the suite short."""
    import sys
    import threading
    import time

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
    from ack_helpers import PROFILE, key_hex, register, sale_counts, sqlite_url
    from pty_scales import GatedScale
    from sqlalchemy import select
    from support import start_mosquitto, wait_until

    from device_profiles.codecs import make_codec
    from device_profiles.schema import load_profile
    from edge_agent.agent import Agent
    from edge_agent.config import AgentConfig
    from gateway_server.ingest.ingestor import Ingestor
    from gateway_server.settings import Settings
    from gateway_server.store.tables import events
    from simulators.script import random_script

    dev, market = "s-full", "m-full"
    broker = start_mosquitto(tmp_path, persistence=False, default_config=True)
    store = register(sqlite_url(tmp_path), market, [dev])
    ingest = Ingestor(Settings(database_url=sqlite_url(tmp_path), mqtt_url=broker.url,
                               markets=market, ingest_max_delay_ms=20), store,
                      client_id="gw-full")
    ingest.start()
    profile = load_profile(PROFILE)
    loads = random_script(profile, 16, seed=17, fast=True)
    scale = GatedScale(make_codec(profile.protocol, profile.codec), loads,
                       e_mg=profile.metrology.e_mg, rate_hz=profile.link.output_rate_hz)
    agent = Agent(AgentConfig.model_validate({
        "agent": {"market": market, "outbox": str(tmp_path / "outbox.db"), "heartbeat_s": 2,
                  "ack_timeout_s": 5},
        "mqtt": {"url": broker.url, "max_delay_ms": 50, "reconnect_max_s": 1},
        # no samples: they leave on the broker's PUBACK, which would free room meanwhile
        "scale": [{"device": dev, "profile": PROFILE, "port": scale.path, "key": key_hex(dev),
                   "samples": False}],
    }))
    w = agent.workers[0]

    def stored() -> list[int]:
        return sale_counts(store)[1].get(dev, [])

    def held_sales() -> int:
        return sum(isinstance(e, wire.SaleEvent) for e, _ in list(w._held))

    try:
        wait_until(lambda: ingest.stats.connected, 60, what="the gateway connected")
        agent.start()
        wait_until(lambda: w.stats.state == "running", 60, what="the port open")
        scale.start(gate=scale.at(2, "idle"))
        wait_until(lambda: len(stored()) == 2, 120, what="two sales stored before the disk fills")
        # SQLite reuses the room that confirmed (deleted) rows leave inside its file, so
        # a full disk stops the outbox only once it must grow: the gateway is away
        # meanwhile (nothing confirmed), as in the outage that fills an outbox
        ingest.stop()
        # the disk stays full: what is freed is taken again at once, as by another
        # writer on a full file system
        full = threading.Event()
        full.set()

        def keep_full() -> None:
            while full.is_set():
                _fill(agent.outbox)
                time.sleep(0.01)

        filler = threading.Thread(target=keep_full, daemon=True)
        filler.start()
        # the scale sells on until three sales are held in memory (the last pages the
        # file had may take an event or two first)
        scale.open_to(len(scale.frames))
        wait_until(lambda: held_sales() >= 3, 120, what="three sales held, the disk full")
        st = agent.status()["scales"][dev]  # type: ignore[index]
        assert st["outbox_write"]["failing_since_ms"] and st["state"] == "running"  # type: ignore[index]
        full.clear()
        filler.join(30)
        _unfill(agent.outbox)  # space returns, and the gateway
        ingest = Ingestor(Settings(database_url=sqlite_url(tmp_path), mqtt_url=broker.url,
                                   markets=market, ingest_max_delay_ms=20), store,
                          client_id="gw-full")
        ingest.start()
        wait_until(lambda: len(stored()) == len(loads), 120, what="every sale stored")
        wait_until(lambda: agent.outbox.depth(dev, "events") == 0, 120,
                   what="the outbox emptied by confirmations")
        counts, _ = sale_counts(store)
        with store.engine.connect() as conn:
            faults = [r.payload for r in conn.execute(
                select(events.c.payload).where(events.c.kind == "fault"))]
    finally:
        agent.stop()
        scale.close()
        ingest.stop()
        broker.stop()
    assert sorted(stored()) == sorted(ld.mass_mg for ld in loads)  # 0 lost
    assert set(counts.values()) == {1}  # 0 twice
    assert w.stats.restarts == 0 and agent.fatal is None  # resumed without a restart
    assert any('"code":"outbox-write"' in p and "database or disk is full" in p for p in faults)
    print(f"disk full: {len(loads)} sales read, {len(counts)} stored once, "
          f"{w.write_faults} write fault reported")
