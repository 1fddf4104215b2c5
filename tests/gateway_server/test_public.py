"""The public trust-code endpoint: what a consumer sees, what never leaks, rate limiting."""

from __future__ import annotations

import pytest
from support import freeze_rate_limits

from conftest import CODE_A, seed
from gateway_server.api.auth import now_ms
from gateway_server.api.ratelimit import TokenBucketLimiter
from gateway_server.registry import register as reg
from gateway_server.store.database import Store
from gateway_server.store.tables import sales

DAY = reg.DAY_MS


@pytest.fixture
def trust(store: Store) -> dict:  # type: ignore[type-arg]
    """Merchant A with a current scale (overdue), a past scale, and sales in and out of 30 d."""
    t = now_ms()
    with store.engine.begin() as conn:
        ids = seed(conn, t - 100 * DAY)
        reg.update_merchant(conn, ids["a"], {"licences": [
            {"kind": "食品经营许可证", "number": "JY13501000000001", "valid_until_ms": None}]},
            now_ms=t)
        _, key_now = reg.register_scale(conn, "s-now", market_id="m1", now_ms=t, model="ACS-15",
                                        max_mg=15_000_000, e_mg=5_000, accuracy_class="III",
                                        cert_no="JD-001", due_on_ms=t - 3 * DAY)
        _, key_old = reg.register_scale(conn, "s-old", market_id="m1", now_ms=t)
        reg.register_scale(conn, "s-other", market_id="m1", now_ms=t,
                           due_on_ms=reg.parse_date_ms("2999-01-01"))
        reg.bind(conn, "s-old", ids["a"], at_ms=t - 50 * DAY)
        reg.bind(conn, "s-old", ids["b"], at_ms=t - 40 * DAY)
        reg.bind(conn, "s-now", ids["a"], at_ms=t - 60 * DAY)
        reg.bind(conn, "s-other", ids["b"], at_ms=t - 60 * DAY)
        base = {"market": "m1", "received_ms": t, "net_mg": 1_000_000, "settled_mg": 1_000_000,
                "peak_mg": 1_000_000, "stable_device": True, "stable_software": True}
        conn.execute(sales.insert(), [
            {**base, "device": "s-now", "seq": 1, "ts_ms": t - DAY, "merchant_id": ids["a"]},
            {**base, "device": "s-now", "seq": 2, "ts_ms": t - 2 * DAY, "merchant_id": ids["a"]},
            {**base, "device": "s-now", "seq": 3, "ts_ms": t - 31 * DAY, "merchant_id": ids["a"]},
            {**base, "device": "s-other", "seq": 1, "ts_ms": t - DAY, "merchant_id": ids["b"]},
        ])
    return {**ids, "keys": [key_now, key_old], "url": f"/api/v1/public/merchants/{ids['a_token']}"}


def test_trust_page_shows_what_a_consumer_needs(client, trust) -> None:  # type: ignore[no-untyped-def]
    r = client.get(trust["url"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "张三蔬菜" and body["stall_no"] == "A-01"
    assert body["market_name"] == "东门农贸市场" and body["categories"] == ["蔬菜"]
    assert body["status"] == "normal" and body["list_status"] == "none"
    assert body["licences"] == [{"kind": "食品经营许可证", "number": "JY13501000000001",
                                 "valid_until_ms": None}]
    assert body["credit_code_masked"] == CODE_A[:6] + "****" + CODE_A[-2:]
    assert [s["device"] for s in body["scales"]] == ["s-now"]  # bound now, not s-old
    s = body["scales"][0]
    assert s["cert_no"] == "JD-001" and s["overdue"] and s["verification"] == "overdue"
    assert body["sales_30d"] == 2
    assert r.headers["cache-control"].startswith("public")


def test_trust_page_has_no_secrets(client, trust) -> None:  # type: ignore[no-untyped-def]
    text = client.get(trust["url"]).text
    for secret in (*trust["keys"], CODE_A, "13800000000", "key_hex", "phone", "credit_code\""):
        assert secret not in text


def test_status_changes_show_on_the_trust_page(client, trust, admin) -> None:  # type: ignore[no-untyped-def]
    r = client.post(f"/api/v1/merchants/{trust['a']}/status", headers=admin,
                    json={"status": "suspended", "list_status": "black", "reason": "经营异常名录"})
    assert r.status_code == 200
    body = client.get(trust["url"]).json()
    assert body["status"] == "suspended" and body["list_status"] == "black"


def test_unknown_token_is_404(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/api/v1/public/merchants/no-such-token")
    assert r.status_code == 404


def test_public_endpoint_is_rate_limited_per_client(client, trust, settings) -> None:  # type: ignore[no-untyped-def]
    freeze_rate_limits(client.app, settings)  # the burst is the allowance, however slow
    codes = [client.get(trust["url"]).status_code for _ in range(10)]
    assert codes == [200] * 10  # the burst
    r = client.get(trust["url"])
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert client.get("/api/v1/public/merchants/unknown").status_code == 429  # same bucket
    assert client.get("/healthz").status_code == 200  # only public routes are limited


def test_forwarded_for_is_used_only_when_trusted(store) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from gateway_server.api.app import create_app
    from gateway_server.settings import Settings

    for trusted, expect in ((False, 429), (True, 404)):
        s = Settings(public_rate_burst=1, trust_forwarded_for=trusted)
        with TestClient(create_app(store, None, s)) as c:
            freeze_rate_limits(c.app, s)
            assert c.get("/api/v1/public/merchants/x",
                         headers={"X-Forwarded-For": "10.0.0.1"}).status_code == 404
            r = c.get("/api/v1/public/merchants/x", headers={"X-Forwarded-For": "10.0.0.2"})
            assert r.status_code == expect


def test_token_bucket_refills_at_the_configured_rate() -> None:
    t = [0.0]
    lim = TokenBucketLimiter(30, 10, clock=lambda: t[0])  # 0.5 token per second
    assert all(lim.take("ip") == 0.0 for _ in range(10))
    assert lim.take("ip") == pytest.approx(2.0)  # one token back after 2 s
    assert lim.take("other") == 0.0  # per client
    t[0] = 2.0
    assert lim.take("ip") == 0.0 and lim.take("ip") > 0
    t[0] = 1000.0
    assert all(lim.take("ip") == 0.0 for _ in range(10))  # never above the burst
    assert lim.take("ip") > 0


def test_token_bucket_memory_is_bounded() -> None:
    t = [0.0]
    lim = TokenBucketLimiter(60, 2, clock=lambda: t[0], max_clients=100)
    for i in range(1000):
        lim.take(f"10.0.{i // 256}.{i % 256}")
    assert len(lim._buckets) <= 101
