"""Public red and black lists (红黑榜, issue 19): entries with their reason, date and an
optional expiry.

Rules:

* A merchant is on at most one list at a time (``merchants.list_status`` holds one value):
  a new entry ends the merchant's active entry first.
* An entry with ``until_ms`` expires at that instant: :func:`expire` ends it (reason
  ``expired``) and clears the merchant's list status. It runs before every read of a list
  and from the clock thread, so an expired entry is never shown, whichever runs first.
* Merchants put on a list through ``POST /merchants/{id}/status`` (before entries existed)
  are listed with that status change's reason and time, without an expiry.
* Every change is audited and notified (``merchant.status`` webhook).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select

from gateway_server.registry import register as reg
from gateway_server.store.tables import markets, merchants
from gateway_server.store.tables_trust import list_entries
from gateway_server.trust import webhooks
from gateway_server.trust.merchant_portal import audit

REASON_MAX = 500


class ListName(StrEnum):
    RED = "red"
    BLACK = "black"


def _set_list(conn: Connection, merchant_id: int, value: str, reason: str, *,
              now_ms: int) -> None:
    reg.set_merchant_status(conn, merchant_id, status=None, list_status=value, reason=reason,
                            now_ms=now_ms)


def _end(conn: Connection, entry: Any, reason: str, *, actor: str, now_ms: int) -> None:
    conn.execute(list_entries.update().where(list_entries.c.id == entry.id)
                 .values(ended_ms=now_ms, end_reason=reason))
    current = conn.execute(select(merchants.c.list_status).where(
        merchants.c.id == entry.merchant_id)).scalar_one()
    if current == entry.list:
        _set_list(conn, entry.merchant_id, reg.ListStatus.NONE.value,
                  f"{'红榜' if entry.list == 'red' else '黑榜'}结束：{reason}", now_ms=now_ms)
    audit(conn, actor=actor, action="list.end", subject=f"merchant:{entry.merchant_id}",
          merchant_id=entry.merchant_id, now_ms=now_ms,
          detail={"entry": entry.id, "list": entry.list, "reason": reason})
    webhooks.enqueue(conn, webhooks.Event.MERCHANT_STATUS, {
        "merchant_id": entry.merchant_id, "list_status": reg.ListStatus.NONE.value,
        "reason": reason, "entry": entry.id}, now_ms=now_ms)


def add_entry(conn: Connection, merchant_id: int, list_name: str, reason: str, *,
              actor: str, now_ms: int, until_ms: int | None = None) -> dict[str, Any]:
    """Put the merchant on a list (ending its current entry, if any)."""
    name = ListName(list_name)
    reg.get_merchant(conn, merchant_id)
    reason = reason.strip()
    if not 2 <= len(reason) <= REASON_MAX:
        raise reg.RegistryError(f"reason: 2 to {REASON_MAX} characters", field="reason")
    if until_ms is not None and until_ms <= now_ms:
        raise reg.RegistryError("until: a date in the future", field="until")
    for old in active_entries(conn, merchant_id=merchant_id):
        _end(conn, _row(conn, old["id"]), "replaced by a new entry", actor=actor, now_ms=now_ms)
    res = conn.execute(list_entries.insert().values(
        merchant_id=merchant_id, list=name.value, reason=reason, since_ms=now_ms,
        until_ms=until_ms, created_by=actor))
    _set_list(conn, merchant_id, name.value, reason, now_ms=now_ms)
    eid = reg.inserted_id(res)
    audit(conn, actor=actor, action="list.add", subject=f"merchant:{merchant_id}",
          merchant_id=merchant_id, now_ms=now_ms,
          detail={"entry": eid, "list": name.value, "reason": reason, "until_ms": until_ms})
    webhooks.enqueue(conn, webhooks.Event.MERCHANT_STATUS, {
        "merchant_id": merchant_id, "list_status": name.value, "reason": reason,
        "until_ms": until_ms, "entry": eid}, now_ms=now_ms)
    return dict(_row(conn, eid)._mapping)


def _row(conn: Connection, entry_id: int) -> Any:
    row = conn.execute(select(list_entries).where(list_entries.c.id == entry_id)).first()
    if row is None:
        raise reg.NotFoundError(f"no list entry {entry_id}")
    return row


def end_entry(conn: Connection, entry_id: int, reason: str, *, actor: str,
              now_ms: int) -> dict[str, Any]:
    row = _row(conn, entry_id)
    if row.ended_ms is not None:
        raise reg.ConflictError("this entry has ended")
    _end(conn, row, reason.strip() or "removed", actor=actor, now_ms=now_ms)
    return dict(_row(conn, entry_id)._mapping)


def active_entries(conn: Connection, *, merchant_id: int | None = None,
                   list_name: str | None = None) -> list[dict[str, Any]]:
    q = select(list_entries).where(list_entries.c.ended_ms.is_(None)).order_by(
        list_entries.c.since_ms.desc())
    if merchant_id is not None:
        q = q.where(list_entries.c.merchant_id == merchant_id)
    if list_name is not None:
        q = q.where(list_entries.c.list == ListName(list_name).value)
    return [dict(r._mapping) for r in conn.execute(q)]


def expire(conn: Connection, *, now_ms: int) -> int:
    """End the entries whose expiry has passed; how many."""
    rows = conn.execute(select(list_entries).where(
        list_entries.c.ended_ms.is_(None), list_entries.c.until_ms.is_not(None),
        list_entries.c.until_ms <= now_ms)).all()
    for r in rows:
        _end(conn, r, "expired", actor="clock", now_ms=now_ms)
    return len(rows)


def public_list(conn: Connection, list_name: str, *, now_ms: int) -> list[dict[str, Any]]:
    """The list as the public sees it (expired entries ended first): name, market, stall,
    reason, since, until. No credit code, phone or id."""
    name = ListName(list_name)
    expire(conn, now_ms=now_ms)
    entries = {e["merchant_id"]: e for e in active_entries(conn, list_name=name.value)}
    rows = conn.execute(select(merchants.c.id, merchants.c.name, merchants.c.stall_no,
                               merchants.c.status, merchants.c.status_reason,
                               merchants.c.status_ms, merchants.c.trust_token,
                               markets.c.name.label("market_name"))
                        .join(markets, markets.c.id == merchants.c.market_id)
                        .where(merchants.c.list_status == name.value)).all()
    out = []
    for r in rows:
        e = entries.get(r.id)
        out.append({
            "name": r.name, "market_name": r.market_name, "stall_no": r.stall_no,
            "reason": e["reason"] if e else (r.status_reason or ""),
            "since_ms": e["since_ms"] if e else r.status_ms,
            "until_ms": e["until_ms"] if e else None,
            # the trust page link, unless the merchant is delisted (its code is void)
            "trust_token": None if r.status == reg.MerchantStatus.DELISTED else r.trust_token,
        })
    return sorted(out, key=lambda x: -(x["since_ms"] or 0))
