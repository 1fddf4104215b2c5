"""The merchant's side of the trust programme (issue 19): the audit log, merchant accounts,
and what a merchant account may read about itself.

Rules:

* Every function takes a ``Connection`` (the caller owns the transaction) and ``now_ms``.
* A merchant reads **its own** rows only: every query here is filtered by the merchant id
  of the account, never by an id the client sends. Findings are shown once an inspector
  has confirmed them (an open finding is a suspicion, not a verdict); a finding stored
  without a merchant (a bad signature, an overdue verification) counts when the scale was
  bound to the merchant at the finding's time.
* The audit log is append-only (the database refuses UPDATE and DELETE, ``tables_trust``);
  :func:`audit` is its only writer. ``detail`` holds the input that caused the step (the
  feed row, the reviewer's reason, ...), as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, or_, select

from gateway_server.registry import accounts as auth, register as reg
from gateway_server.registry.binding import devices_query
from gateway_server.store.tables import bindings, findings, merchants, scales, users
from gateway_server.store.tables_trust import audit_log, register_status
from gateway_server.store.tables_workflow import reweighs

AUDIT_LIMIT_MAX = 1000


# -- the audit log -------------------------------------------------------------------------

def audit(conn: Connection, *, actor: str, action: str, subject: str, now_ms: int,
          merchant_id: int | None = None, detail: dict[str, Any] | None = None) -> int:
    """Append one audit row; its id."""
    res = conn.execute(audit_log.insert().values(
        ts_ms=now_ms, actor=actor[:64], action=action, subject=subject,
        merchant_id=merchant_id,
        detail=json.dumps(detail or {}, ensure_ascii=False, sort_keys=True)))
    return reg.inserted_id(res)


def audit_trail(conn: Connection, *, subject: str | None = None,
                merchant_id: int | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Audit rows, newest first, of a subject and/or a merchant."""
    q = select(audit_log).order_by(audit_log.c.id.desc()).limit(min(limit, AUDIT_LIMIT_MAX))
    if subject is not None:
        q = q.where(audit_log.c.subject == subject)
    if merchant_id is not None:
        q = q.where(audit_log.c.merchant_id == merchant_id)
    out = []
    for r in conn.execute(q):
        d = dict(r._mapping)
        d["detail"] = json.loads(d["detail"] or "{}")
        out.append(d)
    return out


# -- merchant accounts ---------------------------------------------------------------------

def create_account(conn: Connection, merchant_id: int, *, username: str, now_ms: int,
                   actor: str, password: str = "", password_hash: str | None = None,
                   ) -> auth.User:
    """A merchant account for ``merchant_id`` (the bureau's invitation, or an approved
    application with the password the applicant chose, already hashed)."""
    m = reg.get_merchant(conn, merchant_id)
    try:
        user = auth.create_user(conn, username, password, auth.Role.MERCHANT.value,
                                now_ms=now_ms, display_name=m["name"], merchant_id=merchant_id,
                                password_hash=password_hash)
    except auth.AuthError as err:
        if "exists" in str(err):
            raise reg.ConflictError(f"username {username} is taken", field="username") from err
        raise reg.RegistryError(str(err), field="username" if "username" in str(err)
                                else "password") from err
    audit(conn, actor=actor, action="account.create", subject=f"merchant:{merchant_id}",
          merchant_id=merchant_id, now_ms=now_ms, detail={"username": username})
    return user


def accounts_of(conn: Connection, merchant_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(select(users.c.id, users.c.username, users.c.disabled,
                               users.c.created_ms).where(users.c.merchant_id == merchant_id)
                        .order_by(users.c.id))
    return [dict(r._mapping) for r in rows]


# -- what a merchant reads about itself ----------------------------------------------------

def register_state(conn: Connection, merchant_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(register_status).where(
        register_status.c.merchant_id == merchant_id)).first()
    return None if row is None else dict(row._mapping)


def overview(conn: Connection, merchant_id: int, *, now_ms: int) -> dict[str, Any]:
    """The merchant itself: status, lists, licences, trust token, register status."""
    m = reg.get_merchant(conn, merchant_id)
    market = reg.get_market(conn, m["market_id"])
    rs = register_state(conn, merchant_id)
    return {
        "id": m["id"], "name": m["name"], "market_id": m["market_id"],
        "market_name": market["name"], "stall_no": m["stall_no"],
        "credit_code": m["credit_code"], "categories": m["categories"],
        "licences": m["licences"], "phone": m["phone"], "status": m["status"],
        "list_status": m["list_status"], "status_reason": m["status_reason"],
        "status_ms": m["status_ms"], "trust_token": m["trust_token"],
        "register_status": None if rs is None else rs["register_status"],
        "register_date_ms": None if rs is None else rs["status_date_ms"],
        "as_of_ms": now_ms,
    }


def _devices_ever_bound(conn: Connection, merchant_id: int) -> list[str]:
    return list(conn.execute(select(bindings.c.device).where(
        bindings.c.merchant_id == merchant_id).distinct()).scalars())


def own_scales(conn: Connection, merchant_id: int, *, now_ms: int) -> list[dict[str, Any]]:
    """Scales bound to the merchant now: model, role, verification and due date, state."""
    rows = conn.execute(select(scales).where(
        scales.c.device.in_(devices_query(merchant_id, now_ms)))
                        .order_by(scales.c.device))
    return [{
        "device": s.device, "model": s.model, "role": s.role, "max_mg": s.max_mg,
        "e_mg": s.e_mg, "accuracy_class": s.accuracy_class, "cert_no": s.cert_no,
        "verified_on_ms": s.verified_on_ms, "due_on_ms": s.due_on_ms,
        "overdue": reg.is_overdue(s.due_on_ms, now_ms), "state": s.state,
        "last_seen_ms": s.last_seen_ms,
    } for s in rows]


def confirmed_findings(conn: Connection, merchant_id: int, *, limit: int = 200,
                       ) -> list[dict[str, Any]]:
    """Findings an inspector confirmed that concern the merchant: its own, or (stored
    without a merchant) on a scale bound to it at the finding's time."""
    devices = _devices_ever_bound(conn, merchant_id)
    q = (select(findings).where(findings.c.status == "confirmed", or_(
        findings.c.merchant_id == merchant_id,
        findings.c.merchant_id.is_(None) & findings.c.device.in_(devices)))
        .order_by(findings.c.ts_ms.desc()).limit(limit))
    out = []
    for r in conn.execute(q):
        if r.merchant_id is None and reg.binding_at(conn, r.device, r.ts_ms) != merchant_id:
            continue
        out.append({"id": r.id, "kind": r.kind, "severity": r.severity, "ts_ms": r.ts_ms,
                    "title": r.title, "device": r.device})
    return out


def own_reweighs(conn: Connection, merchant_id: int, *, limit: int = 200,
                 ) -> list[dict[str, Any]]:
    """Re-weighs (核称) of the merchant's sales at the fair scale, newest first."""
    q = (select(reweighs.c.id, reweighs.c.ts_ms, reweighs.c.sold_mg, reweighs.c.reference_mg,
                reweighs.c.shortfall_mg, reweighs.c.limit_mg, reweighs.c.verdict,
                reweighs.c.method)
         .where(reweighs.c.merchant_id == merchant_id)
         .order_by(reweighs.c.ts_ms.desc()).limit(limit))
    return [dict(r._mapping) for r in conn.execute(q)]


def merchant_by_token(conn: Connection, trust_token: str) -> dict[str, Any]:
    row = conn.execute(select(merchants).where(merchants.c.trust_token == trust_token)).first()
    if row is None:
        raise reg.NotFoundError("unknown trust code")
    return reg.get_merchant(conn, int(row.id))
