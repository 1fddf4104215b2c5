"""Running the detectors inside the ingest transaction, and linking fair-scale re-weighs.

Called by :func:`gateway_server.ingest.pipeline.store_batch` with the rows that were *new* in
the batch (duplicates never reach a detector twice). It gathers what the pure rules of
``detectors.stream`` need (scale characteristics, registered prices, registered
repairs) in a few queries per batch, runs them, and returns finding rows.

Re-weighs (核称) named by the stall's trust code instead (no receipt) are matched against
the merchant's sales by weight and time in :mod:`gateway_server.detect.untraced_scan`.

Re-weighs (核称): a fair scale's ``ReweighEvent`` names the receipt's traceability code;
the sale carrying that code is looked up, the re-weigh method follows from the two
scales (a fair scale that may err less at that load is "more accurate": 1× the negative
deviation; an equal one 2×, Art. 6), and ``weighing.metrology.judge_reweigh`` gives the
verdict, allowing for both scales' in-service MPE and display rounding as the law does
(docs/metrology.md "Single re-weigh verdict"). A re-weigh that arrives before its sale is
stored as ``unlinked`` and linked when the sale arrives.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from fractions import Fraction
from itertools import pairwise
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, func, select

from gateway_server.detect import residual_scan
from gateway_server.detect import untraced_scan as untraced
from gateway_server.detect.queries import finding_row, reset_ms, scale_contexts
from gateway_server.detect.rules import kfactor as kf
from gateway_server.detect.rules import offline as off
from gateway_server.detect.rules.legal import LEGAL_REWEIGH
from gateway_server.detect.rules.stream import (
    CST_OFFSET_MS,
    DAY_MS,
    DetectorParams,
    Finding,
    RegisteredPrice,
    ScaleCtx,
    TareHabit,
    check_counter,
    check_idle_scales,
    check_impact_day,
    check_sale,
    check_zero,
    check_zero_day,
    deviation_of,
    market_day,
    tare_habit,
    tray_history_sales,
)
from gateway_server.registry.binding import bound_during, merchants_at_times
from gateway_server.store.tables import (
    bindings,
    events,
    findings,
    markets,
    plu_prices,
    rollups,
    sales,
    scales,
)
from gateway_server.store.tables_workflow import repairs, reweighs
from weighing import metrology as mt


def _prices(conn: Connection, keys: set[tuple[int, str]]) -> dict[tuple[int, str], list[Any]]:
    """Registered price versions for (merchant, PLU) pairs: by merchant, in chunks (a
    batch can name thousands of merchants; one OR-expression per pair would exceed
    SQLite's expression depth)."""
    if not keys:
        return {}
    wanted = set(keys)
    merchants_ = sorted({m for m, _ in keys})
    got: dict[tuple[int, str], list[Any]] = defaultdict(list)
    for i in range(0, len(merchants_), 500):
        q = (select(plu_prices).where(plu_prices.c.merchant_id.in_(merchants_[i:i + 500]))
             .order_by(plu_prices.c.valid_from_ms))
        for r in conn.execute(q):
            if (r.merchant_id, r.plu) in wanted:
                got[(r.merchant_id, r.plu)].append(r)
    return got


def _price_at(versions: list[Any], ts: int) -> RegisteredPrice | None:
    best = None
    for v in versions:
        if v.valid_from_ms <= ts:
            best = v
    if best is None:
        return None
    return RegisteredPrice(best.plu, int(best.unit_price_fen_per_kg), best.category)


def detect(conn: Connection, *, new_sales: list[dict[str, Any]],
           new_events: list[dict[str, Any]], now_ms: int,
           params: DetectorParams = DetectorParams()) -> list[dict[str, Any]]:
    """Findings (as rows) for what this batch stored; also stores re-weigh verdicts."""
    ctx = scale_contexts(conn, {r["device"] for r in new_sales} | {r["device"] for r in new_events})
    price_keys = {(r["merchant_id"], r["plu"]) for r in new_sales
                  if r.get("merchant_id") is not None and r.get("plu")}
    prices = _prices(conn, price_keys)
    found: list[Finding] = []
    sale_prices = [_price_at(prices.get((s["merchant_id"], s["plu"]), []), s["ts_ms"])
                   if s.get("merchant_id") is not None and s.get("plu") else None
                   for s in new_sales]
    habits = _tare_habits(conn, new_sales, sale_prices, prices, params)
    for s, price in zip(new_sales, sale_prices, strict=True):
        sc = ctx.get(s["device"])
        if sc is None:
            continue
        found += check_sale(s, sc, price=price, habit=habits.get((s["device"], s["seq"])),
                            params=params)
    counter_devices = {e["device"] for e in new_events if e["kind"] == "counter"}
    repair_times: dict[str, list[int]] = defaultdict(list)
    counter_values = _counter_values(conn, counter_devices)
    if counter_devices:
        for r in conn.execute(select(repairs.c.device, repairs.c.ts_ms)
                              .where(repairs.c.device.in_(counter_devices))):
            repair_times[r.device].append(int(r.ts_ms))
    for e in new_events:
        sc = ctx.get(e["device"])
        body = json.loads(e["payload"])
        if e["kind"] == "zero" and sc is not None:
            found += check_zero(body, sc, params=params)
        elif e["kind"] == "counter" and sc is not None:
            found += check_counter(body, sc, repair_times_ms=repair_times[e["device"]],
                                   last_known=_last_value(counter_values[e["device"]], e, body),
                                   params=params)
        elif e["kind"] == "reweigh" and body.get("trace_code") is not None:
            found += _reweigh(conn, e, body, ctx)
        elif e["kind"] == "reweigh":
            untraced.store_stall_reweigh(conn, e, body)
    found += _impact_days(conn, new_sales, ctx, prices, params)
    found += _zero_days(conn, new_events, ctx, prices, params)
    found = _unique(found)  # per-day observations: one row per key, not one per sale
    found += _link_waiting_reweighs(conn, new_sales, ctx)
    found += untraced.settle(conn, new_sales=new_sales,
                             latest_ms=latest_by_market([*new_sales, *new_events]))
    resid_devices = _devices_with_new_pairs(conn, new_events, new_sales)
    found += residual_findings(conn, resid_devices, now_ms=now_ms)
    found += kfactor_findings(conn, new_sales)
    return [finding_row(f, now_ms) for f in found]


def _unique(found: list[Finding]) -> list[Finding]:
    seen: set[str] = set()
    out = []
    for f in found:
        if f.dedup_key not in seen:
            seen.add(f.dedup_key)
            out.append(f)
    return out


def _is_tray(price: RegisteredPrice | None, params: DetectorParams) -> bool:
    return price is not None and price.category in params.tray_categories


def _tare_habits(conn: Connection, new_sales: list[dict[str, Any]],
                 sale_prices: list[RegisteredPrice | None],
                 prices: dict[tuple[int, str], list[Any]],
                 params: DetectorParams) -> dict[tuple[str, int], TareHabit]:
    """The merchant's taring habit (``detectors.stream.tare_habit``) behind each new
    untared sale of tray goods: the scale's sales of that market day before it (at most
    ``tray_history_sales`` plus the batch's), read once per device."""
    cands = [s for s, p in zip(new_sales, sale_prices, strict=True)
             if _is_tray(p, params) and not int(s.get("tare_mg") or 0)
             and s.get("merchant_id") is not None]
    by_dev: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in cands:
        by_dev[s["device"]].append(s)
    out: dict[tuple[str, int], TareHabit] = {}
    for device, mine in by_dev.items():
        last = max(int(s["ts_ms"]) for s in mine)
        day0 = min(market_day(int(s["ts_ms"])) for s in mine) * DAY_MS - CST_OFFSET_MS
        n_new = sum(1 for s in new_sales if s["device"] == device)
        rows = list(conn.execute(
            select(sales.c.ts_ms, sales.c.seq, sales.c.plu, sales.c.tare_mg, sales.c.merchant_id)
            .where(sales.c.device == device, sales.c.ts_ms >= day0, sales.c.ts_ms <= last)
            .order_by(sales.c.ts_ms.desc(), sales.c.seq.desc())
            .limit(tray_history_sales(params) + n_new)))
        rows.reverse()  # oldest first
        missing = {(r.merchant_id, r.plu) for r in rows
                   if r.merchant_id is not None and r.plu} - set(prices)
        prices.update(_prices(conn, missing))
        for k in missing:
            prices.setdefault(k, [])  # no registered price: asked once per batch
        tray = [r for r in rows if r.merchant_id is not None and r.plu and _is_tray(
            _price_at(prices[(r.merchant_id, r.plu)], r.ts_ms), params)]
        for s in mine:
            upto = [dict(r._mapping) for r in tray if r.merchant_id == s["merchant_id"]
                    and (r.ts_ms, r.seq) <= (s["ts_ms"], s["seq"])]
            if upto and upto[-1]["seq"] == s["seq"]:
                out[(device, s["seq"])] = tare_habit(upto, params=params)
    return out


def _day_start_ms(ts_ms: int) -> int:
    return market_day(ts_ms) * DAY_MS - CST_OFFSET_MS


class _Deviations:
    """The legal negative deviation of a stored sale for the day rules: by its registered
    goods (category, else price band) or its unit price; for a sale that names neither (a
    weight-only scale) the most lenient of the merchant's registered goods at that time,
    so a stall is never held to a tighter limit than any goods it sells."""

    def __init__(self, conn: Connection, prices: dict[tuple[int, str], list[Any]]) -> None:
        self.conn, self.prices = conn, prices
        self._by_merchant: dict[int, list[Any]] = {}

    def of(self, r: Any) -> int | None:
        mid, plu, unit = r.merchant_id, r.plu, r.unit_price_fen_per_kg
        if mid is not None and plu:
            if (mid, plu) not in self.prices:
                self.prices.update(_prices(self.conn, {(mid, plu)}))
                self.prices.setdefault((mid, plu), [])
            price = _price_at(self.prices[(mid, plu)], r.ts_ms)
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


def _impact_days(conn: Connection, new_sales: list[dict[str, Any]], ctx: dict[str, ScaleCtx],
                 prices: dict[tuple[int, str], list[Any]],
                 params: DetectorParams) -> list[Finding]:
    """``impact-repeated``: for each scale and market day with a new impact sale, the day's
    impact sales up to the newest (read once per scale and day)."""
    last: dict[tuple[str, int], int] = {}
    for s in new_sales:
        if s.get("unsettled_commit") and int(s["net_mg"]) > int(s["settled_mg"]):
            key = (s["device"], market_day(int(s["ts_ms"])))
            last[key] = max(last.get(key, 0), int(s["ts_ms"]))
    out: list[Finding] = []
    devs = _Deviations(conn, prices)
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


def _zero_days(conn: Connection, new_events: list[dict[str, Any]], ctx: dict[str, ScaleCtx],
               prices: dict[tuple[int, str], list[Any]],
               params: DetectorParams) -> list[Finding]:
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
    devs = _Deviations(conn, prices)
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


def _counter_values(conn: Connection, devices: set[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored counter report of ``devices`` as (ts, seq, name, new), oldest first:
    the server's memory of each counter (the batch's own reports are stored already)."""
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    if not devices:
        return out
    for r in conn.execute(select(events.c.device, events.c.ts_ms, events.c.seq,
                                 events.c.payload)
                          .where(events.c.device.in_(devices), events.c.kind == "counter")
                          .order_by(events.c.ts_ms, events.c.seq)):
        body = json.loads(r.payload)
        out[r.device].append((int(r.ts_ms), int(r.seq), body.get("name"), body.get("new")))
    return out


def _last_value(stored: list[tuple[Any, ...]], e: dict[str, Any],
                body: dict[str, Any]) -> str | None:
    """The value the server knew for this counter before report ``e`` (None: never seen)."""
    at = (int(e["ts_ms"]), int(e["seq"]))
    before = [new for ts, seq, name, new in stored
              if name == body.get("name") and (ts, seq) < at]
    return None if not before or before[-1] is None else str(before[-1])


def latest_by_market(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Newest event time per market among stored rows (event time drives the window rules)."""
    latest: dict[str, int] = {}
    for r in rows:
        latest[r["market"]] = max(latest.get(r["market"], 0), int(r["ts_ms"]))
    return latest


def _devices_with_new_pairs(conn: Connection, new_events: list[dict[str, Any]],
                            new_sales: list[dict[str, Any]]) -> set[str]:
    """Selling scales whose re-weigh pairs changed in this batch."""
    codes = {json.loads(e["payload"]).get("trace_code") for e in new_events
             if e["kind"] == "reweigh"}
    codes |= {s["trace_code"] for s in new_sales if s.get("trace_code")}
    codes.discard(None)
    if not codes:
        return set()
    return {r.sale_device for r in conn.execute(
        select(reweighs.c.sale_device).where(reweighs.c.trace_code.in_(codes),
                                             reweighs.c.sale_device.is_not(None)).distinct())}


def residual_findings(conn: Connection, devices: set[str], *, now_ms: int) -> list[Finding]:
    """The statistical re-weigh detector (``detectors.residual``) per selling scale, run by
    :mod:`gateway_server.detect.residual_scan`: the loads of the inspection that opened the
    evidence period and every re-weigh linked by trace code since; a bad pair is left out
    alone, and what is left out (or a scale it cannot judge) is a ``not-judged`` finding."""
    return residual_scan.residual_findings(conn, devices, now_ms=now_ms, reset_of=reset_ms)


def kfactor_findings(conn: Connection, new_sales: list[dict[str, Any]]) -> list[Finding]:
    """K = (AD − AD0) / W per sale that carries a raw AD count (``detectors.kfactor``):
    AD0 from the device's latest zero check with a raw AD before the sale, stored with the
    sale (``sales.ad_zero``); then the drift rule per device."""
    with_ad = [s for s in new_sales if s.get("raw_ad") is not None]
    if not with_ad:
        return []
    for s in with_ad:
        for (payload,) in conn.execute(
                select(events.c.payload).where(events.c.device == s["device"],
                                               events.c.kind == "zero",
                                               events.c.ts_ms <= s["ts_ms"])
                .order_by(events.c.ts_ms.desc()).limit(20)):
            ad0 = json.loads(payload).get("raw_ad")
            if ad0 is not None:
                conn.execute(sales.update().where(sales.c.id == s["id"]).values(ad_zero=ad0))
                break
    ctx = scale_contexts(conn, {s["device"] for s in with_ad})
    out: list[Finding] = []
    for device in sorted(ctx):
        sc, reset = ctx[device], reset_ms(conn, device)
        base = select(sales.c.ts_ms, sales.c.seq, sales.c.raw_ad, sales.c.ad_zero,
                      sales.c.settled_mg, sales.c.tare_mg, sales.c.merchant_id).where(
            sales.c.device == device, sales.c.raw_ad.is_not(None),
            sales.c.ad_zero.is_not(None), sales.c.ts_ms > reset)

        ref = _k_samples(conn.execute(base.order_by(sales.c.ts_ms, sales.c.seq).limit(100)),
                         sc.e_mg)
        rows = list(conn.execute(base.order_by(sales.c.ts_ms.desc(), sales.c.seq.desc())
                                 .limit(50)))
        recent = _k_samples(reversed(rows), sc.e_mg)
        merchant = rows[0].merchant_id if rows else None
        f = kf.check_k_drift(ref, recent, sc, reset_ms=reset, merchant_id=merchant)
        if f is not None:
            out.append(f)
    return out


def _k_samples(rows: Iterable[Any], e_mg: int) -> list[kf.KSample]:
    # the load cell carries the tare too: W is the gross weight shown
    got = [kf.KSample(int(r.ts_ms), int(r.seq), int(r.raw_ad) - int(r.ad_zero),
                      int(r.settled_mg) + int(r.tare_mg or 0)) for r in rows]
    return [k for k in got if kf.qualifies(k.span_ad, k.settled_mg, e_mg)]


def _instrument(sc: ScaleCtx | None) -> mt.Instrument | None:
    """The scale as ``weighing.metrology`` sees it (in service), if its class is known."""
    if sc is None or sc.accuracy_class not in {c.value for c in mt.AccuracyClass}:
        return None
    return mt.Instrument(sc.e_mg, mt.AccuracyClass(sc.accuracy_class))


def _worst_error_mg(inst: mt.Instrument, load_mg: int) -> Fraction:
    return (mt.mpe_mg(load_mg, e_mg=inst.e_mg, accuracy_class=inst.accuracy_class,
                      stage=inst.stage) + mt.rounding_uncertainty_mg(inst.e_mg))


def _method(fair: ScaleCtx | None, selling: ScaleCtx | None,
            load_mg: int = 0) -> mt.ReweighMethod:
    """Art. 6: a fair scale that may err less at this load than the selling scale (in-service
    MPE + ½ e, any class I–IIII) is "more accurate" (1× the deviation); otherwise, or when
    either is unknown, "equal accuracy" (2×). Beyond a table: the finer e decides."""
    f, s = _instrument(fair), _instrument(selling)
    if f is None or s is None:
        return mt.ReweighMethod.EQUAL_ACCURACY_SCALE
    try:
        finer = _worst_error_mg(f, load_mg) < _worst_error_mg(s, load_mg)
    except mt.MetrologyError:
        finer = f.e_mg < s.e_mg
    return (mt.ReweighMethod.MORE_ACCURATE_SCALE if finer
            else mt.ReweighMethod.EQUAL_ACCURACY_SCALE)


def _judge(conn: Connection, sale: Any, reference_mg: int, fair: ScaleCtx | None,
           selling: ScaleCtx | None) -> tuple[dict[str, Any], mt.ReweighJudgement]:
    """Art. 6 verdict on one linked re-weigh, allowing for both scales' in-service MPE and
    display rounding (``mt.reweigh_threshold_mg``). A fair scale the register does not
    describe is taken as equal to the selling scale (as the method is); a selling scale
    without e or class gets the law's limit alone."""
    category = None
    if sale.merchant_id is not None and sale.plu:
        pv = _price_at(_prices(conn, {(sale.merchant_id, sale.plu)}).get(
            (sale.merchant_id, sale.plu), []), sale.ts_ms)
        category = pv.category if pv else None
    cat = mt.GoodsCategory(category) if category in {c.value for c in mt.GoodsCategory} else None
    method = _method(fair, selling, int(sale.net_mg))
    unit = sale.unit_price_fen_per_kg
    selling_i = _instrument(selling)
    try:
        j = mt.judge_reweigh(int(sale.net_mg), reference_mg, method=method, category=cat,
                             unit_price_fen_per_kg=None if cat or unit is None else int(unit),
                             selling=selling_i, reference=_instrument(fair) or selling_i)
    except mt.MetrologyError:  # no category and no price: no table applies
        j = mt.ReweighJudgement(int(sale.net_mg) - reference_mg, None, mt.ReweighVerdict.NO_RULE)
    row = {"sale_id": sale.id, "sale_device": sale.device, "merchant_id": sale.merchant_id,
           "sold_mg": int(sale.net_mg), "settled_mg": int(sale.settled_mg),
           "shortfall_mg": j.shortfall_mg, "limit_mg": j.limit_mg, "method": method.value,
           "category": category, "verdict": j.verdict.value,
           "e_mg": selling.e_mg if selling else None,
           "accuracy_class": selling.accuracy_class if selling else None}
    return row, j


def _reweigh_finding(rw: dict[str, Any], selling: ScaleCtx | None, market: str, *,
                     threshold_mg: Fraction | None = None) -> list[Finding]:
    """``reweigh-short`` for a violation; ``limit_mg`` is Art. 6's limit, ``threshold_mg``
    (exact mg, as text) what the shortfall was compared with."""
    if rw["verdict"] != mt.ReweighVerdict.VIOLATION.value:
        return []
    sc = selling or ScaleCtx(rw["sale_device"], market, 1, 1)
    ev = {k: rw.get(k) for k in ("trace_code", "sold_mg", "reference_mg", "shortfall_mg",
                                 "limit_mg", "method", "category", "sale_id")}
    ev["threshold_mg"] = None if threshold_mg is None else str(threshold_mg)
    return [Finding(
        "reweigh-short", "high", "公平秤核称短秤 Fair-scale re-weigh found short weight",
        LEGAL_REWEIGH, int(rw["ts_ms"]), sc.device, sc.market,
        f"reweigh-short:{rw['device']}:{rw['seq']}", rw.get("merchant_id"), ev)]


def _reweigh(conn: Connection, e: dict[str, Any], body: dict[str, Any],
             ctx: dict[str, ScaleCtx]) -> list[Finding]:
    code, reference = str(body["trace_code"]), int(body["reference_mg"])
    sale = conn.execute(select(sales).where(sales.c.trace_code == code)
                        .order_by(sales.c.ts_ms.desc()).limit(1)).first()
    base = {"device": e["device"], "market": e["market"], "seq": e["seq"], "ts_ms": e["ts_ms"],
            "trace_code": code, "reference_mg": reference}
    if sale is None:
        conn.execute(reweighs.insert().values(**base, method="", verdict="unlinked"))
        return []
    selling = ctx.get(sale.device) or scale_contexts(conn, [sale.device]).get(sale.device)
    fair = ctx.get(e["device"]) or scale_contexts(conn, [e["device"]]).get(e["device"])
    row, j = _judge(conn, sale, reference, fair, selling)
    rw = base | row
    conn.execute(reweighs.insert().values(**rw))
    return _reweigh_finding(rw, selling, sale.market, threshold_mg=j.threshold_mg)


def _link_waiting_reweighs(conn: Connection, new_sales: list[dict[str, Any]],
                           ctx: dict[str, ScaleCtx]) -> list[Finding]:
    codes = {s["trace_code"] for s in new_sales if s.get("trace_code")}
    if not codes:
        return []
    waiting = list(conn.execute(select(reweighs).where(
        reweighs.c.trace_code.in_(codes), reweighs.c.verdict == "unlinked")))
    out: list[Finding] = []
    for w in waiting:
        sale = conn.execute(select(sales).where(sales.c.trace_code == w.trace_code)
                            .order_by(sales.c.ts_ms.desc()).limit(1)).first()
        if sale is None:
            continue
        fair = ctx.get(w.device) or scale_contexts(conn, [w.device]).get(w.device)
        selling = ctx.get(sale.device) or scale_contexts(conn, [sale.device]).get(sale.device)
        row, j = _judge(conn, sale, int(w.reference_mg), fair, selling)
        conn.execute(reweighs.update().where(reweighs.c.id == w.id).values(**row))
        out += _reweigh_finding(dict(w._mapping) | row, selling, sale.market,
                                threshold_mg=j.threshold_mg)
    return out


def idle_scale_findings(conn: Connection, market: str, *, window_end_ms: int,
                        params: DetectorParams = DetectorParams()) -> list[dict[str, Any]]:
    """The second-untracked-scale rule over one closed window of one market (event time);
    see :func:`detectors.stream.check_idle_scales`."""
    start = window_end_ms - params.idle_window_ms
    base = start - params.idle_baseline_ms
    devices = {r.device: r for r in conn.execute(
        select(scales.c.device, scales.c.market, scales.c.e_mg, scales.c.max_mg,
               scales.c.accuracy_class, scales.c.role)
        .where(scales.c.market == market, scales.c.registered.is_(True),
               scales.c.role == "trade"))}
    if len(devices) < 3:
        return []
    # only scales that showed they were on (any event or raw reading in the window): a
    # scale with no data at all is offline or late, not idle while its stall trades
    active = {r.device for r in conn.execute(select(events.c.device).where(
        events.c.market == market, events.c.ts_ms >= start, events.c.ts_ms < window_end_ms)
        .distinct())}
    active |= {r.device for r in conn.execute(select(rollups.c.device).where(
        rollups.c.market == market, rollups.c.minute_ms >= start,
        rollups.c.minute_ms < window_end_ms).distinct())}

    def counts(t0: int, t1: int) -> dict[str, int]:
        return {d: int(n) for d, n in conn.execute(
            select(sales.c.device, func.count()).where(
                sales.c.market == market, sales.c.ts_ms >= t0, sales.c.ts_ms < t1)
            .group_by(sales.c.device)) if d in devices}

    now_all, before = counts(start, window_end_ms), counts(base, start)
    active |= set(now_all)
    now = {d: now_all.get(d, 0) for d in devices if d in active}
    merchants_of = {b.device: int(b.merchant_id) for b in conn.execute(
        select(bindings.c.device, bindings.c.merchant_id).where(
            bindings.c.device.in_(list(devices)), bound_during(start, window_end_ms)))}
    ctx = {d: ScaleCtx(d, market, int(r.e_mg or 1), int(r.max_mg or 1),
                       r.accuracy_class or "III", r.role) for d, r in devices.items()}
    found = check_idle_scales(now, before, ctx, window_end_ms=window_end_ms, params=params,
                              merchants=merchants_of)
    return [finding_row(f, window_end_ms) for f in found]


def offline_findings(conn: Connection, new_ts: dict[str, list[int]],
                     last_ts: dict[str, int | None],
                     new_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trade scales dark during trading hours (``detectors.offline``): a gap in a device's
    event times (``last_ts`` is its newest event time before this batch, ``new_ts`` the
    times of its new events), or a ``no-data`` fault, overlapping its market's hours."""
    periods: list[tuple[str, int, int, str]] = []
    for device, ts in new_ts.items():
        prev = last_ts.get(device)
        points = sorted(ts) if prev is None else [prev, *sorted(t for t in ts if t >= prev)]
        periods += [(device, a, b, "silent") for a, b in pairwise(points)
                    if b - a >= off.DEFAULT_PARAMS.min_ms]
    for e in new_events:
        if e["kind"] == "fault":
            body = json.loads(e["payload"])
            dur = body.get("duration_ms")
            if body.get("code") == "no-data" and dur and dur >= off.DEFAULT_PARAMS.min_ms:
                periods.append((e["device"], int(e["ts_ms"]) - int(dur), int(e["ts_ms"]),
                                "no-data"))
    if not periods:
        return []
    ctx = scale_contexts(conn, {d for d, *_ in periods})
    hours = {r.id: r.trading_hours for r in conn.execute(
        select(markets.c.id, markets.c.trading_hours).where(
            markets.c.id.in_({c.market for c in ctx.values()})))}
    merchant_of = merchants_at_times(conn, [(d, a) for d, a, _, _ in periods if d in ctx])
    out = []
    for device, a, b, cause in periods:
        sc = ctx.get(device)
        if sc is None:
            continue
        try:
            h = off.parse_trading_hours(hours.get(sc.market) or off.DEFAULT_TRADING_HOURS)
        except ValueError:  # a bad value stored before validation existed: the default
            h = off.parse_trading_hours(off.DEFAULT_TRADING_HOURS)
        f = off.check_offline(sc, a, b, cause=cause, hours=h,
                              merchant_id=merchant_of.get((device, a)))
        if f is not None:
            out.append(finding_row(f, int(b)))
    return out
