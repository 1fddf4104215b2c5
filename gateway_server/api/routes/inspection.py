"""The risk-ranked inspection queue, tasks, results, re-weighs, repairs, complaints and the
live event stream (SSE); the findings (``routes/findings.py``) and the tolerance calculator
(``routes/metrology.py``) are included in this router.

Thin: each route parses its input, calls one service of :mod:`gateway_server.casework`
(``inspection``, ``queue_rows``, ``records``, ``complaints``, ``compensation``) and shapes
the answer.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from gateway_server.api.auth import AdminUser, CurrentUser, now_ms
from gateway_server.api.deps import OffsetQuery, RowIdPath, RowIdQuery, StoreDep
from gateway_server.api.ratelimit import public_rate_limit
from gateway_server.api.routes import findings as finding_routes, metrology as metrology_routes
from gateway_server.casework import (
    compensation,
    complaints as complaint_work,
    inspection as insp,
    queue_rows,
    records,
)
from gateway_server.casework.findings import finding_out as _finding, rows as _rows
from gateway_server.ingest import livefeed
from gateway_server.store.tables import BIGINT_MAX
from weighing import metrology as mt

router = APIRouter(prefix="/api/v1")
public_router = APIRouter(prefix="/api/v1/public", tags=["public"])
router.include_router(finding_routes.router)
class QueueItem(BaseModel):
    device: str
    market: str
    merchant_id: int | None
    risk: int = Field(description="10 × evidence, rounded (sortable)")
    reasons: list[dict[str, Any]] = Field(description=(
        "per finding kind: kind, title, count, severity, finding_ids (newest first), "
        "p_day (stated probability that an honest scale shows it on a day; null: none "
        "stated), weight (−log10 p_day; 0: an observation), family, counted (it counts on "
        "the strongest day); verification-overdue carries due_on_ms"))
    test_loads_mg: list[int]
    evidence: float = Field(0.0, description=(
        "−log10 p_honest_day of the strongest market day since the last inspection: "
        "honest odds 1 : 10^evidence"))
    p_honest_day: float = Field(1.0, description=(
        "probability that an honest scale has a market day with this much evidence"))
    day_ms: int | None = Field(None, description="start of that market day (CST)")
    in_queue: bool = False
    grounds: list[Literal["evidence", "verification-overdue"]] = Field(
        default_factory=list, description="why the scale is in the queue")


class Shortfall(BaseModel):
    """What the evidence of the strongest day quantifies (gateway_server/casework/queue_rows.py)."""

    kind: str
    short_mg: int | None = Field(description="mass short in the evidenced sales, mg")
    sold_mg: int | None = Field(description="mass sold in those sales, mg")
    sales: int = Field(description="sales the evidence covers")
    fen: int = Field(description="their money short (overcharged), fen")
    fen_per_day: int | None = Field(description="estimate for the scale's whole market day, fen")
    basis: str = Field(description="share-of-turnover | offset-per-sale | evidenced-sales | "
                       "fitted-error")
    per_sale_mg: int | None = None
    day_sales: int
    day_turnover_fen: int


class QueueRow(QueueItem):
    merchant_at_ms: int = Field(description="the merchant is the scale's binding at this time")
    merchant_name: str | None
    stall_no: str | None
    market_name: str | None
    market_name_en: str | None
    scale_model: str | None
    scale_role: str | None
    shortfall: Shortfall | None
    task_open: bool = Field(False, description="an inspection task for the scale is open")


SeverityQuery = Annotated[Literal["info", "low", "medium", "high", "critical"] | None, Query(
    description="rows with a finding kind of at least this severity")]
QueueStatusQuery = Annotated[Literal["untasked", "tasked"] | None, Query(
    description="untasked: no open inspection task for the scale; tasked: one is open")]


@router.get("/inspection-queue", response_model=list[QueueRow], tags=["inspection"],
            summary="Scales whose evidence crosses the threshold (then those overdue for "
                    "verification), strongest first, with reasons, the test loads to use, "
                    "where (market, stall, merchant bound at the time) and how much")
def inspection_queue(store: StoreDep, market: str | None = None,
                     kind: str | None = None, severity: SeverityQuery = None,
                     status: QueueStatusQuery = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                     offset: OffsetQuery = 0) -> list[dict[str, Any]]:
    with store.engine.connect() as c:
        return queue_rows.queue_page(c, now_ms=now_ms(), market=market, kind=kind,
                                     severity=severity, status=status, limit=limit,
                                     offset=offset)


QUEUE_CSV = (("rank", "序号"), ("market", "市场"), ("stall_no", "摊位号"),
             ("merchant", "商户（当时绑定）"), ("scale", "计量秤"), ("evidence", "证据"),
             ("grounds", "理由"), ("kinds", "问题"), ("short_g", "短少 (g)"),
             ("sold_g", "售出 (g)"), ("overcharged_yuan", "多收 (元)"),
             ("per_day_yuan", "估计当天 (元)"), ("test_loads_kg", "试验载荷 (kg)"),
             ("device", "设备编号"))


@router.get("/inspection-queue.csv", response_class=Response, tags=["inspection"],
            summary="The inspection queue as CSV (same filters; zh-CN or English headers)",
            responses={200: {"content": {"text/csv": {}}}})
def inspection_queue_csv(store: StoreDep, market: str | None = None, kind: str | None = None,
                         severity: SeverityQuery = None, status: QueueStatusQuery = None,
                         lang: Literal["zh", "en"] = "zh") -> Response:
    with store.engine.connect() as c:
        rows = queue_rows.queue_page(c, now_ms=now_ms(), market=market, kind=kind,
                                     severity=severity, status=status, limit=1000, offset=0)
    return Response(queue_rows.queue_csv(rows, QUEUE_CSV, lang=lang),
                    media_type="text/csv; charset=utf-8", headers={
                        "Content-Disposition": 'attachment; filename="inspection-queue.csv"',
                        "Cache-Control": "private, no-store"})


class RiskKind(BaseModel):
    kind: str
    severity: str | None = Field(description="null: any severity")
    p_day: float
    weight: float
    family: str
    counts: bool = Field(description="false: an observation, it weighs nothing")
    why: str


class RiskModelOut(BaseModel):
    alpha_day: float = Field(description="a scale enters the queue on a market day whose "
                             "p_honest_day is at most this")
    threshold_evidence: float = Field(description="−log10 alpha_day")
    honest_entry_p_day: float = Field(description="probability that an honest scale enters "
                                      "the queue on a given day (≤ alpha_day)")
    honest_entry_p_month: float = Field(description="the same over 30 days (union bound)")
    observation_p: float
    kinds: list[RiskKind]


@router.get("/risk/model", response_model=RiskModelOut, tags=["inspection"],
            summary="The evidence table and the queue threshold (docs/detection.md)")
def risk_model() -> dict[str, Any]:
    return insp.model_summary()


@router.get("/risk/scales/{device}", response_model=QueueItem, tags=["inspection"],
            responses={404: {"description": "no such scale"}},
            summary="One scale's evidence, in the queue or not (observations included)")
def scale_risk(store: StoreDep, device: str) -> dict[str, Any]:
    with store.engine.connect() as c:
        r = insp.scale_risk(c, device, now_ms=now_ms())
    if r is None:
        raise HTTPException(404, f"no scale {device}")
    return queue_rows.queue_item(r)


class MerchantRiskOut(BaseModel):
    merchant_id: int
    in_queue: bool
    evidence: float
    p_honest_day: float
    device: str | None = Field(description="the scale with the strongest evidence")
    scales: list[QueueItem]


@router.get("/risk/merchants/{merchant_id}", response_model=MerchantRiskOut,
            tags=["inspection"], responses={404: {"description": "no such merchant"}},
            summary="A merchant's scales and their evidence (the strongest decides)")
def merchant_risk(store: StoreDep, merchant_id: RowIdPath) -> dict[str, Any]:
    with store.engine.connect() as c:
        try:
            r = insp.merchant_risk(c, merchant_id, now_ms=now_ms())
        except LookupError as err:
            raise HTTPException(404, str(err)) from err
    return r | {"scales": [queue_rows.queue_item(x) for x in r["scales"]]}


class TaskIn(BaseModel):
    device: str
    reason: str = Field("", max_length=2000)


class TaskOut(BaseModel):
    id: int
    device: str
    market: str
    merchant_id: int | None
    created_ms: int
    risk: int
    reason: str
    finding_ids: list[int]
    test_loads_mg: list[int]
    status: str


@router.post("/inspection-tasks", response_model=TaskOut, status_code=201, tags=["inspection"])
def create_task(store: StoreDep, user: CurrentUser, body: TaskIn) -> dict[str, Any]:
    with store.engine.begin() as c:
        try:
            task = insp.create_task(c, device=body.device, now_ms=now_ms(),
                                    reason=body.reason, created_by=user.id)
        except LookupError as err:
            raise HTTPException(404, str(err)) from err
    return records.task_out(task)


@router.get("/inspection-tasks", response_model=list[TaskOut], tags=["inspection"])
def list_tasks(store: StoreDep, status: str | None = "open",
               market: str | None = None) -> list[dict[str, Any]]:
    with store.engine.connect() as c:
        return records.list_tasks(c, status=status, market=market)


class LoadIn(BaseModel):
    load_mg: int = Field(gt=0, description="conventional true value of the test weights, mg")
    indication_mg: int = Field(description="what the scale indicated, mg")


class InspectionIn(BaseModel):
    device: str
    task_id: int | None = Field(None, ge=1, le=BIGINT_MAX)
    loads: list[LoadIn] = Field(min_length=1, max_length=50)
    fraud: bool = Field(False, description="cheating established (作弊): red card, black list")
    notes: str = Field("", max_length=4000)


@router.post("/inspections", status_code=201, tags=["inspection"],
             summary="Record an inspection: each load judged against the in-service MPE")
def record_inspection(store: StoreDep, user: CurrentUser, body: InspectionIn) -> dict[str, Any]:
    with store.engine.begin() as c:
        try:
            r = insp.record_result(c, device=body.device, task_id=body.task_id,
                                   pairs=[(x.load_mg, x.indication_mg) for x in body.loads],
                                   now_ms=now_ms(), inspector=user.username, fraud=body.fraud,
                                   notes=body.notes)
        except LookupError as err:
            raise HTTPException(404, str(err)) from err
        except mt.MetrologyError as err:  # a load beyond the scale's table, a class without one
            raise HTTPException(422, str(err)) from err
    r.pop("loads", None)
    return r


@router.get("/inspections", tags=["inspection"])
def list_inspections(store: StoreDep, device: str | None = None,
                     merchant_id: RowIdQuery = None) -> list[dict[str, Any]]:
    with store.engine.connect() as c:
        return records.list_inspections(c, device=device, merchant_id=merchant_id)


@router.get("/reweighs", tags=["inspection"], summary="Fair-scale re-weighs and their verdicts")
def list_reweighs(store: StoreDep, merchant_id: RowIdQuery = None, device: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
    with store.engine.connect() as c:
        return records.list_reweighs(c, merchant_id=merchant_id, device=device, limit=limit)


class RepairIn(BaseModel):
    device: str
    kind: Literal["repair", "verification"]
    ts_ms: int = Field(ge=0, le=BIGINT_MAX)
    by: str = Field("", max_length=128)
    note: str = Field("", max_length=2000)


@router.post("/repairs", status_code=201, tags=["inspection"],
             summary="Register a repair or verification (explains counter changes)")
def register_repair(store: StoreDep, user: AdminUser, body: RepairIn) -> dict[str, Any]:
    with store.engine.begin() as c:
        try:
            return records.register_repair(c, body.model_dump())
        except LookupError as err:
            raise HTTPException(404, str(err)) from err


# -- complaints ----------------------------------------------------------------------------

class ComplaintIn(BaseModel):
    trust_token: str = Field(min_length=8, max_length=64)
    text: str = Field(min_length=2, max_length=2000)
    trace_code: str | None = Field(None, max_length=256)
    contact: str | None = Field(None, max_length=128)


@public_router.post("/complaints", status_code=201,
                    dependencies=[Depends(public_rate_limit)],
                    summary="A consumer complaint from the trust-code page (no login)")
def create_complaint(store: StoreDep, body: ComplaintIn) -> dict[str, Any]:
    with store.engine.begin() as c:
        try:
            made = complaint_work.record_complaint(
                c, trust_token=body.trust_token, text=body.text, trace_code=body.trace_code,
                contact=body.contact, now_ms=now_ms())
        except LookupError as err:
            raise HTTPException(404, str(err)) from err
    return {"id": made["id"], "linked_sale": made["sale_id"] is not None,
            "linked_reweigh": made["reweigh_id"] is not None,
            "message": "已受理 received; 也可拨打 12315 / or call 12315"}


@router.get("/complaints", tags=["inspection"])
def list_complaints(store: StoreDep, merchant_id: RowIdQuery = None) -> list[dict[str, Any]]:
    # compensation_fen where fraud is established for the complaint's sale (消保法 Art. 55:
    # 3 × the price, at least 500 yuan): gateway_server.casework.compensation
    with store.engine.connect() as c:
        return compensation.list_complaints(c, merchant_id=merchant_id)


router.include_router(metrology_routes.router)


# -- live stream ---------------------------------------------------------------------------

@router.get("/stream", tags=["live"], summary="Server-sent events: new sales and findings",
            response_class=StreamingResponse)
async def stream(request: Request, store: StoreDep, market: str | None = None,
                 poll_s: Annotated[float, Query(ge=0.2, le=10)] = 1.0) -> StreamingResponse:
    """Pushed on commit by the ingest (gateway_server.ingest.livefeed: in-process, or PostgreSQL
    LISTEN/NOTIFY from any worker); ``poll_s`` is the longest between looks without one."""
    after = livefeed.start_marks(store.engine)
    gen = partial(livefeed.stream_events, store.engine, after, market=market, poll_s=poll_s,
                  is_disconnected=request.is_disconnected, rows=_rows, finding_out=_finding)
    return StreamingResponse(gen(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
