from __future__ import annotations

from pathlib import Path

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
