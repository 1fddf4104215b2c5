"""Every page renders without a console error; screenshots of each.

``WRITE_SCREENSHOTS=1`` writes them to ``docs/screenshots/`` (committed, linked from
docs/ui.md); otherwise they go to a temp dir, and the test still checks each page.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from gw_browser import BAD_CSV, ROOT, Gateway, Pages, draw_signature, login
from playwright.sync_api import expect

pytestmark = pytest.mark.screenshots


def _photo() -> bytes:
    """A small PNG of a lead seal stand-in: the case file's photo."""
    import struct
    import zlib

    w, h = 160, 100
    rows = b"".join(b"\x00" + b"".join(bytes((90 + x // 2, 90 + y, 120)) for x in range(w))
                    for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _out_dir(tmp_path: Path) -> Path:
    if os.environ.get("WRITE_SCREENSHOTS") == "1":
        out = ROOT / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_path


def test_screenshots_of_every_page(browser: Any, gateway: Gateway, pages: Pages,
                                   tmp_path: Path) -> None:
    out = _out_dir(tmp_path)
    page = pages.page(browser, viewport={"width": 1366, "height": 900}, locale="zh-CN",
                      timezone_id="Asia/Shanghai", accept_downloads=True)

    def shot(name: str, full: bool = True) -> None:
        # not "networkidle": the dashboard keeps its event stream open
        page.wait_for_load_state("load")
        page.evaluate("document.fonts.ready.then(() => true)")
        page.mouse.move(2, 890)  # no hover highlight in the picture
        page.wait_for_timeout(150)
        page.screenshot(path=str(out / f"{name}.png"), full_page=full)

    page.goto(gateway.url + "/login")
    page.fill("#username", "admin1")
    shot("login", full=False)
    login(page, gateway, "admin1")
    page.wait_for_selector("svg.stall-grid .stall")
    shot("dashboard-overview")

    page.click("#nav a[href='#/queue']")
    page.wait_for_selector("#queue tbody tr")
    shot("inspection-queue")

    page.goto(gateway.url + "/#/scale/s-1")
    page.wait_for_selector(".view-scale svg.chart .envelope")
    shot("scale-detail")

    page.goto(gateway.url + f"/#/merchant/{gateway.ids['a']}")
    page.wait_for_selector(".qr-box img")
    shot("merchant-detail")

    page.goto(gateway.url + "/#/queue")
    page.wait_for_selector("#queue tbody tr")
    page.locator("#queue a[href^='#/finding/']").first.click()
    page.wait_for_selector("#evidence dd")
    shot("finding-detail")

    page.goto(gateway.url + "/#/inspect/s-2")
    page.wait_for_selector("#inspection-form .load")
    loads = page.locator("#inspection-form tbody tr")
    for i in range(loads.count()):
        expect(loads.nth(i).locator(".mpe")).to_contain_text("±")
    for i in range(loads.count()):
        row = loads.nth(i)
        load = row.locator(".load").input_value()
        whole, frac = load.split(".")
        # every load reads 15 g light except the first, which is right
        mg = int(whole) * 1_000_000 + int(frac.ljust(6, "0")) - (0 if i == 0 else 15_000)
        row.locator(".indication").fill(f"{mg // 1_000_000}.{mg % 1_000_000:06d}")
    page.fill("#weights-cert", "ZB-2026-0042")
    page.fill("#place", "东门农贸市场 B-02 摊位")
    shot("inspection-form")
    page.click("#submit-inspection")
    page.wait_for_selector("#verdict")
    shot("inspection-form-verdicts")
    case_url = page.url
    page.set_input_files("#photo-file", files=[{"name": "seal.png", "mimeType": "image/png",
                                                "buffer": _photo()}])
    page.fill("#photo-caption", "铅封与显示屏")
    page.click("#photo-form button[type=submit]")
    page.wait_for_selector("#photos figure img[src^='blob:']")
    draw_signature(page)
    page.fill("#decision-reason", "三个载荷超出使用中最大允许误差")
    page.click("#decide-btn")
    page.wait_for_selector("#consequence")
    page.check("#confirm-check")
    shot("case-file-confirmation")

    page.goto(gateway.url + "/#/tolerance")
    page.wait_for_selector("#mpe-out .big")
    page.wait_for_selector("#rd-out .big")
    shot("tolerance-calculator")

    page.goto(gateway.url + "/#/registry/m1")
    page.wait_for_selector("#merchants tbody tr")
    page.set_input_files("#csv-file", files=[{"name": "register.csv", "mimeType": "text/csv",
                                              "buffer": BAD_CSV.encode("utf-8")}])
    page.click("#csv-import button[type=submit]")
    page.wait_for_selector("#import-errors tbody tr")
    shot("registry-csv-errors")

    page.goto(gateway.url + "/#/applications")  # the trust programme's review queue
    page.wait_for_selector("#applications-submitted")
    shot("trust-applications")
    page.goto(gateway.url + "/#/lifecycle")  # business-register status feed, lists
    page.wait_for_selector("#feed-csv")
    shot("trust-lifecycle")

    page.set_extra_http_headers({"Authorization": "Bearer " + page.evaluate(
        "sessionStorage.getItem('gw.token')")})
    page.goto(gateway.url + "/api/v1/cases/" + case_url.rsplit("/", 1)[1] + "/record.html")
    page.wait_for_selector("table.loads")
    shot("case-record-print")
    page.goto(gateway.url + "/api/v1/markets/m1/qr-sheet")
    page.wait_for_selector("svg.qr")
    shot("qr-sheet")

    p2 = pages.page(browser, viewport={"width": 390, "height": 844}, device_scale_factor=2,
                    is_mobile=True, has_touch=True, locale="zh-CN")
    p2.goto(gateway.url + f"/m/{gateway.ids['a_token']}")
    p2.wait_for_selector("#merchant-name")
    p2.screenshot(path=str(out / "trust-page-phone.png"), full_page=True)
    p2.goto(gateway.url + "/apply")  # a merchant applies for a trust code
    p2.wait_for_selector("#market option", state="attached")
    p2.screenshot(path=str(out / "apply-phone.png"), full_page=True)
    p2.goto(gateway.url + "/public/red-list")
    p2.wait_for_selector("footer")
    p2.screenshot(path=str(out / "red-list-phone.png"), full_page=True)
    assert not pages.dialogs, pages.dialogs
    assert not pages.errors, pages.errors
