"""Fair-scale re-weighs (核称) named by the receipt's traceability code: link and judge.

A fair scale's ``ReweighEvent`` names the receipt's traceability code; the sale carrying
that code is looked up, the re-weigh method follows from the two scales (a fair scale that
may err less at that load is "more accurate": 1× the negative deviation; an equal one 2×,
Art. 6), and ``weighing.metrology.judge_reweigh`` gives the verdict, allowing for both
scales' in-service MPE and display rounding as the law does (docs/metrology.md "Single
re-weigh verdict"). A re-weigh that arrives before its sale is stored as ``unlinked`` and
linked when the sale arrives. Called by :func:`gateway_server.detect.orchestrator.detect`.

Reads are per batch (:class:`TraceLinks`): the sales the batch's codes name, their
registered prices and the scales on both sides, in a few statements whatever the number of
re-weighs; only each re-weigh's own row is written one by one (in event order).

Re-weighs named by the stall's trust code instead (no receipt) are matched against the
merchant's sales by weight and time in :mod:`gateway_server.detect.untraced_scan`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from sqlalchemy import Connection, select

from gateway_server.detect.queries import price_at, prices, scale_contexts
from gateway_server.detect.rules.legal import LEGAL_REWEIGH
from gateway_server.detect.rules.stream import Finding, ScaleCtx
from gateway_server.store.bulk import any_of, update_by_key
from gateway_server.store.tables import sales
from gateway_server.store.tables_workflow import reweighs
from weighing import metrology as mt


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


@dataclass(frozen=True, slots=True)
class TraceLinks:
    """What judging re-weighs named by trace codes needs, read once for all of them: the
    latest sale carrying each code, the registered prices of those sales and the scales on
    both sides (``ctx`` plus those it lacks)."""

    sales: dict[str, Any]  # trace code → its latest sale
    prices: dict[tuple[int, str], list[Any]]
    ctx: dict[str, ScaleCtx]

    @classmethod
    def load(cls, conn: Connection, codes: Iterable[str], fair_devices: Iterable[str],
             ctx: dict[str, ScaleCtx]) -> TraceLinks:
        wanted = sorted(set(codes))
        latest: dict[str, Any] = {}
        for i in range(0, len(wanted), 500):
            for sale in conn.execute(select(sales).where(
                    any_of(conn, sales.c.trace_code, wanted[i:i + 500]))):
                had = latest.get(sale.trace_code)
                if had is None or sale.ts_ms > had.ts_ms:
                    latest[sale.trace_code] = sale
        keys = {(s.merchant_id, s.plu) for s in latest.values()
                if s.merchant_id is not None and s.plu}
        devices = {s.device for s in latest.values()} | set(fair_devices)
        return cls(latest, prices(conn, keys),
                   ctx | scale_contexts(conn, devices - set(ctx)))

    def sale_for(self, code: str) -> Any | None:
        return self.sales.get(code)

    def judge(self, sale: Any, reference_mg: int,
              fair_device: str) -> tuple[dict[str, Any], mt.ReweighJudgement]:
        """Art. 6 verdict on one linked re-weigh, allowing for both scales' in-service MPE
        and display rounding (``mt.reweigh_threshold_mg``). A fair scale the register does
        not describe is taken as equal to the selling scale (as the method is); a selling
        scale without e or class gets the law's limit alone."""
        fair, selling = self.ctx.get(fair_device), self.ctx.get(sale.device)
        category = None
        if sale.merchant_id is not None and sale.plu:
            pv = price_at(self.prices.get((sale.merchant_id, sale.plu), []), sale.ts_ms)
            category = pv.category if pv else None
        cat = (mt.GoodsCategory(category) if category in {c.value for c in mt.GoodsCategory}
               else None)
        method = _method(fair, selling, int(sale.net_mg))
        unit = sale.unit_price_fen_per_kg
        selling_i = _instrument(selling)
        try:
            j = mt.judge_reweigh(int(sale.net_mg), reference_mg, method=method, category=cat,
                                 unit_price_fen_per_kg=None if cat or unit is None else int(unit),
                                 selling=selling_i, reference=_instrument(fair) or selling_i)
        except mt.MetrologyError:  # no category and no price: no table applies
            j = mt.ReweighJudgement(int(sale.net_mg) - reference_mg, None,
                                    mt.ReweighVerdict.NO_RULE)
        row = {"sale_id": sale.id, "sale_device": sale.device, "merchant_id": sale.merchant_id,
               "sold_mg": int(sale.net_mg), "settled_mg": int(sale.settled_mg),
               "shortfall_mg": j.shortfall_mg, "limit_mg": j.limit_mg, "method": method.value,
               "category": category, "verdict": j.verdict.value,
               "e_mg": selling.e_mg if selling else None,
               "accuracy_class": selling.accuracy_class if selling else None}
        return row, j


def batch_links(conn: Connection, new_events: list[dict[str, Any]],
                ctx: dict[str, ScaleCtx]) -> TraceLinks:
    """:class:`TraceLinks` for the batch's re-weighs named by a trace code."""
    named = [(e, json.loads(e["payload"])) for e in new_events if e["kind"] == "reweigh"]
    named = [(e, b) for e, b in named if b.get("trace_code") is not None]
    return TraceLinks.load(conn, {str(b["trace_code"]) for _, b in named},
                           {e["device"] for e, _ in named}, ctx)


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


def reweigh(conn: Connection, e: dict[str, Any], body: dict[str, Any],
            links: TraceLinks) -> list[Finding]:
    """Store one re-weigh named by a trace code: judged if its sale is stored, else
    ``unlinked``."""
    code, reference = str(body["trace_code"]), int(body["reference_mg"])
    sale = links.sale_for(code)
    base = {"device": e["device"], "market": e["market"], "seq": e["seq"], "ts_ms": e["ts_ms"],
            "trace_code": code, "reference_mg": reference}
    if sale is None:
        conn.execute(reweighs.insert().values(**base, method="", verdict="unlinked"))
        return []
    row, j = links.judge(sale, reference, e["device"])
    rw = base | row
    conn.execute(reweighs.insert().values(**rw))
    return _reweigh_finding(rw, links.ctx.get(sale.device), sale.market,
                            threshold_mg=j.threshold_mg)


def link_waiting(conn: Connection, new_sales: list[dict[str, Any]],
                 ctx: dict[str, ScaleCtx]) -> list[Finding]:
    """Judge the ``unlinked`` re-weighs whose sale arrived in this batch."""
    codes = {s["trace_code"] for s in new_sales if s.get("trace_code")}
    if not codes:
        return []
    waiting = list(conn.execute(select(reweighs).where(
        any_of(conn, reweighs.c.trace_code, codes), reweighs.c.verdict == "unlinked")))
    if not waiting:
        return []
    links = TraceLinks.load(conn, {w.trace_code for w in waiting}, {w.device for w in waiting},
                            ctx)
    out: list[Finding] = []
    changes: dict[Any, dict[str, Any]] = {}
    for w in waiting:
        sale = links.sale_for(w.trace_code)
        if sale is None:
            continue
        row, j = links.judge(sale, int(w.reference_mg), w.device)
        changes[w.id] = row
        out += _reweigh_finding(dict(w._mapping) | row, links.ctx.get(sale.device), sale.market,
                                threshold_mg=j.threshold_mg)
    update_by_key(conn, reweighs, "id", changes)
    return out
