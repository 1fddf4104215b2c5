"""The register over REST: markets, merchants, scales (keys shown once), bindings, prices."""

from __future__ import annotations

import pytest

from conftest import CODE_A, CODE_B

H = 3_600_000


@pytest.fixture
def m1(client, admin) -> str:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/markets", headers=admin,
                    json={"id": "m1", "name": "东门农贸市场", "name_en": "East Gate Market"})
    assert r.status_code == 201, r.text
    return "m1"


def merchant(client, admin, **kw) -> dict:  # type: ignore[no-untyped-def, type-arg]
    r = client.post("/api/v1/merchants", headers=admin,
                    json={"market_id": "m1", "name": "张三蔬菜", **kw})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_markets_crud(client, admin, inspector, m1) -> None:  # type: ignore[no-untyped-def]
    assert client.post("/api/v1/markets", headers=admin, json={"id": "m1", "name": "x"}
                       ).status_code == 409
    assert client.post("/api/v1/markets", headers=admin, json={"id": "bad id!", "name": "x"}
                       ).status_code == 422
    r = client.patch("/api/v1/markets/m1", headers=admin, json={"district": "鼓楼区"})
    assert r.status_code == 200 and r.json()["district"] == "鼓楼区"
    assert r.json()["name"] == "东门农贸市场"  # unset fields are kept
    assert [m["id"] for m in client.get("/api/v1/markets", headers=inspector).json()] == ["m1"]
    assert client.get("/api/v1/markets/m9", headers=inspector).status_code == 404
    assert client.patch("/api/v1/markets/m9", headers=admin, json={}).status_code == 404
    # trading hours (offline rule): validated, stored, cleared by an empty value
    r = client.patch("/api/v1/markets/m1", headers=admin, json={"trading_hours": "19:00-06:00"})
    assert r.status_code == 422 and "trading_hours" in r.text and "close" in r.text
    r = client.patch("/api/v1/markets/m1", headers=admin, json={"trading_hours": "05:30-18:00"})
    assert r.status_code == 200 and r.json()["trading_hours"] == "05:30-18:00"
    r = client.patch("/api/v1/markets/m1", headers=admin, json={"trading_hours": ""})
    assert r.status_code == 200 and r.json()["trading_hours"] is None


def test_merchants_create_filter_update_status(client, admin, inspector, m1) -> None:  # type: ignore[no-untyped-def]
    a = merchant(client, admin, credit_code=CODE_A.lower(), stall_no="A-01",
                 categories=["蔬菜", "水果"], phone="13800000000",
                 licences=[{"kind": "食品经营许可证", "number": "JY1", "valid_until_ms": "2027-12-31"}])
    assert a["credit_code"] == CODE_A and a["status"] == "normal" and len(a["trust_token"]) >= 22
    assert a["licences"][0]["valid_until_ms"] == 1_830_182_400_000  # 2027-12-31 00:00 CST
    r = client.post("/api/v1/merchants", headers=admin,
                    json={"market_id": "m1", "name": "x", "credit_code": CODE_A[:-1] + "0"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "credit_code"]
    assert client.post("/api/v1/merchants", headers=admin,
                       json={"market_id": "m1", "name": "x", "credit_code": CODE_A}
                       ).status_code == 409
    assert client.post("/api/v1/merchants", headers=admin,
                       json={"market_id": "m9", "name": "x"}).status_code == 404
    b = merchant(client, admin, name="李四水产", credit_code=CODE_B, stall_no="B-02")
    r = client.post(f"/api/v1/merchants/{b['id']}/status", headers=admin,
                    json={"status": "red", "list_status": "black", "reason": "作弊秤"})
    assert r.status_code == 200 and r.json()["status_reason"] == "作弊秤"
    assert client.post(f"/api/v1/merchants/{b['id']}/status", headers=admin,
                       json={"status": "bogus", "reason": "x"}).status_code == 422
    page = client.get("/api/v1/merchants", headers=inspector,
                      params={"market": "m1", "status": "red"}).json()
    assert page["total"] == 1 and page["items"][0]["name"] == "李四水产"
    assert client.get("/api/v1/merchants", headers=inspector, params={"q": "A-01"}
                      ).json()["items"][0]["id"] == a["id"]
    r = client.patch(f"/api/v1/merchants/{a['id']}", headers=admin, json={"stall_no": "A-02"})
    assert r.json()["stall_no"] == "A-02" and r.json()["categories"] == ["蔬菜", "水果"]
    new = client.post(f"/api/v1/merchants/{a['id']}/trust-token", headers=admin).json()
    assert new["trust_token"] != a["trust_token"]
    assert client.get("/api/v1/merchants/999", headers=inspector).status_code == 404


def test_scale_key_is_shown_once_and_never_listed(client, admin, inspector, m1) -> None:  # type: ignore[no-untyped-def]
    a = merchant(client, admin)
    r = client.post("/api/v1/registry/scales", headers=admin, json={
        "device": "s-1", "market_id": "m1", "max_mg": "15 kg", "e_mg": "5 g",
        "accuracy_class": "III", "cert_no": "JD-1", "verified_on_ms": "2025-03-01",
        "due_on_ms": "2026-02-28", "merchant_id": a["id"], "model": "ACS-15"})
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["key_hex"]
    assert len(key) == 64 and created["merchant_id"] == a["id"] and created["max_mg"] == 15_000_000
    for path in ("/api/v1/registry/scales", "/api/v1/registry/scales/s-1", "/api/v1/scales"):
        text = client.get(path, headers=admin).text
        assert key not in text and "key_hex" not in text, path
    r = client.post("/api/v1/registry/scales/s-1/key", headers=admin)
    assert r.status_code == 200 and r.json()["key_hex"] not in (key, None)
    given = "ab" * 16
    assert client.post("/api/v1/registry/scales/s-1/key", headers=admin,
                       json={"key_hex": given}).json()["key_hex"] == given
    assert client.post("/api/v1/registry/scales/s-1/key", headers=admin,
                       json={"key_hex": "abc"}).status_code == 422
    assert client.post("/api/v1/registry/scales", headers=admin, json={
        "device": "s-1", "market_id": "m1"}).status_code == 409
    assert client.post("/api/v1/registry/scales", headers=admin, json={
        "device": "s-2", "market_id": "m1", "max_mg": "15.5"}).status_code == 422


def test_scale_update_and_due_filter(client, admin, inspector, m1) -> None:  # type: ignore[no-untyped-def]
    for dev, due in (("s-1", "2025-06-30"), ("s-2", "2026-06-30"), ("s-3", None)):
        body = {"device": dev, "market_id": "m1", **({"due_on_ms": due} if due else {})}
        assert client.post("/api/v1/registry/scales", headers=admin, json=body).status_code == 201
    r = client.patch("/api/v1/registry/scales/s-3", headers=admin,
                     json={"due_on_ms": "2025-01-01", "role": "fair", "serial": "SN3"})
    assert r.status_code == 200 and r.json()["role"] == "fair" and r.json()["overdue"]
    page = client.get("/api/v1/registry/scales", headers=inspector,
                      params={"due_before_ms": 1_767_196_800_000}).json()  # 2026-01-01 CST
    assert [s["device"] for s in page["items"]] == ["s-1", "s-3"] and page["total"] == 2
    fair = client.get("/api/v1/registry/scales", headers=inspector, params={"role": "fair"})
    assert [s["device"] for s in fair.json()["items"]] == ["s-3"]
    assert client.patch("/api/v1/registry/scales/s-9", headers=admin, json={}).status_code == 404
    assert client.get("/api/v1/registry/scales/s-9", headers=admin).status_code == 404


def test_bindings_over_http(client, admin, inspector, m1) -> None:  # type: ignore[no-untyped-def]
    a, b = merchant(client, admin), merchant(client, admin, name="李四")
    client.post("/api/v1/registry/scales", headers=admin, json={"device": "s-1", "market_id": "m1"})
    t = 1_750_000_000_000
    url = "/api/v1/registry/scales/s-1/bindings"
    assert client.post(url, headers=admin, json={"merchant_id": a["id"], "at_ms": t}).status_code == 200
    hist = client.post(url, headers=admin, json={"merchant_id": b["id"], "at_ms": t + H}).json()
    assert [(h["merchant_id"], h["valid_from_ms"], h["valid_to_ms"]) for h in hist] == [
        (a["id"], t, t + H), (b["id"], t + H, None)]
    assert client.get(url, headers=inspector).json() == hist
    assert client.post(url, headers=admin, json={"merchant_id": a["id"], "at_ms": t}
                       ).status_code == 409
    assert client.post(url, headers=admin, json={"merchant_id": 999}).status_code == 404
    assert client.get("/api/v1/registry/scales/s-9/bindings", headers=admin).status_code == 404
    assert client.get("/api/v1/registry/scales/s-1", headers=admin).json()["merchant_id"] == b["id"]


def test_prices_over_http(client, admin, inspector, m1) -> None:  # type: ignore[no-untyped-def]
    a = merchant(client, admin)
    url = f"/api/v1/merchants/{a['id']}/prices"
    r = client.post(url, headers=admin, json={"plu": "1001", "name": "西红柿", "category": "vegetables",
                                              "unit_price_fen_per_kg": "6.50", "valid_from_ms": 1000})
    assert r.status_code == 201 and r.json()["unit_price_fen_per_kg"] == 650
    assert client.post(url, headers=admin, json={"plu": "1001", "name": "西红柿", "category": "vegetables",
                                                 "unit_price_fen_per_kg": 650, "valid_from_ms": 1000}
                       ).status_code == 200  # the same version again: no-op
    assert client.post(url, headers=admin, json={"plu": "1001", "name": "西红柿",
                                                 "unit_price_fen_per_kg": 800, "valid_from_ms": 2000}
                       ).status_code == 201
    assert client.post(url, headers=admin, json={"plu": "1", "name": "x", "unit_price_fen_per_kg": "6.505"}
                       ).status_code == 422
    assert client.post(url, headers=admin, json={"plu": "1", "name": "x", "category": "gems",
                                                 "unit_price_fen_per_kg": 1}).status_code == 422
    jin = client.post(url, headers=admin, json={"plu": "2002", "name": "猪肉", "category": "meat",
                                                "unit_price_fen_per_kg": "14.50元/斤",
                                                "valid_from_ms": 1000})
    assert jin.status_code == 201 and jin.json()["unit_price_fen_per_kg"] == 2_900  # per kg
    bad = client.post(url, headers=admin, json={"plu": "3", "name": "x",
                                                "unit_price_fen_per_kg": "3元/磅"})
    assert bad.status_code == 422 and "元/斤" in bad.text
    assert len(client.get(url, headers=inspector).json()) == 3
    now = client.get(url, headers=inspector, params={"at_ms": 1500}).json()
    assert sorted(p["unit_price_fen_per_kg"] for p in now) == [650, 2_900]
    assert client.get("/api/v1/merchants/999/prices", headers=inspector).status_code == 404
