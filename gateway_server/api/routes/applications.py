"""Applications to the trust programme: the public form's API (no account; the number and
the secret the applicant got) and the bureau's review queue (admin). See
``gateway_server/trust/applications.py`` for the rules and the states."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, Field

from gateway_server.api.auth import R401, R403, R404, R409, AdminUser, ConnDep, now_ms
from gateway_server.api.deps import RowIdPath, SettingsDep
from gateway_server.api.ratelimit import R429, public_rate_limit
from gateway_server.registry import qr, register as reg
from gateway_server.store.tables import markets
from gateway_server.trust import applications as apps

public = APIRouter(prefix="/api/v1/public", tags=["applications"],
                   dependencies=[Depends(public_rate_limit)], responses=R429)
admin = APIRouter(prefix="/api/v1/applications", tags=["applications"],
                  responses={**R401, **R403, **R404})

Secret = Annotated[str, Header(alias="X-Application-Secret", min_length=8, max_length=128,
                               description="the secret given with the application number")]


class ApplicationLicenceIn(BaseModel):
    kind: str = Field(min_length=1, max_length=64, description="营业执照, 食品经营许可证, ...")
    number: str = Field(min_length=1, max_length=128)
    valid_until: str | None = Field(None, max_length=32, description="date (CST), optional")


class ApplicationFields(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=256)
    credit_code: str | None = Field(None, min_length=1, max_length=32,
                                    description="统一社会信用代码, check digit verified")
    stall_no: str | None = Field(None, min_length=1, max_length=64)
    categories: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=20)
    phone: str | None = Field(None, min_length=5, max_length=64)
    licences: list[ApplicationLicenceIn] | None = Field(None, max_length=6)
    commitments: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=20)


class ApplicationIn(ApplicationFields):
    market_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=256)
    credit_code: str = Field(min_length=1, max_length=32)
    stall_no: str = Field(min_length=1, max_length=64)
    phone: str = Field(min_length=5, max_length=64)
    username: str = Field(min_length=1, max_length=64, description="the account on approval")
    password: str = Field(min_length=1, max_length=1024)


class ReasonIn(BaseModel):
    reason: str = Field(min_length=2, max_length=apps.NOTE_MAX)


class NoteIn(BaseModel):
    note: str = Field(min_length=2, max_length=apps.NOTE_MAX)


def _fields(body: BaseModel) -> dict[str, Any]:
    d = body.model_dump(exclude_unset=True)
    if "licences" in d:
        d["licences"] = [dict(x) for x in d["licences"] or []]
    return d


# -- public --------------------------------------------------------------------------------

@public.get("/application-form", summary="What the application form offers: markets, "
            "commitments (承诺), the image limits")
def form(conn: ConnDep, settings: SettingsDep) -> dict[str, Any]:
    from sqlalchemy import select

    rows = conn.execute(select(markets.c.id, markets.c.name, markets.c.name_en)
                        .order_by(markets.c.id)).all()
    return {"markets": [dict(r._mapping) for r in rows],
            "commitments": [{"key": k, "zh": zh, "en": en}
                            for k, (zh, en) in apps.COMMITMENTS.items()],
            "image_types": sorted(apps.IMAGE_TYPES), "max_image_bytes":
            settings.application_image_max_bytes, "max_documents": apps.MAX_DOCUMENTS}


@public.post("/applications", status_code=201, summary="Apply to the trust programme",
             description="A draft application; the answer carries its number and a secret, "
             "shown once. Upload licence images, then submit.", responses=R409)
def create(body: ApplicationIn, conn: ConnDep) -> dict[str, Any]:
    fields = _fields(body)
    for k in ("market_id", "username", "password"):
        fields.pop(k)
    app, secret = apps.create(conn, market_id=body.market_id, username=body.username,
                              password=body.password, now_ms=now_ms(), **fields)
    return {"number": app["number"], "secret": secret, "application": app}


@public.get("/applications/{number}", summary="An application as its applicant sees it",
            responses=R404)
def get_own(number: str, secret: Secret, conn: ConnDep) -> dict[str, Any]:
    return apps.get_for_applicant(conn, number, secret)


@public.patch("/applications/{number}", summary="Edit a draft, or after changes were asked",
              responses={**R404, **R409})
def edit(number: str, body: ApplicationFields, secret: Secret, conn: ConnDep) -> dict[str, Any]:
    return apps.update(conn, number, secret, _fields(body), now_ms=now_ms())


@public.post("/applications/{number}/documents", status_code=201,
             summary="Upload a licence image (PNG or JPEG, raw body)",
             description="The body is the image itself with its Content-Type; the type is "
             "checked against the content, the size against "
             "`settings.application_image_max_bytes`; stored with its SHA-256.",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "image/png": {"schema": {"type": "string", "format": "binary"}},
                 "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}},
             responses={**R404, **R409, 413: {"description": "Image too large"}})
async def upload(number: str, secret: Secret, request: Request, settings: SettingsDep,
                 store_conn: ConnDep,
                 kind: Annotated[str, Query(min_length=1, max_length=64)] = "营业执照",
                 ) -> dict[str, Any]:
    limit = settings.application_image_max_bytes
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit:
        raise reg.RegistryError(f"file: larger than {limit // 1024} KB", field="file")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise reg.RegistryError(f"file: larger than {limit // 1024} KB", field="file")
    return apps.add_document(store_conn, number, secret, kind=kind, data=bytes(data),
                             content_type=request.headers.get("content-type", ""),
                             max_bytes=limit, now_ms=now_ms())


@public.post("/applications/{number}/submit", summary="Submit for review",
             responses={**R404, **R409})
def submit(number: str, secret: Secret, conn: ConnDep) -> dict[str, Any]:
    return apps.submit(conn, number, secret, now_ms=now_ms())


# -- review (admin) ------------------------------------------------------------------------

@admin.get("", summary="The review queue (default: submitted, oldest first)")
def review_queue(_: AdminUser, conn: ConnDep,
                 status: apps.AppStatus | None = apps.AppStatus.SUBMITTED,
                 ) -> list[dict[str, Any]]:
    return apps.queue(conn, status=None if status is None else status.value)


@admin.get("/{app_id}", summary="One application with its documents and audit trail")
def review_one(app_id: RowIdPath, _: AdminUser, conn: ConnDep) -> dict[str, Any]:
    from gateway_server.trust.merchant_portal import audit_trail

    return apps.get(conn, app_id) | {
        "audit": audit_trail(conn, subject=f"application:{app_id}")}


@admin.get("/{app_id}/documents/{doc_id}", summary="A licence image", response_class=Response,
           responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
def review_document(app_id: RowIdPath, doc_id: RowIdPath, _: AdminUser,
                    conn: ConnDep) -> Response:
    mime, data = apps.document(conn, app_id, doc_id)
    return Response(data, media_type=mime, headers={
        "Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'"})


@admin.post("/{app_id}/approve", summary="Approve: merchant, trust code and account",
            responses=R409)
def approve(app_id: RowIdPath, user: AdminUser, conn: ConnDep,
            settings: SettingsDep) -> dict[str, Any]:
    out = apps.approve(conn, app_id, actor=user.username, now_ms=now_ms())
    return out | {"trust_url": qr.trust_url(settings.public_base_url, out["trust_token"])}


@admin.post("/{app_id}/reject", summary="Reject, with the reason", responses=R409)
def reject(app_id: RowIdPath, body: ReasonIn, user: AdminUser, conn: ConnDep) -> dict[str, Any]:
    return apps.reject(conn, app_id, body.reason, actor=user.username, now_ms=now_ms())


@admin.post("/{app_id}/request-changes", summary="Ask the applicant for changes",
            responses=R409)
def request_changes(app_id: RowIdPath, body: NoteIn, user: AdminUser,
                    conn: ConnDep) -> dict[str, Any]:
    return apps.request_changes(conn, app_id, body.note, actor=user.username, now_ms=now_ms())
