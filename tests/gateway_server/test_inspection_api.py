"""Finding → queue → task → inspection result → card / list status, through the API; the
public trust-code data follows. Also the tolerance calculator. (What enters the queue:
test_risk_queue.py.)"""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from conftest import seed
from gateway_server.casework import inspection as insp
from gateway_server.ingest.pipeline import decode_message, store_batch
from gateway_server.registry import register as reg
from gateway_server.store.database import Store
from gateway_server.store.tables import sales
from weighing import wire
from weighing.metrology import fraud_compensation_fen


def setup_scale_with_findings(store: Store, *, seal_broken: bool = False) -> dict[str, object]:
    """s-1 with an impact and a zero offset (two observations); ``seal_broken``: and a
    calibration counter moved without a registered repair (conclusive: the queue)."""
    now = time.time_ns() // 1_000_000
    with store.engine.begin() as c:
        ids = seed(c)
        reg.register_scale(c, "s-1", market_id="m1", now_ms=now, max_mg=15_000_000,
                           e_mg=5_000, accuracy_class="III", role="trade")
        reg.bind(c, "s-1", ids["a"], at_ms=now - 60_000)
        reg.register_scale(c, "s-2", market_id="m1", now_ms=now, max_mg=30_000_000,
                           e_mg=10_000, accuracy_class="III", role="trade")
        key = bytes.fromhex(reg.get_scale_row(c, "s-1")["key_hex"])
    from weighing.signing import sign_event

    evs = [
        sign_event(key, "s-1", wire.SaleEvent(
            seq=1, ts_ms=now - 1000, net_mg=198_000, settled_mg=155_000, peak_mg=198_000,
            stable_device=False, stable_software=False, unsettled_commit=True)),
        sign_event(key, "s-1", wire.ZeroCheckEvent(
            seq=2, ts_ms=now - 500, mean_mg=100_000, spread_mg=0, n=40, duration_ms=8_000)),
    ]
    if seal_broken:
        evs.append(sign_event(key, "s-1", wire.CounterChangeEvent(
            seq=3, ts_ms=now - 400, name="cal", old="41", new="42")))
    inc = decode_message("scales/v1/m1/s-1/events",
                         wire.encode(wire.EventBatch(device="s-1", events=evs)), now)
    with store.engine.begin() as c:
        res = store_batch(c, [inc], now_ms=now)
    assert len(res.new_findings) == 2 + seal_broken, res
    return ids


def test_finding_task_result_cards_and_public_page(client: TestClient, store: Store,
                                                   inspector: dict[str, str]) -> None:
    ids = setup_scale_with_findings(store, seal_broken=True)
    h = inspector
    fs = client.get("/api/v1/findings", headers=h).json()
    assert {f["kind"] for f in fs} == {"impact", "zero-offset", "calibration-change"}
    assert all(f["evidence"] and f["legal_basis"] for f in fs)
    (item,) = client.get("/api/v1/inspection-queue", headers=h).json()
    assert item["device"] == "s-1" and item["risk"] > 0 and item["grounds"] == ["evidence"]
    assert item["test_loads_mg"] == [100_000, 2_500_000, 10_000_000, 15_000_000]
    assert [(r["kind"], r["counted"]) for r in item["reasons"]] == [
        ("calibration-change", True), ("impact", False), ("zero-offset", False)]
    task = client.post("/api/v1/inspection-tasks", json={"device": "s-1"}, headers=h).json()
    assert task["status"] == "open" and len(task["finding_ids"]) == 3
    assert task["risk"] == item["risk"]
    # 15 kg / 5 g in service: ±5 g to 2.5 kg, ±10 g to 10 kg; reads 100 g heavy at every load
    loads = [{"load_mg": m, "indication_mg": m + 100_000} for m in task["test_loads_mg"]]
    r = client.post("/api/v1/inspections", headers=h,
                    json={"device": "s-1", "task_id": task["id"], "loads": loads})
    assert r.status_code == 201, r.text
    res = r.json()
    assert res["verdict"] == "fail" and not any(c["ok"] for c in res["checks"])
    assert res["checks"][1]["mpe_mg"] == "5000" and res["checks"][2]["mpe_mg"] == "10000"
    assert res["merchant_status"] == {"status": "yellow", "list_status": "none"}
    assert {f["status"] for f in client.get("/api/v1/findings", headers=h).json()} == {
        "confirmed"}
    assert client.get("/api/v1/inspection-tasks", headers=h).json() == []
    assert client.get("/api/v1/inspection-queue", headers=h).json() == []  # answered
    # a second failure: red card and the black list, shown on the public trust-code data
    r = client.post("/api/v1/inspections", headers=h, json={"device": "s-1", "loads": loads})
    assert r.json()["merchant_status"] == {"status": "red", "list_status": "black"}
    public = client.get(f"/api/v1/public/merchants/{ids['a_token']}").json()
    assert public["status"] == "red" and public["list_status"] == "black"


def test_passing_inspection_within_mpe(client: TestClient, store: Store,
                                       inspector: dict[str, str]) -> None:
    ids = setup_scale_with_findings(store)
    loads = [{"load_mg": 2_500_000, "indication_mg": 2_505_000},  # +5 g = MPE: passes
             {"load_mg": 10_000_000, "indication_mg": 9_990_000}]  # -10 g = MPE: passes
    r = client.post("/api/v1/inspections", headers=inspector,
                    json={"device": "s-1", "loads": loads}).json()
    assert r["verdict"] == "pass" and all(c["ok"] for c in r["checks"])
    kinds = {f["kind"]: f["status"] for f in client.get("/api/v1/findings",
                                                        headers=inspector).json()}
    # a passed weighing test refutes the zero-offset finding, not the impact one
    assert kinds == {"zero-offset": "dismissed", "impact": "open"}
    public = client.get(f"/api/v1/public/merchants/{ids['a_token']}").json()
    assert public["status"] == "normal"


def test_fraud_gives_compensation_on_linked_complaint(client: TestClient, store: Store,
                                                      inspector: dict[str, str]) -> None:
    ids = setup_scale_with_findings(store)
    c = client.post("/api/v1/public/complaints",
                    json={"trust_token": ids["a_token"], "text": "买的肉短秤了"})
    assert c.status_code == 201 and "12315" in c.json()["message"]
    r = client.post("/api/v1/inspections", headers=inspector, json={
        "device": "s-1", "fraud": True, "loads": [{"load_mg": 2_500_000,
                                                   "indication_mg": 2_500_000}]}).json()
    assert r["merchant_status"] == {"status": "red", "list_status": "black"}
    (complaint,) = client.get("/api/v1/complaints", headers=inspector).json()
    assert complaint["merchant_id"] == ids["a"]
    assert complaint["compensation_fen"] is None  # no sale linked: no price to multiply
    bad = client.post("/api/v1/public/complaints", json={"trust_token": "x" * 20, "text": "hi"})
    assert bad.status_code == 404


def _sale(c: Any, device: str, *, seq: int, ts_ms: int, merchant_id: int, amount_fen: int,
          trace_code: str) -> None:
    c.execute(sales.insert().values(
        device=device, market="m1", merchant_id=merchant_id, seq=seq, ts_ms=ts_ms,
        received_ms=ts_ms, net_mg=1_000_000, settled_mg=1_000_000, peak_mg=1_000_000,
        stable_device=True, stable_software=True, amount_fen=amount_fen, trace_code=trace_code))


def test_compensation_needs_fraud_established_for_that_sale(
        client: TestClient, store: Store, inspector: dict[str, str],
        admin: dict[str, str]) -> None:
    """消保法 Art. 55: a fraud inspection of the merchant establishes fraud for the sales of
    the scale it tested in the period it examined (after that scale's previous inspection),
    not for every sale of the merchant: not before, not after, not on another scale."""
    ids = setup_scale_with_findings(store)
    t = time.time_ns() // 1_000_000
    pairs = [(2_500_000, 2_500_000)]
    with store.engine.begin() as c:
        reg.bind(c, "s-2", ids["a"], at_ms=t - 60_000)
        _sale(c, "s-1", seq=101, ts_ms=t - 50_000, merchant_id=ids["a"], amount_fen=20_000,
              trace_code="T-EARLY")
        insp.record_result(c, device="s-1", pairs=pairs, now_ms=t - 40_000)  # passed
        _sale(c, "s-1", seq=102, ts_ms=t - 30_000, merchant_id=ids["a"], amount_fen=20_000,
              trace_code="T-COVERED")
        _sale(c, "s-2", seq=101, ts_ms=t - 30_000, merchant_id=ids["a"], amount_fen=20_000,
              trace_code="T-OTHER-SCALE")
        insp.record_result(c, device="s-1", pairs=pairs, now_ms=t - 20_000, fraud=True)
        _sale(c, "s-1", seq=103, ts_ms=t - 10_000, merchant_id=ids["a"], amount_fen=20_000,
              trace_code="T-LATER")
    numbers = {}
    for code in ("T-EARLY", "T-COVERED", "T-OTHER-SCALE", "T-LATER"):
        r = client.post("/api/v1/public/complaint-cases", json={
            "trust_token": ids["a_token"], "text": "短秤了", "trace_code": code})
        assert r.status_code == 201 and r.json()["linked_sale"], r.text
        numbers[code] = r.json()["number"]
    with store.engine.connect() as c:
        trace = dict(c.execute(select(sales.c.id, sales.c.trace_code)).all())
    got = {trace[x["sale_id"]]: x["compensation_fen"]
           for x in client.get("/api/v1/complaints", headers=inspector).json()}
    assert got == {"T-EARLY": None, "T-COVERED": fraud_compensation_fen(20_000),
                   "T-OTHER-SCALE": None, "T-LATER": None}
    for code in ("T-EARLY", "T-OTHER-SCALE", "T-LATER"):
        r = client.post(f"/api/v1/complaint-cases/{numbers[code]}/close", headers=admin,
                        json={"outcome": "compensation"})
        assert r.status_code == 409 and "fraud" in r.text, (code, r.text)
    r = client.post(f"/api/v1/complaint-cases/{numbers['T-COVERED']}/close", headers=admin,
                    json={"outcome": "compensation"})
    assert r.status_code == 200, r.text
    assert r.json()["compensation_fen"] == fraud_compensation_fen(20_000)


def test_tolerance_calculator(client: TestClient, inspector: dict[str, str]) -> None:
    q = {"load_mg": 2_500_000, "e_mg": 5_000, "max_mg": 15_000_000}
    r = client.get("/api/v1/metrology/mpe", params=q, headers=inspector).json()
    assert r["mpe_mg"] == "5000"
    r = client.get("/api/v1/metrology/mpe", params=q | {"load_mg": 2_500_001},
                   headers=inspector).json()
    assert r["mpe_mg"] == "10000"
    r = client.get("/api/v1/metrology/mpe", params=q | {"stage": "initial_verification"},
                   headers=inspector).json()
    assert r["mpe_mg"] == "2500"
    assert client.get("/api/v1/metrology/mpe", params=q).status_code == 401
    r = client.get("/api/v1/metrology/retail-deviation", headers=inspector,
                   params={"weight_mg": 1_000_000, "category": "vegetables"}).json()
    assert r["negative_deviation_mg"] == 20_000
    assert r["reweigh_limit_mg"]["equal_accuracy_scale"] == 40_000
    bad = client.get("/api/v1/metrology/mpe", headers=inspector,
                     params={"load_mg": 1, "e_mg": 5_000, "max_mg": 15_000_001})
    assert bad.status_code == 422


@pytest.mark.parametrize(("e_mg", "max_mg", "cls", "loads"), [
    (5_000, 15_000_000, "III", [100_000, 2_500_000, 10_000_000, 15_000_000]),
    # class II fair scale 15 kg / 1 g: Min 50 e, the band change at 5,000 e (R76-1 Table 6)
    (1_000, 15_000_000, "II", [50_000, 5_000_000, 15_000_000]),
    # class IIII 5 kg / 5 g: Min 10 e, band changes at 50 e and 200 e
    (5_000, 5_000_000, "IIII", [50_000, 250_000, 1_000_000, 5_000_000]),
])
def test_test_loads_follow_the_class(e_mg: int, max_mg: int, cls: str, loads: list[int]) -> None:
    from gateway_server.casework.inspection import inspection_loads_mg

    assert inspection_loads_mg(e_mg=e_mg, max_mg=max_mg, accuracy_class=cls) == loads


def test_mpe_of_a_class_ii_fair_scale(client: TestClient, inspector: dict[str, str]) -> None:
    """The scale page draws a class II scale's envelope from /metrology/mpe (was a 422)."""
    q = {"load_mg": 5_000_001, "e_mg": 1_000, "max_mg": 15_000_000, "accuracy_class": "II"}
    r = client.get("/api/v1/metrology/mpe", params=q, headers=inspector)
    assert r.status_code == 200 and r.json()["mpe_mg"] == "2000"
