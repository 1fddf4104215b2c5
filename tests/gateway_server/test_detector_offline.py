"""Offline during trading hours (gateway_server.detect.rules.offline): pure rules, and through
the ingest pipeline on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from gateway_server.detect.rules.offline import (
    check_offline,
    in_trading_hours,
    parse_trading_hours,
    trading_overlap_ms,
)
from gateway_server.detect.rules.stream import ScaleCtx
from gateway_server.ingest.pipeline import decode_message, store_batch
from gateway_server.store.database import Store
from gateway_server.store.tables import bindings, findings, markets, merchants, scales
from weighing import wire

CST = timezone(timedelta(hours=8))
MIN = 60_000


def cst(day: int, hh: int, mm: int = 0) -> int:
    """UTC ms of 2031-03-{day} hh:mm China Standard Time."""
    return int(datetime(2031, 3, day, hh, mm, tzinfo=CST).timestamp() * 1000)


HOURS = parse_trading_hours("06:00-19:00")
SCALE = ScaleCtx("s-1", "m1", 5_000, 15_000_000)


def test_trading_hours_parse_and_reject_with_reasons() -> None:
    assert HOURS == (360, 1140)
    assert parse_trading_hours(" 00:00-24:00 ") == (0, 1440)
    for bad in ("6:00-19:00", "06:00", "19:00-06:00", "06:00-06:00", "06:60-19:00",
                "24:00-24:00", "06:00–19:00"):
        with pytest.raises(ValueError, match="trading hours"):
            parse_trading_hours(bad)


def test_overlap_counts_only_trading_hours_in_local_time() -> None:
    assert trading_overlap_ms(cst(3, 10), cst(3, 11), HOURS) == 60 * MIN
    assert trading_overlap_ms(cst(3, 18, 30), cst(4, 7), HOURS) == 30 * MIN + 60 * MIN
    assert trading_overlap_ms(cst(3, 20), cst(4, 5), HOURS) == 0  # the night
    assert trading_overlap_ms(cst(3, 10), cst(5, 10), HOURS) == (4 + 13 + 9) * 60 * MIN
    assert trading_overlap_ms(cst(3, 11), cst(3, 10), HOURS) == 0
    assert in_trading_hours(cst(3, 6), HOURS) and not in_trading_hours(cst(3, 19), HOURS)


def test_dark_while_trading_is_found_and_nights_and_late_openings_are_not() -> None:
    f = check_offline(SCALE, cst(3, 10), cst(3, 11), cause="silent", hours=HOURS,
                      merchant_id=4)
    assert f is not None and (f.kind, f.severity, f.merchant_id) == (
        "offline-trading-hours", "low", 4)
    assert f.evidence["in_trading_hours_ms"] == 60 * MIN
    assert f.evidence["trading_hours"] == "06:00-19:00"
    assert check_offline(SCALE, cst(3, 10), cst(3, 10, 29), cause="silent", hours=HOURS) is None
    # dark from the last hour (packing up) to a late start the next day: not counted
    assert check_offline(SCALE, cst(3, 18, 1), cst(4, 9), cause="silent", hours=HOURS) is None
    # 17:20 to the next morning: the 40 minutes before the last hour (the next morning's
    # late start is not counted)
    g = check_offline(SCALE, cst(3, 17, 20), cst(4, 8), cause="silent", hours=HOURS)
    assert g is not None and g.evidence["in_trading_hours_ms"] == 40 * MIN
    # a scale with a clock 30 min slow ends its day at 17:30 by its own clock
    assert check_offline(SCALE, cst(3, 17, 30), cst(3, 19, 30), cause="silent",
                         hours=parse_trading_hours("06:00-18:00")) is None
    fair = ScaleCtx("f-1", "m1", 1_000, 6_000_000, role="fair")
    assert check_offline(fair, cst(3, 10), cst(3, 12), cause="silent", hours=HOURS) is None


# -- through the pipeline ------------------------------------------------------------------


@pytest.fixture
def market(store: Store) -> int:
    with store.engine.begin() as c:
        c.execute(insert(markets).values(id="m1", name="一号市场", created_ms=0,
                                         trading_hours="05:30-18:00"))
        mid = c.execute(insert(merchants).values(
            market_id="m1", name="王五鲜肉", trust_token="tok-offline-1", created_ms=0,
            updated_ms=0).returning(merchants.c.id)).scalar_one()
        c.execute(insert(scales).values(device="s-1", market="m1", registered=True,
                                        role="trade", max_mg=15_000_000, e_mg=5_000,
                                        accuracy_class="III", state="online"))
        c.execute(insert(bindings).values(device="s-1", merchant_id=mid, valid_from_ms=0))
    return int(mid)


def hb(seq: int, ts: int) -> wire.HeartbeatEvent:
    return wire.HeartbeatEvent(seq=seq, ts_ms=ts)


def send(store: Store, evs: list[wire.Event]) -> None:
    inc = decode_message("scales/v1/m1/s-1/events",
                         wire.encode(wire.EventBatch(device="s-1", events=evs)), 0)
    with store.engine.begin() as c:
        store_batch(c, [inc], now_ms=evs[-1].ts_ms)


def offline(store: Store) -> list[dict]:  # type: ignore[type-arg]
    with store.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(findings).where(
            findings.c.kind == "offline-trading-hours").order_by(findings.c.ts_ms))]


def test_gaps_between_batches_and_no_data_faults(store: Store, market: int) -> None:
    send(store, [hb(1, cst(3, 9)), hb(2, cst(3, 9, 1))])
    send(store, [hb(3, cst(3, 9, 20))])  # 19 min: below the 30 min threshold
    assert offline(store) == []
    send(store, [hb(4, cst(3, 10, 40)), hb(5, cst(3, 10, 41))])  # agent off 80 min
    (f,) = offline(store)
    ev = json.loads(f["evidence"])
    assert (f["device"], f["merchant_id"], f["ts_ms"]) == ("s-1", market, cst(3, 9, 20))
    assert ev["cause"] == "silent" and ev["duration_ms"] == 80 * MIN
    assert ev["trading_hours"] == "05:30-18:00"  # the market's own hours
    # the agent ran (heartbeats) but the scale sent no frames for 45 minutes
    send(store, [hb(6, cst(3, 11, 1)), hb(7, cst(3, 11, 29)),
                 wire.FaultEvent(seq=8, ts_ms=cst(3, 11, 30), code="no-data",
                                 duration_ms=45 * MIN)])
    assert [json.loads(x["evidence"])["cause"] for x in offline(store)] == ["silent", "no-data"]
    # dark from 11:30 to 17:50 while trading (counted to 17:00: the last hour is packing
    # up); then opened an hour late the next day: not a scale gone dark; redelivery of a
    # batch adds nothing
    send(store, [hb(9, cst(3, 17, 50))])
    send(store, [hb(10, cst(4, 6, 30))])
    send(store, [hb(4, cst(3, 10, 40)), hb(5, cst(3, 10, 41))])
    got = offline(store)
    assert len(got) == 3
    last = json.loads(got[-1]["evidence"])
    assert last["from_ms"] == cst(3, 11, 30)
    assert last["in_trading_hours_ms"] == (5 * 60 + 30) * MIN
