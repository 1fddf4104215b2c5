"""The case file (issue 18): from an incident to an inspection task to a case.

One module (about 420 lines) on purpose: the case's states below are one ladder, each
step checking the ones before it in the same transaction.

A case is the inspector's on-site record (现场检查笔录) of one scale:

1. **open** — from a task (or an incident: a task is made for it), with the findings it
   answers and the merchant bound to the scale at that moment;
2. **recorded** — test loads and indications, each judged against the in-service MPE
   (``inspection.judge_loads`` → ``weighing.metrology.mpe_mg``), the standard weights'
   certificate number, the place, notes, cheating established or not. The inspection result
   is stored as any other (``inspection_results``), but **no card is given yet**;
3. photos (PNG / JPEG, checked by magic bytes and size, stored with their SHA-256) may be
   added until the record is signed;
4. **signed** — the inspector's typed name and drawn signature (a PNG); from then on the
   record and its photos are frozen;
5. **decided** — a card (黄牌 / 红牌), a list entry (黑榜 / 红榜), the lifting of a card, or
   no action, each only with an explicit confirmation (``confirm: true``) and a reason.

Rules:

* The options offered follow ``inspection.apply_verdict``'s ladder (fail: normal → yellow →
  red + 黑榜; cheating established: red + 黑榜; pass with a clean record: 红榜), but the
  inspector chooses and confirms; the API refuses an action that is not an option.
* **Lifting a card** (``lift``: yellow → normal, red → yellow) needs a passing
  re-inspection recorded at least ``Settings.card_lift_days`` after the card was given.
  It is never automatic.
* List entries (红榜 / 黑榜) are written through ``trust_lists`` (issue 19) and need an
  admin; cards and their lifting any staff account.
* Every legally relevant step (open, record, photo, signature, decision, card change) is a
  row of the append-only audit log (``merchant_portal.audit``, subject ``case:{id}``).
* Errors carry a ``code`` (:class:`CaseError`) the dashboard turns into words.

Length: about 420 lines, above the ~400 of style.md, because the module is one state
machine (open → recorded → signed → decided) whose transitions share the case row and its
audit; split, each part would reach into the others' private checks.
"""

from __future__ import annotations

import base64
import hashlib
import json
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, func, select

from gateway_server.casework import inspection as insp
from gateway_server.detect.rules import legal
from gateway_server.registry import register as reg
from gateway_server.store.tables import findings, merchants
from gateway_server.store.tables_workflow import (
    case_photos,
    inspection_cases,
    inspection_results,
    inspection_tasks,
    status_history,
)
from gateway_server.trust import lists as trust_lists
from gateway_server.trust.merchant_portal import audit, audit_trail

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
IMAGE_MAGIC = {"image/png": PNG_MAGIC, "image/jpeg": JPEG_MAGIC}
SIGNATURE_MAX_BYTES = 512 * 1024
MAX_PHOTOS = 12
DAY_MS = 86_400_000


class CaseState(StrEnum):
    OPEN = "open"
    RECORDED = "recorded"
    SIGNED = "signed"
    DECIDED = "decided"


class Action(StrEnum):
    YELLOW = "yellow"  # 黄牌
    RED = "red"  # 红牌
    BLACK = "black"  # 红牌 + 黑榜
    RED_LIST = "red-list"  # 红榜
    LIFT = "lift"  # a card lifted one step
    NONE = "none"  # no sanction


ADMIN_ACTIONS = frozenset({Action.BLACK, Action.RED_LIST})


class CaseError(Exception):
    """A case step refused; ``code`` names why (the dashboard words it), ``status`` the
    HTTP status, ``extra`` the figures the words need."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


def number(case_id: int) -> str:
    """The case number printed on the 笔录."""
    return f"JC-{case_id:06d}"


# -- open ----------------------------------------------------------------------------------

def open_case(conn: Connection, *, actor: str, now_ms: int, task_id: int | None = None,
              device: str | None = None, actor_id: int | None = None) -> dict[str, Any]:
    """A case from a task, or from a scale's incident (a task is made for it)."""
    if task_id is not None:
        t = conn.execute(select(inspection_tasks).where(inspection_tasks.c.id == task_id)).first()
        if t is None:
            raise CaseError(404, "no-task", f"no task {task_id}")
        task = dict(t._mapping)
    elif device:
        try:
            task = insp.create_task(conn, device=device, now_ms=now_ms, created_by=actor_id)
        except LookupError as err:
            raise CaseError(404, "no-scale", str(err)) from err
    else:
        raise CaseError(422, "no-subject", "give a task or a device")
    merchant_id = insp._merchant_of(conn, task["device"], now_ms)
    if merchant_id is None:
        merchant_id = task["merchant_id"]
    cid = reg.inserted_id(conn.execute(inspection_cases.insert().values(
        task_id=task["id"], device=task["device"], market=task["market"],
        merchant_id=merchant_id, finding_ids=task["finding_ids"], opened_ms=now_ms,
        opened_by=actor, state=CaseState.OPEN.value, place="", notes="")))
    audit(conn, actor=actor, action="case.open", subject=f"case:{cid}", now_ms=now_ms,
          merchant_id=merchant_id,
          detail={"task": task["id"], "device": task["device"], "reason": task["reason"]})
    return get_case(conn, cid)


# -- read ----------------------------------------------------------------------------------

def _row(conn: Connection, case_id: int) -> Any:
    row = conn.execute(select(inspection_cases).where(inspection_cases.c.id == case_id)).first()
    if row is None:
        raise CaseError(404, "no-case", f"no case {case_id}")
    return row


def _result(conn: Connection, result_id: int | None) -> dict[str, Any] | None:
    if result_id is None:
        return None
    r = conn.execute(select(inspection_results).where(
        inspection_results.c.id == result_id)).first()
    if r is None:
        return None
    d = dict(r._mapping)
    d["loads"] = json.loads(d["loads"])
    return d


def card_since_ms(conn: Connection, merchant: Any) -> int | None:
    """When the merchant's current card was given (the newest change to that status)."""
    if merchant.status not in ("yellow", "red"):
        return None
    t = conn.execute(select(func.max(status_history.c.ts_ms)).where(
        status_history.c.merchant_id == merchant.id,
        status_history.c.new_status == merchant.status,
        (status_history.c.old_status.is_(None))
        | (status_history.c.old_status != status_history.c.new_status))).scalar()
    return int(t) if t is not None else int(merchant.status_ms or 0)


def options(conn: Connection, row: Any, *, now_ms: int, lift_days: int) -> dict[str, Any]:
    """What the inspector may decide on a signed case, the proposal, and when a card may be
    lifted (``lift_after_ms``)."""
    res = _result(conn, row.result_id)
    m = conn.execute(select(merchants).where(merchants.c.id == row.merchant_id)).first() \
        if row.merchant_id is not None else None
    out: dict[str, Any] = {"actions": [], "proposed": None, "card_since_ms": None,
                           "lift_after_ms": None}
    if res is None or m is None:
        if res is not None:
            out |= {"actions": [Action.NONE.value], "proposed": Action.NONE.value}
        return out
    since = card_since_ms(conn, m)
    out["card_since_ms"] = since
    if res["fraud"] == "yes":
        acts, proposed = [Action.BLACK, Action.RED, Action.NONE], Action.BLACK
    elif res["verdict"] == "fail":
        nxt = {"normal": Action.YELLOW, "yellow": Action.RED}.get(m.status, Action.BLACK)
        acts = [a for a in (Action.YELLOW, Action.RED, Action.BLACK) if a != Action.YELLOW
                or m.status == "normal"] + [Action.NONE]
        proposed = nxt
    else:
        acts, proposed = [Action.NONE], Action.NONE
        if since is not None:
            out["lift_after_ms"] = since + lift_days * DAY_MS
            if res["ts_ms"] >= out["lift_after_ms"]:
                acts.insert(0, Action.LIFT)
                proposed = Action.LIFT
        elif m.status == "normal" and m.list_status == "none" and conn.execute(
                select(findings.c.id).where(
                    findings.c.merchant_id == m.id, findings.c.status == "open",
                    findings.c.ts_ms > now_ms - insp.RED_LIST_CLEAN_MS)).first() is None:
            acts.insert(0, Action.RED_LIST)
    out |= {"actions": [a.value for a in acts], "proposed": proposed.value}
    return out


def get_case(conn: Connection, case_id: int, *, now_ms: int | None = None,
             lift_days: int = 30) -> dict[str, Any]:
    row = _row(conn, case_id)
    d = dict(row._mapping)
    d.pop("signature_png", None)
    d["number"] = number(row.id)
    d["finding_ids"] = json.loads(row.finding_ids or "[]")
    d["result"] = _result(conn, row.result_id)
    d["photos"] = [dict(p._mapping) for p in conn.execute(
        select(case_photos.c.id, case_photos.c.mime, case_photos.c.size, case_photos.c.sha256,
               case_photos.c.caption, case_photos.c.uploaded_ms, case_photos.c.uploaded_by)
        .where(case_photos.c.case_id == row.id).order_by(case_photos.c.id))]
    d["audit"] = audit_trail(conn, subject=f"case:{row.id}")
    d["options"] = options(conn, row, now_ms=now_ms or row.opened_ms, lift_days=lift_days) \
        if row.state == CaseState.SIGNED else None
    return d


def list_cases(conn: Connection, *, device: str | None = None, merchant_id: int | None = None,
               state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    q = select(inspection_cases.c.id, inspection_cases.c.device, inspection_cases.c.market,
               inspection_cases.c.merchant_id, inspection_cases.c.state,
               inspection_cases.c.opened_ms, inspection_cases.c.opened_by,
               inspection_cases.c.decision, inspection_cases.c.decided_ms,
               inspection_results.c.verdict, inspection_results.c.fraud).select_from(
        inspection_cases.outerjoin(inspection_results,
                                   inspection_results.c.id == inspection_cases.c.result_id)
    ).order_by(inspection_cases.c.id.desc()).limit(limit)
    if device:
        q = q.where(inspection_cases.c.device == device)
    if merchant_id is not None:
        q = q.where(inspection_cases.c.merchant_id == merchant_id)
    if state:
        q = q.where(inspection_cases.c.state == CaseState(state).value)
    return [dict(r._mapping) | {"number": number(r.id)} for r in conn.execute(q)]


# -- record, photos, signature -------------------------------------------------------------

def _editable(row: Any) -> None:
    if row.state not in (CaseState.OPEN, CaseState.RECORDED):
        raise CaseError(409, "signed", "the record is signed and can no longer change")


def record(conn: Connection, case_id: int, *, pairs: list[tuple[int, int]],
           weights_cert_no: str, place: str, notes: str, fraud: bool, actor: str,
           now_ms: int) -> dict[str, Any]:
    """The on-site record: each load judged against the in-service MPE; no card yet."""
    row = _row(conn, case_id)
    _editable(row)
    if row.result_id is not None:
        raise CaseError(409, "recorded", "this case has its record; open a new case")
    if not weights_cert_no.strip():
        raise CaseError(422, "no-weights-cert", "the standard weights' certificate number")
    try:
        r = insp.record_result(conn, device=row.device, pairs=pairs, now_ms=now_ms,
                               inspector=actor, task_id=row.task_id, fraud=fraud, notes=notes,
                               apply_status=False)
    except LookupError as err:
        raise CaseError(404, "no-scale", str(err)) from err
    conn.execute(inspection_cases.update().where(inspection_cases.c.id == case_id).values(
        state=CaseState.RECORDED.value, result_id=r["id"], recorded_ms=now_ms,
        weights_cert_no=weights_cert_no.strip(), place=place.strip(), notes=notes))
    audit(conn, actor=actor, action="case.record", subject=f"case:{case_id}", now_ms=now_ms,
          merchant_id=row.merchant_id, detail={
              "result": r["id"], "verdict": r["verdict"], "fraud": fraud,
              "weights_cert_no": weights_cert_no.strip(), "place": place.strip(),
              "loads": [[c["load_mg"], c["indication_mg"], c["ok"]] for c in r["checks"]]})
    return get_case(conn, case_id)


def image_type(data: bytes, declared: str) -> str:
    """The image's MIME type by its magic bytes; the declared type must agree."""
    found = next((t for t, magic in IMAGE_MAGIC.items() if data.startswith(magic)), None)
    if found is None:
        raise CaseError(415, "not-an-image", "a photo must be a PNG or JPEG image")
    said = declared.split(";")[0].strip().lower()
    if said and said not in (found, "application/octet-stream"):
        raise CaseError(415, "type-mismatch", f"declared {declared}, content is {found}")
    return found


def add_photo(conn: Connection, case_id: int, data: bytes, *, declared: str, caption: str,
              max_bytes: int, actor: str, now_ms: int) -> dict[str, Any]:
    row = _row(conn, case_id)
    _editable(row)
    if len(data) > max_bytes:
        raise CaseError(413, "too-large", f"{len(data)} bytes > {max_bytes}", max_bytes=max_bytes)
    mime = image_type(data, declared)
    sha = hashlib.sha256(data).hexdigest()
    same = conn.execute(select(case_photos.c.id).where(
        case_photos.c.case_id == case_id, case_photos.c.sha256 == sha)).first()
    if same is not None:
        raise CaseError(409, "duplicate-photo", "this photo is already in the case")
    n = conn.execute(select(func.count()).where(case_photos.c.case_id == case_id)).scalar_one()
    if n >= MAX_PHOTOS:
        raise CaseError(409, "too-many-photos", f"at most {MAX_PHOTOS} photos", max=MAX_PHOTOS)
    pid = reg.inserted_id(conn.execute(case_photos.insert().values(
        case_id=case_id, mime=mime, size=len(data), sha256=sha, content=data,
        caption=caption.strip()[:200], uploaded_ms=now_ms, uploaded_by=actor)))
    audit(conn, actor=actor, action="case.photo", subject=f"case:{case_id}", now_ms=now_ms,
          merchant_id=row.merchant_id,
          detail={"photo": pid, "sha256": sha, "size": len(data), "mime": mime})
    return {"id": pid, "mime": mime, "size": len(data), "sha256": sha,
            "caption": caption.strip()[:200], "uploaded_ms": now_ms, "uploaded_by": actor}


def photo(conn: Connection, photo_id: int) -> tuple[str, bytes]:
    p = conn.execute(select(case_photos.c.mime, case_photos.c.content).where(
        case_photos.c.id == photo_id)).first()
    if p is None:
        raise CaseError(404, "no-photo", f"no photo {photo_id}")
    return str(p.mime), bytes(p.content)


def decode_signature(data_url: str) -> bytes:
    """A drawn signature as a ``data:image/png;base64,...`` URL → PNG bytes."""
    head, _, b64 = data_url.partition(",")
    if head.strip().lower() != "data:image/png;base64":
        raise CaseError(422, "bad-signature", "the signature must be a PNG data URL")
    try:
        data = base64.b64decode(b64, validate=True)
    except ValueError as err:
        raise CaseError(422, "bad-signature", "the signature is not base64") from err
    if not data.startswith(PNG_MAGIC) or len(data) > SIGNATURE_MAX_BYTES:
        raise CaseError(422, "bad-signature", "the signature is not a PNG image within 512 KiB")
    return data


def sign(conn: Connection, case_id: int, *, name: str, signature_png: bytes, actor: str,
         now_ms: int) -> dict[str, Any]:
    """The inspector signs the record: typed name and drawn signature; it freezes."""
    row = _row(conn, case_id)
    if row.state != CaseState.RECORDED:
        raise CaseError(409, "not-recorded" if row.state == CaseState.OPEN else "signed",
                        "only a recorded, unsigned case can be signed")
    name = name.strip()
    if not 1 <= len(name) <= 64:
        raise CaseError(422, "no-signer", "the signer's name: 1 to 64 characters")
    sha = hashlib.sha256(signature_png).hexdigest()
    conn.execute(inspection_cases.update().where(inspection_cases.c.id == case_id).values(
        state=CaseState.SIGNED.value, signer_name=name, signature_png=signature_png,
        signature_sha256=sha, signed_ms=now_ms))
    photos = [p.sha256 for p in conn.execute(select(case_photos.c.sha256).where(
        case_photos.c.case_id == case_id).order_by(case_photos.c.id))]
    audit(conn, actor=actor, action="case.sign", subject=f"case:{case_id}", now_ms=now_ms,
          merchant_id=row.merchant_id,
          detail={"signer": name, "signature_sha256": sha, "photos_sha256": photos})
    return get_case(conn, case_id)


def signature(conn: Connection, case_id: int) -> bytes:
    row = _row(conn, case_id)
    if row.signature_png is None:
        raise CaseError(404, "not-signed", "the case is not signed")
    return bytes(row.signature_png)


# -- decision ------------------------------------------------------------------------------

def _set_card(conn: Connection, m: Any, status: str, reason: str, *, now_ms: int) -> None:
    reg.set_merchant_status(conn, m.id, status=status, list_status=None, reason=reason,
                            now_ms=now_ms)
    conn.execute(status_history.insert().values(
        merchant_id=m.id, ts_ms=now_ms, old_status=m.status, new_status=status,
        old_list=m.list_status, new_list=m.list_status, reason=reason))


def decide(conn: Connection, case_id: int, *, action: str, reason: str, confirm: bool,
           actor: str, is_admin: bool, now_ms: int, lift_days: int) -> dict[str, Any]:
    """Apply the confirmed decision of a signed case (a card, a list entry, a lift, none)."""
    row = _row(conn, case_id)
    if row.state != CaseState.SIGNED:
        raise CaseError(409, "decided" if row.state == CaseState.DECIDED else "not-signed",
                        "only a signed, undecided case takes a decision")
    if not confirm:
        raise CaseError(422, "not-confirmed", "a decision needs an explicit confirmation")
    act = Action(action)
    opts = options(conn, row, now_ms=now_ms, lift_days=lift_days)
    if act.value not in opts["actions"]:
        if act is Action.LIFT and opts["lift_after_ms"] is not None:
            raise CaseError(409, "lift-too-early", "a card is lifted by a passing "
                            "re-inspection after the waiting period",
                            lift_after_ms=opts["lift_after_ms"], days=lift_days)
        raise CaseError(409, "not-an-option", f"{act.value} is not an option of this case",
                        actions=opts["actions"])
    if act in ADMIN_ACTIONS and not is_admin:
        raise CaseError(403, "admin-only", "list entries need an admin")
    reason = reason.strip()
    if not 2 <= len(reason) <= trust_lists.REASON_MAX:
        raise CaseError(422, "no-reason", f"reason: 2 to {trust_lists.REASON_MAX} characters")
    m = conn.execute(select(merchants).where(merchants.c.id == row.merchant_id)).first()
    before = {"status": m.status, "list_status": m.list_status} if m is not None else None
    text = f"{number(case_id)}：{reason}"
    if m is not None:
        if act in (Action.YELLOW, Action.RED):
            _set_card(conn, m, act.value, text, now_ms=now_ms)
        elif act is Action.BLACK:
            _set_card(conn, m, "red", text, now_ms=now_ms)
            trust_lists.add_entry(conn, m.id, "black", text, actor=actor, now_ms=now_ms)
        elif act is Action.RED_LIST:
            trust_lists.add_entry(conn, m.id, "red", text, actor=actor, now_ms=now_ms)
        elif act is Action.LIFT:
            _set_card(conn, m, {"yellow": "normal", "red": "yellow"}[m.status], text,
                      now_ms=now_ms)
    after = None
    if m is not None:
        m2 = conn.execute(select(merchants).where(merchants.c.id == m.id)).one()
        after = {"status": m2.status, "list_status": m2.list_status}
    conn.execute(inspection_cases.update().where(inspection_cases.c.id == case_id).values(
        state=CaseState.DECIDED.value, decision=act.value, decision_reason=reason,
        decided_ms=now_ms, decided_by=actor))
    ground = legal.VERDICT_GROUNDS["cards"].zh if act is not Action.NONE else ""
    audit(conn, actor=actor, action="card.lift" if act is Action.LIFT else "case.decision",
          subject=f"case:{case_id}", now_ms=now_ms, merchant_id=row.merchant_id,
          detail={"action": act.value, "reason": reason, "before": before, "after": after,
                  "proposed": opts["proposed"], "card_since_ms": opts["card_since_ms"],
                  "lift_after_ms": opts["lift_after_ms"], "legal_basis": ground})
    return get_case(conn, case_id)
