"""A message the store refuses for its content never blocks the ingest: the batch is
split until the one message is isolated and dead-lettered; the good ones are stored."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from gateway_server.ingest.pipeline import BatchResult, Incoming, decode_message
from gateway_server.ingest.writer import IngestWriter
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.tables import dead_letters, sales
from weighing import wire

T0 = 1_790_000_000_000


class PoisonSensitive(IngestWriter):
    """Fault injection: the store refuses any transaction holding a 'poison' topic."""

    def _store_once(self, batch: list[Incoming], t: int) -> BatchResult:
        if any("poison" in i.topic and i.error is None for i in batch):
            raise ValueError("value out of range for the column")
        return super()._store_once(batch, t)


def msg(device: str, seq: int) -> Incoming:
    ev = wire.SaleEvent(seq=seq, ts_ms=T0 + seq, net_mg=1_000_000, settled_mg=1_000_000,
                        peak_mg=1_000_000, stable_device=True, stable_software=True)
    return decode_message(f"scales/v1/m1/{device}/events",
                          wire.encode(wire.EventBatch(device=device, events=[ev])), T0)


def test_poison_message_is_isolated_and_dead_lettered(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path}/gw.db")
    store.create_all()
    ing = PoisonSensitive(Settings(database_url="sqlite://", unknown_devices="accept"), store)
    batch = [msg("good", i) for i in range(1, 8)]
    batch.insert(3, msg("poison", 1))
    results = ing._store(batch, T0)
    assert results is not None
    with store.engine.connect() as c:
        stored = sorted(r.seq for r in c.execute(select(sales.c.seq).where(
            sales.c.device == "good")))
        dead = [dict(r._mapping) for r in c.execute(select(dead_letters))]
    assert stored == list(range(1, 8))
    assert len(dead) == 1 and dead[0]["topic"] == "scales/v1/m1/poison/events"
    assert "value out of range" in dead[0]["reason"] and b'"seq":1' in dead[0]["payload"]
    assert ing.stats.unstorable == 0
    store.engine.dispose()
