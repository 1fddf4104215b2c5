"""The bureau's side of the trust programme (staff accounts; writes need admin): merchant
accounts (invitation), the audit trail, the business-register status feed, complaint
mediation, red/black list entries, webhooks and their delivery log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from gateway_server.api.auth import R401, R403, R404, R409, AdminUser, ConnDep, CurrentUser, now_ms
from gateway_server.api.deps import RowIdPath, RowIdQuery, SettingsDep
from gateway_server.casework import complaints as cases
from gateway_server.registry import register as reg
from gateway_server.registry.register_csv import CsvFormatError
from gateway_server.trust import (
    lists as trust_lists,
    merchant_portal as portal,
    statusfeed,
    webhooks,
)

router = APIRouter(prefix="/api/v1", tags=["trust programme"],
                   responses={**R401, **R403, **R404})


class AccountIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class MediateIn(BaseModel):
    note: str = Field("", max_length=2000)


class CloseIn(BaseModel):
    outcome: cases.Outcome
    note: str = Field("", max_length=2000)
    compensation_fen: int | None = Field(None, ge=0, le=10**12,
                                         description="refund or compensation, fen")


class ListEntryIn(BaseModel):
    merchant_id: int = Field(ge=1, le=2**63 - 1)
    reason: str = Field(min_length=2, max_length=trust_lists.REASON_MAX)
    until: str | None = Field(None, max_length=32,
                              description="expiry date (CST; the entry ends at its start)")


class EndIn(BaseModel):
    reason: str = Field("", max_length=500)


class WebhookIn(BaseModel):
    url: str = Field(min_length=8, max_length=1024)
    events: list[webhooks.Event] = Field(default_factory=list,
                                         description="empty: every event")


class WebhookPatch(BaseModel):
    active: bool


# -- merchant accounts and the audit trail -------------------------------------------------

@router.post("/merchants/{merchant_id}/accounts", status_code=201, responses=R409,
             summary="Invite a merchant: an account that sees this merchant's data only")
def invite(merchant_id: RowIdPath, body: AccountIn, user: AdminUser,
           conn: ConnDep) -> dict[str, Any]:
    u = portal.create_account(conn, merchant_id, username=body.username,
                              password=body.password, now_ms=now_ms(), actor=user.username)
    return {"id": u.id, "username": u.username, "role": u.role, "merchant_id": u.merchant_id}


@router.get("/merchants/{merchant_id}/accounts", summary="A merchant's accounts")
def accounts(merchant_id: RowIdPath, _: AdminUser, conn: ConnDep) -> list[dict[str, Any]]:
    reg.get_merchant(conn, merchant_id)
    return portal.accounts_of(conn, merchant_id)


@router.get("/audit", summary="The audit log (append-only), newest first")
def audit(_: CurrentUser, conn: ConnDep, merchant_id: RowIdQuery = None,
          subject: Annotated[str | None, Query(max_length=64)] = None,
          limit: Annotated[int, Query(ge=1, le=portal.AUDIT_LIMIT_MAX)] = 200,
          ) -> list[dict[str, Any]]:
    return portal.audit_trail(conn, subject=subject, merchant_id=merchant_id, limit=limit)


# -- the business-register status feed -----------------------------------------------------

@router.post("/status-feed", summary="Import a business-register status CSV",
             description="Columns 统一社会信用代码 / credit_code, 登记状态 / status, 日期 / date, "
             "optional 原因 / reason (docs/registry.md). Body: the CSV (text/csv). Every bad "
             "row is reported and changes nothing; the good rows are applied.",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/csv": {"schema": {"type": "string"}}}}},
             responses={422: {"description": "The file cannot be read"}})
async def status_feed(request: Request, user: AdminUser, conn: ConnDep) -> dict[str, Any]:
    data = await request.body()
    try:
        rep = statusfeed.import_feed(conn, data, now_ms=now_ms(), actor=user.username,
                                     source="upload")
    except CsvFormatError as err:
        raise HTTPException(422, [{"loc": ["body"], "msg": str(err),
                                   "type": "value_error"}]) from err
    return rep.as_dict()


# -- complaint cases -----------------------------------------------------------------------

@router.get("/complaint-cases", summary="Complaint cases with their clock (staff)")
def list_cases(_: CurrentUser, conn: ConnDep, settings: SettingsDep,
               state: cases.CaseState | None = None,
               market: Annotated[str | None, Query(max_length=64)] = None,
               merchant_id: RowIdQuery = None) -> list[dict[str, Any]]:
    cases.tick(conn, now_ms=now_ms(), answer_s=settings.complaint_answer_hours * 3600)
    return cases.list_cases(conn, state=None if state is None else state.value,
                            market_id=market, merchant_id=merchant_id)


@router.post("/complaint-cases/{number}/mediate", summary="The bureau mediates",
             responses=R409)
def mediate(number: str, body: MediateIn, user: AdminUser, conn: ConnDep) -> dict[str, Any]:
    return cases.mediate(conn, number, body.note, actor=user.username, now_ms=now_ms())


@router.post("/complaint-cases/{number}/close", summary="Close with an outcome",
             responses=R409)
def close(number: str, body: CloseIn, user: AdminUser, conn: ConnDep) -> dict[str, Any]:
    return cases.close(conn, number, body.outcome.value, body.note, actor=user.username,
                       now_ms=now_ms(), compensation_fen=body.compensation_fen)


# -- red / black list entries --------------------------------------------------------------

@router.get("/lists/{list_name}/entries", summary="Active entries of the red or black list")
def list_entries(list_name: trust_lists.ListName, _: CurrentUser,
                 conn: ConnDep) -> list[dict[str, Any]]:
    trust_lists.expire(conn, now_ms=now_ms())
    return trust_lists.active_entries(conn, list_name=list_name.value)


@router.post("/lists/{list_name}/entries", status_code=201, responses=R409,
             summary="Put a merchant on the red or black list (optional expiry)")
def add_list_entry(list_name: trust_lists.ListName, body: ListEntryIn, user: AdminUser,
                   conn: ConnDep) -> dict[str, Any]:
    until = reg.parse_date_ms(body.until, field="until") if body.until else None
    return trust_lists.add_entry(conn, body.merchant_id, list_name.value, body.reason,
                                 actor=user.username, now_ms=now_ms(), until_ms=until)


@router.post("/list-entries/{entry_id}/end", summary="Take a merchant off its list",
             responses=R409)
def end_list_entry(entry_id: RowIdPath, body: EndIn, user: AdminUser,
                   conn: ConnDep) -> dict[str, Any]:
    return trust_lists.end_entry(conn, entry_id, body.reason, actor=user.username,
                                 now_ms=now_ms())


# -- webhooks ------------------------------------------------------------------------------

@router.get("/webhooks", summary="Webhook endpoints (secrets are never shown again)")
def list_webhooks(_: AdminUser, conn: ConnDep) -> list[dict[str, Any]]:
    return webhooks.list_endpoints(conn)


@router.post("/webhooks", status_code=201, summary="Add an endpoint; its secret, once")
def add_webhook(body: WebhookIn, _: AdminUser, conn: ConnDep) -> dict[str, Any]:
    return webhooks.add_endpoint(conn, url=body.url, events=[e.value for e in body.events],
                                 now_ms=now_ms())


@router.patch("/webhooks/{endpoint_id}", summary="Pause or resume an endpoint")
def patch_webhook(endpoint_id: RowIdPath, body: WebhookPatch, _: AdminUser,
                  conn: ConnDep) -> dict[str, Any]:
    return webhooks.set_active(conn, endpoint_id, body.active)


@router.get("/webhooks/{endpoint_id}/deliveries", summary="The delivery log, newest first")
def webhook_deliveries(endpoint_id: RowIdPath, _: AdminUser,
                       conn: ConnDep) -> list[dict[str, Any]]:
    return webhooks.deliveries(conn, endpoint_id)
