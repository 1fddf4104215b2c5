"""The per-event rules in the store: sales, idle-pan reports and counters of one batch.

The rules are pure (:mod:`gateway_server.detect.rules.stream`); this module reads what they
need besides the event (registered prices, the merchant's taring habit, the server's
memory of each counter, registered repairs) in a few queries per batch and runs them
(called by :func:`gateway_server.detect.orchestrator.detect`, which decides the order).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from gateway_server.detect.queries import price_at, prices
from gateway_server.detect.rules.stream import (
    CST_OFFSET_MS,
    DAY_MS,
    DetectorParams,
    Finding,
    RegisteredPrice,
    ScaleCtx,
    TareHabit,
    check_counter,
    check_sale,
    check_zero,
    market_day,
    tare_habit,
    tray_history_sales,
)
from gateway_server.store.bulk import any_of, newest_in_ranges
from gateway_server.store.tables import events, sales
from gateway_server.store.tables_workflow import repairs

Prices = dict[tuple[int, str], list[Any]]


def batch_prices(conn: Connection, new_sales: list[dict[str, Any]]) -> Prices:
    """Registered price versions of the (merchant, PLU) pairs the batch's sales name."""
    return prices(conn, {(r["merchant_id"], r["plu"]) for r in new_sales
                         if r.get("merchant_id") is not None and r.get("plu")})


def sale_findings(conn: Connection, new_sales: list[dict[str, Any]], ctx: dict[str, ScaleCtx],
                  prices_: Prices, params: DetectorParams) -> list[Finding]:
    """``check_sale`` on each new sale of a known scale, with its registered price and the
    merchant's taring habit behind it."""
    sale_prices = [price_at(prices_.get((s["merchant_id"], s["plu"]), []), s["ts_ms"])
                   if s.get("merchant_id") is not None and s.get("plu") else None
                   for s in new_sales]
    habits = _tare_habits(conn, new_sales, sale_prices, prices_, params)
    found: list[Finding] = []
    for s, price in zip(new_sales, sale_prices, strict=True):
        sc = ctx.get(s["device"])
        if sc is None:
            continue
        found += check_sale(s, sc, price=price, habit=habits.get((s["device"], s["seq"])),
                            params=params)
    return found


def _is_tray(price: RegisteredPrice | None, params: DetectorParams) -> bool:
    return price is not None and price.category in params.tray_categories


def _tare_habits(conn: Connection, new_sales: list[dict[str, Any]],
                 sale_prices: list[RegisteredPrice | None], prices_: Prices,
                 params: DetectorParams) -> dict[tuple[str, int], TareHabit]:
    """The merchant's taring habit (``rules.stream.tare_habit``) behind each new
    untared sale of tray goods: the scale's sales of that market day before it (at most
    ``tray_history_sales`` plus the batch's), read once per device."""
    cands = [s for s, p in zip(new_sales, sale_prices, strict=True)
             if _is_tray(p, params) and not int(s.get("tare_mg") or 0)
             and s.get("merchant_id") is not None]
    by_dev: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in cands:
        by_dev[s["device"]].append(s)
    out: dict[tuple[str, int], TareHabit] = {}
    n_new = Counter(s["device"] for s in new_sales)
    wants = [(device, min(market_day(int(s["ts_ms"])) for s in mine) * DAY_MS - CST_OFFSET_MS,
              max(int(s["ts_ms"]) for s in mine), tray_history_sales(params) + n_new[device])
             for device, mine in by_dev.items()]
    history = newest_in_ranges(conn, sales, ("ts_ms", "seq", "plu", "tare_mg", "merchant_id"),
                               key="device", ts="ts_ms", tie="seq", wants=wants)
    for device, mine in by_dev.items():
        rows = history[device]  # oldest first
        missing = {(r.merchant_id, r.plu) for r in rows
                   if r.merchant_id is not None and r.plu} - set(prices_)
        prices_.update(prices(conn, missing))
        for k in missing:
            prices_.setdefault(k, [])  # no registered price: asked once per batch
        tray = [r for r in rows if r.merchant_id is not None and r.plu and _is_tray(
            price_at(prices_[(r.merchant_id, r.plu)], r.ts_ms), params)]
        for s in mine:
            upto = [dict(r._mapping) for r in tray if r.merchant_id == s["merchant_id"]
                    and (r.ts_ms, r.seq) <= (s["ts_ms"], s["seq"])]
            if upto and upto[-1]["seq"] == s["seq"]:
                out[(device, s["seq"])] = tare_habit(upto, params=params)
    return out


@dataclass(frozen=True, slots=True)
class CounterMemory:
    """What the counter rule needs besides the report, read once per batch: every stored
    counter report of the batch's counting devices and their registered repairs."""

    values: dict[str, list[tuple[Any, ...]]]  # device → (ts, seq, name, new), oldest first
    repair_times: dict[str, list[int]]

    @classmethod
    def load(cls, conn: Connection, new_events: list[dict[str, Any]]) -> CounterMemory:
        devices = {e["device"] for e in new_events if e["kind"] == "counter"}
        values: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        repair_times: dict[str, list[int]] = defaultdict(list)
        if devices:
            # the server's memory of each counter (the batch's own reports are stored already)
            for r in conn.execute(select(events.c.device, events.c.ts_ms, events.c.seq,
                                         events.c.payload)
                                  .where(any_of(conn, events.c.device, devices),
                                         events.c.kind == "counter")
                                  .order_by(events.c.ts_ms, events.c.seq)):
                body = json.loads(r.payload)
                values[r.device].append((int(r.ts_ms), int(r.seq), body.get("name"),
                                         body.get("new")))
            for rep in conn.execute(select(repairs.c.device, repairs.c.ts_ms)
                                    .where(any_of(conn, repairs.c.device, devices))):
                repair_times[rep.device].append(int(rep.ts_ms))
        return cls(values, repair_times)

    def last_value(self, e: dict[str, Any], body: dict[str, Any]) -> str | None:
        """The value the server knew for this counter before report ``e`` (None: never seen)."""
        at = (int(e["ts_ms"]), int(e["seq"]))
        before = [new for ts, seq, name, new in self.values.get(e["device"], [])
                  if name == body.get("name") and (ts, seq) < at]
        return None if not before or before[-1] is None else str(before[-1])


def event_findings(e: dict[str, Any], body: dict[str, Any], sc: ScaleCtx,
                   counters: CounterMemory, params: DetectorParams) -> list[Finding]:
    """The rules on one idle-pan report or counter report of a known scale."""
    if e["kind"] == "zero":
        return check_zero(body, sc, params=params)
    if e["kind"] == "counter":
        return check_counter(body, sc, repair_times_ms=counters.repair_times.get(e["device"], []),
                             last_known=counters.last_value(e, body), params=params)
    return []
