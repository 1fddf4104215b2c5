"""Public API of the trust programme (no account, rate limited): a complaint that gets a
number, the lookup of that number, monthly complaint figures per market, the red and
black lists."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from gateway_server.api.auth import R404, ConnDep, now_ms
from gateway_server.api.deps import SettingsDep, StoreDep
from gateway_server.api.ratelimit import R429, public_rate_limit
from gateway_server.api.routes import inspection as inspection_routes
from gateway_server.casework import complaints as cases
from gateway_server.trust import lists as trust_lists

router = APIRouter(prefix="/api/v1/public", tags=["public"],
                   dependencies=[Depends(public_rate_limit)], responses=R429)
CaseNumber = Annotated[str, Path(min_length=4, max_length=24)]


@router.post("/complaint-cases", status_code=201, responses=R404,
             summary="A consumer complaint that gets a number to look up (no login)",
             description="The same complaint as `POST /public/complaints`, answered with its "
             "case number and the merchant's deadline. Keep the number: the lookup shows "
             "the state, the merchant's answer and the outcome, never the text or contact.")
def create_case(body: inspection_routes.ComplaintIn, store: StoreDep,
                settings: SettingsDep) -> dict[str, Any]:
    made = inspection_routes.create_complaint(store, body)
    with store.engine.begin() as conn:
        case = cases.open_case(conn, int(made["id"]),
                               answer_s=settings.complaint_answer_hours * 3600)
    return {"number": case["number"], "due_ms": case["due_ms"],
            "linked_sale": made["linked_sale"], "linked_reweigh": made["linked_reweigh"],
            "message": "已受理，请保存投诉编号以便查询 received; keep the number to look it up"}


@router.get("/complaint-cases/{number}", responses=R404,
            summary="Look up a complaint by its number: state, answer, outcome")
def lookup(number: CaseNumber, conn: ConnDep, settings: SettingsDep,
           response: Response) -> dict[str, Any]:
    cases.tick(conn, now_ms=now_ms(), answer_s=settings.complaint_answer_hours * 3600)
    response.headers["Cache-Control"] = "no-store"
    return cases.public_view(conn, number)


@router.get("/complaint-figures", summary="Complaints per market and month (CST), public")
def figures(conn: ConnDep, settings: SettingsDep, market: str | None = None,
            months: Annotated[int, Query(ge=1, le=36)] = 12) -> list[dict[str, Any]]:
    cases.tick(conn, now_ms=now_ms(), answer_s=settings.complaint_answer_hours * 3600)
    return cases.monthly_figures(conn, market_id=market, now_ms=now_ms(), months=months)


def _list(name: str, conn: ConnDep) -> list[dict[str, Any]]:
    try:
        return trust_lists.public_list(conn, name, now_ms=now_ms())
    except ValueError as err:  # pragma: no cover - the path is a closed set
        raise HTTPException(404, str(err)) from err


@router.get("/red-list", summary="红榜: merchants commended, with reason, date and expiry")
def red_list(conn: ConnDep) -> list[dict[str, Any]]:
    return _list("red", conn)


@router.get("/black-list", summary="黑榜: merchants blacklisted, with reason, date and expiry")
def black_list(conn: ConnDep) -> list[dict[str, Any]]:
    return _list("black", conn)
