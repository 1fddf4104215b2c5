"""The case file (issue 18, ``gateway_server/casework/cases.py``): open a case from a task or an
incident, record the on-site inspection, add photos, sign, print the 现场检查笔录 (HTML,
PDF), and decide a card, a list entry or the lifting of a card with a confirmation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from gateway_server.api.auth import ConnDep, CurrentUser, now_ms
from gateway_server.api.deps import RowIdPath, RowIdQuery, SettingsDep
from gateway_server.casework import case_print, cases as casework
from gateway_server.store.tables import BIGINT_MAX

router = APIRouter(prefix="/api/v1", tags=["cases"], responses={
    401: {"description": "Not authenticated"},
    409: {"description": "Not in this step (detail.code says why)"}})


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except casework.CaseError as err:
        raise HTTPException(err.status, {"code": err.code, "message": str(err),
                                         **err.extra}) from err


class CaseIn(BaseModel):
    task_id: int | None = Field(None, ge=1, le=BIGINT_MAX, description="an open task")
    device: str | None = Field(None, max_length=64, description="or a scale (its incident): "
                               "a task is made for it")


class LoadIn(BaseModel):
    load_mg: int = Field(gt=0, le=BIGINT_MAX, description="the standard weights, mg")
    indication_mg: int = Field(ge=-BIGINT_MAX, le=BIGINT_MAX, description="indicated, mg")


class RecordIn(BaseModel):
    loads: list[LoadIn] = Field(min_length=1, max_length=50)
    weights_cert_no: str = Field(min_length=1, max_length=64,
                                 description="the standard weights' certificate number")
    place: str = Field("", max_length=500)
    notes: str = Field("", max_length=4000)
    fraud: bool = Field(False, description="cheating established (作弊)")


class SignIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, description="the inspector's typed name")
    signature: str = Field(min_length=30, max_length=800_000,
                           description="the drawn signature: data:image/png;base64,...")


class DecisionIn(BaseModel):
    action: casework.Action
    reason: str = Field(min_length=2, max_length=500)
    confirm: bool = Field(description="must be true: the inspector confirmed the "
                          "consequences shown to them")


class CaseSummary(BaseModel):
    id: int
    number: str
    device: str
    market: str
    merchant_id: int | None
    state: Literal["open", "recorded", "signed", "decided"]
    opened_ms: int
    opened_by: str
    decision: str | None
    decided_ms: int | None
    verdict: str | None
    fraud: str | None


def _case(conn: ConnDep, id: int, settings: SettingsDep) -> dict[str, Any]:
    return casework.get_case(conn, id, now_ms=now_ms(), lift_days=settings.card_lift_days)


@router.post("/cases", status_code=201, summary="Open a case from a task or a scale's incident")
def open_case(body: CaseIn, user: CurrentUser, conn: ConnDep,
              settings: SettingsDep) -> dict[str, Any]:
    with _errors():
        c = casework.open_case(conn, actor=user.username, actor_id=user.id, now_ms=now_ms(),
                               task_id=body.task_id, device=body.device)
        return _case(conn, c["id"], settings)


@router.get("/cases", response_model=list[CaseSummary], summary="Cases, newest first")
def list_cases(_: CurrentUser, conn: ConnDep, device: str | None = None,
               merchant_id: RowIdQuery = None,
               state: Literal["open", "recorded", "signed", "decided"] | None = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
    return casework.list_cases(conn, device=device, merchant_id=merchant_id, state=state,
                               limit=limit)


@router.get("/cases/{id}", summary="A case: record, photos, signature, options, audit log")
def get_case(id: RowIdPath, _: CurrentUser, conn: ConnDep,
             settings: SettingsDep) -> dict[str, Any]:
    with _errors():
        return _case(conn, id, settings)


@router.post("/cases/{id}/record", summary="The on-site record: loads judged against "
             "the in-service MPE, weights certificate, place, notes (no card yet)")
def record(id: RowIdPath, body: RecordIn, user: CurrentUser, conn: ConnDep,
           settings: SettingsDep) -> dict[str, Any]:
    with _errors():
        casework.record(conn, id, pairs=[(x.load_mg, x.indication_mg) for x in body.loads],
                        weights_cert_no=body.weights_cert_no, place=body.place,
                        notes=body.notes, fraud=body.fraud, actor=user.username,
                        now_ms=now_ms())
        return _case(conn, id, settings)


@router.post("/cases/{id}/photos", status_code=201,
             summary="Add a photo (body: the PNG or JPEG bytes; ?caption=)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                 "image/png": {"schema": {"type": "string", "format": "binary"}}}}},
             responses={413: {"description": "too large"}, 415: {"description": "not an image"}})
async def add_photo(id: RowIdPath, request: Request, user: CurrentUser, conn: ConnDep,
                    settings: SettingsDep,
                    caption: Annotated[str, Query(max_length=200)] = "") -> dict[str, Any]:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > settings.case_photo_max_bytes:
            raise HTTPException(413, {"code": "too-large", "message": "photo too large",
                                      "max_bytes": settings.case_photo_max_bytes})
    with _errors():
        return casework.add_photo(conn, id, bytes(data),
                                  declared=request.headers.get("content-type", ""),
                                  caption=caption, max_bytes=settings.case_photo_max_bytes,
                                  actor=user.username, now_ms=now_ms())


@router.get("/case-photos/{id}", response_class=Response,
            summary="A photo of a case (by its id)", responses={200: {"content": {"image/jpeg": {},
                                                                         "image/png": {}}}})
def get_photo(id: RowIdPath, _: CurrentUser, conn: ConnDep) -> Response:
    with _errors():
        mime, data = casework.photo(conn, id)
    return Response(data, media_type=mime, headers={"Cache-Control": "private, no-store",
                                                    "X-Content-Type-Options": "nosniff"})


@router.post("/cases/{id}/sign", summary="Sign the record (typed name, drawn signature); "
             "the record and its photos freeze")
def sign(id: RowIdPath, body: SignIn, user: CurrentUser, conn: ConnDep,
         settings: SettingsDep) -> dict[str, Any]:
    with _errors():
        png = casework.decode_signature(body.signature)
        casework.sign(conn, id, name=body.name, signature_png=png, actor=user.username,
                      now_ms=now_ms())
        return _case(conn, id, settings)


@router.get("/cases/{id}/signature.png", response_class=Response,
            summary="The drawn signature", responses={200: {"content": {"image/png": {}}}})
def get_signature(id: RowIdPath, _: CurrentUser, conn: ConnDep) -> Response:
    with _errors():
        return Response(casework.signature(conn, id), media_type="image/png",
                        headers={"Cache-Control": "private, no-store"})


@router.post("/cases/{id}/decision", summary="A confirmed decision: yellow / red card, "
             "black or red list (admin), lifting a card after a passing re-inspection, none",
             responses={403: {"description": "list entries need an admin"}})
def decide(id: RowIdPath, body: DecisionIn, user: CurrentUser, conn: ConnDep,
           settings: SettingsDep) -> dict[str, Any]:
    with _errors():
        casework.decide(conn, id, action=body.action.value, reason=body.reason,
                        confirm=body.confirm, actor=user.username,
                        is_admin=user.role == "admin", now_ms=now_ms(),
                        lift_days=settings.card_lift_days)
        return _case(conn, id, settings)


@router.get("/cases/{id}/record.html", response_class=Response,
            summary="The printable 现场检查笔录 (HTML, no script)",
            responses={200: {"content": {"text/html": {}}}})
def record_html(id: RowIdPath, _: CurrentUser, conn: ConnDep, request: Request) -> Response:
    with _errors():
        html = case_print.record_html(conn, id, stylesheet_url=str(
            request.url_for("static", path="css/record.css")))
    return Response(html, media_type="text/html; charset=utf-8", headers={
        "Content-Security-Policy": case_print.PRINT_CSP, "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff"})


@router.get("/cases/{id}/record.pdf", response_class=Response,
            summary="The 现场检查笔录 as PDF (printed by headless Chromium)",
            responses={200: {"content": {"application/pdf": {}}},
                       503: {"description": "no PDF renderer on this server"}})
def record_pdf(id: RowIdPath, _: CurrentUser, conn: ConnDep,
               settings: SettingsDep) -> Response:
    with _errors():
        html = case_print.record_html(conn, id)
    try:
        pdf = case_print.render_pdf(html, chromium=settings.pdf_chromium)
    except case_print.PdfError as err:
        raise HTTPException(503, {"code": "no-pdf", "message": str(err)}) from err
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="{casework.number(id)}.pdf"',
        "Cache-Control": "private, no-store"})
