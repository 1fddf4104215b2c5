"""The app factory: HTTP API (``/api/v1``), health, and the inspector dashboard page.

Routes live in ``gateway_server/routes/``; they reach shared state only through
``gateway_server/deps.py``. Nothing is built at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

from gateway_server.ingest import Ingestor
from gateway_server.routes import events as events_routes
from gateway_server.settings import Settings
from gateway_server.store import Store

STATIC = Path(__file__).with_name("static")


def create_app(store: Store, ingestor: Ingestor | None = None,
               settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="智慧计量秤网关 Smart-scale gateway",
        version="0.1.0",
        description="Market-supervision gateway: scales, weighings, findings (zh-CN / en).",
    )
    app.state.store = store
    app.state.ingestor = ingestor
    app.state.settings = settings or Settings()
    app.include_router(events_routes.router)

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

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse((STATIC / "dashboard.html").read_text(encoding="utf-8"))

    return app
