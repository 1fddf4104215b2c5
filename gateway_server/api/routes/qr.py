"""Trust QR codes for inspectors and admins to print: one merchant's (PNG, SVG), a market's
A4 sheet (HTML). A code encodes ``{settings.public_base_url}/m/{trust_token}``
(``gateway_server.registry.qr``). Every route needs a bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from gateway_server.api.auth import R401, R404, ConnDep, require_user
from gateway_server.api.deps import RowIdPath, SettingsDep
from gateway_server.registry import qr, register as reg

router = APIRouter(prefix="/api/v1", tags=["qr"], dependencies=[Depends(require_user)],
                   responses={**R401, **R404})

# the sheet is static HTML with inline SVG and our stylesheet: no script may run in it
SHEET_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
             "base-uri 'none'; form-action 'none'; frame-ancestors 'self'")
MAX_SHEET_MERCHANTS = 1000


def _url(conn: ConnDep, merchant_id: int, settings: SettingsDep) -> tuple[str, int]:
    m = reg.get_merchant(conn, merchant_id)
    return qr.trust_url(settings.public_base_url, m["trust_token"]), int(m["id"])


@router.get("/merchants/{merchant_id}/qr.png", summary="A merchant's trust QR code (PNG)",
            response_class=Response,
            responses={200: {"content": {"image/png": {}},
                             "description": "encodes {public_base_url}/m/{trust_token}"}})
def merchant_qr_png(merchant_id: RowIdPath, conn: ConnDep, settings: SettingsDep,
                    scale: Annotated[int, Query(ge=1, le=qr.PNG_SCALE_MAX,
                                                description="pixels per module")] =
                    qr.PNG_SCALE_DEFAULT) -> Response:
    url, mid = _url(conn, merchant_id, settings)
    return Response(qr.png(url, scale=scale), media_type="image/png", headers={
        "Content-Disposition": f'inline; filename="trust-qr-{mid}.png"',
        "Cache-Control": "private, no-store"})


@router.get("/merchants/{merchant_id}/qr.svg", summary="A merchant's trust QR code (SVG)",
            response_class=Response,
            responses={200: {"content": {"image/svg+xml": {}},
                             "description": "encodes {public_base_url}/m/{trust_token}"}})
def merchant_qr_svg(merchant_id: RowIdPath, conn: ConnDep, settings: SettingsDep) -> Response:
    url, mid = _url(conn, merchant_id, settings)
    return Response(qr.svg(url), media_type="image/svg+xml", headers={
        "Content-Disposition": f'inline; filename="trust-qr-{mid}.svg"',
        "Cache-Control": "private, no-store"})


@router.get("/markets/{market_id}/qr-sheet", summary="Printable A4 sheet of a market's trust "
            "codes (HTML)", description="One card per merchant (QR as inline SVG, name, "
            "stall, 放心消费诚信码). Delisted merchants are left out.",
            response_class=Response, responses={200: {"content": {"text/html": {}}}})
def market_qr_sheet(market_id: str, conn: ConnDep, settings: SettingsDep,
                    request: Request) -> Response:
    market = reg.get_market(conn, market_id)
    items, _ = reg.list_merchants(conn, market_id=market_id, limit=MAX_SHEET_MERCHANTS,
                                  offset=0)
    shown = [m for m in items if m["status"] != reg.MerchantStatus.DELISTED.value]
    shown.sort(key=lambda m: (m.get("stall_no") or "", m["id"]))
    html = qr.sheet_html(market, shown, public_base_url=settings.public_base_url,
                         stylesheet_url=str(request.url_for("static", path="css/sheet.css")))
    return Response(html, media_type="text/html; charset=utf-8", headers={
        "Content-Security-Policy": SHEET_CSP, "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff"})
