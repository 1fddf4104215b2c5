"""The case file and the rest of issue 18 in chromium: the queue's filters, CSV export and
live update; an inspection to a signed 现场检查笔录 with a photo, printed to PDF (poppler
reads it back); a card only after its confirmation, lifted only by a passing
re-inspection after the waiting period; complaints handled from the merchant page; the
stall grid, the day's totals from the database, the charts."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from gw_browser import Gateway, Pages, decide, draw_signature, fill_loads, login
from playwright.sync_api import expect
from sqlalchemy import func, select, update

from gateway_server.store.tables import merchants, sales
from gateway_server.store.tables_workflow import status_history
from weighing import wire

# a real 2 × 2 PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP4z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==")
DAY = 86_400_000


def _poppler() -> None:
    if not (shutil.which("pdftotext") and shutil.which("pdftoppm")):
        import os

        if os.environ.get("CI"):
            pytest.fail("poppler-utils is required in CI (see .ci/run)")
        pytest.skip("poppler-utils missing")


def test_queue_filters_export_and_live_update(browser: Any, gateway: Gateway, pages: Pages,
                                             tmp_path: Path) -> None:
    page = pages.page(browser, viewport={"width": 1366, "height": 900}, locale="zh-CN",
                      accept_downloads=True)
    login(page, gateway)
    page.goto(gateway.url + "/#/queue")
    row = page.locator("#queue tbody tr", has_text="摊位 A-01")
    expect(row).to_contain_text("张三蔬菜")
    page.select_option("#filter-kind", "k-factor-drift")
    expect(page.locator("#queue .empty")).to_have_text("没有需要检查的计量秤")
    page.select_option("#filter-kind", "calibration-change")
    expect(row).to_have_count(1)
    page.select_option("#filter-status", "tasked")
    expect(page.locator("#queue .empty")).to_have_count(1)
    page.select_option("#filter-status", "")
    expect(row).to_have_count(1)
    with page.expect_download() as dl:
        page.click("#queue-csv")
    csv = Path(dl.value.path()).read_bytes().decode("utf-8-sig")
    head, first = csv.splitlines()[:2]
    assert head.startswith("序号,市场,摊位号,商户（当时绑定）,计量秤,证据")
    assert "张三蔬菜" in first and "计量参数变更" in first and "东门农贸市场" in first
    page.select_option("#filter-kind", "")
    # live: a broken seal on s-3 (an observation only so far) puts its stall into the queue
    # without a reload
    expect(page.locator("#queue tbody tr", has_text="C-03")).to_have_count(0)
    now = time.time_ns() // 1_000_000
    gateway.send("s-3", "m1", [wire.CounterChangeEvent(
        seq=gateway.next_seq("s-3"), ts_ms=now - 60_000, name="cal", old="7", new="8")])
    expect(page.locator("#queue tbody tr", has_text="C-03")).to_have_count(1, timeout=15_000)
    assert not pages.errors, pages.errors


def test_case_to_pdf_card_confirmation_and_lifting(browser: Any, gateway: Gateway,
                                                    pages: Pages, tmp_path: Path) -> None:
    _poppler()
    page = pages.page(browser, viewport={"width": 1366, "height": 900}, locale="zh-CN",
                      accept_downloads=True)
    login(page, gateway)
    page.goto(gateway.url + "/#/inspect/s-4")
    fill_loads(page, 20_000)  # 20 g heavy on a 6 kg / 2 g scale: beyond every MPE
    page.click("#submit-inspection")
    expect(page.locator(".error")).to_contain_text("标准砝码证书编号")  # required
    page.fill("#weights-cert", "ZB-2026-0042")
    page.fill("#place", "东门农贸市场 D-04 摊位")
    page.click("#submit-inspection")
    expect(page.locator("#case-title")).to_contain_text("现场检查笔录 JC-")
    expect(page.locator("#verdict")).to_have_text("不合格")
    expect(page.locator("#weights-cert")).to_have_text("ZB-2026-0042")
    expect(page.locator("#merchant-status")).to_have_text("正常")  # no card from a record

    page.set_input_files("#photo-file", files=[{"name": "seal.png", "mimeType": "image/png",
                                                "buffer": PNG}])
    page.fill("#photo-caption", "铅封")
    page.click("#photo-form button[type=submit]")
    expect(page.locator("#photos figure")).to_have_count(1)
    expect(page.locator("#photos")).to_contain_text("SHA-256")
    page.set_input_files("#photo-file", files=[{"name": "x.png", "mimeType": "image/png",
                                                "buffer": b"not an image at all"}])
    page.click("#photo-form button[type=submit]")
    expect(page.locator("#case-error")).to_have_text("照片须为 PNG 或 JPEG 图片")

    draw_signature(page, "王检查")
    expect(page.locator("#signature-img")).to_be_visible()
    expect(page.locator("#photo-form")).to_have_count(0)  # signed: frozen
    expect(page.locator("#action")).to_have_value("yellow")
    # not ticked: refused, nothing changes
    page.fill("#decision-reason", "三个载荷超差")
    page.click("#decide-btn")
    expect(page.locator("#consequence")).to_contain_text("消费者扫码页面立即显示黄牌警告")
    page.click("#confirm-btn")
    expect(page.locator("#case-error")).to_have_text("请勾选确认")
    expect(page.locator("#merchant-status")).to_have_text("正常")
    decide(page, "三个载荷超差")
    expect(page.locator("#merchant-status")).to_contain_text("黄牌")
    audit = page.locator("#audit")
    for step in ("立案", "记录现场检查", "上传照片", "检查人员签名", "处理决定"):
        expect(audit).to_contain_text(step)

    # the printed 笔录: a PDF whose text is the record, rendered to an image by poppler
    with page.expect_download() as dl:
        page.click("#pdf")
    pdf = tmp_path / "record.pdf"
    dl.value.save_as(pdf)
    assert pdf.read_bytes().startswith(b"%PDF")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          check=True).stdout.decode()
    for want in ("现场检查笔录", "王五鲜肉", "D-04", "ZB-2026-0042", "不合格", "王检查",
                 "±0.002", "铅封"):
        assert want in text, (want, text)
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(pdf),
                    str(tmp_path / "page")], check=True)
    rendered = sorted(tmp_path.glob("page*.png"))
    assert rendered and rendered[0].stat().st_size > 5_000

    # lifting: a passing re-inspection inside the waiting period does not offer it
    page.goto(f"{gateway.url}/#/merchant/{gateway.ids['d']}")
    expect(page.locator("#card-rule")).to_contain_text("复检合格")
    page.click("#reinspect")
    page.click("#fill-record")
    fill_loads(page, 0)
    page.fill("#weights-cert", "ZB-2026-0042")
    page.click("#submit-inspection")
    expect(page.locator("#verdict")).to_have_text("合格")
    draw_signature(page)
    expect(page.locator("#lift-rule")).to_contain_text("之后经复检合格方可解除")
    expect(page.locator("#action option[value=lift]")).to_have_count(0)
    # ... past the period (the card given 31 days ago), the same signed case offers it
    back = time.time_ns() // 1_000_000 - 31 * DAY
    with gateway.store.engine.begin() as c:
        c.execute(update(status_history).where(status_history.c.merchant_id == gateway.ids["d"])
                  .values(ts_ms=back))
        c.execute(update(merchants).where(merchants.c.id == gateway.ids["d"])
                  .values(status_ms=back))
    page.reload()
    expect(page.locator("#action")).to_have_value("lift")
    decide(page, "期满复检合格，解除黄牌")
    expect(page.locator("#merchant-status")).to_have_text("正常")
    expect(page.locator("#audit")).to_contain_text("解除警示牌")
    expect(page.locator("#audit")).to_contain_text("黄牌 → 正常")
    assert not pages.dialogs, pages.dialogs
    # the one refusal asked for (the text file as a photo) is the only console error
    assert [e for e in pages.errors if "status of 415" not in e] == [], pages.errors
    assert len(pages.errors) == 1, pages.errors


def test_complaints_are_handled_from_the_merchant_page(browser: Any, gateway: Gateway,
                                                       pages: Pages) -> None:
    phone = pages.page(browser, viewport={"width": 390, "height": 844}, locale="zh-CN")
    phone.goto(f"{gateway.url}/m/{gateway.ids['b_token']}")
    phone.fill("textarea[name=text]", "鲈鱼复秤少了 80 克")
    phone.click("#complaint-form button")
    expect(phone.locator("#complaint-result")).to_contain_text("已受理")
    phone.goto(f"{gateway.url}/m/{gateway.ids['a_token']}")
    phone.fill("textarea[name=text]", "西红柿秤不准")
    phone.click("#complaint-form button")
    expect(phone.locator("#complaint-result")).to_contain_text("已受理")

    page = pages.page(browser, viewport={"width": 1366, "height": 900}, locale="zh-CN")
    login(page, gateway, "admin1")
    page.goto(f"{gateway.url}/#/merchant/{gateway.ids['b']}")
    row = page.locator("#complaints tbody tr", has_text="鲈鱼复秤少了 80 克")
    expect(row).to_contain_text("等待商户答复")
    row.locator(".handle-complaint").click()
    page.fill("#complaint-note", "双方到市场管理处调解")
    page.click("#mediate-btn")
    row = page.locator("#complaints tbody tr", has_text="鲈鱼复秤少了 80 克")
    expect(row).to_contain_text("调解中")
    row.locator(".handle-complaint").click()
    page.select_option("#complaint-outcome", "refund")
    page.fill("#complaint-amount", "3.20")
    page.fill("#complaint-note", "商户退还差价")
    page.click("#close-btn")
    row = page.locator("#complaints tbody tr", has_text="鲈鱼复秤少了 80 克")
    expect(row).to_contain_text("已办结 · 退款 · 3.20 元")
    expect(row.locator(".handle-complaint")).to_have_count(0)
    # an inspection case straight from the merchant's complaints
    page.goto(f"{gateway.url}/#/merchant/{gateway.ids['a']}")
    page.locator("#complaints .inspect-complaint").first.click()
    expect(page.locator("#case-title")).to_contain_text("现场检查笔录 JC-")
    expect(page.locator(".view")).to_contain_text("已立案，待记录")
    assert not pages.errors, pages.errors


def test_overview_stalls_totals_and_scale_charts(browser: Any, gateway: Gateway,
                                                 pages: Pages) -> None:
    page = pages.page(browser, viewport={"width": 1366, "height": 900}, locale="zh-CN")
    login(page, gateway)
    start = time.time_ns() // 1_000_000
    start -= (start + 8 * 3_600_000) % DAY  # 00:00 CST today
    with gateway.store.engine.connect() as c:
        n, fen = c.execute(select(func.count(), func.coalesce(func.sum(sales.c.amount_fen), 0))
                           .where(sales.c.ts_ms >= start)).one()
    expect(page.locator("#sales-today")).to_have_text(str(n))
    expect(page.locator("#turnover-today")).to_have_text(f"{fen // 100}.{fen % 100:02d} 元")
    grid = page.locator("#stall-map svg.stall-grid")
    expect(grid.locator(".stall")).to_have_count(5)  # four stalls and the fair scale
    expect(grid.locator(".stall.in-queue[data-stall='A-01']")).to_have_count(1)
    expect(grid.locator(".stall.offline[data-stall='D-04'], .stall.in-queue[data-stall='D-04'],"
                        " .stall.overdue[data-stall='D-04'], .stall.observed[data-stall='D-04']"
                        )).to_have_count(1)
    page.goto(gateway.url + "/#/scale/s-1")
    expect(page.locator(".view-scale svg.chart rect.bar-count").first).to_be_visible()
    # the residual chart zoomed to its data (sold 0.5–2.35 kg): the x axis ends at 5 kg, not 15
    plot = page.locator(".view-scale svg.chart", has=page.locator("polygon.envelope"))
    ticks = plot.locator(".grid text").all_text_contents()
    assert "5" in ticks and "15" not in ticks, ticks
    assert not pages.errors, pages.errors
