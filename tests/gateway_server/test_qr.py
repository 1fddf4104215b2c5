"""Trust QR codes: what they encode, PNG / SVG, auth, and the printable A4 sheet."""

from __future__ import annotations

import segno
from fastapi.testclient import TestClient

from conftest import seed
from gateway_server.registry import qr, register as reg
from gateway_server.store.database import Store

XSS = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'


def test_trust_url() -> None:
    assert qr.trust_url("http://gw.example/", "abc_-9") == "http://gw.example/m/abc_-9"
    assert qr.trust_url("https://x.cn/gw", "a/b?c") == "https://x.cn/gw/m/a%2Fb%3Fc"


def test_qr_png_and_svg_encode_the_trust_url(client: TestClient, store: Store,
                                             inspector: dict[str, str]) -> None:
    with store.engine.begin() as c:
        ids = seed(c)
    want = qr.trust_url(client.app.state.settings.public_base_url, ids["a_token"])
    assert want.endswith(f"/m/{ids['a_token']}")
    r = client.get(f"/api/v1/merchants/{ids['a']}/qr.png", headers=inspector)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert r.content == qr.png(want)  # the same symbol as a fresh encoding of the URL
    assert r.headers["cache-control"] == "private, no-store"
    big = client.get(f"/api/v1/merchants/{ids['a']}/qr.png", params={"scale": 20},
                     headers=inspector)
    assert len(big.content) > len(r.content)
    s = client.get(f"/api/v1/merchants/{ids['a']}/qr.svg", headers=inspector)
    assert s.status_code == 200 and s.headers["content-type"].startswith("image/svg+xml")
    assert s.text.startswith("<?xml") and "<svg" in s.text and s.text == qr.svg(want)
    # the symbol's modules are those of the URL (segno decodes nothing, so compare matrices)
    assert qr.make(want).matrix == segno.make_qr(want, error="q").matrix


def test_qr_needs_auth_and_a_merchant(client: TestClient, store: Store,
                                      inspector: dict[str, str]) -> None:
    with store.engine.begin() as c:
        ids = seed(c)
    for path in (f"/api/v1/merchants/{ids['a']}/qr.png", f"/api/v1/merchants/{ids['a']}/qr.svg",
                 "/api/v1/markets/m1/qr-sheet"):
        assert client.get(path).status_code == 401
    assert client.get("/api/v1/merchants/999/qr.png", headers=inspector).status_code == 404
    assert client.get("/api/v1/markets/nope/qr-sheet", headers=inspector).status_code == 404
    assert client.get(f"/api/v1/merchants/{ids['a']}/qr.png", params={"scale": 0},
                      headers=inspector).status_code == 422


def test_qr_sheet_one_card_per_merchant_escaped(client: TestClient, store: Store,
                                                inspector: dict[str, str]) -> None:
    with store.engine.begin() as c:
        ids = seed(c)
        x = reg.create_merchant(c, "m1", name=XSS, stall_no="<b>C</b>", now_ms=1)
        gone = reg.create_merchant(c, "m1", name="已注销商户", now_ms=1)
        reg.set_merchant_status(c, gone["id"], status="delisted", list_status=None,
                                reason="注销", now_ms=2)
    r = client.get("/api/v1/markets/m1/qr-sheet", headers=inspector)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    page = r.text
    assert page.count('<section class="card">') == 3  # the delisted merchant is left out
    assert page.count("<svg") == 3 and page.count("放心消费诚信码") >= 3
    assert "张三蔬菜" in page and "李四水产" in page and "已注销商户" not in page
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" \
        in page and "&lt;b&gt;C&lt;/b&gt;" in page
    assert "/static/css/sheet.css" in page
    # each card's SVG is the symbol of that merchant's URL
    base = client.app.state.settings.public_base_url
    for token in (ids["a_token"], x["trust_token"]):
        assert qr.svg_inline(qr.trust_url(base, token)) in page
