"""The ingest pipeline on SQLite and PostgreSQL: exactly-once, signatures, quarantine,
gaps, merchant linkage across a re-binding, dead letters — nothing valid lost beside bad input."""

from __future__ import annotations

import json

from sqlalchemy import insert, select

from gateway_server.ingest.checks import precheck
from gateway_server.ingest.pipeline import Incoming, decode_message, store_batch
from gateway_server.store.database import Store
from gateway_server.store.tables import (
    bindings,
    dead_letters,
    findings,
    markets,
    merchants,
    quarantine,
    rollups,
    sales,
    scales,
)
from weighing import wire
from weighing.signing import sign_event

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
T0 = 1_790_000_000_000


# ``store``: tests/gateway_server/conftest.py, on SQLite and on PostgreSQL


def register(store: Store, device: str = "s-1", *, key: bytes | None = KEY) -> None:
    with store.engine.begin() as c:
        c.execute(insert(markets).values(id="m1", name="一号市场", created_ms=T0))
        c.execute(insert(scales).values(device=device, market="m1", registered=True,
                                        key_hex=key.hex() if key else None, max_mg=15_000_000,
                                        e_mg=5_000, role="trade", state="unknown"))


def merchant(store: Store, name: str) -> int:
    with store.engine.begin() as c:
        return int(c.execute(insert(merchants).values(
            market_id="m1", name=name, trust_token=name + "-token", created_ms=T0,
            updated_ms=T0, categories="").returning(merchants.c.id)).scalar_one())


def sale(seq: int, ts: int = T0, net: int = 1_250_000, key: bytes | None = KEY,
         device: str = "s-1") -> wire.SaleEvent:
    ev = wire.SaleEvent(seq=seq, ts_ms=ts, net_mg=net, settled_mg=net, peak_mg=net,
                        stable_device=True, stable_software=True)
    return sign_event(key, device, ev) if key else ev  # type: ignore[return-value]


def msg(events: list[wire.Event], device: str = "s-1", market: str = "m1") -> Incoming:
    payload = wire.encode(wire.EventBatch(device=device, events=events))
    return decode_message(f"scales/v1/{market}/{device}/events", payload, T0 + 5)


def run(store: Store, batch: list[Incoming], **kw: str):  # type: ignore[no-untyped-def]
    with store.engine.begin() as c:
        return store_batch(c, batch, now_ms=T0 + 10, **kw)


def rows(store: Store, table) -> list[dict]:  # type: ignore[no-untyped-def]
    with store.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(table))]


def test_redelivery_is_a_counted_duplicate(store: Store) -> None:
    register(store)
    first = run(store, [msg([sale(1), sale(2)])])
    again = run(store, [msg([sale(1), sale(2)]), msg([sale(3)])])
    assert len(first.new_sales) == 2 and again.duplicates == 2 and len(again.new_sales) == 1
    assert sorted(r["seq"] for r in rows(store, sales)) == [1, 2, 3]


def test_forged_signature_rejected_alone(store: Store) -> None:
    register(store)
    forged = sale(2, key=b"not-the-device-key")
    unsigned = sale(3, key=None)
    res = run(store, [msg([sale(1), forged, unsigned, sale(4)])])
    assert res.bad_signatures == 2
    assert sorted(r["seq"] for r in rows(store, sales)) == [1, 4]
    assert all(r["signed"] for r in rows(store, sales))
    reasons = sorted(d["reason"] for d in rows(store, dead_letters))
    assert any("seq=2" in r and "invalid signature" in r for r in reasons)
    assert any("seq=3" in r and "missing signature" in r for r in reasons)
    kinds = [f["kind"] for f in rows(store, findings)]
    assert kinds.count("bad-signature") == 2


def test_signatures_checked_ahead_count_only_with_the_key_the_transaction_reads(
        store: Store) -> None:
    """The network thread checks the events' signatures with the key it last saw
    (``checks.precheck``); the pipeline takes those verdicts only under the same key."""
    register(store)
    old_key = bytes.fromhex("ff" * 16)
    forged = sale(2, key=b"not-the-device-key")
    ahead = precheck(msg([sale(1), forged]), {"s-1": KEY})
    assert ahead.prechecked == (KEY, (None, "invalid signature"))
    res = run(store, [ahead])
    assert res.bad_signatures == 1 and [r["seq"] for r in rows(store, sales)] == [1]
    assert res.keys == {"s-1": KEY}  # what the next messages are checked with
    # checked ahead with a key the device no longer has (rotated meanwhile): "valid" under
    # the old key counts for nothing, the transaction checks again with the current one
    stale = precheck(msg([sale(3, key=old_key)]), {"s-1": old_key})
    assert stale.prechecked == (old_key, (None,))
    res = run(store, [stale])
    assert res.bad_signatures == 1 and [r["seq"] for r in rows(store, sales)] == [1]
    # no key known yet: nothing checked ahead, the transaction checks
    assert precheck(msg([sale(4)]), {}).prechecked is None


def test_malformed_and_oversized_payloads_dead_lettered_good_kept(store: Store) -> None:
    register(store)
    bad = decode_message("scales/v1/m1/s-1/events", b'{"v":1,"device":"s-1","events":[', T0)
    big = decode_message("scales/v1/m1/s-1/events", b"[" * (wire.MAX_PAYLOAD_BYTES + 10), T0)
    res = run(store, [bad, msg([sale(1)]), big])
    assert len(res.new_sales) == 1 and len(res.dead) == 2
    dead = rows(store, dead_letters)
    assert {d["size"] for d in dead} == {len(bad.payload), wire.MAX_PAYLOAD_BYTES + 10}
    assert any("exceeds" in d["reason"] for d in dead)
    assert any("malformed" in d["reason"].lower() for d in dead)


def test_unknown_device_is_quarantined_not_dropped(store: Store) -> None:
    register(store)
    res = run(store, [msg([sale(1, device="ghost", key=None)], device="ghost"), msg([sale(1)])])
    assert res.quarantined == 1 and len(res.new_sales) == 1
    (q,) = rows(store, quarantine)
    assert q["device"] == "ghost" and b'"seq":1' in q["payload"]
    ghost = [s for s in rows(store, scales) if s["device"] == "ghost"]
    assert ghost and not ghost[0]["registered"] and ghost[0]["quarantined"]
    # in accept mode the same message is stored, unverified
    res2 = run(store, [msg([sale(2, device="ghost", key=None)], device="ghost")],
               unknown_devices="accept")
    assert len(res2.new_sales) == 1 and not res2.new_sales[0]["signed"]


def test_device_publishing_in_the_wrong_market_is_rejected(store: Store) -> None:
    register(store)
    res = run(store, [msg([sale(1)], market="m2")])
    assert not res.new_sales and "registered in market m1" in res.dead[0]["reason"]


def test_sequence_gap_found_and_closed_when_filled(store: Store) -> None:
    register(store)
    run(store, [msg([sale(1)])])
    res = run(store, [msg([sale(5)])])
    assert res.gaps == 1
    (gap,) = [f for f in rows(store, findings) if f["kind"] == "sequence-gap"]
    ev = json.loads(gap["evidence"])
    assert (ev["first_missing"], ev["last_missing"], ev["missing"]) == (2, 4, 3)
    run(store, [msg([sale(2), sale(3)])])
    run(store, [msg([sale(4)])])
    (gap,) = [f for f in rows(store, findings) if f["kind"] == "sequence-gap"]
    assert gap["status"] == "dismissed" and json.loads(gap["evidence"])["filled"] == 3


def test_sale_linked_to_merchant_bound_at_its_time_across_rebinding(store: Store) -> None:
    register(store)
    a, b = merchant(store, "张三水产"), merchant(store, "李四蔬菜")
    t_switch = T0 + 3_600_000
    with store.engine.begin() as c:
        c.execute(insert(bindings).values(device="s-1", merchant_id=a, valid_from_ms=T0,
                                          valid_to_ms=t_switch))
        c.execute(insert(bindings).values(device="s-1", merchant_id=b, valid_from_ms=t_switch))
    run(store, [msg([sale(1, ts=T0 - 1), sale(2, ts=T0), sale(3, ts=t_switch - 1),
                     sale(4, ts=t_switch), sale(5, ts=t_switch + 10**9)])])
    got = {r["seq"]: r["merchant_id"] for r in rows(store, sales)}
    assert got == {1: None, 2: a, 3: a, 4: b, 5: b}


def test_registered_scale_keeps_register_data_and_mismatch_is_a_finding(store: Store) -> None:
    register(store)
    birth = wire.Birth(device="s-1", market="m1", profile="p", protocol="toledo-continuous",
                       max_mg=15_000_000, e_mg=10_000, agent_version="x", boot_id="b1",
                       ts_ms=T0)
    run(store, [decode_message("scales/v1/m1/s-1/birth", wire.encode(birth), T0)])
    (s,) = rows(store, scales)
    assert s["e_mg"] == 5_000 and s["boot_id"] == "b1"
    (f,) = rows(store, findings)
    assert f["kind"] == "identity-mismatch"
    assert json.loads(f["evidence"])["e_mg"] == {"registered": 5_000, "reported": 10_000}


def test_samples_fold_into_minute_rollups_additively(store: Store) -> None:
    register(store)

    def samples(ts: list[int], ws: list[int]) -> Incoming:
        sb = wire.SampleBatch(device="s-1", t_ms=ts, net_mg=ws, flags=[1] * len(ts))
        return decode_message("scales/v1/m1/s-1/samples", wire.encode(sb), T0)

    m0 = T0 - T0 % 60_000
    run(store, [samples([m0 + 1, m0 + 2], [100, 300])])
    run(store, [samples([m0 + 3, m0 + 60_000], [50, 7])])
    got = {r["minute_ms"]: r for r in rows(store, rollups)}
    r0 = got[m0]
    assert (r0["n"], r0["min_mg"], r0["max_mg"], r0["sum_mg"], r0["stable_n"]) == (3, 50, 300, 450, 3)
    assert got[m0 + 60_000]["n"] == 1
