"""Complaints with a clock (issue 19): a number the consumer looks up, the merchant's answer
within ``settings.complaint_answer_hours``, the overdue finding, the bureau's mediation and
its outcome, the monthly figures per market.

States (``CaseState``)::

    awaiting ──answer──▶ answered ──close──▶ closed
       │                    │
       └─deadline─▶ overdue ─┴─mediate─▶ mediating ──close──▶ closed

* :func:`record_complaint` stores a consumer's complaint (the trust page), linked to its
  sale where the trace code names one.
* A case is opened for every row of ``complaints`` (the trust page, 12315, an inspector):
  :func:`open_case` when this module creates it, :func:`ensure_cases` for complaints that
  other paths created, so each gets its number and its clock from its own time.
* The number (``TS`` + 10 characters of an alphabet without 0/O, 1/I/L) is unguessable
  (31^10 ≈ 8·10^14): a lookup shows the state, the dates, the merchant's answer and the
  outcome, never the complaint's text or the consumer's contact. An unknown number is a
  404 with the same words whether or not it ever existed.
* Overdue: :func:`tick` marks cases whose deadline passed unanswered, raises one
  ``complaint-overdue`` finding per case (unique ``dedup_key``) and enqueues the webhook;
  a late answer is still recorded, the case stays marked late (``overdue_ms``).
* Every step is audited with its input (``merchant_portal.audit``).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, func, select

from gateway_server.casework import compensation
from gateway_server.registry import register as reg
from gateway_server.store.tables import findings, markets, merchants, sales
from gateway_server.store.tables_trust import complaint_cases
from gateway_server.store.tables_workflow import complaints, reweighs
from gateway_server.trust import webhooks
from gateway_server.trust.merchant_portal import audit
from gateway_server.trust.numbers import new_number as _number

NUMBER_LEN = 10
ANSWER_MAX = 2000
OVERDUE_KIND = "complaint-overdue"
OVERDUE_GROUND = ("放心消费承诺：商户应在规定时限内答复消费者投诉（项目规则，非法定条款） "
                  "Trust-programme rule: answer complaints in time (not a statutory article)")
MONTH_CST_OFFSET_MS = 8 * 3_600_000


class CaseState(StrEnum):
    AWAITING = "awaiting"
    ANSWERED = "answered"
    OVERDUE = "overdue"
    MEDIATING = "mediating"
    CLOSED = "closed"


class Outcome(StrEnum):
    REFUND = "refund"  # 退款
    COMPENSATION = "compensation"  # 赔偿 (消保法 Art. 55: 3 × price, ≥ 500 元, fraud established)
    SETTLED = "settled"  # 调解达成协议
    REJECTED = "rejected"  # 投诉不成立


def new_number() -> str:
    return _number("TS", NUMBER_LEN)


def normalise_number(number: str) -> str:
    return number.strip().upper().replace("-", "").replace(" ", "")


def record_complaint(conn: Connection, *, trust_token: str, text: str, now_ms: int,
                     trace_code: str | None = None, contact: str | None = None,
                     channel: str = "page") -> dict[str, Any]:
    """A consumer's complaint about the merchant of ``trust_token``, linked to the sale and
    the re-weigh of ``trace_code`` where they exist (the sale only if it is that merchant's).
    LookupError for an unknown trust code."""
    m = conn.execute(select(merchants.c.id).where(merchants.c.trust_token == trust_token)).first()
    if m is None:
        raise LookupError("unknown trust code")
    sale_id = reweigh_id = None
    if trace_code:
        s = conn.execute(select(sales.c.id).where(sales.c.trace_code == trace_code,
                                                  sales.c.merchant_id == m.id)).first()
        sale_id = s.id if s else None
        rw = conn.execute(select(reweighs.c.id).where(reweighs.c.trace_code == trace_code)).first()
        reweigh_id = rw.id if rw else None
    cid = conn.execute(complaints.insert().values(
        merchant_id=m.id, sale_id=sale_id, reweigh_id=reweigh_id, ts_ms=now_ms,
        channel=channel, contact=contact, text=text, status="open",
    ).returning(complaints.c.id)).scalar_one()
    return {"id": int(cid), "sale_id": sale_id, "reweigh_id": reweigh_id}


def open_case(conn: Connection, complaint_id: int, *, answer_s: int) -> dict[str, Any]:
    """The case of a complaint, opened now if it has none (idempotent)."""
    row = conn.execute(select(complaint_cases).where(
        complaint_cases.c.complaint_id == complaint_id)).first()
    if row is not None:
        return dict(row._mapping)
    c = conn.execute(select(complaints.c.merchant_id, complaints.c.ts_ms,
                            merchants.c.market_id)
                     .join(merchants, merchants.c.id == complaints.c.merchant_id)
                     .where(complaints.c.id == complaint_id)).first()
    if c is None:
        raise reg.NotFoundError(f"no complaint {complaint_id}")
    conn.execute(complaint_cases.insert().values(
        complaint_id=complaint_id, number=new_number(), merchant_id=c.merchant_id,
        market_id=c.market_id, opened_ms=c.ts_ms, due_ms=c.ts_ms + answer_s * 1000,
        state=CaseState.AWAITING.value))
    audit(conn, actor="public", action="complaint.open", subject=f"complaint:{complaint_id}",
          merchant_id=c.merchant_id, now_ms=c.ts_ms, detail={"answer_s": answer_s})
    return dict(conn.execute(select(complaint_cases).where(
        complaint_cases.c.complaint_id == complaint_id)).one()._mapping)


def ensure_cases(conn: Connection, *, answer_s: int) -> int:
    """Open the cases of complaints that have none; how many."""
    ids = conn.execute(select(complaints.c.id).where(
        complaints.c.id.not_in(select(complaint_cases.c.complaint_id)))
        .order_by(complaints.c.id)).scalars().all()
    for cid in ids:
        open_case(conn, int(cid), answer_s=answer_s)
    return len(ids)


def tick(conn: Connection, *, now_ms: int, answer_s: int) -> list[dict[str, Any]]:
    """Open missing cases, then mark the overdue ones (finding, audit, webhook)."""
    ensure_cases(conn, answer_s=answer_s)
    late = conn.execute(select(complaint_cases).where(
        complaint_cases.c.state == CaseState.AWAITING.value,
        complaint_cases.c.due_ms <= now_ms)).all()
    out = []
    for case in late:
        fid = conn.execute(findings.insert().values(
            kind=OVERDUE_KIND, severity="medium", market=case.market_id, device=None,
            merchant_id=case.merchant_id, ts_ms=case.due_ms, created_ms=now_ms,
            status="open", title="投诉逾期未答复 Complaint not answered in time",
            legal_basis=OVERDUE_GROUND,
            evidence=json.dumps({"complaint_number": case.number, "due_ms": case.due_ms}),
            dedup_key=f"{OVERDUE_KIND}:{case.complaint_id}").returning(findings.c.id)
        ).scalar_one()
        conn.execute(complaint_cases.update().where(
            complaint_cases.c.complaint_id == case.complaint_id).values(
            state=CaseState.OVERDUE.value, overdue_ms=now_ms, finding_id=fid))
        audit(conn, actor="clock", action="complaint.overdue",
              subject=f"complaint:{case.complaint_id}", merchant_id=case.merchant_id,
              now_ms=now_ms, detail={"due_ms": case.due_ms, "finding_id": int(fid)})
        webhooks.enqueue(conn, webhooks.Event.COMPLAINT_OVERDUE, {
            "complaint_number": case.number, "merchant_id": case.merchant_id,
            "market": case.market_id, "due_ms": case.due_ms, "finding_id": int(fid)},
            now_ms=now_ms)
        out.append({"number": case.number, "finding_id": int(fid)})
    return out


def _case(conn: Connection, number: str, *, merchant_id: int | None = None) -> Any:
    q = select(complaint_cases).where(complaint_cases.c.number == normalise_number(number))
    if merchant_id is not None:  # a merchant sees its own cases only: others are unknown
        q = q.where(complaint_cases.c.merchant_id == merchant_id)
    row = conn.execute(q).first()
    if row is None:
        raise reg.NotFoundError("no complaint with this number")
    return row


def _out(conn: Connection, row: Any, *, with_text: bool) -> dict[str, Any]:
    d = dict(row._mapping)
    m = conn.execute(select(merchants.c.name, merchants.c.stall_no, markets.c.name.label("mk"))
                     .join(markets, markets.c.id == merchants.c.market_id)
                     .where(merchants.c.id == row.merchant_id)).one()
    d |= {"merchant_name": m.name, "stall_no": m.stall_no, "market_name": m.mk,
          "late": row.overdue_ms is not None}
    if with_text:
        c = conn.execute(select(complaints.c.text, complaints.c.channel, complaints.c.ts_ms,
                                complaints.c.sale_id).where(
            complaints.c.id == row.complaint_id)).one()
        d |= {"text": c.text, "channel": c.channel, "sale_linked": c.sale_id is not None}
    return d


def public_view(conn: Connection, number: str) -> dict[str, Any]:
    """What the consumer's lookup shows: state, dates, answer, outcome; no text, no contact."""
    row = _case(conn, number)
    d = _out(conn, row, with_text=False)
    keep = ("number", "state", "opened_ms", "due_ms", "answer", "answered_ms", "outcome",
            "outcome_note", "compensation_fen", "closed_ms", "merchant_name", "stall_no",
            "market_name", "late")
    return {k: d[k] for k in keep}


def list_cases(conn: Connection, *, merchant_id: int | None = None, state: str | None = None,
               market_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Cases with the complaint's text (the merchant's own, or any for the bureau)."""
    q = select(complaint_cases).order_by(complaint_cases.c.opened_ms.desc()).limit(limit)
    if merchant_id is not None:
        q = q.where(complaint_cases.c.merchant_id == merchant_id)
    if state is not None:
        q = q.where(complaint_cases.c.state == CaseState(state).value)
    if market_id is not None:
        q = q.where(complaint_cases.c.market_id == market_id)
    return [_out(conn, r, with_text=True) for r in conn.execute(q).all()]


def answer(conn: Connection, number: str, text: str, *, merchant_id: int, actor: str,
           now_ms: int) -> dict[str, Any]:
    """The merchant's answer (once; a case being mediated or closed takes none)."""
    row = _case(conn, number, merchant_id=merchant_id)
    text = text.strip()
    if not 2 <= len(text) <= ANSWER_MAX:
        raise reg.RegistryError(f"answer: 2 to {ANSWER_MAX} characters", field="answer")
    if row.state not in (CaseState.AWAITING, CaseState.OVERDUE):
        raise reg.ConflictError("this complaint has been answered or is with the bureau")
    conn.execute(complaint_cases.update().where(
        complaint_cases.c.complaint_id == row.complaint_id).values(
        state=CaseState.ANSWERED.value, answer=text, answered_ms=now_ms, answered_by=actor))
    audit(conn, actor=actor, action="complaint.answer", subject=f"complaint:{row.complaint_id}",
          merchant_id=merchant_id, now_ms=now_ms,
          detail={"late": now_ms > row.due_ms, "chars": len(text)})
    return _out(conn, _case(conn, number), with_text=True)


def mediate(conn: Connection, number: str, note: str, *, actor: str,
            now_ms: int) -> dict[str, Any]:
    row = _case(conn, number)
    if row.state == CaseState.CLOSED:
        raise reg.ConflictError("this complaint is closed")
    conn.execute(complaint_cases.update().where(
        complaint_cases.c.complaint_id == row.complaint_id).values(
        state=CaseState.MEDIATING.value, mediation_note=note.strip() or None))
    audit(conn, actor=actor, action="complaint.mediate", subject=f"complaint:{row.complaint_id}",
          merchant_id=row.merchant_id, now_ms=now_ms, detail={"note": note})
    return _out(conn, _case(conn, number), with_text=True)


def close(conn: Connection, number: str, outcome: str, note: str, *, actor: str, now_ms: int,
          compensation_fen: int | None = None) -> dict[str, Any]:
    """The bureau closes the case with an outcome. Compensation under 消保法 Art. 55 needs
    fraud established for the complaint's sale (``compensation.fraud_established``: a fraud
    inspection of that merchant and scale that examined the sale's time); its default amount
    is 3 × the linked sale's price, at least 500 元 (``compensation.compensation_for``)."""
    row = _case(conn, number)
    if row.state == CaseState.CLOSED:
        raise reg.ConflictError("this complaint is closed")
    out = Outcome(outcome)
    if out is Outcome.COMPENSATION:
        if not compensation.fraud_established(conn, row.complaint_id):
            raise reg.ConflictError("compensation under Art. 55 needs established fraud "
                                    "(an inspection that found cheating when it examined "
                                    "the sale)", field="outcome")
        if compensation_fen is None:
            amount = conn.execute(select(sales.c.amount_fen)
                                  .join(complaints, complaints.c.sale_id == sales.c.id)
                                  .where(complaints.c.id == row.complaint_id)).scalar()
            # no linked sale: the legal minimum (3 × an unknown price, at least 500 元)
            compensation_fen = compensation.compensation_for(amount if amount is not None else 0)
    elif compensation_fen is not None and out is not Outcome.REFUND:
        raise reg.RegistryError("an amount goes with a refund or a compensation only",
                                field="compensation_fen")
    conn.execute(complaint_cases.update().where(
        complaint_cases.c.complaint_id == row.complaint_id).values(
        state=CaseState.CLOSED.value, outcome=out.value, outcome_note=note.strip() or None,
        compensation_fen=compensation_fen, closed_ms=now_ms, closed_by=actor))
    conn.execute(complaints.update().where(complaints.c.id == row.complaint_id).values(
        status="closed", compensation_fen=compensation_fen))
    audit(conn, actor=actor, action="complaint.close", subject=f"complaint:{row.complaint_id}",
          merchant_id=row.merchant_id, now_ms=now_ms,
          detail={"outcome": out.value, "note": note, "compensation_fen": compensation_fen})
    return _out(conn, _case(conn, number), with_text=True)


def _month(ms: int) -> str:
    return reg.format_date(ms)[:7]  # CST calendar month, YYYY-MM


def monthly_figures(conn: Connection, *, market_id: str | None = None, now_ms: int,
                    months: int = 12) -> list[dict[str, Any]]:
    """Complaints per market and CST month (newest first): received, answered in time,
    answered late, unanswered and overdue, closed, and the outcomes."""
    since = now_ms - months * 31 * reg.DAY_MS
    q = (select(complaint_cases.c.market_id, complaint_cases.c.opened_ms,
                complaint_cases.c.state, complaint_cases.c.overdue_ms,
                complaint_cases.c.answered_ms, complaint_cases.c.outcome,
                markets.c.name.label("market_name"))
         .join(markets, markets.c.id == complaint_cases.c.market_id)
         .where(complaint_cases.c.opened_ms >= since))
    if market_id is not None:
        q = q.where(complaint_cases.c.market_id == market_id)
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for r in conn.execute(q):
        key = (r.market_id, _month(r.opened_ms))
        t = table.setdefault(key, {
            "market_id": r.market_id, "market_name": r.market_name, "month": key[1],
            "received": 0, "answered_in_time": 0, "answered_late": 0, "overdue_unanswered": 0,
            "closed": 0, "outcomes": {o.value: 0 for o in Outcome}})
        t["received"] += 1
        if r.answered_ms is not None:
            t["answered_late" if r.overdue_ms is not None else "answered_in_time"] += 1
        elif r.overdue_ms is not None:
            t["overdue_unanswered"] += 1
        if r.state == CaseState.CLOSED:
            t["closed"] += 1
            if r.outcome:
                t["outcomes"][r.outcome] += 1
    return sorted(table.values(), key=lambda t: (t["month"], t["market_id"]), reverse=True)


def count_open(conn: Connection, merchant_id: int) -> int:
    return int(conn.execute(select(func.count()).select_from(complaint_cases).where(
        complaint_cases.c.merchant_id == merchant_id,
        complaint_cases.c.state.in_((CaseState.AWAITING, CaseState.OVERDUE)))).scalar_one())
