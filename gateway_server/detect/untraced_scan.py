"""Stall-named re-weighs in the store: record, match against the merchant's sales, judge.

The rule itself is pure (:mod:`gateway_server.detect.rules.untraced`); this module runs it
inside the ingest transaction (called by :func:`gateway_server.detect.orchestrator.detect`).

Life of a re-weigh named by ``merchant_token`` or ``stall_no`` (a row of ``reweighs`` with no
trace code):

* ``unknown-merchant`` — no merchant has that trust code or stall number (kept, never
  judged);
* ``pending`` — stored; matched at once if a recorded sale of the merchant explains it;
* ``matched`` — a sale (or a basket of two) of the merchant within the time window and the
  weight tolerance: the consumer had lost the receipt. ``sale_id`` / ``sold_mg`` name it;
  such a link is by weight, not by code, so it never feeds the residual detector;
* ``untracked`` — judged once every scale of the merchant has reported past the window
  (a scale's events arrive in order, so its sales of the window are in), or when the
  market's event time is ``max_wait_ms`` past the re-weigh: no recorded sale explains the
  goods. Each new ``untracked`` verdict runs the merchant rule, which may raise an
  ``untracked-sales`` finding.

A sale that arrives while a re-weigh is still pending is tried against it at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, and_, exists, func, select

from gateway_server.detect.queries import scale_contexts
from gateway_server.detect.rules.stream import Finding, ScaleCtx
from gateway_server.detect.rules.untraced import (
    DEFAULT_PARAMS,
    Candidate,
    StallReweigh,
    UntracedParams,
    best_match,
    check_untracked,
    tolerance_mg,
)
from gateway_server.registry.binding import devices_at
from gateway_server.store.tables import events, merchants, sales
from gateway_server.store.tables_workflow import reweighs

PENDING, MATCHED, UNTRACKED, UNKNOWN = "pending", "matched", "untracked", "unknown-merchant"


def store_stall_reweigh(conn: Connection, e: dict[str, Any], body: dict[str, Any],
                        params: UntracedParams = DEFAULT_PARAMS) -> None:
    """Store a re-weigh named by the stall (trust code, else stall number in the fair
    scale's market) and match it at once if a recorded sale explains it."""
    token, stall = body.get("merchant_token"), body.get("stall_no")
    q = select(merchants.c.id).order_by(merchants.c.id).limit(1)
    q = q.where(merchants.c.trust_token == token) if token is not None else q.where(
        merchants.c.market_id == e["market"], merchants.c.stall_no == stall)
    m = conn.execute(q).first()
    row = {"device": e["device"], "market": e["market"], "seq": e["seq"], "ts_ms": e["ts_ms"],
           "trace_code": None, "merchant_token": token, "stall_no": stall,
           "reference_mg": int(body["reference_mg"]), "merchant_id": m.id if m else None,
           "method": "", "verdict": UNKNOWN if m is None else PENDING}
    rid = conn.execute(reweighs.insert().values(**row).returning(reweighs.c.id)).scalar_one()
    if m is not None:
        _judge(conn, dict(row, id=rid), final=False, params=params)


def settle(conn: Connection, *, new_sales: list[dict[str, Any]], latest_ms: dict[str, int],
           params: UntracedParams = DEFAULT_PARAMS) -> list[Finding]:
    """Try new sales against pending re-weighs of their merchants, and judge the pending
    re-weighs of the markets in ``latest_ms`` (market → newest event time of the batch)
    whose window has closed."""
    merchants_ = sorted({int(s["merchant_id"]) for s in new_sales
                         if s.get("merchant_id") is not None})
    for i in range(0, len(merchants_), 500):
        chunk = merchants_[i:i + 500]
        for r in conn.execute(select(reweighs).where(reweighs.c.verdict == PENDING,
                                                     reweighs.c.merchant_id.in_(chunk))):
            _judge(conn, dict(r._mapping), final=False, params=params)
    found: list[Finding] = []
    for market, latest in sorted(latest_ms.items()):
        due = conn.execute(select(reweighs).where(
            reweighs.c.market == market, reweighs.c.verdict == PENDING,
            reweighs.c.ts_ms <= latest - params.after_ms).order_by(reweighs.c.ts_ms))
        for r in list(due):
            rw = dict(r._mapping)
            devices = devices_at(conn, int(rw["merchant_id"]), int(rw["ts_ms"]))
            caught_up = all(_reported_since(conn, d, int(rw["ts_ms"]) + params.after_ms)
                            for d in devices)
            if not caught_up and latest < int(rw["ts_ms"]) + params.max_wait_ms:
                continue
            if _judge(conn, rw, final=True, params=params) == UNTRACKED:
                f = _merchant_rule(conn, int(rw["merchant_id"]), int(rw["ts_ms"]), params)
                if f is not None:
                    found.append(f)
    return found


def _reported_since(conn: Connection, device: str, ts_ms: int) -> bool:
    """Has the device sent anything stamped at or after ``ts_ms``?"""
    return bool(conn.execute(select(
        exists().where(sales.c.device == device, sales.c.ts_ms >= ts_ms)
        | exists().where(events.c.device == device, events.c.ts_ms >= ts_ms))).scalar())


def _judge(conn: Connection, rw: dict[str, Any], *, final: bool,
           params: UntracedParams) -> str:
    """Match ``rw`` against the merchant's sales; store ``matched`` (or, when ``final``,
    ``untracked``). Returns the verdict now stored."""
    ts, reference = int(rw["ts_ms"]), int(rw["reference_mg"])
    cands = [Candidate(int(s.id), s.device, int(s.ts_ms), int(s.settled_mg))
             for s in conn.execute(select(sales.c.id, sales.c.device, sales.c.ts_ms,
                                          sales.c.settled_mg).where(
                 sales.c.merchant_id == rw["merchant_id"],
                 sales.c.ts_ms >= ts - params.before_ms, sales.c.ts_ms <= ts + params.after_ms))]
    if cands:  # a sale explains one re-weigh at most (by code or by weight)
        used = {int(r.sale_id) for r in conn.execute(select(reweighs.c.sale_id).where(
            reweighs.c.sale_id.in_([c.sale_id for c in cands]), reweighs.c.id != rw["id"]))}
        cands = [c for c in cands if c.sale_id not in used]
    ctx = scale_contexts(conn, {c.device for c in cands} | {rw["device"]})
    fair = ctx.get(rw["device"])
    tol = {d: tolerance_mg(reference, selling=sc, fair=fair, params=params)
           for d, sc in ctx.items()}
    cands = [c for c in cands if c.device in tol]  # a scale without e / Max: cannot judge
    m = best_match(reference, cands, tol, params=params)
    if m is not None:
        sale_device = next(c.device for c in cands if c.sale_id == m.sale_ids[0])
        conn.execute(reweighs.update().where(reweighs.c.id == rw["id"]).values(
            verdict=MATCHED, sale_id=m.sale_ids[0], sale_device=sale_device, sold_mg=m.sold_mg,
            shortfall_mg=m.difference_mg, limit_mg=m.tolerance_mg, method="stall-match"))
        return MATCHED
    if not final:
        return PENDING
    conn.execute(reweighs.update().where(reweighs.c.id == rw["id"]).values(
        verdict=UNTRACKED, method="stall-match"))
    return UNTRACKED


def _merchant_rule(conn: Connection, merchant_id: int, ts_ms: int,
                   params: UntracedParams) -> Finding | None:
    rows = list(conn.execute(select(reweighs.c.id, reweighs.c.ts_ms, reweighs.c.device,
                                    reweighs.c.reference_mg, reweighs.c.verdict).where(
        reweighs.c.merchant_id == merchant_id, reweighs.c.trace_code.is_(None),
        reweighs.c.verdict.in_((MATCHED, UNTRACKED)),
        reweighs.c.ts_ms > ts_ms - params.window_ms, reweighs.c.ts_ms <= ts_ms)))
    judged = [StallReweigh(int(r.id), int(r.ts_ms), r.device, int(r.reference_mg),
                           r.verdict == UNTRACKED) for r in rows]
    span = [r.ts_ms for r in judged if r.untracked]
    lo, hi = min(span) - params.before_ms, max(span) + params.after_ms
    devices = devices_at(conn, merchant_id, ts_ms)
    if not devices:
        return None  # no scale to put it on; the verdicts stay on the re-weighs
    counts = _sales_per_device(conn, devices, lo, hi)
    idle = min(devices, key=lambda d: (counts.get(d, 0), d))
    ctx = scale_contexts(conn, [idle]).get(idle)
    market = ctx.market if ctx else conn.execute(
        select(merchants.c.market_id).where(merchants.c.id == merchant_id)).scalar_one()
    scale = ctx or ScaleCtx(idle, market, 1, 1)
    return check_untracked(judged, merchant_id=merchant_id, scale=scale,
                           recorded_sales={d: counts.get(d, 0) for d in devices}, params=params)


def _sales_per_device(conn: Connection, devices: Iterable[str], lo: int, hi: int) -> dict[str, int]:
    return {d: int(n) for d, n in conn.execute(
        select(sales.c.device, func.count()).where(
            and_(sales.c.device.in_(list(devices)), sales.c.ts_ms >= lo, sales.c.ts_ms <= hi))
        .group_by(sales.c.device))}
