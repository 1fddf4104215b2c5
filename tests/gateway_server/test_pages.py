"""Pages: the dashboard shell and login page (static, strict CSP), the static assets, and
the server-rendered trust-code page (escaping, status badges, verification, the
complaint form with and without JavaScript)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from support import freeze_rate_limits

from conftest import seed
from gateway_server.registry import register as reg
from gateway_server.settings import Settings
from gateway_server.store.database import Store

XSS = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
DAY = 86_400_000


def test_dashboard_shell_login_and_static(client: TestClient) -> None:
    for path in ("/", "/login"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert '<html lang="zh-CN">' in r.text
    assert 'src="/static/js/app.js"' in client.get("/").text
    assert 'src="/static/js/login.js"' in client.get("/login").text
    for asset in ("js/app.js", "js/api.js", "js/views/scale.js", "css/app.css", "css/trust.css",
                  "css/sheet.css", "js/trust.js", "favicon.svg"):
        r = client.get("/static/" + asset)
        assert r.status_code == 200, asset
        assert r.headers["cache-control"] == "no-cache"
    assert client.get("/static/js/app.js").headers["content-type"].startswith(
        "text/javascript")
    assert client.get("/static/../settings.py").status_code == 404


def test_no_view_writes_markup(client: TestClient) -> None:
    """The SPA renders with textContent only: no innerHTML / insertAdjacentHTML / eval."""
    from gateway_server.api.routes.pages import STATIC

    for f in sorted((STATIC / "js").rglob("*.js")):
        text = f.read_text(encoding="utf-8")
        for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                    "new Function"):
            assert bad not in text, f"{f.name} uses {bad}"


def _merchant_with_scales(store: Store) -> dict[str, object]:
    now = time.time_ns() // 1_000_000
    with store.engine.begin() as c:
        ids = seed(c)
        reg.update_merchant(c, ids["a"], {"licences": [
            {"kind": "食品经营许可证", "number": "JY1350102", "valid_until_ms": now - 5 * DAY}]},
            now_ms=now)
        reg.register_scale(c, "s-1", market_id="m1", now_ms=now, max_mg=15_000_000, e_mg=5_000,
                           accuracy_class="III", cert_no="JD-1", due_on_ms=now - 3 * DAY)
        reg.register_scale(c, "s-2", market_id="m1", now_ms=now, max_mg=6_000_000, e_mg=2_000,
                           accuracy_class="III", due_on_ms=now + 100 * DAY)
        reg.bind(c, "s-1", ids["a"], at_ms=now - 1000)
        reg.bind(c, "s-2", ids["a"], at_ms=now - 1000)
        x = reg.create_merchant(c, "m1", name=XSS, stall_no='<b>"X"</b>', now_ms=now,
                                licences=[{"kind": "<i>证</i>", "number": "&amp;"}])
    return ids | {"x_token": x["trust_token"], "x": x["id"]}


def test_trust_page_renders_status_scales_and_escapes(client: TestClient, store: Store) -> None:
    ids = _merchant_with_scales(store)
    r = client.get(f"/m/{ids['a_token']}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "no-referrer" in r.headers["referrer-policy"]
    page = r.text
    assert "张三蔬菜" in page and "东门农贸市场" in page and "摊位 A-01" in page
    assert "正常经营" in page and "12315" in page
    assert "913501****43" in page and "91350100M000100Y43" not in page  # masked
    assert "13800000000" not in page  # no phone
    assert "检定已过期" in page and "该秤检定已过期" in page and "检定有效" in page
    assert "最大秤量 15 kg" in page and "分度值 e = 5 g" in page
    assert "（已过期）" in page  # the licence ran out
    assert 'action="/m/' in page and 'id="complaint-form"' in page

    x = client.get(f"/m/{ids['x_token']}").text
    assert "<script>alert(1)" not in x and "<img src=x" not in x and '<b>"X"' not in x
    assert "&lt;b&gt;&quot;X&quot;&lt;/b&gt;" in x
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in x
    assert "&lt;i&gt;证&lt;/i&gt;" in x and "&amp;amp;" in x


def test_trust_page_shows_cards_and_lists(client: TestClient, store: Store,
                                          admin: dict[str, str]) -> None:
    ids = _merchant_with_scales(store)
    r = client.post(f"/api/v1/merchants/{ids['a']}/status", headers=admin,
                    json={"status": "yellow", "reason": "检定不合格"})
    assert r.status_code == 200, r.text
    assert "黄牌警告" in client.get(f"/m/{ids['a_token']}").text
    client.post(f"/api/v1/merchants/{ids['a']}/status", headers=admin,
                json={"status": "red", "list_status": "black", "reason": "作弊"})
    page = client.get(f"/m/{ids['a_token']}").text
    assert "红牌" in page and "黑榜" in page and "谨慎消费" in page
    client.post(f"/api/v1/merchants/{ids['a']}/status", headers=admin,
                json={"status": "normal", "list_status": "red", "reason": "诚信经营"})
    assert "红榜" in client.get(f"/m/{ids['a_token']}").text


def test_unknown_trust_code_is_a_404_page(client: TestClient, store: Store) -> None:
    _merchant_with_scales(store)
    r = client.get("/m/no-such-token-at-all")
    assert r.status_code == 404 and "诚信码无效" in r.text and "12315" in r.text


def test_complaint_form_without_javascript(client: TestClient, store: Store,
                                           inspector: dict[str, str]) -> None:
    ids = _merchant_with_scales(store)
    r = client.post(f"/m/{ids['a_token']}/complaint",
                    content="text=%E7%9F%AD%E7%A7%A4%E4%BA%86&contact=138",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and "投诉已受理" in r.text
    (c,) = client.get("/api/v1/complaints", headers=inspector).json()
    assert c["text"] == "短秤了" and c["contact"] == "138" and c["merchant_id"] == ids["a"]
    bad = client.post(f"/m/{ids['a_token']}/complaint", content="text=x",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert bad.status_code == 422 and "投诉未提交" in bad.text
    unknown = client.post("/m/unknown-token-1234/complaint", content="text=hello",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert unknown.status_code == 404


def test_trust_page_is_rate_limited(client: TestClient, store: Store,
                                    settings: Settings) -> None:
    ids = _merchant_with_scales(store)
    freeze_rate_limits(client.app, settings)  # the burst is the allowance, however slow
    codes = [client.get(f"/m/{ids['a_token']}").status_code for _ in range(12)]
    assert codes == [200] * 10 + [429] * 2  # burst 10 (settings fixture)
