"""Findings and incidents (findings grouped per scale and kind): list, count, read, set.

Included into :mod:`gateway_server.api.routes.inspection`'s router, so the app adds them with
its authentication; the work is :mod:`gateway_server.casework.findings` and
:mod:`gateway_server.casework.queue_rows`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from gateway_server.api.auth import CurrentUser
from gateway_server.api.deps import OffsetQuery, RowIdPath, RowIdQuery, StoreDep
from gateway_server.casework import findings as finding_work, queue_rows

router = APIRouter()


class FindingOut(BaseModel):
    id: int
    kind: str
    severity: str
    market: str
    device: str | None
    merchant_id: int | None
    ts_ms: int
    created_ms: int
    status: str
    title: str
    legal_basis: str = Field(description=(
        "the reviewed legal ground of the finding's kind (gateway_server/detect/rules/legal.py, "
        "docs/metrology.md 'Legal grounds'); technical findings cite no law"))
    legal_basis_en: str = Field("", description="its English gloss")
    legal_technical: bool = Field(False, description="a technical finding: no legal basis")
    evidence: dict[str, Any]


@router.get("/findings", response_model=list[FindingOut], tags=["findings"],
            summary="Findings, newest first (filters: market, device, merchant, kind, status)")
def list_findings(store: StoreDep, market: str | None = None, device: str | None = None,
                  merchant_id: RowIdQuery = None, kind: str | None = None,
                  status: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  offset: OffsetQuery = 0) -> list[dict[str, Any]]:
    with store.engine.connect() as c:
        return finding_work.list_findings(c, market=market, device=device,
                                          merchant_id=merchant_id, kind=kind, status=status,
                                          limit=limit, offset=offset)


@router.get("/findings/summary", tags=["findings"], summary="Open findings counted by kind")
def findings_summary(store: StoreDep, market: str | None = None) -> dict[str, int]:
    with store.engine.connect() as c:
        return finding_work.open_by_kind(c, market=market)


@router.get("/findings/{finding_id}", response_model=FindingOut, tags=["findings"],
            responses={404: {"description": "no such finding"}})
def get_finding(store: StoreDep, finding_id: RowIdPath) -> dict[str, Any]:
    with store.engine.connect() as c:
        try:
            return finding_work.get_finding(c, finding_id)
        except LookupError as err:
            raise HTTPException(404, str(err)) from err


class FindingStatusIn(BaseModel):
    status: Literal["open", "confirmed", "dismissed"]


@router.post("/findings/{finding_id}/status", response_model=FindingOut, tags=["findings"])
def set_finding_status(store: StoreDep, user: CurrentUser, finding_id: RowIdPath,
                       body: FindingStatusIn) -> dict[str, Any]:
    with store.engine.begin() as c:
        try:
            return finding_work.set_status(c, finding_id, body.status)
        except LookupError as err:
            raise HTTPException(404, str(err)) from err


class IncidentOut(BaseModel):
    device: str | None
    kind: str
    market: str
    merchant_id: int | None
    count: int
    first_ms: int
    last_ms: int
    last_id: int = Field(description="the newest finding of the incident")
    title: str
    severity: str = Field(description="the highest of its findings")
    status: Literal["open", "confirmed", "dismissed"] = Field(
        description="open while any finding is open, else confirmed if any was")
    open: int
    confirmed: int
    dismissed: int


@router.get("/incidents", response_model=list[IncidentOut], tags=["findings"],
            summary="Findings grouped into one incident per scale and kind, newest first")
def list_incidents(store: StoreDep, device: str | None = None, market: str | None = None,
                   merchant_id: RowIdQuery = None,
                   status: Literal["open", "confirmed", "dismissed"] | None = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
    with store.engine.connect() as c:
        return queue_rows.incidents(c, device=device, market=market, merchant_id=merchant_id,
                                    status=status, limit=limit)
