"""The register over REST: markets, merchants, PLU prices; the scales, their bindings and the
register CSV are ``routes/register_scales.py``, included in this router.

Every route needs a bearer token (router dependency); writes need the admin role.
Routes are thin: parse (pydantic models below), call ``gateway_server.registry.register`` /
``register_queries`` / ``register_csv`` in one transaction (``ConnDep``), shape the answer.

Scale register endpoints live under ``/api/v1/registry/scales`` because
``GET /api/v1/scales`` is the live view of the ingest (``routes/events.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, Field

from gateway_server.api.auth import R401, R404, R409, AdminUser, ConnDep, now_ms, require_user
from gateway_server.api.deps import MsQuery, OffsetQuery, RowIdPath
from gateway_server.api.routes import register_scales
from gateway_server.api.routes.registry_inputs import (
    ADMIN,
    CreditCodeIn,
    DateIn,
    DeviceId,
    UnitPriceIn,
)
from gateway_server.registry import register as reg
from weighing.metrology import GoodsCategory

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_user)],
                   responses={**R401, 422: {"description": "Invalid input"}})

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


router.include_router(register_scales.router)
