"""Evidence of a day (issue 14): repeated impact sales and a persistent offset on the empty
pan. The pure rules, then through the ingest pipeline on SQLite and PostgreSQL, and what
the inspection queue makes of them."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import insert, select

from gateway_server.casework import inspection
from gateway_server.detect import risk
from gateway_server.detect.rules.day import check_impact_day, check_zero_day, deviation_of
from gateway_server.detect.rules.stream import DetectorParams, ScaleCtx, market_day
from gateway_server.ingest.pipeline import decode_message, store_batch
from gateway_server.store.database import Store
from gateway_server.store.tables import bindings, findings, markets, merchants, plu_prices, scales
from weighing import metrology as mt, wire

T0 = 1_790_000_000_000  # 2026-09-21 22:13 CST; the day's sales below stay in one CST day
MIN = 60_000
SC = ScaleCtx("s-1", "m1", e_mg=5_000, max_mg=15_000_000)


def impact_row(i: int, net: int, settled: int, **kw: object) -> dict[str, object]:
    return {"seq": i, "ts_ms": T0 + i * MIN, "net_mg": net, "settled_mg": settled,
            "unit_price_fen_per_kg": 2_800, "category": "meat", "merchant_id": 1, **kw}


def test_deviation_follows_the_category_else_the_price_band() -> None:
    assert deviation_of(1_000_000, category="meat", unit_price_fen_per_kg=None) == \
        mt.retail_negative_deviation_mg(1_000_000, category=mt.GoodsCategory("meat"))
    assert deviation_of(1_000_000, category="no-such", unit_price_fen_per_kg=2_800) == \
        mt.retail_negative_deviation_mg(1_000_000, unit_price_fen_per_kg=2_800)
    assert deviation_of(1_000_000, category=None, unit_price_fen_per_kg=None) is None


def test_impacts_beyond_the_deviation_three_times_a_day_are_evidence() -> None:
    limit = deviation_of(1_000_000, category="meat", unit_price_fen_per_kg=2_800)
    assert limit is not None
    over = [impact_row(i, 1_000_000 + limit + 5_000, 1_000_000) for i in (1, 2, 3)]
    got = check_impact_day(over, SC)
    assert [f.kind for f in got] == ["impact-repeated"]
    f = got[0]
    assert f.severity == "critical" and f.merchant_id == 1
    assert f.dedup_key == f"impact-repeated:s-1:{market_day(T0 + 3 * MIN)}"
    assert f.evidence["count"] == 3
    assert f.evidence["short_total_mg"] == 3 * (limit + 5_000)
    assert check_impact_day(over[:2], SC) == []  # two can be hasty presses


def test_impacts_within_the_deviation_or_below_the_settled_weight_say_nothing() -> None:
    limit = deviation_of(1_000_000, category="meat", unit_price_fen_per_kg=2_800)
    assert limit is not None
    within = [impact_row(i, 1_000_000 + limit, 1_000_000) for i in range(1, 6)]  # exactly at it
    under = [impact_row(i, 900_000, 1_000_000) for i in range(6, 12)]  # pressed on the rise
    live_fish = [impact_row(i, 1_200_000, 1_000_000, category="live_fish",
                            unit_price_fen_per_kg=None) for i in range(12, 16)]
    assert check_impact_day(within + under + live_fish, SC) == []


def zero(i: int, mean: int) -> dict[str, int]:
    return {"ts_ms": T0 + i * 10 * MIN, "mean_mg": mean, "duration_ms": 60_000}


def sold(*counts: int, deviation: int | None = 10_000) -> list[dict[str, object]]:
    """``counts[i]`` sales between idle reports i + 1 and i + 2 (of :func:`zero`)."""
    return [{"ts_ms": T0 + (i + 1) * 10 * MIN + (j + 1) * MIN, "deviation_mg": deviation,
             "merchant_id": 7} for i, n in enumerate(counts) for j in range(n)]


def test_one_offset_across_three_idle_periods_with_sales_between_is_evidence() -> None:
    zs = [zero(1, 30_000), zero(2, 35_000), zero(3, 30_000), zero(4, 30_000)]
    got = check_zero_day(zs, sold(2, 1, 1), SC)
    assert [(f.kind, f.severity, f.merchant_id) for f in got] == [
        ("zero-offset-persistent", "critical", 7)]
    f = got[0]
    assert f.evidence["means_mg"] == [30_000, 35_000, 30_000]  # the first three: complete
    assert f.evidence["sales_between"] == [2, 1] and f.ts_ms == zs[2]["ts_ms"]
    assert f.evidence["deviation_mg"] == 10_000
    assert check_zero_day(zs[:3], sold(2, 1), SC) == got  # the same, whatever came after


@pytest.mark.parametrize(("means", "between", "deviation", "why"), [
    ([30_000, 30_000], [3], 10_000, "two reports only"),
    ([30_000, 30_000, 30_000], [3, 0], 10_000, "no sale between the last two: two periods"),
    ([30_000, 30_000, 12_000, 30_000], [1, 1, 0], 10_000, "a period's reports disagree"),
    ([30_000, 45_000, 30_000], [1, 1], 10_000, "more than 1 e apart: not one offset"),
    ([10_000, 10_000, 10_000], [1, 1], 10_000, "not above the deviation"),
    ([-30_000, -30_000, -30_000], [1, 1], 10_000, "below zero: in the consumer's favour"),
    ([30_000, 30_000, 30_000], [1, 1], None, "no deviation applies"),
])
def test_a_persistent_offset_needs_all_of_it(means: list[int], between: list[int],
                                             deviation: int | None, why: str) -> None:
    zs = [zero(i, m) for i, m in enumerate(means, 1)]
    assert check_zero_day(zs, sold(*between, deviation=deviation), SC) == [], why


def test_reports_of_one_idle_period_count_once_and_must_agree() -> None:
    """The agent reports a long idle period in parts: three parts with no sale between are
    one period; three periods, the middle one reported twice, are evidence."""
    zs = [zero(1, 30_000), zero(2, 30_000), zero(3, 30_000)]
    assert check_zero_day(zs, sold(0, 0), SC) == []
    zs = [zero(1, 30_000), zero(2, 30_000), zero(3, 30_000), zero(4, 30_000)]
    got = check_zero_day(zs, sold(1, 0, 2), SC)
    assert len(got) == 1 and got[0].evidence["sales_between"] == [1, 2]


def test_the_thresholds_are_parameters() -> None:
    zs = [zero(1, 30_000), zero(2, 30_000)]
    assert check_zero_day(zs, sold(1), SC, params=DetectorParams(zero_confirm_reports=2))


# -- through the pipeline -------------------------------------------------------------------


@pytest.fixture
def market(store: Store) -> int:
    """Market m1, trade scale s-1 (15 kg / 5 g) bound to a meat stall, PLU 7 pork 28 yuan/kg."""
    with store.engine.begin() as c:
        c.execute(insert(markets).values(id="m1", name="一号市场", created_ms=T0))
        mid = c.execute(insert(merchants).values(
            market_id="m1", name="王五鲜肉", trust_token="tok-1", created_ms=T0, updated_ms=T0,
            categories="meat").returning(merchants.c.id)).scalar_one()
        c.execute(insert(scales).values(device="s-1", market="m1", registered=True,
                                        role="trade", max_mg=15_000_000, e_mg=5_000,
                                        accuracy_class="III", state="online"))
        c.execute(insert(bindings).values(device="s-1", merchant_id=mid, valid_from_ms=T0 - 1))
        c.execute(insert(plu_prices).values(merchant_id=mid, plu="7", name="猪肉",
                                            category="meat", unit_price_fen_per_kg=2_800,
                                            valid_from_ms=T0 - 1))
    return int(mid)


def sale(seq: int, t: int, **kw: object) -> wire.SaleEvent:
    base: dict[str, object] = dict(seq=seq, ts_ms=t, net_mg=1_000_000, settled_mg=1_000_000,
                                   peak_mg=1_050_000, tare_mg=10_000, stable_device=True,
                                   stable_software=True, plu="7", unit_price_fen_per_kg=2_800,
                                   amount_fen=2_800)
    base.update(kw)
    return wire.SaleEvent(**base)  # type: ignore[arg-type]


def impact(seq: int, t: int) -> wire.SaleEvent:
    """1,080 g charged, the pan settled at 1,000 g: 80 g short (the deviation at 1 kg: 20 g)."""
    return sale(seq, t, net_mg=1_080_000, peak_mg=1_080_000, unsettled_commit=True,
                stable_device=False, stable_software=False, amount_fen=3_024)


def run(store: Store, evs: list[wire.Event]) -> None:
    msg = decode_message("scales/v1/m1/s-1/events",
                         wire.encode(wire.EventBatch(device="s-1", events=evs)), T0)
    with store.engine.begin() as c:
        store_batch(c, [msg], now_ms=T0 + 10**7)


def kinds(store: Store) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    out: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    with store.engine.connect() as c:
        for r in c.execute(select(findings).order_by(findings.c.id)):
            out.setdefault(r.kind, []).append(dict(r._mapping))
    return out


def queued(store: Store) -> list[str]:
    with store.engine.connect() as c:
        return [q.device for q in inspection.risk_ranking(c, now_ms=T0 + 10**7)]


def test_three_impact_sales_in_a_day_put_the_scale_in_the_queue(store: Store,
                                                                 market: int) -> None:
    run(store, [impact(1, T0 + MIN), sale(2, T0 + 2 * MIN)])
    run(store, [impact(3, T0 + 3 * MIN)])
    got = kinds(store)
    assert len(got["impact"]) == 2 and "impact-repeated" not in got
    assert queued(store) == []  # hasty presses are observations
    run(store, [impact(4, T0 + 4 * MIN), impact(5, T0 + 5 * MIN)])
    got = kinds(store)
    assert [f["severity"] for f in got["impact-repeated"]] == ["critical"]  # once a day
    ev = json.loads(got["impact-repeated"][0]["evidence"])
    assert ev["count"] == 3 and [s["seq"] for s in ev["sales"]] == [1, 3, 4]  # first three
    assert {s["short_mg"] for s in ev["sales"]} == {80_000}
    assert got["impact-repeated"][0]["merchant_id"] == market
    assert queued(store) == ["s-1"]


def test_a_preset_base_across_idle_periods_puts_the_scale_in_the_queue(store: Store,
                                                                        market: int) -> None:
    def idle(seq: int, t: int, mean: int) -> wire.ZeroCheckEvent:
        return wire.ZeroCheckEvent(seq=seq, ts_ms=t, mean_mg=mean, spread_mg=0, n=60,
                                   duration_ms=60_000)

    run(store, [idle(1, T0 + MIN, 50_000), sale(2, T0 + 2 * MIN),
                idle(3, T0 + 3 * MIN, 50_000)])
    assert "zero-offset-persistent" not in kinds(store) and queued(store) == []
    run(store, [idle(4, T0 + 4 * MIN, 50_000)])  # no sale between: the merchant may be away
    assert "zero-offset-persistent" not in kinds(store)
    run(store, [sale(5, T0 + 5 * MIN), idle(6, T0 + 6 * MIN, 55_000)])
    got = kinds(store)
    assert len(got["zero-offset-persistent"]) == 1
    ev = json.loads(got["zero-offset-persistent"][0]["evidence"])
    assert ev["means_mg"] == [50_000, 50_000, 50_000, 55_000]
    assert ev["deviation_mg"] == deviation_of(1_000_000, category="meat",
                                              unit_price_fen_per_kg=2_800)
    assert queued(store) == ["s-1"]


def test_an_honest_wandering_zero_gives_no_day_evidence(store: Store, market: int) -> None:
    """Zero within ±0.25 e, a hand resting once, goods lifted: no persistent offset."""
    evs: list[wire.Event] = []
    means = [1_000, -1_000, 30_000, 0, 1_250, 12_000, -1_250, 0]
    for i, m in enumerate(means):
        evs += [sale(2 * i + 1, T0 + (2 * i + 1) * MIN),
                wire.ZeroCheckEvent(seq=2 * i + 2, ts_ms=T0 + (2 * i + 2) * MIN, mean_mg=m,
                                    spread_mg=0, n=60, duration_ms=60_000)]
    run(store, evs)
    got = kinds(store)
    assert "zero-offset-persistent" not in got and len(got["zero-offset"]) >= 1
    assert queued(store) == []


def test_the_day_kinds_enter_alone_within_the_queue_budget() -> None:
    m = risk.DEFAULT_MODEL
    for kind in ("impact-repeated", "zero-offset-persistent"):
        e = m.lookup(kind, "critical")
        assert e is not None and m.p_day(e.weight) <= risk.ALPHA_DAY


def test_a_weight_only_scale_is_judged_by_the_merchants_most_lenient_goods(
        store: Store, market: int) -> None:
    """A scale that reports weight alone (no PLU, no price): the deviation is the largest
    any of the merchant's registered goods allows at that weight."""
    with store.engine.begin() as c:
        c.execute(insert(plu_prices).values(merchant_id=market, plu="9", name="鸡蛋",
                                            category=None, unit_price_fen_per_kg=1_200,
                                            valid_from_ms=T0 - 1))
    lenient = max(deviation_of(1_000_000, category="meat", unit_price_fen_per_kg=None) or 0,
                  deviation_of(1_000_000, category=None, unit_price_fen_per_kg=1_200) or 0)

    def bare(seq: int, net: int) -> wire.SaleEvent:
        return sale(seq, T0 + seq * MIN, net_mg=net, peak_mg=net, unsettled_commit=True,
                    stable_device=False, stable_software=False, plu=None,
                    unit_price_fen_per_kg=None, amount_fen=None)

    run(store, [bare(i, 1_000_000 + lenient) for i in (1, 2, 3)])  # at the limit: nothing
    assert "impact-repeated" not in kinds(store)
    run(store, [bare(i, 1_000_000 + lenient + 5_000) for i in (4, 5, 6)])
    ev = json.loads(kinds(store)["impact-repeated"][0]["evidence"])
    assert [s["limit_mg"] for s in ev["sales"]] == [lenient] * 3
