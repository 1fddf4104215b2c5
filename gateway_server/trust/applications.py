"""Applications to the trust programme (入驻申请, issue 19) and the bureau's review.

States (``AppStatus``)::

    draft ──submit──▶ submitted ──approve──▶ approved (merchant, account, trust code)
      ▲                  │  │
      └─(edit, submit)── changes_requested ◀─ask for changes
                         └──reject (with reason)──▶ rejected

Rules:

* Public, no account: the applicant gets a number and a secret (shown once; only its
  SHA-256 is stored). Reading, editing, uploading and submitting need both; a wrong
  secret answers exactly like an unknown number.
* Checked on entry: the market exists, the 统一社会信用代码 and its check digit
  (``uscc``), the code is neither a merchant already nor in another open application, the
  username is free, the password is strong enough (hashed at once, never stored in
  clear). Submitting needs every commitment ticked and at least one licence image.
* Licence images: PNG or JPEG by their magic bytes (the declared type must agree), at most
  ``settings.application_image_max_bytes``, at most ``MAX_DOCUMENTS``; stored with their
  SHA-256 (the same image twice is one document).
* Approval creates the merchant (and with it the trust token the QR carries) and its
  merchant account with the password the applicant chose. Every step is audited.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, func, select

from gateway_server.registry import register as reg, uscc
from gateway_server.registry.accounts import hash_password, user_exists
from gateway_server.settings import check_password_strength
from gateway_server.store.tables import merchants
from gateway_server.store.tables_trust import application_documents, merchant_applications
from gateway_server.trust.merchant_portal import audit, create_account
from gateway_server.trust.numbers import new_number

MAX_DOCUMENTS = 6
NOTE_MAX = 1000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
IMAGE_TYPES = {"image/png": PNG_MAGIC, "image/jpeg": JPEG_MAGIC}


class AppStatus(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    REJECTED = "rejected"


OPEN = (AppStatus.DRAFT, AppStatus.SUBMITTED, AppStatus.CHANGES_REQUESTED)
EDITABLE = (AppStatus.DRAFT, AppStatus.CHANGES_REQUESTED)

#: the programme's commitments (承诺), all of which an applicant ticks: key → (zh, en)
COMMITMENTS: dict[str, tuple[str, str]] = {
    "honest-weight": ("诚信计量，不短斤缺两", "Honest weight, never short"),
    "clear-prices": ("明码标价，价签清晰", "Prices marked clearly"),
    "verified-scales": ("使用检定合格的计量器具并按期送检",
                        "Use verified scales and have them re-verified in time"),
    "traceable-goods": ("商品来源可追溯，索证索票", "Goods traceable, with supplier papers"),
    "answer-complaints": ("接受消费者监督，限时答复投诉",
                          "Accept consumers' oversight, answer complaints in time"),
    "accept-inspection": ("配合市场监管部门检查", "Co-operate with inspections"),
}


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_number() -> str:
    return new_number("SQ", 8)


def _out(row: Any) -> dict[str, Any]:
    d = dict(row._mapping)
    for k in ("secret_sha256", "password_hash"):
        d.pop(k, None)
    d["licences"] = json.loads(d.pop("licences_json") or "[]")
    d["commitments"] = json.loads(d.pop("commitments_json") or "[]")
    d["categories"] = [c for c in (d.get("categories") or "").split(",") if c]
    return d


def _values(fields: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise the applicant's fields (those present)."""
    v: dict[str, Any] = {}
    for k in ("name", "stall_no", "phone"):
        if k in fields:
            text = (fields[k] or "").strip()
            if not text:
                raise reg.RegistryError(f"{k}: required", field=k)
            v[k] = text
    if "credit_code" in fields:
        try:
            v["credit_code"] = uscc.validate(fields["credit_code"] or "")
        except uscc.CreditCodeError as err:
            raise reg.RegistryError(f"credit_code: {err}", field="credit_code") from err
    if "categories" in fields:
        v["categories"] = ",".join(reg.parse_categories(fields["categories"] or []))
    if "licences" in fields:
        lics = []
        for lic in fields["licences"] or []:
            kind, number = str(lic.get("kind") or "").strip(), str(lic.get("number") or "").strip()
            if not kind or not number:
                raise reg.RegistryError("licences: kind and number required", field="licences")
            until = lic.get("valid_until")
            lics.append({"kind": kind, "number": number, "valid_until_ms":
                         reg.parse_date_ms(until, field="licences") if until else None})
        v["licences_json"] = json.dumps(lics, ensure_ascii=False)
    if "commitments" in fields:
        unknown = [c for c in fields["commitments"] or [] if c not in COMMITMENTS]
        if unknown:
            raise reg.RegistryError(f"commitments: unknown {unknown}", field="commitments")
        v["commitments_json"] = json.dumps(sorted(set(fields["commitments"] or [])))
    return v


def _check_code_free(conn: Connection, code: str, app_id: int | None) -> None:
    if conn.execute(select(merchants.c.id).where(merchants.c.credit_code == code)).first():
        raise reg.ConflictError("this credit code is already in the programme",
                                field="credit_code")
    q = select(merchant_applications.c.id).where(
        merchant_applications.c.credit_code == code,
        merchant_applications.c.status.in_([s.value for s in OPEN]))
    if app_id is not None:
        q = q.where(merchant_applications.c.id != app_id)
    if conn.execute(q).first():
        raise reg.ConflictError("an application with this credit code is under way",
                                field="credit_code")


def _check_username_free(conn: Connection, username: str) -> str:
    username = username.strip()
    if not username or len(username) > 64 or " " in username or not username.isprintable():
        raise reg.RegistryError("username: 1-64 printable characters without spaces",
                                field="username")
    taken = user_exists(conn, username) or conn.execute(select(merchant_applications.c.id).where(
        merchant_applications.c.username == username,
        merchant_applications.c.status.in_([s.value for s in OPEN]))).first() is not None
    if taken:
        raise reg.ConflictError(f"username {username} is taken", field="username")
    return username


def create(conn: Connection, *, market_id: str, username: str, password: str, now_ms: int,
           **fields: Any) -> tuple[dict[str, Any], str]:
    """A draft application; (application, secret). The secret is not stored in clear."""
    reg.get_market(conn, market_id)
    for k in ("name", "credit_code", "stall_no", "phone"):
        fields.setdefault(k, "")
    v = _values(fields)
    _check_code_free(conn, v["credit_code"], None)
    username = _check_username_free(conn, username)
    try:
        check_password_strength(password)
    except ValueError as err:
        raise reg.RegistryError(f"password: {err}", field="password") from err
    secret = secrets.token_urlsafe(24)
    res = conn.execute(merchant_applications.insert().values(
        number=_new_number(), secret_sha256=_sha(secret), status=AppStatus.DRAFT.value,
        market_id=market_id, username=username, password_hash=hash_password(password),
        created_ms=now_ms, updated_ms=now_ms,
        **{"categories": "", "licences_json": "[]", "commitments_json": "[]", **v}))
    app_id = reg.inserted_id(res)
    audit(conn, actor="public", action="application.create", subject=f"application:{app_id}",
          now_ms=now_ms, detail={"market_id": market_id, "credit_code": v["credit_code"],
                                 "name": v["name"], "username": username})
    return get(conn, app_id), secret


def get(conn: Connection, app_id: int) -> dict[str, Any]:
    row = conn.execute(select(merchant_applications).where(
        merchant_applications.c.id == app_id)).first()
    if row is None:
        raise reg.NotFoundError(f"no application {app_id}")
    d = _out(row)
    d["documents"] = [dict(r._mapping) for r in conn.execute(
        select(application_documents.c.id, application_documents.c.kind,
               application_documents.c.mime, application_documents.c.size,
               application_documents.c.sha256, application_documents.c.uploaded_ms)
        .where(application_documents.c.application_id == app_id)
        .order_by(application_documents.c.id))]
    return d


def _by_secret(conn: Connection, number: str, secret: str) -> Any:
    row = conn.execute(select(merchant_applications).where(
        merchant_applications.c.number == number.strip().upper())).first()
    if row is None or not hmac.compare_digest(row.secret_sha256, _sha(secret)):
        raise reg.NotFoundError("no application with this number and code")
    return row


def get_for_applicant(conn: Connection, number: str, secret: str) -> dict[str, Any]:
    return get(conn, int(_by_secret(conn, number, secret).id))


def update(conn: Connection, number: str, secret: str, changes: dict[str, Any], *,
           now_ms: int) -> dict[str, Any]:
    row = _by_secret(conn, number, secret)
    if row.status not in EDITABLE:
        raise reg.ConflictError("this application cannot be edited now")
    v = _values(changes)
    if "credit_code" in v:
        _check_code_free(conn, v["credit_code"], int(row.id))
    if v:
        conn.execute(merchant_applications.update().where(
            merchant_applications.c.id == row.id).values(updated_ms=now_ms, **v))
        audit(conn, actor="public", action="application.edit", subject=f"application:{row.id}",
              now_ms=now_ms, detail={"fields": sorted(changes)})
    return get(conn, int(row.id))


def image_type(data: bytes, declared: str) -> str:
    """The image's MIME type from its magic bytes; it must agree with ``declared``."""
    declared = declared.split(";")[0].strip().lower()
    actual = next((t for t, magic in IMAGE_TYPES.items() if data.startswith(magic)), None)
    if actual is None:
        raise reg.RegistryError("file: not a PNG or JPEG image", field="file")
    if declared not in (actual, "application/octet-stream", ""):
        raise reg.RegistryError(f"file: declared {declared} but the content is {actual}",
                                field="file")
    return actual


def add_document(conn: Connection, number: str, secret: str, *, kind: str, data: bytes,
                 content_type: str, max_bytes: int, now_ms: int) -> dict[str, Any]:
    row = _by_secret(conn, number, secret)
    if row.status not in EDITABLE:
        raise reg.ConflictError("this application cannot be edited now")
    kind = kind.strip()
    if not 1 <= len(kind) <= 64:
        raise reg.RegistryError("kind: the licence's name, 1-64 characters", field="kind")
    if not data:
        raise reg.RegistryError("file: empty", field="file")
    if len(data) > max_bytes:
        raise reg.RegistryError(f"file: larger than {max_bytes // 1024} KB", field="file")
    mime = image_type(data, content_type)
    digest = hashlib.sha256(data).hexdigest()
    same = conn.execute(select(application_documents.c.id).where(
        application_documents.c.application_id == row.id,
        application_documents.c.sha256 == digest)).scalar_one_or_none()
    if same is None:
        n = conn.execute(select(func.count()).select_from(application_documents).where(
            application_documents.c.application_id == row.id)).scalar_one()
        if n >= MAX_DOCUMENTS:
            raise reg.ConflictError(f"at most {MAX_DOCUMENTS} images per application")
        same = reg.inserted_id(conn.execute(application_documents.insert().values(
            application_id=row.id, kind=kind, mime=mime, size=len(data), sha256=digest,
            content=data, uploaded_ms=now_ms)))
        audit(conn, actor="public", action="application.document",
              subject=f"application:{row.id}", now_ms=now_ms,
              detail={"kind": kind, "sha256": digest, "size": len(data), "mime": mime})
    return next(d for d in get(conn, int(row.id))["documents"] if d["id"] == same)


def submit(conn: Connection, number: str, secret: str, *, now_ms: int) -> dict[str, Any]:
    row = _by_secret(conn, number, secret)
    if row.status not in EDITABLE:
        raise reg.ConflictError("this application has been submitted already")
    app = get(conn, int(row.id))
    missing = [k for k in COMMITMENTS if k not in app["commitments"]]
    if missing:
        raise reg.RegistryError(f"commitments: all must be accepted (missing {missing})",
                                field="commitments")
    if not app["documents"]:
        raise reg.RegistryError("file: upload at least one licence image", field="file")
    conn.execute(merchant_applications.update().where(merchant_applications.c.id == row.id)
                 .values(status=AppStatus.SUBMITTED.value, submitted_ms=now_ms,
                         updated_ms=now_ms))
    audit(conn, actor="public", action="application.submit", subject=f"application:{row.id}",
          now_ms=now_ms, detail={"documents": [d["sha256"] for d in app["documents"]]})
    return get(conn, int(row.id))


def queue(conn: Connection, *, status: str | None = AppStatus.SUBMITTED.value,
          limit: int = 200) -> list[dict[str, Any]]:
    """Applications for review, oldest submission first."""
    q = select(merchant_applications).order_by(
        merchant_applications.c.submitted_ms, merchant_applications.c.id).limit(limit)
    if status is not None:
        q = q.where(merchant_applications.c.status == AppStatus(status).value)
    return [_out(r) for r in conn.execute(q)]


def document(conn: Connection, app_id: int, doc_id: int) -> tuple[str, bytes]:
    row = conn.execute(select(application_documents.c.mime, application_documents.c.content)
                       .where(application_documents.c.id == doc_id,
                              application_documents.c.application_id == app_id)).first()
    if row is None:
        raise reg.NotFoundError(f"no document {doc_id} in application {app_id}")
    return row.mime, bytes(row.content)


def _decide(conn: Connection, app_id: int, status: AppStatus, note: str | None, *,
            actor: str, now_ms: int, **extra: Any) -> None:
    conn.execute(merchant_applications.update().where(merchant_applications.c.id == app_id)
                 .values(status=status.value, review_note=note, decided_ms=now_ms,
                         decided_by=actor, updated_ms=now_ms, **extra))


def _submitted(conn: Connection, app_id: int) -> dict[str, Any]:
    app = get(conn, app_id)
    if app["status"] != AppStatus.SUBMITTED:
        raise reg.ConflictError("only a submitted application can be reviewed")
    return app


def _note(note: str, field: str) -> str:
    note = note.strip()
    if not 2 <= len(note) <= NOTE_MAX:
        raise reg.RegistryError(f"{field}: 2 to {NOTE_MAX} characters", field=field)
    return note


def approve(conn: Connection, app_id: int, *, actor: str, now_ms: int) -> dict[str, Any]:
    """The merchant, its trust code and its account; the application approved."""
    app = _submitted(conn, app_id)
    row = conn.execute(select(merchant_applications.c.password_hash).where(
        merchant_applications.c.id == app_id)).one()
    _check_code_free(conn, app["credit_code"], app_id)
    m = reg.create_merchant(conn, app["market_id"], now_ms=now_ms, name=app["name"],
                            credit_code=app["credit_code"], stall_no=app["stall_no"],
                            categories=app["categories"], phone=app["phone"],
                            licences=app["licences"])
    user = create_account(conn, m["id"], username=app["username"], now_ms=now_ms, actor=actor,
                          password_hash=row.password_hash)
    _decide(conn, app_id, AppStatus.APPROVED, None, actor=actor, now_ms=now_ms,
            merchant_id=m["id"])
    audit(conn, actor=actor, action="application.approve", subject=f"application:{app_id}",
          merchant_id=m["id"], now_ms=now_ms,
          detail={"merchant_id": m["id"], "username": user.username})
    return {"application": get(conn, app_id), "merchant_id": m["id"],
            "trust_token": m["trust_token"], "username": user.username}


def reject(conn: Connection, app_id: int, reason: str, *, actor: str,
           now_ms: int) -> dict[str, Any]:
    _submitted(conn, app_id)
    reason = _note(reason, "reason")
    _decide(conn, app_id, AppStatus.REJECTED, reason, actor=actor, now_ms=now_ms)
    audit(conn, actor=actor, action="application.reject", subject=f"application:{app_id}",
          now_ms=now_ms, detail={"reason": reason})
    return get(conn, app_id)


def request_changes(conn: Connection, app_id: int, note: str, *, actor: str,
                    now_ms: int) -> dict[str, Any]:
    _submitted(conn, app_id)
    note = _note(note, "note")
    _decide(conn, app_id, AppStatus.CHANGES_REQUESTED, note, actor=actor, now_ms=now_ms)
    audit(conn, actor=actor, action="application.request-changes",
          subject=f"application:{app_id}", now_ms=now_ms, detail={"note": note})
    return get(conn, app_id)
