"""FastAPI dependencies (``Annotated`` aliases), the only way routes reach shared state.

The app factory (``api.create_app``) puts the store, the ingestor and the settings on
``app.state``; routes ask for them here, so tests can override any of them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from gateway_server.settings import Settings
from gateway_server.store import Store


def get_store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def get_ingestor(request: Request) -> Any:
    return request.app.state.ingestor


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


StoreDep = Annotated[Store, Depends(get_store)]
IngestorDep = Annotated[Any, Depends(get_ingestor)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
