"""Figures for the charts (issue 18): sales totals and series computed in SQL (every sale
counts, never a page of them), and a market's stalls coloured by risk."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import and_, func, literal_column, select

from gateway_server.api.auth import now_ms
from gateway_server.api.deps import MsQuery, StoreDep
from gateway_server.casework import inspection as insp
from gateway_server.registry.binding import bound_at
from gateway_server.store.tables import BIGINT_MAX, bindings, markets, merchants, sales, scales

router = APIRouter(prefix="/api/v1", tags=["charts"])

SERIES_MAX_BUCKETS = 2000


class SalesTotal(BaseModel):
    count: int = Field(description="every sale in the window")
    amount_fen: int = Field(description="their amounts summed, fen (sales without a price: 0)")
    net_mg: int = Field(description="their net weights summed, mg")
    priced: int = Field(description="sales that carry an amount")


def _filtered(q: Any, *, market: str | None, device: str | None, since_ms: int | None,
              until_ms: int | None) -> Any:
    if market is not None:
        q = q.where(sales.c.market == market)
    if device is not None:
        q = q.where(sales.c.device == device)
    if since_ms is not None:
        q = q.where(sales.c.ts_ms >= since_ms)
    if until_ms is not None:
        q = q.where(sales.c.ts_ms < until_ms)
    return q


@router.get("/stats/sales", response_model=SalesTotal,
            summary="Sales counted and summed in the database (filters: market, device, window)")
def sales_total(store: StoreDep, market: str | None = None, device: str | None = None,
                since_ms: MsQuery = None, until_ms: MsQuery = None) -> dict[str, int]:
    q = _filtered(select(func.count(), func.coalesce(func.sum(sales.c.amount_fen), 0),
                         func.coalesce(func.sum(sales.c.net_mg), 0),
                         func.count(sales.c.amount_fen)),
                  market=market, device=device, since_ms=since_ms, until_ms=until_ms)
    with store.engine.connect() as c:
        n, fen, mg, priced = c.execute(q).one()
    return {"count": int(n), "amount_fen": int(fen), "net_mg": int(mg), "priced": int(priced)}


class SalesBucket(BaseModel):
    t_ms: int = Field(description="start of the bucket")
    count: int
    amount_fen: int
    net_mg: int
    min_mg: int
    max_mg: int


@router.get("/stats/sales-series", response_model=list[SalesBucket],
            summary="Sales per time bucket (count, amount, weight, lightest and heaviest), "
                    "computed in the database")
def sales_series(store: StoreDep, since_ms: Annotated[int, Query(ge=0, le=BIGINT_MAX)],
                 bucket_ms: Annotated[int, Query(ge=60_000, le=31 * 86_400_000)] = 3_600_000,
                 until_ms: MsQuery = None, market: str | None = None,
                 device: str | None = None) -> list[dict[str, int]]:
    until = until_ms if until_ms is not None else now_ms()
    if until <= since_ms or (until - since_ms) // bucket_ms > SERIES_MAX_BUCKETS:
        raise HTTPException(422, f"at most {SERIES_MAX_BUCKETS} buckets, until after since")
    rel = sales.c.ts_ms - literal_column(str(since_ms))
    b = (rel - rel % literal_column(str(bucket_ms))).label("b")
    q = _filtered(select(b, func.count(), func.coalesce(func.sum(sales.c.amount_fen), 0),
                         func.sum(sales.c.net_mg), func.min(sales.c.net_mg),
                         func.max(sales.c.net_mg)),
                  market=market, device=device, since_ms=since_ms, until_ms=until)
    with store.engine.connect() as c:
        rows = c.execute(q.group_by(b).order_by(b)).all()
    return [{"t_ms": since_ms + int(r[0]), "count": int(r[1]), "amount_fen": int(r[2]),
             "net_mg": int(r[3]), "min_mg": int(r[4]), "max_mg": int(r[5])} for r in rows]


class StallRisk(BaseModel):
    device: str
    role: str
    stall_no: str | None
    merchant_id: int | None
    merchant_name: str | None
    merchant_status: str | None
    list_status: str | None
    state: str = Field(description="online | offline | unknown | stale")
    evidence: float
    in_queue: bool
    grounds: list[str]
    observations: int = Field(description="open kinds below the threshold")


class MarketStalls(BaseModel):
    market: str
    name: str
    name_en: str | None
    stalls: list[StallRisk]


@router.get("/risk/markets/{market_id}/stalls", response_model=MarketStalls,
            summary="Every registered scale of a market by stall, with its risk (for the "
                    "overview's stall grid)", responses={404: {"description": "no market"}})
def market_stalls(store: StoreDep, market_id: str) -> dict[str, Any]:
    t = now_ms()
    b = bindings
    with store.engine.connect() as c:
        mk = c.execute(select(markets).where(markets.c.id == market_id)).first()
        if mk is None:
            raise HTTPException(404, f"no market {market_id}")
        risks = {r.device: r for r in insp.assess(c, now_ms=t, market=market_id)}
        q = select(scales.c.device, scales.c.role, scales.c.state, merchants.c.id,
                   merchants.c.name, merchants.c.stall_no, merchants.c.status,
                   merchants.c.list_status).select_from(
            scales.outerjoin(b, and_(b.c.device == scales.c.device, bound_at(t)))
            .outerjoin(merchants, merchants.c.id == b.c.merchant_id)).where(
            scales.c.market == market_id, scales.c.registered.is_(True))
        rows = c.execute(q).all()
    out = []
    for r in rows:
        rk = risks.get(r.device)
        out.append({"device": r.device, "role": r.role, "stall_no": r.stall_no,
                    "merchant_id": r.id, "merchant_name": r.name, "merchant_status": r.status,
                    "list_status": r.list_status, "state": r.state or "unknown",
                    "evidence": rk.evidence if rk else 0.0,
                    "in_queue": bool(rk and rk.in_queue),
                    "grounds": list(rk.grounds) if rk else [],
                    "observations": sum(1 for x in rk.reasons if not x["counted"])
                    if rk else 0})
    out.sort(key=lambda x: (x["role"] != "trade", x["stall_no"] or "~", x["device"]))
    return {"market": mk.id, "name": mk.name, "name_en": mk.name_en, "stalls": out}
