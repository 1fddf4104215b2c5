"""Role tests of merchant accounts (issue 19), checked against the OpenAPI list of routes.

Every operation of the app's OpenAPI document is called with merchant A's token and the
ids of merchant B (its merchant id, trust token, complaint number, scale, finding, list
entry, ...), on SQLite and PostgreSQL:

* a staff route (everything outside ``/api/v1/merchant``, ``/api/v1/auth`` and the public
  routes) answers 403, whatever the ids;
* a merchant route (``/api/v1/merchant/*``, ``/auth/me``) answers with A's data only: none
  of B's name, credit code, phone, scale, complaint number or complaint text;
* a public route shows nothing private of B (phone, full credit code, complaint text or
  the consumer's contact) — B's name on its own trust page or a public list is public.

New routes are covered by construction: the sweep reads the document, so a route added
later without a role check fails here.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from conftest import CODE_A, CODE_B, PASSWORD, login, seed
from gateway_server.api import auth
from gateway_server.registry import register as reg
from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.tables import findings
from gateway_server.store.tables_workflow import reweighs
from gateway_server.trust.merchant_portal import create_account

PUBLIC = ("/api/v1/public/", "/api/v1/auth/token", "/healthz", "/metrics")
OWN = ("/api/v1/merchant/", "/api/v1/auth/me", "/api/v1/auth/logout")
B_PHONE = "13700009999"
B_TEXT = "李四的秤每斤少二两"
B_CONTACT = "18655554444"


@pytest.fixture
def settings() -> Settings:
    return Settings(database_url="sqlite://", public_rate_per_min=6000, public_rate_burst=1000,
                    login_rate_per_min=6000, login_rate_burst=1000)


def _setup(client: TestClient, store: Store) -> dict[str, Any]:
    now = auth.now_ms()
    with store.engine.begin() as c:
        ids = seed(c)
        reg.update_merchant(c, ids["b"], {"phone": B_PHONE}, now_ms=now)
        for dev, m in (("s-a", ids["a"]), ("s-b", ids["b"])):
            reg.register_scale(c, dev, market_id="m1", now_ms=now, max_mg=15_000_000,
                               e_mg=5_000, accuracy_class="III", role="trade", model="TM-A15")
            reg.bind(c, dev, m, at_ms=now - 60_000)
        fid = c.execute(findings.insert().values(
            kind="impact", severity="high", market="m1", device="s-b", merchant_id=ids["b"],
            ts_ms=now - 1000, created_ms=now, status="confirmed", title="冲击法 Impact",
            legal_basis="", evidence="{}", dedup_key="t-b").returning(findings.c.id)).scalar_one()
        c.execute(reweighs.insert().values(
            device="f-1", market="m1", seq=1, ts_ms=now - 500, trace_code="T-B",
            reference_mg=450_000, merchant_id=ids["b"], sold_mg=500_000, shortfall_mg=50_000,
            method="equal_accuracy_scale", verdict="violation"))
        create_account(c, ids["a"], username="zhang3", password=PASSWORD, now_ms=now,
                       actor="t")
        create_account(c, ids["b"], username="li4", password=PASSWORD, now_ms=now, actor="t")
        b_token = reg.get_merchant(c, ids["b"])["trust_token"]
    num = {}
    for key, token, text in (("a", ids["a_token"], "张三的西红柿不新鲜"),
                             ("b", b_token, B_TEXT)):
        r = client.post("/api/v1/public/complaint-cases", json={
            "trust_token": token, "text": text, "contact": B_CONTACT if key == "b" else None})
        assert r.status_code == 201, r.text
        num[key] = r.json()["number"]
    admin = {"Authorization": "Bearer " + _token(store, "admin1", "admin")}
    r = client.post("/api/v1/lists/black/entries", headers=admin,
                    json={"merchant_id": ids["b"], "reason": "作弊"})
    entry = r.json()["id"]
    r = client.post("/api/v1/webhooks", headers=admin, json={"url": "http://127.0.0.1:9/x"})
    with store.engine.connect() as c:
        b_finding = c.execute(select(findings.c.id).where(findings.c.dedup_key == "t-b")
                              ).scalar_one()
    assert b_finding == fid
    return {"ids": ids, "b_token": b_token, "num": num, "entry": entry,
            "endpoint": r.json()["id"], "finding": fid}


def _token(store: Store, username: str, role: str) -> str:
    user = auth.ensure_user(store, username, PASSWORD, role)
    with store.engine.begin() as c:
        return auth.issue_token(c, user, now_ms=auth.now_ms(), ttl_s=3600)[0]


def _params(env: dict[str, Any]) -> dict[str, str]:
    b = env["ids"]["b"]
    return {"merchant_id": str(b), "trust_token": env["b_token"], "number": env["num"]["b"],
            "device": "s-b", "market_id": "m1", "finding_id": str(env["finding"]),
            "entry_id": str(env["entry"]), "endpoint_id": str(env["endpoint"]),
            "list_name": "black", "app_id": "1", "doc_id": "1", "task_id": "1",
            "name": "time-sync", "id": str(b)}


def _query(op: dict[str, Any], env: dict[str, Any]) -> dict[str, str]:
    """B's ids in every query parameter that names a merchant, market or scale."""
    q = {}
    for p in op.get("parameters", []):
        if p["in"] == "query" and p["name"] in ("merchant_id", "merchant", "device", "market"):
            q[p["name"]] = {"merchant_id": str(env["ids"]["b"]), "merchant": str(env["ids"]["b"]),
                            "device": "s-b", "market": "m1"}[p["name"]]
    return q


def test_a_merchant_reads_no_other_merchants_data(client: TestClient, store: Store) -> None:
    env = _setup(client, store)
    spec = client.get("/openapi.json").json()
    params = _params(env)
    private = [B_PHONE, CODE_B, B_TEXT, B_CONTACT]
    markers = [*private, "李四水产", "s-b", env["num"]["b"]]
    checked = {"staff": 0, "own": 0, "public": 0}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            headers = login(client, "zhang3")  # a fresh token: /auth/logout revokes its own
            url = re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], path)
            kwargs: dict[str, Any] = {"headers": headers, "params": _query(op, env)}
            if method in ("post", "patch", "put"):
                kwargs["json"] = {"merchant_id": env["ids"]["b"], "answer": "我来替李四答复",
                                  "trust_token": env["b_token"], "text": "xx"}
            # (/api/v1/stream: the 403 comes before the stream starts, nothing to wait for)
            r = client.request(method.upper(), url, **kwargs)
            where = f"{method.upper()} {path} → {r.status_code}"
            if path.startswith(PUBLIC):
                assert r.status_code < 500, where
                assert not [m for m in private if m in r.text], where
                checked["public"] += 1
            elif path.startswith(OWN):
                assert r.status_code in (200, 201, 204, 404, 409, 422), where
                assert not [m for m in markers if m in r.text], (where, r.text[:300])
                checked["own"] += 1
            else:
                assert r.status_code == 403, where
                checked["staff"] += 1
    assert checked["staff"] > 50 and checked["own"] >= 8 and checked["public"] >= 10, checked
    # and A does see its own
    h = login(client, "zhang3")
    me = client.get("/api/v1/merchant/me", headers=h).json()
    assert me["name"] == "张三蔬菜" and me["credit_code"] == CODE_A
    assert [s["device"] for s in client.get("/api/v1/merchant/scales", headers=h).json()] == ["s-a"]
    assert [c["number"] for c in client.get("/api/v1/merchant/complaints", headers=h).json()] == [
        env["num"]["a"]]
    hb = login(client, "li4")
    assert [f["id"] for f in client.get("/api/v1/merchant/findings", headers=hb).json()] == [
        env["finding"]]
    assert client.get("/api/v1/merchant/findings", headers=h).json() == []
    assert len(client.get("/api/v1/merchant/reweighs", headers=hb).json()) == 1
    assert client.get("/api/v1/merchant/reweighs", headers=h).json() == []
    # B's complaint is still unanswered: A's attempts changed nothing
    look = client.get(f"/api/v1/public/complaint-cases/{env['num']['b']}").json()
    assert look["state"] == "awaiting" and look["answer"] is None
    assert json.dumps(look, ensure_ascii=False).count(B_TEXT) == 0


def test_staff_cannot_use_merchant_routes(client: TestClient, store: Store,
                                          admin: dict[str, str]) -> None:
    with store.engine.begin() as c:
        seed(c)
    assert client.get("/api/v1/merchant/me", headers=admin).status_code == 403
    assert client.get("/api/v1/auth/me", headers=admin).json()["merchant_id"] is None


def test_invitation_by_the_bureau(client: TestClient, store: Store,
                                  admin: dict[str, str], inspector: dict[str, str]) -> None:
    with store.engine.begin() as c:
        ids = seed(c)
    body = {"username": "zhang3", "password": PASSWORD}
    assert client.post(f"/api/v1/merchants/{ids['a']}/accounts", headers=inspector,
                       json=body).status_code == 403
    r = client.post(f"/api/v1/merchants/{ids['a']}/accounts", headers=admin, json=body)
    assert r.status_code == 201 and r.json()["role"] == "merchant"
    assert client.post(f"/api/v1/merchants/{ids['b']}/accounts", headers=admin,
                       json=body).status_code == 409
    r = client.post(f"/api/v1/merchants/{ids['b']}/accounts", headers=admin,
                    json={"username": "li4", "password": "short"})
    assert r.status_code == 422
    h = login(client, "zhang3")
    me = client.get("/api/v1/auth/me", headers=h).json()
    assert (me["username"], me["role"], me["display_name"], me["merchant_id"]) == (
        "zhang3", "merchant", "张三蔬菜", ids["a"])
    assert client.get("/api/v1/merchants", headers=h).status_code == 403
