"""The rules of a market day in the store: ``impact-repeated`` and ``zero-offset-persistent``.

The rules are pure (:func:`gateway_server.detect.rules.day.check_impact_day`,
``check_zero_day``); this module reads, once per scale and day that a batch touched and
whose finding is not stored yet, the day's sales and idle-pan reports, with the legal
negative deviation of each sale (called by :func:`gateway_server.detect.orchestrator.detect`).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, select

from gateway_server.detect.queries import price_at, prices
from gateway_server.detect.rules.day import check_impact_day, check_zero_day, deviation_of
from gateway_server.detect.rules.stream import (
    CST_OFFSET_MS,
    DAY_MS,
    DetectorParams,
    Finding,
    ScaleCtx,
    market_day,
)
from gateway_server.store.tables import events, findings, plu_prices, sales
from weighing import metrology as mt

Prices = dict[tuple[int, str], list[Any]]


def _day_start_ms(ts_ms: int) -> int:
    return market_day(ts_ms) * DAY_MS - CST_OFFSET_MS


class _Deviations:
    """The legal negative deviation of a stored sale for the day rules: by its registered
    goods (category, else price band) or its unit price; for a sale that names neither (a
    weight-only scale) the most lenient of the merchant's registered goods at that time,
    so a stall is never held to a tighter limit than any goods it sells."""

    def __init__(self, conn: Connection, prices_: Prices) -> None:
        self.conn, self.prices = conn, prices_
        self._by_merchant: dict[int, list[Any]] = {}

    def of(self, r: Any) -> int | None:
        mid, plu, unit = r.merchant_id, r.plu, r.unit_price_fen_per_kg
        if mid is not None and plu:
            if (mid, plu) not in self.prices:
                self.prices.update(prices(self.conn, {(mid, plu)}))
                self.prices.setdefault((mid, plu), [])
            price = price_at(self.prices[(mid, plu)], r.ts_ms)
            if price is not None or unit is not None:
                return deviation_of(int(r.net_mg), category=price.category if price else None,
                                    unit_price_fen_per_kg=unit)
        if unit is not None:
            return deviation_of(int(r.net_mg), category=None, unit_price_fen_per_kg=unit)
        if mid is None:
            return None
        if mid not in self._by_merchant:
            self._by_merchant[mid] = list(self.conn.execute(
                select(plu_prices).where(plu_prices.c.merchant_id == mid)))
        limits = [deviation_of(int(r.net_mg), category=v.category,
                               unit_price_fen_per_kg=int(v.unit_price_fen_per_kg))
                  for v in self._by_merchant[mid] if v.valid_from_ms <= r.ts_ms]
        known = [d for d in limits if d is not None]
        return max(known) if known and len(known) == len(limits) else None


def _not_found_yet(conn: Connection, kind: str,
                   last: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """The (device, market day) keys of ``last`` whose once-a-day finding is not stored yet."""
    keys = {f"{kind}:{d}:{day}": (d, day) for d, day in last}
    if not keys:
        return {}
    done = {keys[r.dedup_key] for r in conn.execute(
        select(findings.c.dedup_key).where(findings.c.dedup_key.in_(list(keys))))}
    return {k: v for k, v in last.items() if k not in done}


def impact_days(conn: Connection, new_sales: list[dict[str, Any]], ctx: dict[str, ScaleCtx],
                prices_: Prices, params: DetectorParams) -> list[Finding]:
    """``impact-repeated``: for each scale and market day with a new impact sale, the day's
    impact sales up to the newest (read once per scale and day)."""
    last: dict[tuple[str, int], int] = {}
    for s in new_sales:
        if s.get("unsettled_commit") and int(s["net_mg"]) > int(s["settled_mg"]):
            key = (s["device"], market_day(int(s["ts_ms"])))
            last[key] = max(last.get(key, 0), int(s["ts_ms"]))
    out: list[Finding] = []
    devs = _Deviations(conn, prices_)
    for (device, _day), upto in _not_found_yet(conn, "impact-repeated", last).items():
        sc = ctx.get(device)
        if sc is None:
            continue
        rows = [dict(r._mapping) for r in conn.execute(
            select(sales.c.ts_ms, sales.c.seq, sales.c.net_mg, sales.c.settled_mg,
                   sales.c.merchant_id, sales.c.plu, sales.c.unit_price_fen_per_kg)
            .where(sales.c.device == device, sales.c.unsettled_commit.is_(True),
                   sales.c.ts_ms >= _day_start_ms(upto), sales.c.ts_ms <= upto)
            .order_by(sales.c.ts_ms, sales.c.seq))]
        for r in rows:
            r["deviation_mg"] = devs.of(SimpleNamespace(**r))
        out += check_impact_day(rows, sc, params=params)
    return out


def zero_days(conn: Connection, new_events: list[dict[str, Any]], ctx: dict[str, ScaleCtx],
              prices_: Prices, params: DetectorParams) -> list[Finding]:
    """``zero-offset-persistent``: for each scale and market day with a new idle-pan report
    above the zero-setting accuracy, the day's judged reports and the sales between them."""
    last: dict[tuple[str, int], int] = {}
    for e in new_events:
        sc = ctx.get(e["device"])
        if e["kind"] != "zero" or sc is None:
            continue
        body = json.loads(e["payload"])
        if (int(body.get("duration_ms", 0)) >= params.zero_min_window_ms
                and int(body.get("mean_mg", 0)) > mt.zero_setting_accuracy_mg(sc.e_mg)):
            key = (e["device"], market_day(int(e["ts_ms"])))
            last[key] = max(last.get(key, 0), int(e["ts_ms"]))
    out: list[Finding] = []
    devs = _Deviations(conn, prices_)
    for (device, _day), upto in _not_found_yet(conn, "zero-offset-persistent", last).items():
        sc = ctx[device]
        day0 = _day_start_ms(upto)
        zeros = []
        for r in conn.execute(select(events.c.ts_ms, events.c.payload)
                              .where(events.c.device == device, events.c.kind == "zero",
                                     events.c.ts_ms >= day0, events.c.ts_ms <= upto)
                              .order_by(events.c.ts_ms, events.c.seq)):
            body = json.loads(r.payload)
            if int(body.get("duration_ms", 0)) >= params.zero_min_window_ms:
                zeros.append({"ts_ms": int(r.ts_ms), "mean_mg": int(body.get("mean_mg", 0))})
        if len(zeros) < params.zero_confirm_reports:
            continue
        rows = list(conn.execute(
            select(sales.c.ts_ms, sales.c.net_mg, sales.c.unit_price_fen_per_kg,
                   sales.c.merchant_id, sales.c.plu)
            .where(sales.c.device == device, sales.c.ts_ms >= day0, sales.c.ts_ms <= upto)
            .order_by(sales.c.ts_ms, sales.c.seq)))
        if not rows:
            continue
        day_sales = [{"ts_ms": int(r.ts_ms), "merchant_id": r.merchant_id,
                      "deviation_mg": devs.of(r)} for r in rows]
        out += check_zero_day(zeros, day_sales, sc, params=params)
    return out
