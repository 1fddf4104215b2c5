"""Detectors through the ingest pipeline (SQLite and PostgreSQL): findings carry evidence;
a fair-scale re-weigh is linked to its sale whichever arrives first."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import insert, select

from gateway_server.ingest.pipeline import decode_message, store_batch
from gateway_server.store.database import Store
from gateway_server.store.tables import bindings, findings, markets, merchants, plu_prices, scales
from gateway_server.store.tables_workflow import repairs, reweighs
from weighing import wire

T0 = 1_790_000_000_000


# ``store``: tests/gateway_server/conftest.py, on SQLite and on PostgreSQL


@pytest.fixture
def market(store: Store) -> int:
    """Market m1: trade scale s-1 (15 kg / 5 g) bound to merchant 1; fair scale f-1 (6 kg / 1 g)."""
    with store.engine.begin() as c:
        c.execute(insert(markets).values(id="m1", name="一号市场", created_ms=T0))
        mid = c.execute(insert(merchants).values(
            market_id="m1", name="王五鲜肉", trust_token="tok-1", created_ms=T0, updated_ms=T0,
            categories="meat").returning(merchants.c.id)).scalar_one()
        c.execute(insert(scales), [
            {"device": "s-1", "market": "m1", "registered": True, "role": "trade",
             "max_mg": 15_000_000, "e_mg": 5_000, "accuracy_class": "III", "state": "online"},
            {"device": "f-1", "market": "m1", "registered": True, "role": "fair",
             "max_mg": 6_000_000, "e_mg": 1_000, "accuracy_class": "III", "state": "online"}])
        c.execute(insert(bindings).values(device="s-1", merchant_id=mid, valid_from_ms=T0 - 1))
        c.execute(insert(plu_prices).values(merchant_id=mid, plu="7", name="猪肉",
                                            category="meat", unit_price_fen_per_kg=2_800,
                                            valid_from_ms=T0 - 1))
    return int(mid)


def events(device: str, evs: list[wire.Event]):  # type: ignore[no-untyped-def]
    return decode_message(f"scales/v1/m1/{device}/events",
                          wire.encode(wire.EventBatch(device=device, events=evs)), T0)


def sale(seq: int, **kw: object) -> wire.SaleEvent:
    base: dict[str, object] = dict(seq=seq, ts_ms=T0 + seq, net_mg=1_250_000,
                                   settled_mg=1_250_000, peak_mg=1_300_000, tare_mg=10_000,
                                   stable_device=True, stable_software=True, plu="7",
                                   unit_price_fen_per_kg=2_800, amount_fen=3_500)
    base.update(kw)
    return wire.SaleEvent(**base)  # type: ignore[arg-type]


def run(store: Store, *batch):  # type: ignore[no-untyped-def]
    with store.engine.begin() as c:
        return store_batch(c, list(batch), now_ms=T0 + 10**6)


def all_findings(store: Store) -> list[dict]:  # type: ignore[type-arg]
    with store.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(findings).order_by(findings.c.id))]


def test_honest_stream_gives_no_finding(store: Store, market: int) -> None:
    run(store, events("s-1", [sale(i) for i in range(1, 20)]))
    assert all_findings(store) == []


def test_cheats_in_the_stream_give_their_findings_with_evidence(store: Store,
                                                                  market: int) -> None:
    res = run(store, events("s-1", [
        sale(1),
        sale(2, net_mg=198_000, settled_mg=155_000, peak_mg=198_000, unsettled_commit=True,
             stable_device=False, amount_fen=554),
        sale(3, unit_price_fen_per_kg=28, amount_fen=35),  # 0.28 instead of 28.00 yuan/kg
        sale(4, tare_mg=0),  # meat sold with its tray
        wire.ZeroCheckEvent(seq=5, ts_ms=T0 + 5, mean_mg=100_000, spread_mg=0, n=60,
                            duration_ms=10_000),  # 100 g preset base
        wire.CounterChangeEvent(seq=6, ts_ms=T0 + 6, name="cal_counter", old="3", new="4"),
    ]))
    got = {f["kind"]: f for f in all_findings(store)}
    assert set(got) == {"impact", "price-decimal-trick", "tare-omission", "zero-offset",
                        "calibration-change"}
    assert len(res.new_findings) == 5
    assert got["impact"]["merchant_id"] == market
    assert json.loads(got["impact"]["evidence"])["settled_mg"] == 155_000
    assert json.loads(got["zero-offset"]["evidence"])["mean_mg"] == 100_000
    # redelivery of the same batch adds nothing
    run(store, events("s-1", [sale(2, net_mg=198_000, settled_mg=155_000, peak_mg=198_000,
                                   unsettled_commit=True, stable_device=False,
                                   amount_fen=554)]))
    assert len(all_findings(store)) == 5


def test_registered_repair_explains_a_counter_change(store: Store, market: int) -> None:
    with store.engine.begin() as c:
        c.execute(insert(repairs).values(device="s-1", kind="repair", ts_ms=T0 - 60_000,
                                         by="维修站", note="更换传感器"))
    run(store, events("s-1", [wire.CounterChangeEvent(seq=1, ts_ms=T0 + 1, name="cal_counter",
                                                      old="3", new="4")]))
    assert all_findings(store) == []


def by_kind(store: Store) -> dict[str, list[tuple[str, str]]]:  # type: ignore[type-arg]
    out: dict[str, list[tuple[str, str]]] = {}
    for f in all_findings(store):
        out.setdefault(f["kind"], []).append((f["severity"], f["dedup_key"]))
    return out


def test_stall_selling_tray_goods_without_trays_is_not_accused(store: Store, market: int) -> None:
    """Issue 14 cause 1: meat sold with tare 0 all day by a stall that never uses trays was a
    medium finding per sale; now one info observation per scale and day, no accusation."""
    day = [sale(i, ts_ms=T0 + i * 60_000, tare_mg=0) for i in range(1, 41)]
    res = run(store, events("s-1", day[:20]))
    run(store, events("s-1", day[20:]))
    got = by_kind(store)
    assert "tare-omission" not in got
    assert [sev for sev, _ in got["untared-tray-goods"]] == ["info"]
    assert len(res.new_findings) == 1  # deduplicated inside the batch too


def test_tray_not_tared_found_on_the_first_untared_sale(store: Store, market: int) -> None:
    """The fleet's tray cheat: trays tared (15-45 g), then sold with the tray; found on the
    first untared sale, high once three follow one another."""
    tared = [sale(i, ts_ms=T0 + i * 300_000, tare_mg=5_000 * (3 + i % 7)) for i in range(1, 13)]
    run(store, events("s-1", tared))
    run(store, events("s-1", [sale(13, ts_ms=T0 + 13 * 300_000, tare_mg=0)]))
    ((sev, _),) = by_kind(store)["tare-omission"]
    assert sev == "medium"
    (f,) = [f for f in all_findings(store) if f["kind"] == "tare-omission"]
    ev = json.loads(f["evidence"])
    assert ev["habit"]["tared"] == 10 and ev["habit"]["basis"] == "plu" and ev["seq"] == 13
    assert f["merchant_id"] == market
    run(store, events("s-1", [sale(i, ts_ms=T0 + i * 300_000, tare_mg=0) for i in (14, 15)]))
    assert sorted(sev for sev, _ in by_kind(store)["tare-omission"]) == ["high", "medium"]


def test_first_counter_report_sets_the_baseline(store: Store, market: int) -> None:
    """Issue 14 cause 4: the agent's first report (old=None) accused every new scale."""
    def counter(seq: int, old: str | None, new: str) -> wire.CounterChangeEvent:
        return wire.CounterChangeEvent(seq=seq, ts_ms=T0 + seq, name="cal_counter", old=old,
                                       new=new)

    run(store, events("s-1", [counter(1, None, "41"),
                              wire.CounterChangeEvent(seq=2, ts_ms=T0 + 2, name="sw_id", old=None,
                                                      new="V2.1")]))
    assert all_findings(store) == []
    # the agent restarted without its memory: the same value again is nothing ...
    run(store, events("s-1", [counter(3, None, "41")]))
    assert all_findings(store) == []
    # ... a different one is a change the server saw (its last stored value was 41)
    run(store, events("s-1", [counter(4, None, "42")]))
    (f,) = all_findings(store)
    assert f["kind"] == "calibration-change" and f["severity"] == "critical"
    assert json.loads(f["evidence"])["server_last_value"] == "41"
    # and in one batch: a first report, then a change against it
    run(store, events("s-1", [wire.CounterChangeEvent(seq=5, ts_ms=T0 + 5, name="cfg_counter",
                                                      old=None, new="7"),
                              wire.CounterChangeEvent(seq=6, ts_ms=T0 + 6, name="cfg_counter",
                                                      old=None, new="8")]))
    assert [json.loads(f["evidence"])["name"] for f in all_findings(store)] == [
        "cal_counter", "cfg_counter"]


@pytest.mark.parametrize(("amount_fen", "why"), [
    (3_460, "to the jiao, half up"), (3_450, "to the jiao, down"), (3_457, "to the fen"),
    (3_400, "below: in the consumer's favour")])
def test_lawful_rounding_of_the_amount_is_not_a_finding(store: Store, market: int,
                                                        amount_fen: int, why: str) -> None:
    """Issue 14 cause 5: 1.235 kg x 28.00 = 34.58 yuan; a scale rounding another lawful way."""
    run(store, events("s-1", [sale(1, net_mg=1_235_000, settled_mg=1_235_000,
                                   peak_mg=1_235_000, amount_fen=amount_fen)]))
    assert all_findings(store) == [], why


def test_amount_above_every_lawful_rounding_is_a_finding(store: Store, market: int) -> None:
    run(store, events("s-1", [sale(1, net_mg=1_235_000, settled_mg=1_235_000,
                                   peak_mg=1_235_000, amount_fen=3_461)]))
    (f,) = all_findings(store)
    ev = json.loads(f["evidence"])
    assert f["kind"] == "amount-mismatch" and ev["max_lawful_amount_fen"] == 3_460
    assert ev["overcharge_fen"] == 1 and ev["expected_amount_fen"] == 3_458


@pytest.mark.parametrize("reweigh_first", [False, True])
def test_fair_scale_reweigh_linked_to_its_sale(store: Store, market: int,
                                               reweigh_first: bool) -> None:
    sold = events("s-1", [sale(1, trace_code="TR-0001"), sale(2, trace_code="TR-0002")])
    # a finer fair scale (e = 1 g < 5 g): "more accurate", limit 1x the deviation (Art. 6)
    # meat, 1.25 kg sold: negative deviation 5 g (附表1 row 2, m <= 2.5 kg)
    rw = events("f-1", [
        wire.ReweighEvent(seq=1, ts_ms=T0 + 100, trace_code="TR-0001", reference_mg=1_246_000),
        wire.ReweighEvent(seq=2, ts_ms=T0 + 101, trace_code="TR-0002", reference_mg=1_200_000),
    ])
    if reweigh_first:
        run(store, rw)
        run(store, sold)
    else:
        run(store, sold)
        run(store, rw)
    with store.engine.connect() as c:
        rows = {r.trace_code: r for r in c.execute(select(reweighs))}
    ok, short = rows["TR-0001"], rows["TR-0002"]
    assert ok.method == "more_accurate_scale" and ok.limit_mg == 5_000
    assert ok.shortfall_mg == 4_000 and ok.verdict == "ok"
    assert short.shortfall_mg == 50_000 and short.verdict == "violation"
    assert short.merchant_id == market and short.sold_mg == 1_250_000
    (f,) = [f for f in all_findings(store) if f["kind"] == "reweigh-short"]
    ev = json.loads(f["evidence"])
    assert ev["trace_code"] == "TR-0002" and ev["shortfall_mg"] == 50_000
    assert f["merchant_id"] == market and f["device"] == "s-1"


def test_gain_cheat_found_by_the_residual_detector(store: Store, market: int) -> None:
    """+10 % gain: each sale reads 10 % heavy; the fair scale (e = 1 g) shows the truth."""
    true = [800_000, 1_500_000, 2_300_000, 600_000, 3_100_000, 1_200_000]
    sold = [round(m * 1.10 / 5_000) * 5_000 for m in true]
    run(store, events("s-1", [sale(i + 1, net_mg=s, settled_mg=s, peak_mg=s,
                                   amount_fen=None, unit_price_fen_per_kg=None,
                                   trace_code=f"G-{i}") for i, s in enumerate(sold)]))
    run(store, events("f-1", [wire.ReweighEvent(seq=i + 1, ts_ms=T0 + 100 + i,
                                                trace_code=f"G-{i}", reference_mg=m)
                              for i, m in enumerate(true)]))
    got = {f["kind"]: f for f in all_findings(store)}
    assert "residual-gain" in got, list(got)
    ev = json.loads(got["residual-gain"]["evidence"])
    assert ev["verdict"] == "gain" and 0.08 < ev["b"] < 0.12
    assert got["residual-gain"]["merchant_id"] == market


def test_honest_reweighs_raise_no_residual_finding(store: Store, market: int) -> None:
    true = [800_000, 1_500_000, 2_300_000, 600_000, 3_100_000, 1_200_000, 950_000, 400_000]
    sold = [round(m / 5_000) * 5_000 for m in true]  # honest: display rounding only
    run(store, events("s-1", [sale(i + 1, net_mg=s, settled_mg=s, peak_mg=s,
                                   amount_fen=None, unit_price_fen_per_kg=None,
                                   trace_code=f"H-{i}") for i, s in enumerate(sold)]))
    run(store, events("f-1", [wire.ReweighEvent(seq=i + 1, ts_ms=T0 + 100 + i,
                                                trace_code=f"H-{i}", reference_mg=m)
                              for i, m in enumerate(true)]))
    assert [f["kind"] for f in all_findings(store)] == []


def test_idle_traceability_scale_among_busy_peers(store: Store, market: int) -> None:
    """Second untracked scale: s-4 is on (zero checks) but its sales stop while peers trade."""
    H = 3_600_000
    t0 = (T0 // H + 1) * H
    with store.engine.begin() as c:
        c.execute(insert(scales), [
            {"device": f"s-{i}", "market": "m1", "registered": True, "role": "trade",
             "max_mg": 15_000_000, "e_mg": 5_000, "accuracy_class": "III", "state": "online"}
            for i in (2, 3, 4)])

    def sales_of(d: str, first_seq: int, start: int, n: int, step: int):  # type: ignore[no-untyped-def]
        return events(d, [sale(first_seq + i, ts_ms=start + i * step, plu=None,
                               unit_price_fen_per_kg=None, amount_fen=None)
                          for i in range(n)])

    windows: dict[str, int] = {}
    batch = [sales_of(d, 1, t0, 20, 9 * 60_000) for d in ("s-1", "s-2", "s-3", "s-4")]
    batch += [sales_of(d, 21, t0 + 3 * H, 20, 9 * 60_000) for d in ("s-1", "s-2", "s-3")]
    batch.append(events("s-4", [wire.ZeroCheckEvent(seq=21, ts_ms=t0 + 4 * H, mean_mg=0,
                                                    spread_mg=0, n=50, duration_ms=60_000)]))
    with store.engine.begin() as c:
        store_batch(c, batch, now_ms=t0, windows=windows)
    assert [f for f in all_findings(store) if f["kind"] == "idle-while-peers-trade"] == []
    # two hours after the window [t0 + 3 h, t0 + 6 h) ended (event time) it is judged
    later = sales_of("s-1", 41, t0 + 8 * H + 1, 1, 1)
    with store.engine.begin() as c:
        store_batch(c, [later], now_ms=t0 + 8 * H, windows=windows)
    (f,) = [f for f in all_findings(store) if f["kind"] == "idle-while-peers-trade"]
    ev = json.loads(f["evidence"])
    assert f["device"] == "s-4" and ev["sales"] == 0 and ev["baseline_sales"] == 20


# -- re-weighs named by the stall, not by a receipt (second, untracked scale) --------------

MIN = 60_000


def stall_rw(seq: int, ts: int, mg: int, stall: str = "A-01") -> wire.ReweighEvent:
    return wire.ReweighEvent(seq=seq, ts_ms=ts, stall_no=stall, reference_mg=mg)


def sold(seq: int, ts: int, mg: int) -> wire.SaleEvent:
    return sale(seq, ts_ms=ts, net_mg=mg, settled_mg=mg, peak_mg=mg, plu=None,
                unit_price_fen_per_kg=None, amount_fen=None)


def zero_at(seq: int, ts: int) -> wire.ZeroCheckEvent:
    return wire.ZeroCheckEvent(seq=seq, ts_ms=ts, mean_mg=0, spread_mg=0, n=50, duration_ms=MIN)


def verdicts(store: Store) -> list[tuple[int, str, int | None]]:
    with store.engine.connect() as c:
        return [(r.reference_mg, r.verdict, r.sale_id) for r in c.execute(
            select(reweighs).where(reweighs.c.trace_code.is_(None)).order_by(reweighs.c.seq))]


@pytest.fixture
def stall(store: Store, market: int) -> int:
    with store.engine.begin() as c:
        c.execute(merchants.update().where(merchants.c.id == market).values(stall_no="A-01"))
    return market


def test_lost_receipt_reweigh_is_matched_to_its_sale_once(store: Store, stall: int) -> None:
    run(store, events("s-1", [sold(1, T0, 1_250_000), sold(2, T0 + 5 * MIN, 640_000)]))
    # the consumer lost the receipt: the fair scale (1 g) shows 1.245 kg, 10 min later
    run(store, events("f-1", [stall_rw(1, T0 + 10 * MIN, 1_245_000),
                              stall_rw(2, T0 + 12 * MIN, 1_247_000)]))
    (sale_1,) = {sid for _, v, sid in verdicts(store) if v == "matched"}
    assert verdicts(store) == [(1_245_000, "matched", sale_1), (1_247_000, "pending", None)]
    # a stall-named pair is linked by weight, not by code: never a residual pair
    with store.engine.connect() as c:
        assert c.execute(select(reweighs.c.settled_mg).where(
            reweighs.c.sale_id == sale_1)).scalar_one() is None
    # the scale reports past the window: the second one, which sale 1 already explains,
    # is judged untracked; one alone raises nothing
    run(store, events("s-1", [zero_at(3, T0 + 60 * MIN)]))
    assert [v for _, v, _ in verdicts(store)] == ["matched", "untracked"]
    assert [f["kind"] for f in all_findings(store)] == []


def test_goods_no_recorded_sale_explains_raise_untracked_sales(store: Store, stall: int) -> None:
    run(store, events("s-1", [sold(1, T0, 1_250_000)]))
    run(store, events("f-1", [stall_rw(1, T0 + 20 * MIN, 2_310_000),
                              stall_rw(2, T0 + 50 * MIN, 780_000),
                              stall_rw(3, T0 + 80 * MIN, 1_530_000)]))
    # nothing recorded explains them, but the scale has not reported past the window yet:
    # its sales may still be in an outbox
    assert [v for _, v, _ in verdicts(store)] == ["pending"] * 3
    run(store, events("s-1", [sold(2, T0 + 75 * MIN, 1_525_000)]))  # late: explains #3
    # ... and shows the scale's data through T0 + 75 min are in: #1's window has closed
    assert [v for _, v, _ in verdicts(store)] == ["untracked", "pending", "matched"]
    assert all_findings(store) == []  # one unexplained re-weigh is not enough
    run(store, events("s-1", [zero_at(3, T0 + 100 * MIN)]))
    assert [v for _, v, _ in verdicts(store)] == ["untracked", "untracked", "matched"]
    (f,) = all_findings(store)
    ev = json.loads(f["evidence"])
    assert (f["kind"], f["device"], f["merchant_id"]) == ("untracked-sales", "s-1", stall)
    assert f["ts_ms"] == T0 + 50 * MIN
    assert ev["untracked"] == 2 and ev["stall_named_reweighs"] == 2  # judged up to #2
    assert [r["reference_mg"] for r in ev["reweighs"]] == [2_310_000, 780_000]
    assert ev["recorded_sales"] == {"s-1": 2}


def test_a_silent_scale_is_judged_after_the_longest_wait(store: Store, stall: int) -> None:
    run(store, events("f-1", [stall_rw(1, T0, 2_310_000), stall_rw(2, T0 + MIN, 780_000)]))
    run(store, events("f-1", [stall_rw(3, T0 + 3 * 3_600_000, 990_000)]))
    assert [v for _, v, _ in verdicts(store)] == ["pending"] * 3
    run(store, events("f-1", [stall_rw(4, T0 + 6 * 3_600_000 + MIN, 990_000)]))
    assert [v for _, v, _ in verdicts(store)] == ["untracked", "untracked", "pending", "pending"]
    assert [f["kind"] for f in all_findings(store)] == ["untracked-sales"]


def test_unknown_stall_is_kept_and_never_judged(store: Store, stall: int) -> None:
    run(store, events("f-1", [stall_rw(1, T0, 990_000, stall="Z-99"),
                              wire.ReweighEvent(seq=2, ts_ms=T0, merchant_token="no-such-token",
                                                reference_mg=990_000)]))
    run(store, events("f-1", [zero_at(3, T0 + 8 * 3_600_000)]))
    assert [v for _, v, _ in verdicts(store)] == ["unknown-merchant", "unknown-merchant"]
    assert all_findings(store) == []


def test_trust_code_names_the_stall_too(store: Store, stall: int) -> None:
    with store.engine.begin() as c:
        c.execute(merchants.update().where(merchants.c.id == stall).values(
            trust_token="tok-trust-0001"))
    run(store, events("s-1", [sold(1, T0, 1_250_000)]))
    run(store, events("f-1", [wire.ReweighEvent(seq=1, ts_ms=T0 + 5 * MIN,
                                                merchant_token="tok-trust-0001",
                                                reference_mg=1_252_000)]))
    assert [v for _, v, _ in verdicts(store)] == ["matched"]
