"""Fair-scale re-weighs (核称) named by the receipt's traceability code: link and judge.

A fair scale's ``ReweighEvent`` names the receipt's traceability code; the sale carrying
that code is looked up, the re-weigh method follows from the two scales (a fair scale that
may err less at that load is "more accurate": 1× the negative deviation; an equal one 2×,
Art. 6), and ``weighing.metrology.judge_reweigh`` gives the verdict, allowing for both
scales' in-service MPE and display rounding as the law does (docs/metrology.md "Single
re-weigh verdict"). A re-weigh that arrives before its sale is stored as ``unlinked`` and
linked when the sale arrives. Called by :func:`gateway_server.detect.orchestrator.detect`.

Re-weighs named by the stall's trust code instead (no receipt) are matched against the
merchant's sales by weight and time in :mod:`gateway_server.detect.untraced_scan`.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from sqlalchemy import Connection, select

from gateway_server.detect.queries import price_at, prices, scale_contexts
from gateway_server.detect.rules.legal import LEGAL_REWEIGH
from gateway_server.detect.rules.stream import Finding, ScaleCtx
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


def _judge(conn: Connection, sale: Any, reference_mg: int, fair: ScaleCtx | None,
           selling: ScaleCtx | None) -> tuple[dict[str, Any], mt.ReweighJudgement]:
    """Art. 6 verdict on one linked re-weigh, allowing for both scales' in-service MPE and
    display rounding (``mt.reweigh_threshold_mg``). A fair scale the register does not
    describe is taken as equal to the selling scale (as the method is); a selling scale
    without e or class gets the law's limit alone."""
    category = None
    if sale.merchant_id is not None and sale.plu:
        pv = price_at(prices(conn, {(sale.merchant_id, sale.plu)}).get(
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


def reweigh(conn: Connection, e: dict[str, Any], body: dict[str, Any],
            ctx: dict[str, ScaleCtx]) -> list[Finding]:
    """Store one re-weigh named by a trace code: judged if its sale is stored, else
    ``unlinked``."""
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


def link_waiting(conn: Connection, new_sales: list[dict[str, Any]],
                 ctx: dict[str, ScaleCtx]) -> list[Finding]:
    """Judge the ``unlinked`` re-weighs whose sale arrived in this batch."""
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
