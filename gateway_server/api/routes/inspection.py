"""Findings, the risk-ranked inspection queue, tasks, results, re-weighs, repairs,
complaints, the tolerance calculator, and the live event stream (SSE)."""

from __future__ import annotations

import json
import math
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from gateway_server.api.auth import AdminUser, CurrentUser, now_ms
from gateway_server.api.deps import OffsetQuery, RowIdPath, RowIdQuery, StoreDep
from gateway_server.api.ratelimit import public_rate_limit
from gateway_server.casework import inspection as insp
from gateway_server.casework import queue_rows
from gateway_server.detect import risk
from gateway_server.detect.rules import legal
from gateway_server.ingest import livefeed
from gateway_server.store.tables import BIGINT_MAX, findings, merchants, sales, scales
from gateway_server.store.tables_workflow import (
    complaints,
    inspection_results,
    inspection_tasks,
    repairs,
    reweighs,
)
from weighing import metrology as mt

router = APIRouter(prefix="/api/v1")
public_router = APIRouter(prefix="/api/v1/public", tags=["public"])


def _rows(result: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]


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


def _finding(r: dict[str, Any]) -> dict[str, Any]:
    r = dict(r)
    r["evidence"] = json.loads(r["evidence"] or "{}")
    r.pop("dedup_key", None)
    g = legal.ground_for(r["kind"], r.get("legal_basis") or "")
    r |= {"legal_basis": g.zh, "legal_basis_en": g.en, "legal_technical": g.technical}
    return r


@router.get("/findings", response_model=list[FindingOut], tags=["findings"],
            summary="Findings, newest first (filters: market, device, merchant, kind, status)")
def list_findings(store: StoreDep, market: str | None = None, device: str | None = None,
                  merchant_id: RowIdQuery = None, kind: str | None = None,
                  status: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  offset: OffsetQuery = 0) -> list[dict[str, Any]]:
    q = select(findings)
    for col, val in ((findings.c.market, market), (findings.c.device, device),
                     (findings.c.merchant_id, merchant_id), (findings.c.kind, kind),
                     (findings.c.status, status)):
        if val is not None:
            q = q.where(col == val)
    q = q.order_by(findings.c.ts_ms.desc(), findings.c.id.desc()).limit(limit).offset(offset)
    with store.engine.connect() as c:
        return [_finding(r) for r in _rows(c.execute(q))]


@router.get("/findings/summary", tags=["findings"], summary="Open findings counted by kind")
def findings_summary(store: StoreDep, market: str | None = None) -> dict[str, int]:
    q = select(findings.c.kind, func.count()).where(findings.c.status == "open")
    if market:
        q = q.where(findings.c.market == market)
    with store.engine.connect() as c:
        return {k: int(n) for k, n in c.execute(q.group_by(findings.c.kind))}


@router.get("/findings/{finding_id}", response_model=FindingOut, tags=["findings"],
            responses={404: {"description": "no such finding"}})
def get_finding(store: StoreDep, finding_id: RowIdPath) -> dict[str, Any]:
    with store.engine.connect() as c:
        r = c.execute(select(findings).where(findings.c.id == finding_id)).first()
    if r is None:
        raise HTTPException(404, f"no finding {finding_id}")
    return _finding(dict(r._mapping))


class FindingStatusIn(BaseModel):
    status: Literal["open", "confirmed", "dismissed"]


@router.post("/findings/{finding_id}/status", response_model=FindingOut, tags=["findings"])
def set_finding_status(store: StoreDep, user: CurrentUser, finding_id: RowIdPath,
                       body: FindingStatusIn) -> dict[str, Any]:
    with store.engine.begin() as c:
        n = c.execute(findings.update().where(findings.c.id == finding_id)
                      .values(status=body.status)).rowcount
        if not n:
            raise HTTPException(404, f"no finding {finding_id}")
        r = c.execute(select(findings).where(findings.c.id == finding_id)).first()
    assert r is not None
    return _finding(dict(r._mapping))


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


def _item(r: insp.ScaleRisk) -> dict[str, Any]:
    return r.__dict__ | {"grounds": list(r.grounds)}


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
        return _queue(c, market=market, kind=kind, severity=severity, status=status,
                      limit=limit, offset=offset)


def _queue(c: Any, *, market: str | None, kind: str | None, severity: str | None,
           status: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
    """The queue, filtered (kind among its reasons, a reason of at least ``severity``, an
    open task or none), then paged; each row with its context."""
    t = now_ms()
    rank = insp._SEVERITY_RANK
    tasked = {r.device for r in c.execute(select(inspection_tasks.c.device).where(
        inspection_tasks.c.status == "open"))}
    items = []
    for r in insp.risk_ranking(c, now_ms=t, market=market, limit=BIGINT_MAX):
        if kind and not any(x["kind"] == kind for x in r.reasons):
            continue
        if severity and not any(rank.get(x["severity"], 0) >= rank[severity]
                                for x in r.reasons):
            continue
        if status and (r.device in tasked) != (status == "tasked"):
            continue
        items.append(r)
    page = [_item(r) for r in items[offset:offset + limit]]
    return [x | queue_rows.row_context(c, x, now_ms=t) | {"task_open": x["device"] in tasked}
            for x in page]


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
        rows = _queue(c, market=market, kind=kind, severity=severity, status=status,
                      limit=1000, offset=0)
    return Response(queue_rows.queue_csv(rows, QUEUE_CSV, lang=lang),
                    media_type="text/csv; charset=utf-8", headers={
                        "Content-Disposition": 'attachment; filename="inspection-queue.csv"',
                        "Cache-Control": "private, no-store"})


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
    m = risk.DEFAULT_MODEL
    entry = m.honest_entry_p_day()
    return {"alpha_day": m.alpha_day, "threshold_evidence": -math.log10(m.alpha_day),
            "honest_entry_p_day": entry, "honest_entry_p_month": min(1.0, 30 * entry),
            "observation_p": m.observation_p,
            "kinds": [{"kind": k.kind, "severity": k.severity, "p_day": k.p_day,
                       "weight": round(k.weight, 3), "family": k.family,
                       "counts": k.p_day < m.observation_p, "why": k.why} for k in m.table]}


@router.get("/risk/scales/{device}", response_model=QueueItem, tags=["inspection"],
            responses={404: {"description": "no such scale"}},
            summary="One scale's evidence, in the queue or not (observations included)")
def scale_risk(store: StoreDep, device: str) -> dict[str, Any]:
    with store.engine.connect() as c:
        r = insp.scale_risk(c, device, now_ms=now_ms())
    if r is None:
        raise HTTPException(404, f"no scale {device}")
    return _item(r)


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
        if c.execute(select(merchants.c.id).where(merchants.c.id == merchant_id)).first() \
                is None:
            raise HTTPException(404, f"no merchant {merchant_id}")
        r = insp.merchant_risk(c, merchant_id, now_ms=now_ms())
    return r | {"scales": [_item(x) for x in r["scales"]]}


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


def _task(r: dict[str, Any]) -> dict[str, Any]:
    r = dict(r)
    r["finding_ids"] = json.loads(r["finding_ids"]) if isinstance(r["finding_ids"], str) \
        else r["finding_ids"]
    r["test_loads_mg"] = json.loads(r["test_loads_mg"]) if isinstance(r["test_loads_mg"], str) \
        else r["test_loads_mg"]
    return r


@router.post("/inspection-tasks", response_model=TaskOut, status_code=201, tags=["inspection"])
def create_task(store: StoreDep, user: CurrentUser, body: TaskIn) -> dict[str, Any]:
    with store.engine.begin() as c:
        try:
            return _task(insp.create_task(c, device=body.device, now_ms=now_ms(),
                                          reason=body.reason, created_by=user.id))
        except LookupError as err:
            raise HTTPException(404, str(err)) from err


@router.get("/inspection-tasks", response_model=list[TaskOut], tags=["inspection"])
def list_tasks(store: StoreDep, status: str | None = "open",
               market: str | None = None) -> list[dict[str, Any]]:
    q = select(inspection_tasks).order_by(inspection_tasks.c.risk.desc(),
                                          inspection_tasks.c.id)
    if status:
        q = q.where(inspection_tasks.c.status == status)
    if market:
        q = q.where(inspection_tasks.c.market == market)
    with store.engine.connect() as c:
        return [_task(r) for r in _rows(c.execute(q))]


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
    q = select(inspection_results).order_by(inspection_results.c.ts_ms.desc())
    if device:
        q = q.where(inspection_results.c.device == device)
    if merchant_id is not None:
        q = q.where(inspection_results.c.merchant_id == merchant_id)
    with store.engine.connect() as c:
        out = _rows(c.execute(q.limit(500)))
    for r in out:
        r["loads"] = json.loads(r["loads"])
    return out


@router.get("/reweighs", tags=["inspection"], summary="Fair-scale re-weighs and their verdicts")
def list_reweighs(store: StoreDep, merchant_id: RowIdQuery = None, device: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
    q = select(reweighs).order_by(reweighs.c.ts_ms.desc()).limit(limit)
    if merchant_id is not None:
        q = q.where(reweighs.c.merchant_id == merchant_id)
    if device:
        q = q.where((reweighs.c.sale_device == device) | (reweighs.c.device == device))
    with store.engine.connect() as c:
        return _rows(c.execute(q))


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
        if c.execute(select(scales.c.device).where(scales.c.device == body.device)).first() \
                is None:
            raise HTTPException(404, f"no scale {body.device}")
        rid = c.execute(repairs.insert().values(**body.model_dump()).returning(repairs.c.id))
        return body.model_dump() | {"id": int(rid.scalar_one())}


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
        m = c.execute(select(merchants.c.id).where(
            merchants.c.trust_token == body.trust_token)).first()
        if m is None:
            raise HTTPException(404, "unknown trust code")
        sale_id = reweigh_id = None
        if body.trace_code:
            s = c.execute(select(sales.c.id).where(sales.c.trace_code == body.trace_code,
                                                   sales.c.merchant_id == m.id)).first()
            sale_id = s.id if s else None
            rw = c.execute(select(reweighs.c.id).where(
                reweighs.c.trace_code == body.trace_code)).first()
            reweigh_id = rw.id if rw else None
        cid = c.execute(complaints.insert().values(
            merchant_id=m.id, sale_id=sale_id, reweigh_id=reweigh_id, ts_ms=now_ms(),
            channel="page", contact=body.contact, text=body.text, status="open",
        ).returning(complaints.c.id)).scalar_one()
    return {"id": int(cid), "linked_sale": sale_id is not None,
            "linked_reweigh": reweigh_id is not None,
            "message": "已受理 received; 也可拨打 12315 / or call 12315"}


@router.get("/complaints", tags=["inspection"])
def list_complaints(store: StoreDep, merchant_id: RowIdQuery = None) -> list[dict[str, Any]]:
    q = select(complaints, sales.c.amount_fen).join(
        sales, sales.c.id == complaints.c.sale_id, isouter=True).order_by(
        complaints.c.ts_ms.desc())
    if merchant_id is not None:
        q = q.where(complaints.c.merchant_id == merchant_id)
    with store.engine.connect() as c:
        out = _rows(c.execute(q.limit(500)))
        fraud = {r.merchant_id for r in c.execute(select(inspection_results.c.merchant_id)
                                                  .where(inspection_results.c.fraud == "yes"))}
    for r in out:
        # 消保法 Art. 55: 3 × the price, at least 500 yuan, where fraud is established
        r["compensation_fen"] = insp.compensation_for(r.pop("amount_fen")) \
            if r["merchant_id"] in fraud else None
    return out


# -- tolerance calculator ------------------------------------------------------------------

@router.get("/metrology/mpe", tags=["metrology"],
            summary="Maximum permissible error at a load (JJG 539 / OIML R76), exact, in mg")
def metrology_mpe(
    load_mg: Annotated[int, Query(ge=0)], e_mg: Annotated[int, Query(gt=0)],
    max_mg: Annotated[int | None, Query(gt=0)] = None,
    accuracy_class: Literal["I", "II", "III", "IIII"] = "III",
    stage: Literal["initial_verification", "subsequent_verification", "in_service"] =
    "in_service",
) -> dict[str, Any]:
    try:
        if max_mg is not None:
            mt.check_scale(max_mg, e_mg, mt.AccuracyClass(accuracy_class))
        mpe = mt.mpe_mg(load_mg, e_mg=e_mg, accuracy_class=mt.AccuracyClass(accuracy_class),
                        stage=mt.Stage(stage))
    except mt.MetrologyError as err:
        raise HTTPException(422, str(err)) from err
    return {"load_mg": load_mg, "e_mg": e_mg, "accuracy_class": accuracy_class, "stage": stage,
            "mpe_mg": str(mpe), "mpe_mg_num": mpe.numerator, "mpe_mg_den": mpe.denominator,
            "source": "JJG 539 / OIML R76-1 Table 6; in service = 2 × verification"}


@router.get("/metrology/retail-deviation", tags=["metrology"],
            summary="Allowed negative deviation of a retail sale (总局令第66号 附表1/2), mg")
def metrology_retail_deviation(
    weight_mg: Annotated[int, Query(ge=0)],
    category: mt.GoodsCategory | None = None,
    unit_price_fen_per_kg: Annotated[int | None, Query(ge=0)] = None,
) -> dict[str, Any]:
    if category is None and unit_price_fen_per_kg is None:
        raise HTTPException(422, "give a category or a unit price")
    try:
        dev = mt.retail_negative_deviation_mg(weight_mg, category=category,
                                              unit_price_fen_per_kg=unit_price_fen_per_kg)
        limits = {m.value: mt.reweigh_limit_mg(weight_mg, method=m, category=category,
                                               unit_price_fen_per_kg=unit_price_fen_per_kg)
                  for m in mt.ReweighMethod}
    except mt.MetrologyError as err:
        raise HTTPException(422, str(err)) from err
    return {"weight_mg": weight_mg, "category": category,
            "unit_price_fen_per_kg": unit_price_fen_per_kg, "negative_deviation_mg": dev,
            "reweigh_limit_mg": limits,
            "source": "零售商品称重计量监督管理办法 (总局令第66号, 第31号修订) 附表1/2, 第六条"}


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
