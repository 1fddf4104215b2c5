"""Compensation under 消保法 Art. 55 (3 × the price, at least 500 元) where fraud is
established for the sale: the one rule the complaints listing and the closing of a complaint
case share.

**When fraud is established for a sale.** An inspection result records the scale it tested
(``device``), the merchant bound to it then (``merchant_id``) and when (``ts_ms``); an
inspection answers the scale's findings since its previous inspection (``inspection.
create_task``, the queue's "since the last inspection"), so the period it examined is the
half-open interval (previous inspection of the same scale, this inspection]. A sale is
covered when a result with ``fraud = 'yes'``

* names the complaint's merchant (the result's ``merchant_id``),
* names the sale's scale (every result names one: ``device`` is NOT NULL),
* examined the sale's time: ``sale.ts_ms <= result.ts_ms`` and no other inspection of that
  scale lies in ``[sale.ts_ms, result.ts_ms)`` (a later inspection examined it instead),

and the sale was the merchant's (``sales.merchant_id``, the binding at the time of the sale).
A fraud result on another scale of the merchant, or one whose period lies before or after the
sale, establishes nothing for it.

A complaint with no linked sale has no scale and no sale time: its own time stands in for
the sale's (the purchase precedes the complaint), on any scale of the merchant. The listing
shows no figure for it (no price to multiply); closing it with compensation takes the legal
minimum.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, exists, or_, select

from gateway_server.store.tables import sales
from gateway_server.store.tables_workflow import complaints, inspection_results
from weighing.metrology import fraud_compensation_fen


def compensation_for(amount_fen: int | None) -> int | None:
    """消保法 Art. 55 figure for a sale of ``amount_fen`` where fraud is established."""
    return None if amount_fen is None else fraud_compensation_fen(amount_fen)


def fraud_covers(*, merchant_id: Any, ts_ms: Any, device: Any = None) -> ColumnElement[bool]:
    """SQL: a fraud result of ``merchant_id`` (on ``device``, when given) whose inspection
    examined the time ``ts_ms`` (module docstring). The arguments are columns of the
    enclosing query (correlated) or plain values."""
    r = inspection_results.alias("fraud_result")
    p = inspection_results.alias("later_inspection")
    between = (select(p.c.id)
               .where(p.c.device == r.c.device, p.c.ts_ms >= ts_ms, p.c.ts_ms < r.c.ts_ms)
               .correlate_except(p))
    q = (select(r.c.id)
         .where(r.c.fraud == "yes", r.c.merchant_id == merchant_id, r.c.ts_ms >= ts_ms,
                ~exists(between))
         .correlate_except(r))
    if device is not None:
        q = q.where(r.c.device == device)
    return exists(q)


def complaint_fraud_established() -> ColumnElement[bool]:
    """SQL over ``complaints`` LEFT JOIN ``sales`` (on the complaint's sale): fraud is
    established for the complaint's sale, or, with no sale linked, at the complaint's time."""
    linked = and_(sales.c.id.is_not(None), sales.c.merchant_id == complaints.c.merchant_id,
                  fraud_covers(merchant_id=complaints.c.merchant_id, device=sales.c.device,
                               ts_ms=sales.c.ts_ms))
    unlinked = and_(complaints.c.sale_id.is_(None),
                    fraud_covers(merchant_id=complaints.c.merchant_id,
                                 ts_ms=complaints.c.ts_ms))
    return or_(linked, unlinked)


def _with_sale() -> Any:
    return complaints.outerjoin(sales, sales.c.id == complaints.c.sale_id)


def fraud_established(conn: Connection, complaint_id: int) -> bool:
    """Fraud established for the sale of complaint ``complaint_id`` (False: no complaint)."""
    got = conn.execute(select(complaint_fraud_established()).select_from(_with_sale())
                       .where(complaints.c.id == complaint_id)).scalar()
    return bool(got)


def list_complaints(conn: Connection, *, merchant_id: int | None = None,
                    limit: int = 500) -> list[dict[str, Any]]:
    """Complaints, newest first, each with ``compensation_fen``: the Art. 55 figure of its
    sale where fraud is established for that sale, else None."""
    q = (select(complaints, sales.c.amount_fen,
                complaint_fraud_established().label("fraud_established"))
         .select_from(_with_sale()).order_by(complaints.c.ts_ms.desc()))
    if merchant_id is not None:
        q = q.where(complaints.c.merchant_id == merchant_id)
    out = []
    for row in conn.execute(q.limit(limit)):
        r = dict(row._mapping)
        amount, fraud = r.pop("amount_fen"), r.pop("fraud_established")
        r["compensation_fen"] = compensation_for(amount) if fraud else None
        out.append(r)
    return out
