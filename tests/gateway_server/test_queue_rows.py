"""Queue rows that say where and how much, and incidents (issue 18): through the API with
findings from the ingest pipeline, and the shortfall arithmetic on stored evidence."""

from __future__ import annotations

import time
from types import SimpleNamespace

from fastapi.testclient import TestClient
from test_inspection_api import setup_scale_with_findings

from gateway_server.casework.queue_rows import shortfall
from gateway_server.registry import register as reg
from gateway_server.store.database import Store


def _sale(seq: int, sid: int, net_mg: int, price: int) -> SimpleNamespace:
    return SimpleNamespace(seq=seq, id=sid, net_mg=net_mg, unit_price_fen_per_kg=price,
                           amount_fen=net_mg * price // 1_000_000)


DAY = [_sale(1, 11, 1_000_000, 3_000), _sale(2, 12, 2_000_000, 3_000),
       _sale(3, 13, 500_000, 3_000), _sale(4, 14, 1_500_000, 3_000)]  # 150 元 of meat


def test_impact_repeated_states_grams_percent_and_yuan() -> None:
    ev = {"sales": [{"seq": 1, "net_mg": 1_000_000, "short_mg": 20_000},
                    {"seq": 2, "net_mg": 2_000_000, "short_mg": 40_000},
                    {"seq": 3, "net_mg": 500_000, "short_mg": 10_000}]}
    sf = shortfall("impact-repeated", [ev], DAY)
    assert sf is not None
    assert (sf["short_mg"], sf["sold_mg"], sf["sales"]) == (70_000, 3_500_000, 3)  # 2 %
    assert sf["fen"] == 60 + 120 + 30  # 20 g, 40 g, 10 g at 30 元/kg
    # 2 % of the day's 150 元 turnover: 3 元 (the evidenced 2.10 元 is a floor)
    assert sf["day_turnover_fen"] == 15_000 and sf["fen_per_day"] == 300


def test_preset_base_prices_the_offset_on_every_sale_of_the_day() -> None:
    sf = shortfall("zero-offset-persistent", [{"means_mg": [30_000, 31_000, 30_000]}], DAY)
    assert sf is not None and sf["per_sale_mg"] == 30_000
    assert sf["short_mg"] == 4 * 30_000 and sf["fen"] == 4 * 90 == sf["fen_per_day"]


def test_trays_and_amounts_sum_the_evidenced_overcharges() -> None:
    tray = {"net_mg": 1_000_000, "tray_estimate_mg": 15_000, "overcharge_estimate_fen": 45}
    sf = shortfall("tare-omission", [tray, tray], DAY)
    assert sf is not None and (sf["short_mg"], sf["fen"], sf["fen_per_day"]) == (30_000, 90, 90)
    sf = shortfall("amount-mismatch", [{"overcharge_fen": 7}, {"overcharge_fen": 5}], DAY)
    assert sf is not None and sf["fen"] == 12 and sf["short_mg"] is None


def test_reweigh_short_uses_the_linked_sales_price() -> None:
    ev = {"shortfall_mg": 50_000, "sold_mg": 2_000_000, "sale_id": 12}
    sf = shortfall("reweigh-short", [ev], DAY)
    assert sf is not None and sf["fen"] == 150 and sf["fen_per_day"] == 15_000 * 50 // 2_000
    assert shortfall("reweigh-short", [], DAY) is None
    assert shortfall("bad-signature", [{"what": "x"}], DAY) is None  # states no quantity


def test_queue_row_names_market_stall_and_the_merchant_bound_then(
        client: TestClient, store: Store, inspector: dict[str, str]) -> None:
    ids = setup_scale_with_findings(store, seal_broken=True)
    now = time.time_ns() // 1_000_000
    with store.engine.begin() as c:  # the stall changes hands after the evidence
        reg.bind(c, "s-1", ids["b"], at_ms=now - 100)
    h = inspector
    (row,) = client.get("/api/v1/inspection-queue", headers=h).json()
    assert row["device"] == "s-1" and row["in_queue"]
    # the calibration finding carries no merchant id: the binding at its time says who
    assert (row["merchant_id"], row["merchant_name"], row["stall_no"]) == (
        ids["a"], "张三蔬菜", "A-01")
    assert row["merchant_at_ms"] < now - 100
    assert row["market_name"] == "东门农贸市场"
    # the impact (1 s before) is quantified: 43 g over a 155 g settle, no price
    sf = row["shortfall"]
    assert sf["kind"] == "impact" and sf["short_mg"] == 43_000 and sf["sold_mg"] == 198_000


def test_incidents_group_findings_per_scale_and_kind(client: TestClient, store: Store,
                                                    inspector: dict[str, str]) -> None:
    setup_scale_with_findings(store, seal_broken=True)
    h = inspector
    got = client.get("/api/v1/incidents", params={"device": "s-1"}, headers=h).json()
    assert sorted((x["kind"], x["count"], x["status"]) for x in got) == [
        ("calibration-change", 1, "open"), ("impact", 1, "open"), ("zero-offset", 1, "open")]
    fid = got[0]["last_id"]
    client.post(f"/api/v1/findings/{fid}/status", json={"status": "dismissed"}, headers=h)
    got = client.get("/api/v1/incidents", params={"device": "s-1", "status": "dismissed"},
                     headers=h).json()
    assert [x["last_id"] for x in got] == [fid]
