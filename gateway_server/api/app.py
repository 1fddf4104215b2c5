"""The app factory: HTTP API (``/api/v1``), health, and the inspector dashboard page.

Routes live in ``gateway_server/api/routes/``; they reach shared state only through
``gateway_server/api/deps.py``. Nothing is built at import time.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.exc import DataError

from gateway_server.api.auth import require_user
from gateway_server.api.routes import (
    applications as application_routes,
    auth as auth_routes,
    cases as case_routes,
    commands as command_routes,
    events as events_routes,
    inspection as inspection_routes,
    merchant as merchant_routes,
    pages,
    public as public_routes,
    qr as qr_routes,
    registry as registry_routes,
    stats as stats_routes,
    trust_admin,
    trust_pages,
    trust_public,
)
from gateway_server.ingest.ingestor import Ingestor
from gateway_server.settings import Settings
from gateway_server.store.database import Store


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

    @app.exception_handler(DataError)
    def data_error(request: Request, err: DataError) -> JSONResponse:
        # a value the database refuses (PostgreSQL: a NUL character in a text, a number out
        # of range): bad input, so a 422 saying why, not a 500; the transaction rolled back
        reason = str(err.orig).splitlines()[0] if err.orig is not None else "invalid value"
        return JSONResponse({"detail": [{"loc": ["request"], "type": "value_error",
                                         "msg": f"value not storable: {reason}"}]},
                            status_code=422)

    # every /api/v1 route needs a bearer token except /auth/token and /public/*
    app.include_router(events_routes.router, dependencies=[Depends(require_user)],
                       responses={401: {"description": "Not authenticated"}})
    app.include_router(auth_routes.router)
    app.include_router(command_routes.router)  # each route asks for its user
    app.include_router(registry_routes.router)
    app.include_router(public_routes.router)
    app.include_router(inspection_routes.router, dependencies=[Depends(require_user)],
                       responses={401: {"description": "Not authenticated"}})
    app.include_router(inspection_routes.public_router)
    # the case file (issue 18): each route asks for its staff user
    app.include_router(case_routes.router)
    app.include_router(stats_routes.router, dependencies=[Depends(require_user)],
                       responses={401: {"description": "Not authenticated"}})
    # the trust programme's merchant lifecycle (issue 19): merchant accounts see their own
    # data under /api/v1/merchant only; every staff route refuses them (auth.require_user)
    app.include_router(merchant_routes.router)
    app.include_router(application_routes.public)
    app.include_router(application_routes.admin)
    app.include_router(trust_public.router)
    app.include_router(trust_admin.router)

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
            sink = getattr(ingestor, "sink", None)
            body["tsdb"] = sink.stats() if sink is not None else None
        return JSONResponse(body, status_code=200 if db_ok else 503)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse,
             summary="Prometheus metrics (text exposition format)")
    def metrics() -> PlainTextResponse:
        from gateway_server.telemetry.metrics import render

        sink = getattr(ingestor, "sink", None) if ingestor is not None else None
        return PlainTextResponse(render(store, ingestor, sink),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    app.include_router(qr_routes.router)
    trust_pages.install(app)  # /apply, /merchant, /public/red-list, ... (before /static)
    pages.install(app)  # /, /login, /m/{trust_token}, /static

    return app
