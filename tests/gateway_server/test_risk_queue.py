"""The inspection queue means "go there" (issue 14, cause 6): findings → the ingest
pipeline → the risk API, on SQLite and PostgreSQL.

One ambiguous finding is an observation (on the scale's and merchant's pages, not in the
queue); conclusive evidence enters; two independent weak kinds on one market day combine;
repeats of a kind do not multiply; the threshold the API states is the one applied; an
overdue verification is a queue reason of its own; an inspection answers what came before.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from conftest import seed
from gateway_server.casework import inspection as insp
from gateway_server.detect import risk
from gateway_server.ingest.pipeline import decode_message, store_batch
from gateway_server.registry import register as reg
from gateway_server.store.database import Store
from weighing import wire
from weighing.signing import sign_event
from weighing.units import amount_fen

DAY = 86_400_000
MIN = 60_000


def _noon(days_ago: int) -> int:
    """Noon (CST) of a market day in the past: every event of a test day is on that day."""
    now = time.time_ns() // 1_000_000
    return risk.market_day_start_ms(risk.market_day(now) - days_ago) + 12 * 3_600_000


class Market:
    """Merchants a (scales s-1, s-3) and b (s-2), 15 kg / 5 g each; a vegetable PLU at
    6 元/kg and a tray-sold meat PLU at 30 元/kg for both."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.now = time.time_ns() // 1_000_000
        self.seq: dict[str, int] = {}
        self.keys: dict[str, bytes] = {}
        with store.engine.begin() as c:
            self.ids = seed(c)
            for device, m in (("s-1", "a"), ("s-2", "b"), ("s-3", "a")):
                reg.register_scale(c, device, market_id="m1", now_ms=self.now,
                                   max_mg=15_000_000, e_mg=5_000, accuracy_class="III",
                                   role="trade", due_on_ms=self.now + 200 * DAY)
                reg.bind(c, device, self.ids[m], at_ms=self.now - 30 * DAY)
                self.keys[device] = bytes.fromhex(reg.get_scale_row(c, device)["key_hex"])
            for m in ("a", "b"):
                reg.add_price(c, self.ids[m], plu="1001", name="西红柿", category="vegetables",
                              unit_price_fen_per_kg=600, valid_from_ms=self.now - 30 * DAY)
                reg.add_price(c, self.ids[m], plu="3001", name="猪肉", category="meat",
                              unit_price_fen_per_kg=3_000, valid_from_ms=self.now - 30 * DAY)

    def send(self, device: str, events: list[Any]) -> Any:
        signed = [sign_event(self.keys[device], device, e) for e in events]
        inc = decode_message(f"scales/v1/m1/{device}/events",
                             wire.encode(wire.EventBatch(device=device, events=signed)), self.now)
        with self.store.engine.begin() as c:
            return store_batch(c, [inc], now_ms=self.now)

    def next_seq(self, device: str) -> int:
        self.seq[device] = self.seq.get(device, 0) + 1
        return self.seq[device]

    def sale(self, device: str, ts_ms: int, *, net_mg: int = 1_000_000, plu: str = "1001",
             price: int = 600, amount: int | None = None, tare_mg: int = 0,
             unsettled: bool = False) -> wire.SaleEvent:
        return wire.SaleEvent(
            seq=self.next_seq(device), ts_ms=ts_ms, net_mg=net_mg,
            settled_mg=net_mg - (40_000 if unsettled else 0), peak_mg=net_mg, tare_mg=tare_mg,
            stable_device=not unsettled, stable_software=not unsettled,
            unsettled_commit=unsettled, duration_ms=1_200, unit_price_fen_per_kg=price,
            amount_fen=amount_fen(net_mg, price) if amount is None else amount, plu=plu)

    def overcharge(self, device: str, ts_ms: int) -> wire.SaleEvent:
        """1 kg at 6 元/kg billed 7 元: above every lawful rounding (amount-mismatch)."""
        return self.sale(device, ts_ms, amount=700)

    def untared_trays(self, device: str, t: int, untared: int = 3) -> list[wire.SaleEvent]:
        """Eight meat sales with the tray tared, then ``untared`` without: one is a
        forgotten tray (tare-omission medium, an observation), three in a row a changed
        practice (tare-omission high, weak evidence)."""
        tared = [self.sale(device, t + i * MIN, net_mg=800_000 + 10_000 * i, plu="3001",
                           price=3_000, tare_mg=50_000) for i in range(8)]
        return [*tared, *(self.sale(device, t + (10 + i) * MIN, net_mg=900_000 + 10_000 * i,
                                    plu="3001", price=3_000) for i in range(untared))]


def _risk(client: TestClient, h: dict[str, str], device: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/risk/scales/{device}", headers=h)
    assert r.status_code == 200, r.text
    return r.json()


def _queue(client: TestClient, h: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {q["device"]: q for q in client.get("/api/v1/inspection-queue", headers=h).json()}


def _kinds(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["kind"]: r for r in item["reasons"]}


def test_one_ambiguous_finding_is_shown_not_queued(client: TestClient, store: Store,
                                                   inspector: dict[str, str]) -> None:
    mk = Market(store)
    mk.send("s-1", [mk.sale("s-1", _noon(1), unsettled=True)])  # one impact
    assert _queue(client, inspector) == {}
    r = _risk(client, inspector, "s-1")
    assert not r["in_queue"] and r["grounds"] == [] and r["evidence"] == 0
    assert r["p_honest_day"] == 1.0
    impact = _kinds(r)["impact"]
    assert impact["weight"] == 0 and impact["p_day"] == 0.1 and not impact["counted"]
    # still on the scale's and the merchant's pages
    fs = client.get("/api/v1/findings", params={"device": "s-1"}, headers=inspector).json()
    assert [f["kind"] for f in fs] == ["impact"]
    m = client.get(f"/api/v1/risk/merchants/{mk.ids['a']}", headers=inspector).json()
    assert not m["in_queue"] and {s["device"] for s in m["scales"]} == {"s-1", "s-3"}


def test_conclusive_evidence_enters_the_queue(client: TestClient, store: Store,
                                              inspector: dict[str, str]) -> None:
    mk = Market(store)
    t = _noon(1)
    mk.send("s-1", [mk.sale("s-1", t, price=60)])  # 6 元/kg registered, 0.60 entered: ×0.1
    mk.send("s-2", [wire.CounterChangeEvent(seq=mk.next_seq("s-2"), ts_ms=t, name="cal",
                                            old="12", new="13")])
    queue = _queue(client, inspector)
    assert set(queue) == {"s-1", "s-2"}
    for device, kind in (("s-1", "price-decimal-trick"), ("s-2", "calibration-change")):
        q = queue[device]
        assert q["in_queue"] and q["grounds"] == ["evidence"]
        assert q["p_honest_day"] <= risk.ALPHA_DAY and q["evidence"] >= 4
        assert q["risk"] == round(10 * q["evidence"])
        assert _kinds(q)[kind]["counted"] and _kinds(q)[kind]["weight"] == 5.0
        assert q["day_ms"] == risk.market_day_start_ms(risk.market_day(t))
    m = client.get(f"/api/v1/risk/merchants/{mk.ids['a']}", headers=inspector).json()
    assert m["in_queue"] and m["device"] == "s-1"


def test_two_independent_weak_kinds_combine_on_one_day(client: TestClient, store: Store,
                                                       inspector: dict[str, str]) -> None:
    mk = Market(store)
    t = _noon(2)
    mk.send("s-1", [mk.overcharge("s-1", t)])  # amount-mismatch alone
    mk.send("s-3", [*mk.untared_trays("s-3", t), mk.overcharge("s-3", t + 30 * MIN)])  # both
    # the same two kinds on two different market days do not combine
    mk.send("s-2", [mk.overcharge("s-2", t)])
    queue = _queue(client, inspector)
    assert set(queue) == {"s-3"}, {d: q["reasons"] for d, q in queue.items()}
    both = queue["s-3"]
    assert {k for k, r in _kinds(both).items() if r["counted"]} == {
        "amount-mismatch", "tare-omission"}
    alone = _risk(client, inspector, "s-1")
    assert not alone["in_queue"] and alone["p_honest_day"] > risk.ALPHA_DAY
    assert 0 < alone["evidence"] < both["evidence"]
    m = client.get(f"/api/v1/risk/merchants/{mk.ids['a']}", headers=inspector).json()
    assert m["in_queue"] and m["device"] == "s-3"  # the merchant: its strongest scale


def test_weak_kinds_on_different_days_and_tare_alone_stay_out(
        client: TestClient, store: Store, inspector: dict[str, str]) -> None:
    mk = Market(store)
    mk.send("s-3", [*mk.untared_trays("s-3", _noon(3)), mk.overcharge("s-3", _noon(2))])
    mk.send("s-1", mk.untared_trays("s-1", _noon(2)))
    # a forgotten tray (one untared sale) is an observation even beside an overcharge
    mk.send("s-2", [*mk.untared_trays("s-2", _noon(1), untared=1),
                    mk.overcharge("s-2", _noon(1) + 30 * MIN)])
    assert _queue(client, inspector) == {}
    r = _risk(client, inspector, "s-3")
    # (the day between the two shows as offline while trading: an observation too)
    assert {"amount-mismatch", "tare-omission"} <= set(_kinds(r)) and not r["in_queue"]
    forgot = _kinds(_risk(client, inspector, "s-2"))["tare-omission"]
    assert forgot["severity"] == "medium" and forgot["weight"] == 0


def test_repeats_of_a_kind_do_not_multiply(client: TestClient, store: Store,
                                           inspector: dict[str, str]) -> None:
    mk = Market(store)
    t = _noon(1)
    mk.send("s-1", [mk.overcharge("s-1", t + i * 10 * MIN) for i in range(5)])
    assert _queue(client, inspector) == {}
    r = _risk(client, inspector, "s-1")
    amount = _kinds(r)["amount-mismatch"]
    assert amount["count"] == 5 and amount["weight"] == 3.0
    # as if one: five at p = 1e-3 multiplied would be 1e-15
    assert r["p_honest_day"] == risk.DEFAULT_MODEL.p_day(3.0) > risk.ALPHA_DAY


def test_the_stated_threshold_is_the_one_applied(client: TestClient, store: Store,
                                                 inspector: dict[str, str]) -> None:
    model = client.get("/api/v1/risk/model", headers=inspector).json()
    assert model["alpha_day"] == risk.ALPHA_DAY == 1e-4 and model["threshold_evidence"] == 4
    assert model["honest_entry_p_day"] <= model["alpha_day"]
    assert model["honest_entry_p_month"] <= 30 * model["alpha_day"]
    kinds = {(k["kind"], k["severity"]): k for k in model["kinds"]}
    assert kinds[("impact", None)]["counts"] is False
    assert kinds[("calibration-change", None)]["p_day"] == 1e-5

    mk = Market(store)
    t = _noon(1)
    mk.send("s-1", [mk.overcharge("s-1", t)])
    mk.send("s-2", [mk.sale("s-2", t, price=60)])
    mk.send("s-3", [*mk.untared_trays("s-3", t), mk.overcharge("s-3", t + 30 * MIN)])
    queue = _queue(client, inspector)
    for device in ("s-1", "s-2", "s-3"):
        r = _risk(client, inspector, device)
        assert r["in_queue"] == (r["p_honest_day"] <= model["alpha_day"]) == (device in queue)
        # the calibrated probability of the day's score, not the naive product
        score = sum(x["weight"] for x in r["reasons"] if x["counted"])
        assert r["p_honest_day"] == risk.DEFAULT_MODEL.p_day(score)
        assert r["p_honest_day"] >= 10 ** -score
    assert set(queue) == {"s-2", "s-3"}


def test_overdue_verification_is_a_legal_reason_after_the_evidence(
        client: TestClient, store: Store, inspector: dict[str, str]) -> None:
    mk = Market(store)
    with store.engine.begin() as c:
        reg.register_scale(c, "s-9", market_id="m1", now_ms=mk.now, max_mg=15_000_000,
                           e_mg=5_000, accuracy_class="III", role="trade",
                           due_on_ms=mk.now - 10 * DAY)
    mk.send("s-1", [mk.sale("s-1", _noon(1), price=60)])
    queue = client.get("/api/v1/inspection-queue", headers=inspector).json()
    assert [q["device"] for q in queue] == ["s-1", "s-9"]
    overdue = queue[1]
    assert overdue["grounds"] == ["verification-overdue"] and overdue["evidence"] == 0
    assert overdue["reasons"][0]["kind"] == "verification-overdue"
    assert overdue["reasons"][0]["due_on_ms"] == mk.now - 10 * DAY
    page = client.get("/api/v1/inspection-queue", params={"offset": 1}, headers=inspector)
    assert [q["device"] for q in page.json()] == ["s-9"]


def test_an_inspection_answers_what_came_before(client: TestClient, store: Store,
                                                inspector: dict[str, str]) -> None:
    mk = Market(store)
    mk.send("s-1", [mk.sale("s-1", _noon(1), price=60)])
    assert set(_queue(client, inspector)) == {"s-1"}
    r = client.post("/api/v1/inspections", headers=inspector, json={
        "device": "s-1", "loads": [{"load_mg": 2_500_000, "indication_mg": 2_500_000}]})
    assert r.status_code == 201 and r.json()["verdict"] == "pass"
    # a passed weighing test cannot refute a price trick: the finding stays open and shown,
    # but the inspector has been there; only evidence after the inspection counts again
    fs = client.get("/api/v1/findings", params={"device": "s-1"}, headers=inspector).json()
    assert [(f["kind"], f["status"]) for f in fs] == [("price-decimal-trick", "open")]
    assert _queue(client, inspector) == {}


def test_the_queue_is_one_aggregate_query(store: Store) -> None:
    mk = Market(store)
    for d in range(1, 4):
        mk.send("s-1", [mk.overcharge("s-1", _noon(d) + i * MIN) for i in range(20)])
        mk.send("s-2", [mk.sale("s-2", _noon(d) + i * MIN, unsettled=True) for i in range(20)])
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        with store.engine.connect() as c:
            insp.risk_ranking(c, now_ms=mk.now, market="m1")
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert len(statements) == 2, statements  # the findings aggregate, then the scales
