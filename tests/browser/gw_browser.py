"""Helpers of the browser tests: the seeded in-process gateway, page watching, login.

The gateway is seeded through the register functions and ``pipeline.store_batch`` with
wire events signed by each scale's key, so every finding on the pages is real detector
output. Missing chromium or playwright: skipped on a developer machine, failed in CI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway_server.ingest.pipeline import decode_message, store_batch
from gateway_server.registry import register as reg
from gateway_server.store.database import Store
from weighing import wire
from weighing.signing import sign_event
from weighing.units import amount_fen

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PASSWORD = "correct-horse-battery"
XSS_NAME = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
ROOT = Path(__file__).resolve().parents[2]
# a register with bad rows: an unknown unit (斤), a bad date, class V, Max/e off class III
BAD_CSV = (
    "设备编号,用途,型号,出厂编号,最大秤量,分度值,准确度等级,检定证书编号,检定日期,有效期至,商户名称,摊位号\n"
    "s-9,计价,TM-A15,SN9,15 kg,5 g,III,JD-9,2025-03-01,2026-02-28,张三蔬菜,A-01\n"
    "s-10,计价,TM-A15,SN10,15 公斤,5 g,III,JD-10,2025-03-01,2026-02-28,张三蔬菜,A-01\n"
    "s 11,计价秤,TM-A15,SN11,15 kg,7 g,III,JD-11,2025-13-01,2026-02-28,张三蔬菜,A-01\n"
    "s-12,秤,TM-A15,SN12,abc,5 g,V,JD-12,2025-03-01,2026-02-28,无此商户,Z-99\n"
    "s-13,计价,TM-A30,SN13,60 斤,10 g,III,JD-13,2025-03-01,2026-02-28,张三蔬菜,A-01\n"
    "s-14,计价,TM-A30,SN14,15 kg,7 g,III,JD-14,2025-03-01,2026-02-28,张三蔬菜,A-01\n"
)


@dataclass
class Gateway:
    url: str
    store: Store
    ids: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, bytes] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)

    def send(self, device: str, market: str, events: list[Any], now_ms: int | None = None
             ) -> Any:
        """Sign ``events`` with the scale's key and store them as one ingest batch."""
        now = now_ms or time.time_ns() // 1_000_000
        signed = [sign_event(self.keys[device], device, e) for e in events]
        inc = decode_message(wire.topic(market, device, wire.Channel.EVENTS),
                             wire.encode(wire.EventBatch(device=device, events=signed)), now)
        with self.store.engine.begin() as c:
            return store_batch(c, [inc], now_ms=now)

    def state(self, device: str, market: str, state: str) -> None:
        now = time.time_ns() // 1_000_000
        inc = decode_message(wire.topic(market, device, wire.Channel.STATE),
                             wire.encode(wire.State(state=wire.DeviceState(state), ts_ms=now)),
                             now)
        with self.store.engine.begin() as c:
            store_batch(c, [inc], now_ms=now)

    def next_seq(self, device: str) -> int:
        self.seqs[device] = self.seqs.get(device, 0) + 1
        return self.seqs[device]

    def sale(self, device: str, *, ts_ms: int, net_mg: int, price_fen: int | None = None,
             trace: str | None = None, plu: str | None = None, unsettled: bool = False,
             settled_mg: int | None = None) -> Any:
        return wire.SaleEvent(
            seq=self.next_seq(device), ts_ms=ts_ms, net_mg=net_mg,
            settled_mg=settled_mg if settled_mg is not None else net_mg, peak_mg=net_mg,
            stable_device=not unsettled, stable_software=not unsettled,
            unsettled_commit=unsettled, duration_ms=1200, unit_price_fen_per_kg=price_fen,
            amount_fen=amount_fen(net_mg, price_fen) if price_fen is not None else None,
            plu=plu, trace_code=trace)


DAY = 86_400_000


def seed_now(now: int) -> int:
    """The seed's "now": the real one, unless the 5 hours of events before it would
    straddle a CST midnight; then 23:59 CST of the day before. The queue states the
    shortfall of a scale's *day* (CST), so a re-weigh before midnight and the counter
    change after it would land on two days and the page would differ with the hour the
    suite runs (it did: the dashboard test failed from 00:00 to 05:00 CST)."""
    cst = (now + 8 * 3_600_000) % DAY
    return now - cst - 60_000 if cst < 6 * 3_600_000 else now


def seed(gw: Gateway) -> None:
    """Two markets with coordinates and one without; four merchants (one named with markup),
    four trade scales and a fair scale; sales, zero checks and re-weighs through the
    ingest pipeline; a complaint."""
    now = seed_now(time.time_ns() // 1_000_000)
    with gw.store.engine.begin() as c:
        reg.create_market(c, "m1", name="东门农贸市场", name_en="Dongmen Market", district="鼓楼区",
                          address="东街 88 号", operator="东门市场管理有限公司",
                          lat_e6=26_083_000, lon_e6=119_302_000, now_ms=now)
        reg.create_market(c, "m2", name="西湖菜市场", district="鼓楼区",
                          lat_e6=26_090_500, lon_e6=119_281_000, now_ms=now)
        reg.create_market(c, "m3", name="南门综合市场", now_ms=now)
        lic = [{"kind": "营业执照", "number": "91350100M000100Y43"},
               {"kind": "食品经营许可证", "number": "JY13501020012345",
                "valid_until_ms": now + 400 * DAY}]
        a = reg.create_merchant(c, "m1", name="张三蔬菜", credit_code="91350100M000100Y43",
                                stall_no="A-01", categories=["蔬菜", "水果"], licences=lic,
                                phone="13800000000", now_ms=now)
        b = reg.create_merchant(c, "m1", name="李四水产", stall_no="B-02", categories=["水产"],
                                now_ms=now)
        x = reg.create_merchant(c, "m1", name=XSS_NAME, stall_no='C-03"><b>x</b>',
                                categories=["<i>干货</i>"], now_ms=now)
        d = reg.create_merchant(c, "m1", name="王五鲜肉", stall_no="D-04", categories=["肉"],
                                now_ms=now)
        reg.create_merchant(c, "m2", name="赵六水果", stall_no="1-08", now_ms=now)
        specs = [("s-1", a, 15_000_000, 5_000, now + 200 * DAY, "trade"),
                 ("s-2", b, 30_000_000, 10_000, now - 12 * DAY, "trade"),
                 ("s-3", x, 15_000_000, 5_000, now + 20 * DAY, "trade"),
                 ("s-4", d, 6_000_000, 2_000, now + 300 * DAY, "trade"),
                 ("f-1", None, 15_000_000, 2_000, now + 300 * DAY, "fair")]
        for device, m, max_mg, e_mg, due, role in specs:
            reg.register_scale(c, device, market_id="m1", now_ms=now, max_mg=max_mg, e_mg=e_mg,
                               accuracy_class="III", role=role, model="TM-A15",
                               serial=f"SN{device.upper()}", cert_no=f"JD2025-{device}",
                               verified_on_ms=due - 365 * DAY, due_on_ms=due)
            if m is not None:
                reg.bind(c, device, m["id"], at_ms=now - 30 * DAY)
            gw.keys[device] = bytes.fromhex(reg.get_scale_row(c, device)["key_hex"])
        reg.add_price(c, a["id"], plu="1001", name="西红柿", category="vegetables",
                      unit_price_fen_per_kg=600, valid_from_ms=now - 30 * DAY)
        reg.add_price(c, b["id"], plu="2001", name="鲈鱼", category="aquatic_products",
                      unit_price_fen_per_kg=4_000, valid_from_ms=now - 30 * DAY)
    gw.ids = {"a": a["id"], "b": b["id"], "x": x["id"], "d": d["id"],
              "a_token": a["trust_token"], "x_token": x["trust_token"],
              "b_token": b["trust_token"]}
    for device in ("s-1", "s-2", "s-3", "s-4", "f-1"):
        gw.state(device, "m1", "online" if device != "s-4" else "offline")

    h = 3_600_000
    t0 = now - 5 * h
    gw.send("s-1", "m1", [
        gw.sale("s-1", ts_ms=t0, net_mg=1_000_000, price_fen=600, plu="1001", trace="T-0001"),
        gw.sale("s-1", ts_ms=t0 + 600_000, net_mg=500_000, price_fen=600, plu="1001",
                trace="T-0002"),
        gw.sale("s-1", ts_ms=t0 + 1_200_000, net_mg=2_350_000, price_fen=600, plu="1001",
                trace="T-0003"),
        gw.sale("s-1", ts_ms=t0 + 1_800_000, net_mg=1_980_000, settled_mg=1_550_000,
                price_fen=600, plu="1001", trace="T-0004", unsettled=True),
        *[wire.ZeroCheckEvent(seq=gw.next_seq("s-1"), ts_ms=now - k * h, mean_mg=mean,
                              spread_mg=200, n=40, duration_ms=8_000)
          for k, mean in ((4, 1_800), (3, 2_600), (2, 3_400), (1, 4_100))],
        # the calibration counter moved, no repair registered: conclusive (the queue)
        wire.CounterChangeEvent(seq=gw.next_seq("s-1"), ts_ms=now - h + 60_000, name="cal",
                                old="41", new="42"),
    ])
    gw.send("s-2", "m1", [
        gw.sale("s-2", ts_ms=t0 + 900_000, net_mg=1_200_000, price_fen=400, plu="2001",
                trace="T-1001"),
        gw.sale("s-2", ts_ms=t0 + 1_500_000, net_mg=800_000, price_fen=4_000, plu="2001",
                trace="T-1002"),
    ])
    gw.send("s-3", "m1", [
        gw.sale("s-3", ts_ms=t0 + 700_000, net_mg=300_000, price_fen=2_400, trace="T-3001"),
        wire.ZeroCheckEvent(seq=gw.next_seq("s-3"), ts_ms=now - 2 * h, mean_mg=2_500,
                            spread_mg=100, n=40, duration_ms=6_000),
    ])
    gw.send("s-4", "m1", [gw.sale("s-4", ts_ms=t0 + 300_000, net_mg=750_000, price_fen=3_600)])
    gw.send("f-1", "m1", [
        wire.ReweighEvent(seq=gw.next_seq("f-1"), ts_ms=t0 + 2 * h, trace_code="T-0001",
                          reference_mg=950_000),
        wire.ReweighEvent(seq=gw.next_seq("f-1"), ts_ms=t0 + 2 * h + 60_000,
                          trace_code="T-0002", reference_mg=498_000),
        wire.ReweighEvent(seq=gw.next_seq("f-1"), ts_ms=t0 + 2 * h + 120_000,
                          trace_code="T-0003", reference_mg=2_330_000),
    ])


@dataclass
class Pages:
    """Console errors, page errors and dialogs of every page opened through it."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)

    def page(self, browser: Any, **context_args: Any) -> Any:
        """A watched page in a new browser context (closed when the test ends)."""
        ctx = browser.new_context(**context_args)
        self.contexts.append(ctx)
        return self.watch(ctx.new_page())

    def watch(self, page: Any) -> Any:
        page.on("console", lambda m: self.errors.append(f"{page.url}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))

        def dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)
        return page


def login(page: Any, gw: Gateway, username: str = "inspector1") -> None:
    page.goto(gw.url + "/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-btn")
    page.wait_for_url("**/#/overview")
    page.wait_for_selector(".stats")


def draw_signature(page: Any, name: str = "王检查") -> None:
    """Type the signer's name and draw a stroke on the signature pad, then sign."""
    page.fill("#signer-name", name)
    page.locator("#signature-pad").scroll_into_view_if_needed()
    box = page.locator("#signature-pad").bounding_box()
    assert box is not None
    x, y = box["x"], box["y"]
    page.mouse.move(x + 20, y + 100)
    page.mouse.down()
    for i in range(1, 12):
        page.mouse.move(x + 20 + 30 * i, y + 100 - (40 if i % 2 else 0), steps=3)
    page.mouse.up()
    page.click("#sign-btn")
    page.wait_for_selector("#decision-card, #decision, #case-error:not(:empty)")
    err = page.locator("#case-error").inner_text() if page.locator("#case-error").count() else ""
    assert not err, err
    page.wait_for_selector("#decision-card, #decision")


def decide(page: Any, reason: str, action: str | None = None) -> None:
    """Choose a decision on a signed case, see its consequence, tick and confirm it."""
    if action is not None:
        page.select_option("#action", action)
    page.fill("#decision-reason", reason)
    page.click("#decide-btn")
    page.wait_for_selector("#consequence")
    page.check("#confirm-check")
    page.click("#confirm-btn")
    page.wait_for_selector("#decision")


def fill_loads(page: Any, offset_mg: int, first_exact: bool = False) -> None:
    """Fill each indication of the inspection form: the load plus ``offset_mg``."""
    rows = page.locator("#inspection-form tbody tr")
    rows.first.locator(".mpe").wait_for()
    for i in range(rows.count()):
        row = rows.nth(i)
        whole, frac = row.locator(".load").input_value().split(".")
        mg = int(whole) * 1_000_000 + int(frac.ljust(6, "0"))
        mg += 0 if (first_exact and i == 0) else offset_mg
        row.locator(".indication").fill(f"{mg // 1_000_000}.{mg % 1_000_000:06d}")
