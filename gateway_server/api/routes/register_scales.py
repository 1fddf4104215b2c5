"""The scale register over REST: scales (with the merchant bound now), their bindings, and
the market's register as CSV (登记造册).

Included in ``routes/registry.py``'s router (its bearer token and answers); writes need
the admin role. Each route calls ``gateway_server.registry.register_queries`` or
``register_csv`` once in its transaction (``ConnDep``).
"""

from __future__ import annotations

import email.parser
import email.policy
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field, field_validator

from gateway_server.api.auth import R404, R409, AdminUser, ConnDep, CurrentUser, now_ms
from gateway_server.api.deps import MsQuery, OffsetQuery
from gateway_server.api.routes.registry_inputs import ADMIN, DateIn, DeviceId, MassIn
from gateway_server.registry import register as reg, register_csv, register_queries as rq
from gateway_server.store.tables import BIGINT_MAX
from weighing.wire import AccuracyClass, Role

router = APIRouter()
MAX_UPLOAD_BYTES = 20 * 1024 * 1024

# -- scales (the register) -----------------------------------------------------------------


class ScaleFields(BaseModel):
    role: Role | None = None
    profile: str | None = Field(None, max_length=128)
    model: str | None = Field(None, max_length=128)
    serial: str | None = Field(None, max_length=128)
    max_mg: MassIn | None = None
    e_mg: MassIn | None = None
    accuracy_class: AccuracyClass | None = None
    cert_no: str | None = Field(None, max_length=128, description="检定证书编号")
    verified_on_ms: DateIn | None = None
    due_on_ms: DateIn | None = Field(None, description="有效期至: valid through this date")


class ScaleCreate(ScaleFields):
    device: DeviceId
    market_id: str
    key_hex: str | None = Field(None, description="HMAC key (hex, ≥ 16 bytes); generated "
                                "when absent; returned once in the answer")
    merchant_id: int | None = Field(None, ge=1, le=BIGINT_MAX,
                                    description="bind to this merchant from now")

    @field_validator("key_hex")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        return reg.parse_key_hex(v) if v else None


class ScaleUpdate(ScaleFields):
    pass


class ScalePublic(BaseModel):
    device: str
    market: str
    role: Role
    profile: str | None
    protocol: str | None
    model: str | None
    serial: str | None
    max_mg: int | None
    e_mg: int | None
    accuracy_class: str | None
    cert_no: str | None
    verified_on_ms: int | None
    due_on_ms: int | None
    overdue: bool = Field(description="past the due date (valid through 有效期至, CST)")
    registered: bool
    quarantined: bool
    state: str
    last_seen_ms: int | None
    merchant_id: int | None = Field(description="merchant bound now")
    has_key: bool


class ScaleWithKey(ScalePublic):
    key_hex: str = Field(description="the device's HMAC key: shown once, store it in the "
                         "edge agent's configuration")


class ScalePage(BaseModel):
    items: list[ScalePublic]
    total: int
    limit: int
    offset: int


class KeyRotate(BaseModel):
    key_hex: str | None = Field(None, description="new key (hex); generated when absent")

    @field_validator("key_hex")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        return reg.parse_key_hex(v) if v else None


@router.get("/registry/scales", response_model=ScalePage, tags=["registry"],
            summary="List registered scales", description="Filter by market, role, and "
            "`due_before_ms` (verification due before then: 检定到期). Keys are never listed.")
def list_scales(
    conn: ConnDep, market: str | None = None, role: Role | None = None,
    due_before_ms: MsQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: OffsetQuery = 0,
) -> dict[str, Any]:
    return rq.scale_page(conn, now_ms=now_ms(), market_id=market, role=role,
                         due_before_ms=due_before_ms, limit=limit, offset=offset)


@router.post("/registry/scales", response_model=ScaleWithKey, status_code=201,
             tags=["registry"], summary="Register a scale",
             description="Returns the device's HMAC key once.",
             responses={**ADMIN, **R404, **R409})
def register_scale(body: ScaleCreate, conn: ConnDep, _: AdminUser) -> dict[str, Any]:
    fields = body.model_dump(exclude={"device", "market_id", "key_hex", "merchant_id"},
                             exclude_none=True)
    return rq.register_scale(conn, body.device, market_id=body.market_id, now_ms=now_ms(),
                             key_hex=body.key_hex, merchant_id=body.merchant_id, **fields)


@router.get("/registry/scales/{device}", response_model=ScalePublic, tags=["registry"],
            summary="Get a scale of the register", responses=R404)
def get_scale(device: str, conn: ConnDep) -> dict[str, Any]:
    return rq.get_scale(conn, device, now_ms=now_ms())


@router.patch("/registry/scales/{device}", response_model=ScalePublic, tags=["registry"],
              summary="Update a scale of the register", responses={**ADMIN, **R404})
def update_scale(device: str, body: ScaleUpdate, conn: ConnDep, _: AdminUser) -> dict[str, Any]:
    return rq.update_scale(conn, device, body.model_dump(exclude_unset=True), now_ms=now_ms())


@router.post("/registry/scales/{device}/key", response_model=ScaleWithKey, tags=["registry"],
             summary="Rotate a scale's HMAC key", description="Returns the new key once; "
             "the edge agent must be given it, or its events fail verification.",
             responses={**ADMIN, **R404})
def rotate_key(device: str, conn: ConnDep, _: AdminUser,
               body: KeyRotate | None = None) -> dict[str, Any]:
    return rq.rotate_key(conn, device, body.key_hex if body else None, now_ms=now_ms())


class BindingCreate(BaseModel):
    merchant_id: int | None = Field(ge=1, le=BIGINT_MAX,
                                    description="merchant to bind; null unbinds")
    at_ms: int | None = Field(None, ge=0, le=BIGINT_MAX,
                              description="from when (UTC ms); default now")


class BindingPublic(BaseModel):
    id: int
    device: str
    merchant_id: int
    valid_from_ms: int
    valid_to_ms: int | None = Field(description="null: still bound")


@router.get("/registry/scales/{device}/bindings", response_model=list[BindingPublic],
            tags=["registry"], summary="Binding history of a scale", responses=R404)
def list_bindings(device: str, conn: ConnDep) -> list[dict[str, Any]]:
    return rq.bindings(conn, device)


@router.post("/registry/scales/{device}/bindings", response_model=list[BindingPublic],
             tags=["registry"], summary="Bind a scale to a merchant from a time",
             description="Closes the current binding at `at_ms` and opens the new one there. "
             "History is append-only: `at_ms` before the latest change is a 409.",
             responses={**ADMIN, **R404, **R409})
def bind_scale(device: str, body: BindingCreate, conn: ConnDep,
               _: AdminUser) -> list[dict[str, Any]]:
    return rq.bind(conn, device, body.merchant_id,
                   at_ms=body.at_ms if body.at_ms is not None else now_ms())


# -- the register as CSV (登记造册) --------------------------------------------------------


class RowErrorOut(BaseModel):
    row: int = Field(description="spreadsheet row (the header is row 1)")
    column: str = Field(description="the column as headed in the file")
    message: str


class ImportResult(BaseModel):
    imported: int
    updated: int
    unchanged: int
    errors: list[RowErrorOut]
    warnings: list[RowErrorOut]


async def upload_body(request: Request) -> bytes:
    """The CSV file from a ``text/csv`` body or the ``file`` part of a multipart form."""
    raw = await request.body()
    if len(raw) > MAX_UPLOAD_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "file larger than 20 MiB")
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        return raw
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + raw)
    parts = list(msg.iter_parts()) if msg.is_multipart() else []
    for part in parts:
        if part.get_param("name", header="content-disposition") == "file":
            return bytes(part.get_payload(decode=True) or b"")
    if len(parts) == 1:
        return bytes(parts[0].get_payload(decode=True) or b"")
    raise HTTPException(422, [{"loc": ["body", "file"], "msg": "no part named file",
                               "type": "missing"}])


_UPLOAD = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}}}},
}}}


@router.post("/markets/{market_id}/register.csv", response_model=ImportResult,
             tags=["registry"], summary="Import the market's scale register (登记造册) CSV",
             description="zh-CN or English headers; UTF-8 (BOM or not) or GB18030. Bad rows "
             "are reported by row and column and skipped; good rows are imported. "
             "Re-importing the same file changes nothing.", openapi_extra=_UPLOAD,
             responses={**ADMIN, **R404})
def import_register(market_id: str, data: Annotated[bytes, Depends(upload_body)],
                    conn: ConnDep, _: AdminUser) -> dict[str, Any]:
    try:
        report = register_csv.import_register(conn, market_id, data, now_ms=now_ms())
    except register_csv.CsvFormatError as err:
        raise HTTPException(422, [{"loc": ["body"], "msg": str(err), "type": "value_error"}]) \
            from err
    return report.__dict__


@router.get("/markets/{market_id}/register.csv", tags=["registry"],
            summary="Export the market's scale register (登记造册) as CSV",
            description="UTF-8 with BOM (opens in Excel). Device keys only with "
            "`include_keys=true`, for admins.",
            response_class=Response, responses={
                200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **ADMIN,
                **R404})
def export_register(market_id: str, conn: ConnDep, user: CurrentUser,
                    lang: Annotated[str, Query(pattern="^(zh|en)$")] = "zh",
                    include_keys: bool = False) -> Response:
    if include_keys and not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required for keys")
    text = register_csv.export_register(conn, market_id, now_ms=now_ms(), lang=lang,
                                        include_keys=include_keys)
    return Response(("\ufeff" + text).encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition":
                             f'attachment; filename="register-{market_id}.csv"',
                             "Cache-Control": "no-store"})
