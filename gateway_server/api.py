"""HTTP API (``/api/v1``), health, and the inspector dashboard page.

Thin routes: each one asks the store (or the ingest's live state) and shapes the answer.
The app is built by :func:`create_app` with its dependencies passed in, never at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from gateway_server.ingest import Ingestor
from gateway_server.store import Store

STATIC = Path(__file__).with_name("static")
T = TypeVar("T")


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
    size: int
    payload_head: str


def create_app(store: Store, ingestor: Ingestor | None = None) -> FastAPI:
    app = FastAPI(
        title="智慧计量秤网关 Smart-scale gateway",
        version="0.1.0",
        description="Market-supervision gateway: scales, weighings, findings (zh-CN / en).",
    )
    app.state.store = store
    app.state.ingestor = ingestor

    @app.get("/healthz", tags=["ops"])
    def healthz() -> JSONResponse:
        db_ok = True
        try:
            store.ping()
        except Exception:
            db_ok = False
        body: dict[str, Any] = {"status": "ok" if db_ok else "degraded", "db": db_ok}
        if ingestor is not None:
            body["mqtt_connected"] = ingestor.stats.connected
            body["ingest"] = ingestor.stats.as_dict()
        return JSONResponse(body, status_code=200 if db_ok else 503)

    @app.get("/api/v1/scales", response_model=list[ScaleOut], tags=["scales"])
    def list_scales(market: str | None = None) -> list[dict[str, Any]]:
        rows = store.list_scales(market)
        live = ingestor.latest if ingestor else {}
        for r in rows:
            if r["device"] in live:
                r["live_ts_ms"], r["live_net_mg"], _ = live[r["device"]]
        return rows

    @app.get("/api/v1/weighings", response_model=Page[WeighingOut], tags=["weighings"])
    def list_weighings(
        market: str | None = None,
        device: str | None = None,
        since_ms: Annotated[int | None, Query(ge=0)] = None,
        until_ms: Annotated[int | None, Query(ge=0)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        items, total = store.list_sales(
            market=market, device=device, since_ms=since_ms, until_ms=until_ms,
            limit=limit, offset=offset,
        )
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    @app.get("/api/v1/dead-letters", response_model=list[DeadLetterOut], tags=["ops"])
    def list_dead_letters(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        out = []
        for r in store.list_dead_letters(limit):
            r["payload_head"] = bytes(r.pop("payload"))[:200].decode("utf-8", "replace")
            out.append(r)
        return out

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(request: Request) -> HTMLResponse:
        return HTMLResponse((STATIC / "dashboard.html").read_text(encoding="utf-8"))

    return app
