"""Scales, weighings (sales), dead letters: what the ingest stored."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel

from gateway_server.api.auth import AdminUser, now_ms
from gateway_server.api.deps import (
    IngestorDep,
    MsQuery,
    OffsetQuery,
    RowIdQuery,
    SettingsDep,
    StoreDep,
)
from gateway_server.ingest.pipeline import Limits
from gateway_server.ingest.quarantine import NotReleasableError, release_device

T = TypeVar("T")
router = APIRouter(prefix="/api/v1")


class ScaleOut(BaseModel):
    device: str
    market: str
    role: str
    profile: str | None
    protocol: str | None
    max_mg: int | None
    e_mg: int | None
    accuracy_class: str | None
    serial: str | None
    state: str
    state_ms: int | None
    last_seen_ms: int | None
    live_net_mg: int | None = None
    live_ts_ms: int | None = None


class WeighingOut(BaseModel):
    id: int
    device: str
    market: str
    seq: int
    ts_ms: int
    received_ms: int
    net_mg: int
    settled_mg: int
    peak_mg: int
    tare_mg: int
    stable_device: bool
    stable_software: bool
    unsettled_commit: bool
    duration_ms: int
    unit_price_fen_per_kg: int | None
    amount_fen: int | None
    plu: str | None
    trace_code: str | None
    signed: bool


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class DeadLetterOut(BaseModel):
    id: int
    received_ms: int
    topic: str
    reason: str
    #: what kind of bad input it was, for people (zh-CN, then English); ``reason`` has detail
    label: str
    size: int
    payload_head: str


#: (text in the reason, label) in the order they are tried: the first match names it
_DEAD_LABELS = (
    ("signature", "签名无效或缺失 Signature invalid or missing"),
    ("NUL character", "含不可存储的 NUL 字符 Text with a NUL character"),
    ("before receipt", "设备时间过早 Device time too far in the past"),
    ("after receipt", "设备时间超前 Device time too far ahead"),
    ("seq_jump_max", "序号跳变过大 Sequence number jump"),
    ("negative sale weight", "销售重量为负 Negative sale weight"),
    ("Max + 9 e", "超出秤的示值范围 (Max + 9e) Weight beyond Max + 9 e"),
    ("registered in market", "设备不属于该市场 Device of another market"),
    ("exceeds", "消息过大 Message too large"),
    ("malformed JSON", "格式错误 Malformed message"),
    ("store failed", "数据库拒绝 Refused by the database"),
    ("$.events[", "单条事件不合规 One event fails the contract"),
)


def dead_letter_label(reason: str) -> str:
    """A readable name for a dead letter's reason (zh-CN first, English second)."""
    for needle, label in _DEAD_LABELS:
        if needle in reason:
            return label
    return "消息不合规 Message fails the contract"



@router.get("/scales", response_model=list[ScaleOut], tags=["scales"])
def list_scales(
    store: StoreDep, ingestor: IngestorDep, market: str | None = None
) -> list[dict[str, Any]]:
    rows = store.list_scales(market)
    live = ingestor.latest if ingestor else {}
    for r in rows:
        if r["device"] in live:
            r["live_ts_ms"], r["live_net_mg"], _ = live[r["device"]]
    return rows


@router.get("/weighings", response_model=Page[WeighingOut], tags=["weighings"])
def list_weighings(
    store: StoreDep,
    market: str | None = None,
    device: str | None = None,
    merchant_id: RowIdQuery = None,
    since_ms: MsQuery = None,
    until_ms: MsQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: OffsetQuery = 0,
) -> dict[str, Any]:
    items, total = store.list_sales(
        market=market, device=device, merchant_id=merchant_id, since_ms=since_ms,
        until_ms=until_ms, limit=limit, offset=offset,
    )
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/dead-letters", response_model=list[DeadLetterOut], tags=["ops"])
def list_dead_letters(
    store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    out = []
    for r in store.list_dead_letters(limit):
        r["payload_head"] = bytes(r.pop("payload"))[:200].decode("utf-8", "replace")
        r["label"] = dead_letter_label(r["reason"])
        out.append(r)
    return out


class QuarantinedOut(BaseModel):
    id: int
    received_ms: int
    topic: str
    market: str
    device: str
    payload_head: str


@router.get("/quarantine", response_model=list[QuarantinedOut], tags=["ops"],
            summary="Messages of devices not in the register, kept for release")
def list_quarantine(
    store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    out = []
    for r in store.list_quarantine(limit):
        r["payload_head"] = bytes(r.pop("payload"))[:200].decode("utf-8", "replace")
        out.append(r)
    return out


class ReleaseOut(BaseModel):
    device: str
    released: int  # quarantined messages ingested (and removed from the quarantine)
    sales: int  # new sales stored
    events: int  # other new events stored
    duplicates: int  # already stored (redelivered before the release)
    dead_letters: int  # refused on release (signature, plausibility), with reasons
    samples: int
    bad_signatures: int


@router.post("/quarantine/{device}/release", response_model=ReleaseOut, tags=["ops"],
             summary="Ingest the quarantined messages of a device now in the register",
             responses={409: {"description": "the device is not in the register (yet)"}})
def release_quarantine(
    store: StoreDep, settings: SettingsDep, _: AdminUser,
    device: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")],
) -> dict[str, Any]:
    """Runs the held messages through the whole pipeline (signature with the registered
    key, plausibility, deduplication, detectors) and removes them from the quarantine.
    409 while the device is not registered: register it first."""
    try:
        out = release_device(store, device, now_ms=now_ms(),
                             limits=Limits.from_settings(settings))
    except NotReleasableError as err:
        raise HTTPException(409, f"设备未登记，不能放行 {err}") from None
    return {"device": device, **out}
