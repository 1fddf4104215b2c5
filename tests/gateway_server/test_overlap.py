"""A batch's sales in chunks, each inserted while the next is checked (issue 17,
``gateway_server.store.overlap``): exactly once, linked to their merchants, with the
connection never used by two threads at once, and a chunk the database refuses handled
like any refused batch (split, the bad message dead-lettered, the rest stored)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import insert, select, text

from gateway_server.ingest import pipeline
from gateway_server.ingest.pipeline import Incoming, decode_message, store_batch
from gateway_server.ingest.writer import IngestWriter
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.tables import (
    bindings,
    dead_letters,
    markets,
    merchants,
    quarantine,
    sales,
    scales,
)
from weighing import wire
from weighing.signing import sign_event, sign_message

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
T0 = 1_790_000_000_000


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Chunks of 7 sales: a batch of a few dozen crosses many chunk boundaries."""
    monkeypatch.setattr(pipeline, "SALES_CHUNK", 7)
    yield


def world(store: Store) -> int:
    """Market m1, scales s-1 and s-2 (keyed), s-1 bound to a merchant; its id."""
    with store.engine.begin() as c:
        c.execute(insert(markets).values(id="m1", name="一号市场", created_ms=T0))
        for d in ("s-1", "s-2"):
            c.execute(insert(scales).values(device=d, market="m1", registered=True,
                                            key_hex=KEY.hex(), max_mg=15_000_000,
                                            e_mg=5_000, role="trade", state="unknown"))
        m = int(c.execute(insert(merchants).values(
            market_id="m1", name="张三水产", trust_token="t-1", created_ms=T0, updated_ms=T0,
            categories="").returning(merchants.c.id)).scalar_one())
        c.execute(insert(bindings).values(device="s-1", merchant_id=m, valid_from_ms=T0))
    return m


def sales_msg(device: str, seqs: range, *, net: int = 1_250_000) -> Incoming:
    evs: list[wire.Event] = [
        sign_event(KEY, device, wire.SaleEvent(
            seq=s, ts_ms=T0 + s * 1000, net_mg=net, settled_mg=net, peak_mg=net,
            stable_device=True, stable_software=True)) for s in seqs]
    payload = wire.encode(wire.EventBatch(device=device, events=evs))
    return decode_message(f"scales/v1/m1/{device}/events", payload, T0 + 5)


def birth(device: str) -> Incoming:
    b = sign_message(KEY, device, wire.Birth(
        device=device, market="m1", profile="acs-15", protocol="toledo", max_mg=15_000_000,
        e_mg=5_000, agent_version="1.0", boot_id="b-1", ts_ms=T0))
    return decode_message(f"scales/v1/m1/{device}/birth", wire.encode(b), T0 + 5)


def test_a_batch_in_many_chunks_is_stored_exactly_once(store: Store, small_chunks: None) -> None:
    merchant = world(store)
    batch = [
        sales_msg("s-1", range(1, 20)),
        birth("s-2"),                       # the connection is used mid-batch: chunks settle
        sales_msg("s-2", range(1, 12)),
        sales_msg("x-9", range(1, 4)),      # unknown device: quarantined mid-batch
        sales_msg("s-1", range(15, 30)),    # 15-19 again, across chunk boundaries
        sales_msg("s-2", range(12, 13)),
    ]
    with store.engine.begin() as c:
        res = store_batch(c, batch, now_ms=T0 + 10)
    with store.engine.connect() as c:
        got = {(r.device, r.seq): (r.id, r.merchant_id)
               for r in c.execute(select(sales.c.device, sales.c.seq, sales.c.id,
                                         sales.c.merchant_id))}
        held = c.execute(select(quarantine.c.device)).scalars().all()
    want = {("s-1", s) for s in range(1, 30)} | {("s-2", s) for s in range(1, 13)}
    assert set(got) == want
    assert len(c_ids := [v[0] for v in got.values()]) == len(set(c_ids))
    assert {(r["device"], r["seq"]): r["id"] for r in res.new_sales} == {
        k: v[0] for k, v in got.items()}
    assert res.duplicates == 5
    assert {k: v[1] for k, v in got.items() if k[0] == "s-1"} == dict.fromkeys(
        [k for k in want if k[0] == "s-1"], merchant)
    assert all(v[1] is None for k, v in got.items() if k[0] == "s-2")
    assert held == ["x-9"]


def test_a_chunk_the_database_refuses_is_isolated_and_the_rest_stored(
        pg_url: str, small_chunks: None) -> None:
    """A real refusal by PostgreSQL (a trigger raising SQLSTATE 22003 for one weight) in
    a chunk run by the helper thread: the writer splits the batch as for any refused
    batch, dead-letters that one message and stores every other sale once."""
    store = Store.from_url(pg_url)
    names = ", ".join(f'"{t}"' for t in ("sales", "scales", "markets", "merchants",
                                         "bindings", "dead_letters", "findings"))
    poison_net = 4_321_000
    with store.engine.begin() as c:
        c.execute(text(f"TRUNCATE {names}, scalegw_partitions.sales_keys "
                       "RESTART IDENTITY CASCADE"))
        c.execute(text(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.net_mg = {poison_net} THEN RAISE EXCEPTION 'weight refused by the test' "
            "USING ERRCODE = '22003'; END IF; RETURN NEW; END $$"))
        c.execute(text("CREATE TRIGGER refuse_poison BEFORE INSERT ON sales "
                       "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"))
    try:
        world(store)
        writer = IngestWriter(Settings(database_url=pg_url), store, acknowledge=False)
        batch = [sales_msg("s-1", range(1, 11)), sales_msg("s-2", range(1, 11)),
                 sales_msg("s-1", range(11, 13), net=poison_net),
                 sales_msg("s-1", range(13, 31)), sales_msg("s-2", range(11, 31))]
        assert writer._store(batch, T0 + 10) is not None
        with store.engine.connect() as c:
            stored = {(d, s) for d, s in c.execute(select(sales.c.device, sales.c.seq))}
            dead = c.execute(select(dead_letters.c.topic, dead_letters.c.reason)).all()
        assert stored == ({("s-1", s) for s in range(1, 31) if s not in (11, 12)}
                          | {("s-2", s) for s in range(1, 31)})
        assert len(dead) == 1 and dead[0].topic == "scales/v1/m1/s-1/events"
        assert "weight refused by the test" in dead[0].reason
    finally:
        with store.engine.begin() as c:
            c.execute(text("DROP TRIGGER IF EXISTS refuse_poison ON sales"))
            c.execute(text("DROP FUNCTION IF EXISTS refuse_poison()"))
        store.engine.dispose()
