"""The inspector's path through the dashboard and the consumer's trust page, in chromium:
log in → queue → a flagged scale (live sale over SSE) → inspection with failing loads →
the merchant's yellow card on the public page at phone size. Markup in user-entered
text shows as text everywhere and never runs."""

from __future__ import annotations

import time
from typing import Any

from gw_browser import XSS_NAME, Gateway, Pages, decide, draw_signature, login
from playwright.sync_api import expect

PHONE = {"width": 390, "height": 844}


def test_login_queue_scale_inspection_and_public_yellow_card(
        browser: Any, gateway: Gateway, pages: Pages) -> None:
    page = pages.page(browser, viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page.goto(gateway.url + "/")
    page.wait_for_url("**/login")  # no token: the dashboard sends us to the login page
    login(page, gateway)
    expect(page.locator(".stats")).to_contain_text("待处理问题")
    expect(page.locator("#live")).to_have_class("live on")  # the event stream is up
    page.click("#lang")  # English, kept across reloads, then back to Chinese
    expect(page.locator("#nav")).to_contain_text("Inspection queue")
    page.reload()
    expect(page.locator(".stats")).to_contain_text("Open findings")
    page.click("#lang")
    expect(page.locator("#nav")).to_contain_text("检查队列")

    page.click("#nav a[href='#/queue']")
    # s-1: a broken seal (in), its impact an observation beside it; s-3's zero offset alone
    # is an observation (not in the queue)
    expect(page.locator("#threshold")).to_contain_text("1/10,000")
    first = page.locator("#queue tbody tr", has_text="摊位 A-01")
    expect(first).to_contain_text("计量参数变更")
    expect(first).to_contain_text("冲击法")
    expect(first).to_contain_text("观察，不计入")
    expect(first).to_contain_text("诚实秤概率 1 : ")
    expect(first).to_contain_text("0.100 · 2.500 · 10.000 · 15.000")  # test loads, kg
    # where and how much: market, stall, the merchant bound then, the shortfall the re-weigh
    # evidence gives (T-0001: 1 kg sold, 950 g re-weighed at 6 元/kg → 50 g, 5 %, 0.30 元)
    expect(first).to_contain_text("东门农贸市场")
    expect(first).to_contain_text("张三蔬菜")
    expect(first).to_contain_text("证据 4.3 · 诚实秤概率 1 : ")
    expect(first.locator(".shortfall")).to_contain_text("短少 50 g / 1 kg（5 %，1 笔）")
    expect(first.locator(".shortfall")).to_contain_text("多收 0.30 元")
    expect(page.locator("#queue")).not_to_contain_text("C-03")  # s-3: an observation only

    first.locator("a[href='#/scale/s-1']").click()
    expect(page.locator("h1")).to_contain_text("计量秤 摊位 A-01 · TM-A15")
    # four zero-offset findings are one incident of four, not four rows
    zero = page.locator("#incidents tbody tr", has_text="零点偏移")
    expect(zero).to_have_count(1)
    expect(zero.locator(".count")).to_have_text("4")
    expect(page.locator("#risk")).to_contain_text("在检查队列中")
    expect(page.locator(".view-scale svg.chart polygon.envelope")).to_have_count(1)
    expect(page.locator("#sales-total")).to_have_text("4")
    # a new sale arrives through the ingest pipeline → the SSE stream → the open page
    now = time.time_ns() // 1_000_000
    gateway.send("s-1", "m1", [gateway.sale("s-1", ts_ms=now, net_mg=1_234_000, price_fen=600,
                                            plu="1001", trace="T-LIVE")])
    expect(page.locator("#sales-total")).to_have_text("5", timeout=10_000)
    expect(page.locator("#last-sale")).to_have_text("1.234 kg")

    page.click("#inspect-btn")
    rows = page.locator("#inspection-form tbody tr")
    expect(rows).to_have_count(4)
    for i in range(4):
        row = rows.nth(i)
        expect(row.locator(".mpe")).to_contain_text("±")
        whole, frac = row.locator(".load").input_value().split(".")
        mg = int(whole) * 1_000_000 + int(frac.ljust(6, "0")) + 100_000  # 100 g heavy
        row.locator(".indication").fill(f"{mg // 1_000_000}.{mg % 1_000_000:06d}")
    page.fill("#weights-cert", "ZB-2026-0042")
    page.click("#submit-inspection")
    # the case file: verdicts per load, no card until the signed record's decision is confirmed
    expect(page.locator("#verdict")).to_have_text("不合格")
    expect(page.locator("#checks tbody tr")).to_have_count(4)
    expect(page.locator("#checks")).to_contain_text("±0.005")  # 2.5 kg on 15 kg / 5 g
    expect(page.locator("#checks")).not_to_contain_text("合格")
    expect(page.locator("#merchant-status")).to_have_text("正常")
    draw_signature(page)
    expect(page.locator("#action")).to_have_value("yellow")  # the proposal
    decide(page, "四个载荷均超差")
    expect(page.locator("#merchant-status")).to_contain_text("黄牌")

    p2 = pages.page(browser, viewport=PHONE, is_mobile=True, has_touch=True, locale="zh-CN")
    p2.goto(f"{gateway.url}/m/{gateway.ids['a_token']}")
    expect(p2.locator("#merchant-name")).to_have_text("张三蔬菜")
    expect(p2.locator("#status")).to_contain_text("黄牌警告")
    widths = p2.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"horizontal scroll on a phone: {widths}"
    p2.fill("textarea[name=text]", "买的西红柿复秤少了 50 克")
    p2.click("#complaint-form button")
    expect(p2.locator("#complaint-result")).to_contain_text("已受理")
    p2.close()

    page.goto(f"{gateway.url}/#/merchant/{gateway.ids['a']}")
    expect(page.locator("#merchant-title")).to_have_text("张三蔬菜")
    expect(page.locator("#complaints")).to_contain_text("复秤少了 50 克")
    expect(page.locator(".title-row")).to_contain_text("黄牌")
    assert not pages.dialogs, pages.dialogs
    assert not pages.errors, pages.errors


def test_markup_in_user_text_is_shown_not_run(browser: Any, gateway: Gateway,
                                              pages: Pages) -> None:
    page = pages.page(browser, viewport={"width": 1280, "height": 900})
    login(page, gateway, "admin1")
    page.goto(f"{gateway.url}/#/merchant/{gateway.ids['x']}")
    expect(page.locator("#merchant-title")).to_have_text(XSS_NAME)
    page.goto(f"{gateway.url}/#/registry/m1")
    expect(page.locator("#merchants")).to_contain_text(XSS_NAME)
    expect(page.locator("#scales")).to_contain_text(XSS_NAME)
    token = page.evaluate("sessionStorage.getItem('gw.token')")
    page.set_extra_http_headers({"Authorization": f"Bearer {token}"})
    page.goto(f"{gateway.url}/api/v1/markets/m1/qr-sheet")
    expect(page.locator(".card .name", has_text="alert")).to_have_text(XSS_NAME)
    expect(page.locator(".card .meta", has_text="C-03")).to_contain_text('C-03"><b>x</b>')
    assert page.locator("img[src=x], .card b").count() == 0

    p2 = pages.page(browser, viewport=PHONE, is_mobile=True)
    p2.goto(f"{gateway.url}/m/{gateway.ids['x_token']}")
    expect(p2.locator("#merchant-name")).to_have_text(XSS_NAME)
    expect(p2.locator(".where")).to_contain_text('C-03"><b>x</b>')
    assert p2.locator("img, main b:has-text('x')").count() == 0
    # a complaint carrying markup is stored and shown as text on the dashboard
    p2.fill("textarea[name=text]", XSS_NAME)
    p2.click("#complaint-form button")
    expect(p2.locator("#complaint-result")).to_contain_text("已受理")
    widths = p2.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"horizontal scroll on a phone: {widths}"
    p2.close()
    page.set_extra_http_headers({})
    page.goto(f"{gateway.url}/#/merchant/{gateway.ids['x']}")
    expect(page.locator("#complaints")).to_contain_text(XSS_NAME)
    assert page.locator("img[src=x]").count() == 0
    assert not pages.dialogs, f"a script ran: {pages.dialogs}"
    assert not pages.errors, pages.errors


def test_untracked_sales_finding_lists_its_reweighs(browser: Any, gateway: Gateway,
                                                    pages: Pages) -> None:
    """Two purchases re-weighed by stall number that no sale of 李四水产 explains (second,
    untracked scale): the finding page shows the re-weighs as a table, in Chinese."""
    from sqlalchemy import select

    from gateway_server.store.tables import findings
    from weighing import wire

    now = time.time_ns() // 1_000_000
    h = 3_600_000
    gateway.send("f-1", "m1", [
        wire.ReweighEvent(seq=gateway.next_seq("f-1"), ts_ms=now - 3 * h, stall_no="B-02",
                          reference_mg=3_300_000),
        wire.ReweighEvent(seq=gateway.next_seq("f-1"), ts_ms=now - 3 * h + 600_000,
                          stall_no="B-02", reference_mg=4_100_000)])
    gateway.send("s-2", "m1", [wire.ZeroCheckEvent(seq=gateway.next_seq("s-2"), ts_ms=now - h,
                                                   mean_mg=0, spread_mg=0, n=40,
                                                   duration_ms=8_000)])
    with gateway.store.engine.connect() as c:
        (fid,) = c.execute(select(findings.c.id).where(
            findings.c.kind == "untracked-sales")).scalars().all()
    page = pages.page(browser, viewport={"width": 1280, "height": 900}, locale="zh-CN")
    login(page, gateway)
    page.goto(f"{gateway.url}/#/finding/{fid}")
    expect(page.locator("#evidence")).to_contain_text("复秤记录")
    rows = page.locator("#evidence table.evidence-table tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("3.300")
    expect(page.locator("main")).to_contain_text("复秤商品无溯源记录")
    page.goto(f"{gateway.url}/#/merchant/{gateway.ids['b']}")
    expect(page.locator("#reweighs")).to_contain_text("摊位 B-02")
    expect(page.locator("#reweighs")).to_contain_text("无对应交易")
    assert not pages.errors, pages.errors
