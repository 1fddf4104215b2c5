"""FastAPI dependencies (``Annotated`` aliases), the only way routes reach shared state.

The app factory (``api.create_app``) puts the store, the ingestor and the settings on
``app.state``; routes ask for them here, so tests can override any of them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request

from gateway_server.settings import Settings
from gateway_server.store.database import Store
from gateway_server.store.tables import BIGINT_MAX


def get_store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def get_ingestor(request: Request) -> Any:
    return request.app.state.ingestor


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


StoreDep = Annotated[Store, Depends(get_store)]
IngestorDep = Annotated[Any, Depends(get_ingestor)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

# integer parameters that reach the database (BIGINT): out of range is a 422, not a 500
RowIdPath = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
RowIdQuery = Annotated[int | None, Query(ge=1, le=BIGINT_MAX)]
MsQuery = Annotated[int | None, Query(ge=0, le=BIGINT_MAX, description="UTC ms")]
OffsetQuery = Annotated[int, Query(ge=0, le=BIGINT_MAX)]
