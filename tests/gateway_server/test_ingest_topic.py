"""A message whose topic is not UTF-8 (a non-conformant broker passes it on) is kept as a
dead letter under the repr of its topic bytes; the ingest goes on with the next."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
from sqlalchemy import select

from gateway_server.ingest.ingestor import Ingestor
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.tables import dead_letters, sales
from weighing import wire

T0 = 1_790_000_000_000


def _message(topic: bytes, payload: bytes) -> mqtt.MQTTMessage:
    m = mqtt.MQTTMessage(mid=1, topic=topic)
    m.payload = payload
    return m


def test_topic_that_is_not_utf8_is_dead_lettered_under_its_bytes(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path}/gw.db")
    store.create_all()
    ing = Ingestor(Settings(database_url="sqlite://", unknown_devices="accept"), store,
                   acknowledge=False)
    ev = wire.SaleEvent(seq=1, ts_ms=T0, net_mg=1_000_000, settled_mg=1_000_000,
                        peak_mg=1_000_000, stable_device=True, stable_software=True)
    payload = wire.encode(wire.EventBatch(device="s-1", events=[ev]))
    bad_topic = b"scales/v1/m1/\xff\xfe/events"
    ing._process([_message(bad_topic, payload),
                  _message(b"scales/v1/m1/s-1/events", payload)])
    with store.engine.connect() as c:
        dead = [dict(r._mapping) for r in c.execute(select(dead_letters))]
        stored = [r.device for r in c.execute(select(sales.c.device))]
    assert [d["topic"] for d in dead] == [repr(bad_topic)]
    assert stored == ["s-1"]
    store.engine.dispose()
