"""The register over REST: markets, merchants, scales, bindings, PLU prices, register CSV.

Every route needs a bearer token (router dependency); writes need the admin role.
Routes are thin: parse (pydantic models below), call ``gateway_server.registry.register`` /
``register_csv`` in one transaction (``ConnDep``), shape the answer.

Scale register endpoints live under ``/api/v1/registry/scales`` because
``GET /api/v1/scales`` is the live view of the ingest (``routes/events.py``).
"""

from __future__ import annotations

import email.parser
import email.policy
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema, field_validator

from gateway_server.api.auth import (
    R401,
    R403,
    R404,
    R409,
    AdminUser,
    ConnDep,
    CurrentUser,
    now_ms,
    require_user,
)
from gateway_server.api.deps import MsQuery, OffsetQuery, RowIdPath
from gateway_server.registry import register as reg
from gateway_server.registry import register_csv, uscc
from gateway_server.store.tables import BIGINT_MAX
from weighing.metrology import GoodsCategory
from weighing.wire import AccuracyClass, Role

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_user)],
                   responses={**R401, 422: {"description": "Invalid input"}})
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
ADMIN = {**R403}

# -- input types: masses, money, dates given as text or integers ---------------------------

MassIn = Annotated[int, BeforeValidator(reg.parse_mass_mg), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}],
    "description": "integer mg, or text with a unit: \"15 kg\", \"5 g\", \"0.1 克\"",
    "examples": ["15 kg", 15000000]})]
FenIn = Annotated[int, BeforeValidator(reg.parse_fen), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}],
    "description": "integer fen, or decimal yuan as text: \"12.50\"",
    "examples": ["12.50", 1250]})]
UnitPriceIn = Annotated[int, BeforeValidator(reg.parse_unit_price_fen_per_kg), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}],
    "description": "integer fen per kg, or yuan as text per kg or with its unit: \"12.50\", "
                   "\"12.50元/kg\", \"6.25元/斤\" (1 斤 = 500 g, stored as 12.50 元/kg)",
    "examples": ["12.50", "6.25元/斤", 1250]})]
DateIn = Annotated[int, BeforeValidator(reg.parse_date_ms), WithJsonSchema({
    "anyOf": [{"type": "integer"}, {"type": "string", "format": "date"}],
    "description": "UTC ms, or a date YYYY-MM-DD (00:00 China Standard Time)",
    "examples": ["2026-03-01", 1772294400000]})]
DeviceId = Annotated[str, Field(pattern=reg.ID_RE.pattern, examples=["s-0001"])]


def _credit_code(v: Any) -> str | None:
    if v is not None and not isinstance(v, str):
        raise ValueError("credit_code: give the code as a string")
    if v is None or not v.strip():
        return None
    try:
        return uscc.validate(v)
    except uscc.CreditCodeError as err:
        raise ValueError(str(err)) from err


CreditCodeIn = Annotated[str | None, BeforeValidator(_credit_code), Field(
    description="统一社会信用代码, GB 32100-2015 (check character verified)",
    examples=["91350100M000100Y43"])]

# -- markets -------------------------------------------------------------------------------


class MarketBase(BaseModel):
    name: str = Field(min_length=1, max_length=256, examples=["东门农贸市场"])
    name_en: str | None = Field(None, max_length=256)
    district: str | None = Field(None, max_length=128)
    address: str | None = Field(None, max_length=512)
    operator: str | None = Field(None, max_length=256, description="市场开办者")
    lat_e6: int | None = Field(None, ge=-90_000_000, le=90_000_000,
                               description="WGS-84 latitude × 10^6")
    lon_e6: int | None = Field(None, ge=-180_000_000, le=180_000_000,
                               description="WGS-84 longitude × 10^6")
    trading_hours: str | None = Field(None, max_length=16, examples=["06:00-19:00"],
                                      description="HH:MM-HH:MM, China Standard Time "
                                      "(empty: 06:00-19:00)")


class MarketCreate(MarketBase):
    id: DeviceId


class MarketUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=256)
    name_en: str | None = None
    district: str | None = None
    address: str | None = None
    operator: str | None = None
    lat_e6: int | None = Field(None, ge=-90_000_000, le=90_000_000)
    lon_e6: int | None = Field(None, ge=-180_000_000, le=180_000_000)
    trading_hours: str | None = Field(None, max_length=16)


class MarketPublic(MarketBase):
    id: str
    created_ms: int


@router.get("/markets", response_model=list[MarketPublic], tags=["registry"],
            summary="List markets")
def list_markets(conn: ConnDep) -> list[dict[str, Any]]:
    return reg.list_markets(conn)


@router.post("/markets", response_model=MarketPublic, status_code=201, tags=["registry"],
             summary="Create a market", responses={**ADMIN, **R409})
def create_market(body: MarketCreate, conn: ConnDep, _: AdminUser) -> dict[str, Any]:
    return reg.create_market(conn, body.id, now_ms=now_ms(), **body.model_dump(exclude={"id"}))


@router.get("/markets/{market_id}", response_model=MarketPublic, tags=["registry"],
            summary="Get a market", responses=R404)
def get_market(market_id: str, conn: ConnDep) -> dict[str, Any]:
    return reg.get_market(conn, market_id)


@router.patch("/markets/{market_id}", response_model=MarketPublic, tags=["registry"],
              summary="Update a market", responses={**ADMIN, **R404})
def update_market(market_id: str, body: MarketUpdate, conn: ConnDep,
                  _: AdminUser) -> dict[str, Any]:
    return reg.update_market(conn, market_id, body.model_dump(exclude_unset=True))


# -- merchants -----------------------------------------------------------------------------


class LicenceIn(BaseModel):
    kind: str = Field(min_length=1, max_length=64, examples=["食品经营许可证"])
    number: str = Field(min_length=1, max_length=128)
    valid_until_ms: DateIn | None = None


class Licence(BaseModel):
    kind: str
    number: str
    valid_until_ms: int | None = None


class MerchantCreate(BaseModel):
    market_id: str
    name: str = Field(min_length=1, max_length=256, examples=["张三蔬菜"])
    credit_code: CreditCodeIn = None
    stall_no: str | None = Field(None, max_length=64, examples=["A-01"])
    categories: list[str] = Field(default_factory=list, examples=[["蔬菜", "水果"]])
    licences: list[LicenceIn] = Field(default_factory=list)
    phone: str | None = Field(None, max_length=64)


class MerchantUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=256)
    credit_code: CreditCodeIn = None
    stall_no: str | None = Field(None, max_length=64)
    categories: list[str] | None = None
    licences: list[LicenceIn] | None = None
    phone: str | None = Field(None, max_length=64)


class MerchantStatusChange(BaseModel):
    status: reg.MerchantStatus | None = None
    list_status: reg.ListStatus | None = None
    reason: str = Field(min_length=1, max_length=2000, examples=["检定不合格，黄牌警告"])


class MerchantPublic(BaseModel):
    id: int
    market_id: str
    name: str
    credit_code: str | None
    stall_no: str | None
    categories: list[str]
    licences: list[Licence]
    phone: str | None
    status: reg.MerchantStatus
    list_status: reg.ListStatus
    status_reason: str | None
    status_ms: int | None
    trust_token: str = Field(description="token of the merchant's trust QR: /m/{trust_token}")
    created_ms: int
    updated_ms: int


class MerchantPage(BaseModel):
    items: list[MerchantPublic]
    total: int
    limit: int
    offset: int


@router.get("/merchants", response_model=MerchantPage, tags=["registry"],
            summary="List merchants", description="Filter by market, status and a text `q` "
            "matching the name, stall number or credit code.")
def list_merchants(
    conn: ConnDep, market: str | None = None, status: reg.MerchantStatus | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: OffsetQuery = 0,
) -> dict[str, Any]:
    items, total = reg.list_merchants(conn, market_id=market, status=status, q=q, limit=limit,
                                      offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.post("/merchants", response_model=MerchantPublic, status_code=201, tags=["registry"],
             summary="Create a merchant", description="A trust QR token is generated.",
             responses={**ADMIN, **R404, **R409})
def create_merchant(body: MerchantCreate, conn: ConnDep, _: AdminUser) -> dict[str, Any]:
    return reg.create_merchant(conn, body.market_id, now_ms=now_ms(),
                               **body.model_dump(exclude={"market_id"}))


@router.get("/merchants/{merchant_id}", response_model=MerchantPublic, tags=["registry"],
            summary="Get a merchant", responses=R404)
def get_merchant(merchant_id: RowIdPath, conn: ConnDep) -> dict[str, Any]:
    return reg.get_merchant(conn, merchant_id)


@router.patch("/merchants/{merchant_id}", response_model=MerchantPublic, tags=["registry"],
              summary="Update a merchant's details", responses={**ADMIN, **R404, **R409})
def update_merchant(merchant_id: RowIdPath, body: MerchantUpdate, conn: ConnDep,
                    _: AdminUser) -> dict[str, Any]:
    return reg.update_merchant(conn, merchant_id, body.model_dump(exclude_unset=True),
                               now_ms=now_ms())


@router.post("/merchants/{merchant_id}/status", response_model=MerchantPublic,
             tags=["registry"], summary="Change a merchant's status or red/black-list status",
             description="Yellow/red card, suspension (经营异常), delisting; 红黑榜. The reason "
             "is kept with the time of the change.", responses={**ADMIN, **R404})
def change_status(merchant_id: RowIdPath, body: MerchantStatusChange, conn: ConnDep,
                  _: AdminUser) -> dict[str, Any]:
    return reg.set_merchant_status(conn, merchant_id, status=body.status,
                                   list_status=body.list_status, reason=body.reason,
                                   now_ms=now_ms())


@router.post("/merchants/{merchant_id}/trust-token", response_model=MerchantPublic,
             tags=["registry"], summary="Issue a new trust QR token (the old QR stops working)",
             responses={**ADMIN, **R404})
def rotate_trust_token(merchant_id: RowIdPath, conn: ConnDep, _: AdminUser) -> dict[str, Any]:
    return reg.rotate_trust_token(conn, merchant_id, now_ms=now_ms())


# -- PLU prices ----------------------------------------------------------------------------


class PriceCreate(BaseModel):
    plu: str = Field(min_length=1, max_length=64, examples=["1001"])
    name: str = Field(min_length=1, max_length=256, examples=["西红柿"])
    category: GoodsCategory | None = None
    unit_price_fen_per_kg: UnitPriceIn
    valid_from_ms: DateIn | None = Field(None, description="default: now")


class PricePublic(BaseModel):
    id: int
    merchant_id: int
    plu: str
    name: str
    category: str | None
    unit_price_fen_per_kg: int
    valid_from_ms: int


@router.get("/merchants/{merchant_id}/prices", response_model=list[PricePublic],
            tags=["registry"], summary="Registered PLU prices (明码标价)",
            description="All versions, or with `at_ms` the version valid then of each PLU.",
            responses=R404)
def list_prices(merchant_id: RowIdPath, conn: ConnDep, plu: str | None = None,
                at_ms: MsQuery = None) -> list[dict[str, Any]]:
    return reg.list_prices(conn, merchant_id, plu=plu, at_ms=at_ms)


@router.post("/merchants/{merchant_id}/prices", response_model=PricePublic, status_code=201,
             tags=["registry"], summary="Register a PLU price version",
             responses={**ADMIN, **R404, **R409})
def add_price(merchant_id: RowIdPath, body: PriceCreate, conn: ConnDep, response: Response,
              _: AdminUser) -> dict[str, Any]:
    row, created = reg.add_price(
        conn, merchant_id, plu=body.plu, name=body.name,
        category=body.category.value if body.category else None,
        unit_price_fen_per_kg=body.unit_price_fen_per_kg,
        valid_from_ms=body.valid_from_ms if body.valid_from_ms is not None else now_ms())
    if not created:
        response.status_code = status.HTTP_200_OK
    return row


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


def _scale(conn: Any, row: dict[str, Any], t: int) -> dict[str, Any]:
    return reg.scale_out(row, now_ms=t, merchant_id=reg.binding_at(conn, row["device"], t))


@router.get("/registry/scales", response_model=ScalePage, tags=["registry"],
            summary="List registered scales", description="Filter by market, role, and "
            "`due_before_ms` (verification due before then: 检定到期). Keys are never listed.")
def list_scales(
    conn: ConnDep, market: str | None = None, role: Role | None = None,
    due_before_ms: MsQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: OffsetQuery = 0,
) -> dict[str, Any]:
    rows, total = reg.list_register(conn, market_id=market, role=role,
                                    due_before_ms=due_before_ms, limit=limit, offset=offset)
    t = now_ms()
    bound = reg.current_bindings(conn, (r["device"] for r in rows), t)
    items = [reg.scale_out(r, now_ms=t, merchant_id=bound.get(r["device"])) for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.post("/registry/scales", response_model=ScaleWithKey, status_code=201,
             tags=["registry"], summary="Register a scale",
             description="Returns the device's HMAC key once.",
             responses={**ADMIN, **R404, **R409})
def register_scale(body: ScaleCreate, conn: ConnDep, _: AdminUser) -> dict[str, Any]:
    t = now_ms()
    fields = body.model_dump(exclude={"device", "market_id", "key_hex", "merchant_id"},
                             exclude_none=True)
    row, key = reg.register_scale(conn, body.device, market_id=body.market_id, now_ms=t,
                                  key_hex=body.key_hex, **fields)
    if body.merchant_id is not None:
        reg.bind(conn, body.device, body.merchant_id, at_ms=t)
    return {**_scale(conn, row, t), "key_hex": key}


@router.get("/registry/scales/{device}", response_model=ScalePublic, tags=["registry"],
            summary="Get a scale of the register", responses=R404)
def get_scale(device: str, conn: ConnDep) -> dict[str, Any]:
    return _scale(conn, reg.get_scale_row(conn, device), now_ms())


@router.patch("/registry/scales/{device}", response_model=ScalePublic, tags=["registry"],
              summary="Update a scale of the register", responses={**ADMIN, **R404})
def update_scale(device: str, body: ScaleUpdate, conn: ConnDep, _: AdminUser) -> dict[str, Any]:
    return _scale(conn, reg.update_scale(conn, device, body.model_dump(exclude_unset=True)),
                  now_ms())


@router.post("/registry/scales/{device}/key", response_model=ScaleWithKey, tags=["registry"],
             summary="Rotate a scale's HMAC key", description="Returns the new key once; "
             "the edge agent must be given it, or its events fail verification.",
             responses={**ADMIN, **R404})
def rotate_key(device: str, conn: ConnDep, _: AdminUser,
               body: KeyRotate | None = None) -> dict[str, Any]:
    key = reg.rotate_key(conn, device, body.key_hex if body else None)
    return {**_scale(conn, reg.get_scale_row(conn, device), now_ms()), "key_hex": key}


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
    reg.get_scale_row(conn, device)
    return reg.binding_history(conn, device=device)


@router.post("/registry/scales/{device}/bindings", response_model=list[BindingPublic],
             tags=["registry"], summary="Bind a scale to a merchant from a time",
             description="Closes the current binding at `at_ms` and opens the new one there. "
             "History is append-only: `at_ms` before the latest change is a 409.",
             responses={**ADMIN, **R404, **R409})
def bind_scale(device: str, body: BindingCreate, conn: ConnDep,
               _: AdminUser) -> list[dict[str, Any]]:
    reg.bind(conn, device, body.merchant_id, at_ms=body.at_ms if body.at_ms is not None
             else now_ms())
    return reg.binding_history(conn, device=device)


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
