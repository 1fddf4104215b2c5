"""A merchant account's own routes (``/api/v1/merchant/*``, issue 19).

Every route takes the merchant from the account (``MerchantUser.merchant_id``), never from
the request: there is no parameter through which another merchant's id could be named. A
complaint number of another merchant answers 404 like an unknown one. Staff accounts get
403 here, merchant accounts 403 on every staff route (``auth.require_user``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from gateway_server.api.auth import R401, R404, ConnDep, MerchantUser, now_ms
from gateway_server.api.deps import SettingsDep
from gateway_server.casework import complaints as cases
from gateway_server.registry import qr
from gateway_server.trust import merchant_portal as portal

R403M: dict[int | str, dict[str, Any]] = {403: {"description": "Merchant account required"}}
router = APIRouter(prefix="/api/v1/merchant", tags=["merchant"], responses={**R401, **R403M})


class AnswerIn(BaseModel):
    answer: str = Field(min_length=2, max_length=cases.ANSWER_MAX)


@router.get("/me", summary="The merchant of this account: status, lists, licences, trust code")
def me(user: MerchantUser, conn: ConnDep, settings: SettingsDep) -> dict[str, Any]:
    assert user.merchant_id is not None
    out = portal.overview(conn, user.merchant_id, now_ms=now_ms())
    out["trust_url"] = qr.trust_url(settings.public_base_url, out["trust_token"])
    out["open_complaints"] = cases.count_open(conn, user.merchant_id)
    return out


@router.get("/scales", summary="Its scales bound now: verification, due date, state")
def scales(user: MerchantUser, conn: ConnDep) -> list[dict[str, Any]]:
    assert user.merchant_id is not None
    return portal.own_scales(conn, user.merchant_id, now_ms=now_ms())


@router.get("/findings", summary="Findings concerning it that an inspector confirmed")
def findings(user: MerchantUser, conn: ConnDep) -> list[dict[str, Any]]:
    assert user.merchant_id is not None
    return portal.confirmed_findings(conn, user.merchant_id)


@router.get("/reweighs", summary="Re-weighs (核称) of its sales at the fair scale")
def reweighs(user: MerchantUser, conn: ConnDep) -> list[dict[str, Any]]:
    assert user.merchant_id is not None
    return portal.own_reweighs(conn, user.merchant_id)


@router.get("/complaints", summary="Its complaint cases, with the deadline to answer")
def complaints(user: MerchantUser, conn: ConnDep, settings: SettingsDep) -> list[dict[str, Any]]:
    assert user.merchant_id is not None
    cases.tick(conn, now_ms=now_ms(), answer_s=settings.complaint_answer_hours * 3600)
    return cases.list_cases(conn, merchant_id=user.merchant_id)


@router.post("/complaints/{number}/answer", summary="Answer one of its complaints",
             responses={**R404, 409: {"description": "Answered already, or with the bureau"}})
def answer(number: str, body: AnswerIn, user: MerchantUser, conn: ConnDep) -> dict[str, Any]:
    assert user.merchant_id is not None
    return cases.answer(conn, number, body.answer, merchant_id=user.merchant_id,
                        actor=user.username, now_ms=now_ms())


@router.get("/audit", summary="The audit trail of its own lifecycle")
def audit(user: MerchantUser, conn: ConnDep) -> list[dict[str, Any]]:
    assert user.merchant_id is not None
    return portal.audit_trail(conn, merchant_id=user.merchant_id)


@router.get("/qr.svg", summary="Its trust QR code (SVG)", response_class=Response,
            responses={200: {"content": {"image/svg+xml": {}}}})
def qr_svg(user: MerchantUser, conn: ConnDep, settings: SettingsDep) -> Response:
    assert user.merchant_id is not None
    token = portal.overview(conn, user.merchant_id, now_ms=now_ms())["trust_token"]
    return Response(qr.svg(qr.trust_url(settings.public_base_url, token)),
                    media_type="image/svg+xml", headers={"Cache-Control": "private, no-store"})
